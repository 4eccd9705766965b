"""Exact greedy non-maximum suppression at a static output size.

Same indices, in the same order, as `torchvision.ops.nms` for every IoU threshold: boxes are
visited by decreasing score (equal scores: lower index first); a box is kept unless a kept box
overlaps it with IoU > threshold.

Tiled, as in TPU Mask R-CNN implementations: the score-sorted boxes are cut into tiles of
`tile` boxes, visited in a `lax.while_loop` that stops once `max_output_size` boxes are kept.
Within a tile the greedy result is the fixed point of "a box is kept unless an earlier kept box
of the tile overlaps it" (unique: by induction over the tile, every fixed point is the greedy
one), reached by iterating from "every box not yet suppressed is kept", in a handful of steps
in practice and at most `tile`. The tile's kept boxes then suppress every later box (one
[tile, N] IoU block). The loop runs some N / tile x (a few) steps instead of N, each a
matrix operation: the difference between seconds and milliseconds on a GPU, where every loop
step is a kernel launch. NMS never sits on a gradient path (its inputs are stop-gradient'ed).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from match_rcnn_jax.ops import boxes as box_ops


def nms(boxes: jnp.ndarray, scores: jnp.ndarray, iou_threshold: float, max_output_size: int,
        valid: jnp.ndarray | None = None, tile: int = 256) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Greedy NMS of one set of boxes.

  Args:
    boxes: [N, 4] float, (x1, y1, x2, y2).
    scores: [N] float.
    iou_threshold: suppress when IoU > this (any value; no hidden 0.5 constant).
    max_output_size: static number of output slots.
    valid: optional [N] bool; invalid (padding) boxes are never kept and suppress nothing.
    tile: boxes per loop step (any value gives the same result).

  Returns:
    indices [max_output_size] int32 into `boxes`, by decreasing score (0 in unused slots), and
    valid [max_output_size] bool.
  """
  if boxes.ndim != 2 or boxes.shape[-1] != 4:
    raise ValueError(f"boxes must be [N, 4], got {boxes.shape}")
  if scores.shape != boxes.shape[:1]:
    raise ValueError(f"scores must be [N] = {boxes.shape[:1]}, got {scores.shape}")
  n = boxes.shape[0]
  boxes = jax.lax.stop_gradient(boxes)
  scores = jax.lax.stop_gradient(scores)
  ok = jnp.isfinite(scores)
  if valid is not None:
    ok &= valid
  order = jnp.argsort(jnp.where(ok, -scores, jnp.inf), stable=True)
  ok_sorted = ok[order]
  t = max(1, min(tile, n))
  tiles = -(-n // t)
  pad = tiles * t - n
  sorted_boxes = jnp.concatenate([boxes[order], jnp.zeros((pad, 4), boxes.dtype)])
  ok_sorted = jnp.concatenate([ok_sorted, jnp.zeros((pad,), bool)])
  later = jnp.arange(t)[:, None] < jnp.arange(t)[None, :]  # [i, j]: i comes before j

  def cond(state):
    i, count, _, _ = state
    return (i < tiles) & (count < max_output_size)

  def body(state):
    i, count, suppressed, keep = state
    tile_boxes = jax.lax.dynamic_slice_in_dim(sorted_boxes, i * t, t)
    base = jax.lax.dynamic_slice_in_dim(ok_sorted & ~suppressed, i * t, t)
    overlaps = (box_ops.iou(tile_boxes, tile_boxes) > iou_threshold) & later

    def settle(inner):
      kept, _ = inner
      new = base & ~jnp.any(kept[:, None] & overlaps, axis=0)
      return new, jnp.any(new != kept)

    kept, _ = jax.lax.while_loop(lambda inner: inner[1], settle, (base, jnp.bool_(True)))
    # Greedy NMS stops at max_output_size kept boxes.
    kept &= count + jnp.cumsum(kept) <= max_output_size
    keep = jax.lax.dynamic_update_slice_in_dim(keep, kept, i * t, 0)
    hits = kept[:, None] & (box_ops.iou(tile_boxes, sorted_boxes) > iou_threshold)
    return i + 1, count + kept.sum(dtype=jnp.int32), suppressed | hits.any(0), keep

  init = (jnp.int32(0), jnp.int32(0), jnp.zeros(n + pad, bool), jnp.zeros(n + pad, bool))
  _, count, _, keep = jax.lax.while_loop(cond, body, init)
  keep = keep[:n]
  ranks = jnp.arange(n, dtype=jnp.int32)
  # Positions of the kept boxes in sorted order: a top-k on a key that is larger for kept boxes
  # and, among them, for earlier ones.
  k = min(max_output_size, n)
  _, pos = jax.lax.top_k(jnp.where(keep, n - ranks, -1 - ranks), k)
  indices = order[pos].astype(jnp.int32)
  out_valid = jnp.arange(k) < count
  indices = jnp.where(out_valid, indices, 0)
  if k < max_output_size:
    indices = jnp.pad(indices, (0, max_output_size - k))
    out_valid = jnp.pad(out_valid, (0, max_output_size - k))
  return indices, out_valid


def batched_nms(boxes: jnp.ndarray, scores: jnp.ndarray, iou_threshold: float,
                max_output_size: int, valid: jnp.ndarray | None = None):
  """`nms` over a leading batch dimension: boxes [B, N, 4], scores [B, N] -> [B, K] each."""
  if valid is None:
    valid = jnp.ones(scores.shape, bool)
  return jax.vmap(lambda b, s, v: nms(b, s, iou_threshold, max_output_size, v))(
      boxes, scores, valid)
