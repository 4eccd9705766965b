"""The train state and the jitted, donated train step.

With `match_head.memory_size` > 0 the state keeps a memory of the shop embeddings of recent
steps (a ring buffer of embeddings, product keys and validity, written after every step without
gradient): from `match_head.memory_start` on, each user RoI's listwise match term
(`losses.listwise_match`, weighted by `loss_weights.match_list`) ranks its product among the
batch's shop RoIs and the memory's, the standard way to give a detector that sees a few images a
step enough negatives (the cross-batch memory of XBM; the queue of OIM / SeqNet)."""

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
  # {} or the match memory: emb [S, D], key [S, 2] (pair_id, style), valid [S], next [] (the
  # slot the next step's first row goes to)
  memory: Any = flax.struct.field(default_factory=dict)


def empty_memory(size: int, dim: int) -> dict:
  """A match memory of `size` rows of `dim`-d embeddings, none valid ({} for size 0)."""
  if size <= 0:
    return {}
  return {"emb": jnp.zeros((size, dim), jnp.float32), "key": jnp.zeros((size, 2), jnp.int32),
          "valid": jnp.zeros((size,), bool), "next": jnp.zeros((), jnp.int32)}


def create(variables, tx, rng, memory_size: int = 0) -> TrainState:
  params = variables["params"]
  dim = params["similarity"]["weight"].shape[0] if memory_size > 0 else 0
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
                    rng=rng, skipped=jnp.zeros((), jnp.int32),
                    memory=empty_memory(memory_size, dim))


def memory_size(config) -> int:
  """The match memory's size of a config (`config.model.match_head.memory_size`, 0: none)."""
  return int(config.model.match_head.get("memory_size", 0))


def write_memory(memory: dict, emb, key, valid) -> dict:
  """The memory with rows emb [A, D], key [A, 2], valid [A] written from its `next` slot on,
  wrapping around (the oldest rows are overwritten), without gradient."""
  size = memory["emb"].shape[0]
  rows = (memory["next"] + jnp.arange(emb.shape[0])) % size
  sg = jax.lax.stop_gradient
  return {"emb": memory["emb"].at[rows].set(sg(emb).astype(jnp.float32)),
          "key": memory["key"].at[rows].set(key.astype(jnp.int32)),
          "valid": memory["valid"].at[rows].set(valid),
          "next": (memory["next"] + emb.shape[0]) % size}


CROP_PAIR_KEYS = ("crop_pairs", "crop_pair_key", "crop_pair_boxes")  # data.crop_pairs > 0


def flatten_pairs(batch: dict) -> tuple[jnp.ndarray, dict, jnp.ndarray]:
  """A pair batch [P, 2, ...] -> images [2P, ...], targets, image sizes [2P, 2]; the side
  batch of crop pairs (`data.crop_pairs`), where present, passes as it is."""
  flat = lambda x: x.reshape(-1, *x.shape[2:])  # noqa: E731
  targets = {k: flat(batch[k]) for k in TARGET_KEYS}
  targets.update({k: batch[k] for k in CROP_PAIR_KEYS if k in batch})
  return flat(batch["image"]), targets, flat(batch["image_info"])[:, 4:6]


def split_frozen(params, frozen_prefixes):
  """params -> (trainable, frozen) flat dicts keyed by parameter path."""
  flat = traverse_util.flatten_dict(params)
  frozen = {k: v for k, v in flat.items() if optim.is_frozen(k, frozen_prefixes)}
  return {k: v for k, v in flat.items() if k not in frozen}, frozen


def merge_frozen(trainable, frozen):
  """The inverse of `split_frozen`: the nested params."""
  return traverse_util.unflatten_dict({**trainable, **frozen})


def make_train_step(model, tx, loss_weights, dtype=jnp.float32, frozen=(),
                    memory_start: int = 0):
  """Returns train_step(state, batch) -> (state, metrics); jit it with the state donated.

  `frozen`: the backbone stages the optimizer keeps fixed (`optimizer.freeze_backbone`). The
  loss is differentiated with respect to the other parameters only, so no gradient is computed
  for the frozen stages (nor backpropagated into them); theirs are zeros. With a match memory
  in the state (module docstring), its rows count from step `memory_start` on.
  """

  def loss_fn(params, state, batch, rng):
    images, targets, sizes = flatten_pairs(batch)
    if state.memory:
      targets = {**targets, "memory_emb": state.memory["emb"],
                 "memory_key": state.memory["key"],
                 "memory_valid": state.memory["valid"] & (state.step >= memory_start)}
    out, updates = model.apply({"params": params, "batch_stats": state.batch_stats},
                               images.astype(dtype), targets, image_sizes=sizes, train=True,
                               rngs={"sampling": rng}, mutable=["batch_stats"])
    losses = losses_lib.compute(out, loss_weights)
    # Foreground RoIs per image: what the mask and landmark heads cost this step.
    fg = out["roi_is_fg"].sum() / out["roi_is_fg"].shape[0]
    counts = {"fg_rois": fg, **losses_lib.pair_counts(out)}
    shop = {k: out[k] for k in ("match_shop_emb", "match_shop_key", "match_shop_valid")
            if state.memory}
    return losses["loss"], (losses, updates["batch_stats"], counts, shop)

  def train_step(state: TrainState, batch: dict):
    rng = jax.random.fold_in(state.rng, state.step)
    trainable, fixed = split_frozen(state.params, frozen)
    (loss, (losses, batch_stats, counts, shop)), grads = jax.value_and_grad(
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
        skipped=state.skipped + (~finite).astype(jnp.int32),
        memory=keep(write_memory(state.memory, shop["match_shop_emb"], shop["match_shop_key"],
                                 shop["match_shop_valid"] & finite), state.memory)
        if state.memory else state.memory)
    metrics = {**losses, "grad_norm": optax.global_norm(grads),
               **{k: v.astype(jnp.float32) for k, v in counts.items()},
               "skipped": new_state.skipped.astype(jnp.float32)}
    return new_state, metrics

  return train_step
