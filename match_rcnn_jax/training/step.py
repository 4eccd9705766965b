"""The train state and the jitted, donated train step."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from match_rcnn_jax.training import losses as losses_lib
from match_rcnn_jax.training import optim

TARGET_KEYS = ("boxes", "classes", "valid", "mask_crops", "landmarks", "styles", "pair_id")


@flax.struct.dataclass
class TrainState:
  step: jnp.ndarray
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jnp.ndarray
  skipped: jnp.ndarray  # updates skipped because the loss or a gradient was not finite


def create(variables, tx, rng) -> TrainState:
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
                    rng=rng, skipped=jnp.zeros((), jnp.int32))


def flatten_pairs(batch: dict) -> tuple[jnp.ndarray, dict, jnp.ndarray]:
  """A pair batch [P, 2, ...] -> images [2P, ...], targets, image sizes [2P, 2]."""
  flat = lambda x: x.reshape(-1, *x.shape[2:])  # noqa: E731
  targets = {k: flat(batch[k]) for k in TARGET_KEYS}
  return flat(batch["image"]), targets, flat(batch["image_info"])[:, 4:6]


def split_frozen(params, frozen_prefixes):
  """params -> (trainable, frozen) flat dicts keyed by parameter path."""
  flat = traverse_util.flatten_dict(params)
  frozen = {k: v for k, v in flat.items() if optim.is_frozen(k, frozen_prefixes)}
  return {k: v for k, v in flat.items() if k not in frozen}, frozen


def merge_frozen(trainable, frozen):
  """The inverse of `split_frozen`: the nested params."""
  return traverse_util.unflatten_dict({**trainable, **frozen})


def make_train_step(model, tx, loss_weights, dtype=jnp.float32, frozen=()):
  """Returns train_step(state, batch) -> (state, metrics); jit it with the state donated.

  `frozen`: the backbone stages the optimizer keeps fixed (`optimizer.freeze_backbone`). The
  loss is differentiated with respect to the other parameters only, so no gradient is computed
  for the frozen stages (nor backpropagated into them); theirs are zeros.
  """

  def loss_fn(params, state, batch, rng):
    images, targets, sizes = flatten_pairs(batch)
    out, updates = model.apply({"params": params, "batch_stats": state.batch_stats},
                               images.astype(dtype), targets, image_sizes=sizes, train=True,
                               rngs={"sampling": rng}, mutable=["batch_stats"])
    losses = losses_lib.compute(out, loss_weights)
    # Foreground RoIs per image: what the mask and landmark heads cost this step.
    fg = out["roi_is_fg"].sum() / out["roi_is_fg"].shape[0]
    counts = {"fg_rois": fg, **losses_lib.pair_counts(out)}
    return losses["loss"], (losses, updates["batch_stats"], counts)

  def train_step(state: TrainState, batch: dict):
    rng = jax.random.fold_in(state.rng, state.step)
    trainable, fixed = split_frozen(state.params, frozen)
    (loss, (losses, batch_stats, counts)), grads = jax.value_and_grad(
        lambda t: loss_fn(merge_frozen(t, fixed), state, batch, rng), has_aux=True)(trainable)
    grads = merge_frozen(grads, jax.tree.map(jnp.zeros_like, fixed))
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite = jnp.isfinite(loss) & jnp.all(jnp.asarray(
        [jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)  # noqa
    new_state = state.replace(
        step=state.step + 1, params=keep(params, state.params),
        opt_state=keep(opt_state, state.opt_state),
        batch_stats=keep(batch_stats, state.batch_stats),
        skipped=state.skipped + (~finite).astype(jnp.int32))
    metrics = {**losses, "grad_norm": optax.global_norm(grads),
               **{k: v.astype(jnp.float32) for k, v in counts.items()},
               "skipped": new_state.skipped.astype(jnp.float32)}
    return new_state, metrics

  return train_step
