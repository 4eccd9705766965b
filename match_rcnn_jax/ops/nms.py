"""Exact greedy non-maximum suppression at a static output size.

Same indices, in the same order, as `torchvision.ops.nms` for every IoU threshold: boxes are
visited by decreasing score (equal scores: lower index first); a box is kept unless a kept box
overlaps it with IoU > threshold. The IoU matrix is computed once; the greedy pass is a
`lax.while_loop` over the sorted boxes that stops once `max_output_size` boxes are kept. NMS
never sits on a gradient path (its inputs are stop-gradient'ed).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from match_rcnn_jax.ops import boxes as box_ops


def nms(boxes: jnp.ndarray, scores: jnp.ndarray, iou_threshold: float, max_output_size: int,
        valid: jnp.ndarray | None = None) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Greedy NMS of one set of boxes.

  Args:
    boxes: [N, 4] float, (x1, y1, x2, y2).
    scores: [N] float.
    iou_threshold: suppress when IoU > this (any value; no hidden 0.5 constant).
    max_output_size: static number of output slots.
    valid: optional [N] bool; invalid (padding) boxes are never kept and suppress nothing.

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
  ious = box_ops.iou(boxes[order], boxes[order])

  def cond(state):
    i, count, _, _ = state
    return (i < n) & (count < max_output_size)

  def body(state):
    i, count, suppressed, keep = state
    k = ok_sorted[i] & ~suppressed[i]
    keep = keep.at[i].set(k)
    suppressed = suppressed | (k & (ious[i] > iou_threshold))
    return i + 1, count + k.astype(jnp.int32), suppressed, keep

  init = (jnp.int32(0), jnp.int32(0), jnp.zeros(n, bool), jnp.zeros(n, bool))
  _, count, _, keep = jax.lax.while_loop(cond, body, init)
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
