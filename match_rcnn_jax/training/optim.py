"""Learning-rate schedule and optimizer.

The Detectron recipe by default: SGD with momentum 0.9 and weight decay 1e-4, linear warmup
from `warmup_factor` x lr, then x0.1 at the `decay_fractions` of the run (8/12 and 11/12 of 12
epochs). AdamW as an option; optional gradient clipping by global norm; the first backbone
stages can be frozen (`freeze_backbone`: names of backbone submodules kept fixed, e.g. the stem
and layer1 as torchvision does with pretrained weights).
"""

from __future__ import annotations

import optax
from flax import traverse_util


def schedule(cfg, total_steps: int) -> optax.Schedule:
  base = cfg.learning_rate
  warmup = min(cfg.warmup_steps, max(total_steps - 1, 0))
  boundaries = {int(f * total_steps): cfg.decay_factor for f in cfg.decay_fractions
                if int(f * total_steps) > warmup}
  decay = optax.piecewise_constant_schedule(base, boundaries)
  if warmup == 0:
    return decay
  ramp = optax.linear_schedule(base * cfg.warmup_factor, base, warmup)
  return optax.join_schedules([ramp, lambda s: decay(s + warmup)], [warmup])


def is_frozen(path: tuple[str, ...], frozen_prefixes) -> bool:
  """Whether the parameter at `path` (a flattened params key) is kept fixed."""
  return path[0] == "backbone" and any(path[1] == p or path[1].startswith(p + "_")
                                       for p in frozen_prefixes)


def make(cfg, params, total_steps: int) -> optax.GradientTransformation:
  """The optimizer for `params` (only used for its structure)."""
  lr = schedule(cfg, total_steps)
  parts = []
  if cfg.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
  if cfg.name == "sgd":
    parts += [optax.add_decayed_weights(cfg.weight_decay),
              optax.sgd(lr, momentum=cfg.momentum, nesterov=False)]
  elif cfg.name == "adamw":
    parts.append(optax.adamw(lr, weight_decay=cfg.weight_decay))
  else:
    raise ValueError(f"optimizer name must be 'sgd' or 'adamw', got {cfg.name!r}")
  tx = optax.chain(*parts)
  frozen = tuple(cfg.freeze_backbone)
  if not frozen:
    return tx
  flat = traverse_util.flatten_dict(params)
  labels = traverse_util.unflatten_dict(
      {k: ("frozen" if is_frozen(k, frozen) else "train") for k in flat})
  return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
