"""Inference post-processing at static shapes: detections, masks and landmarks.

Free functions beside the heads (the modules hold layers only):
* `detect`: torchvision's `postprocess_detections` - softmax scores, class-specific box
  decoding (weights 10, 10, 5, 5), clipping, score threshold, small-box removal, class-aware
  NMS (every class at once through vmap, no Python class loop), top `max_detections`.
* `select_class_masks`: the predicted class's channel of the mask logits, as probabilities.
* `decode_landmarks`: argmax of the predicted category's heatmaps -> (x, y, score) in the
  294-point layout. Unlike torchvision (a bicubic resize of each heatmap to its box, a
  data-dependent shape), the 56 x 56 grid is read directly: x = x1 + (i + 0.5) * w / 56.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from match_rcnn_jax import ops
from match_rcnn_jax.data import schema


def detect(proposals, proposal_valid, class_logits, box_deltas, image_sizes, *,
           box_weights=(10.0, 10.0, 5.0, 5.0), score_threshold=0.05, nms_threshold=0.5,
           max_detections=100, min_size=1e-2):
  """Detections of a batch.

  Args:
    proposals: [B, R, 4]; proposal_valid: [B, R] bool.
    class_logits: [B, R, K] (index 0 = background); box_deltas: [B, R, K, 4].
    image_sizes: [B, 2] (height, width).

  Returns:
    dict of boxes [B, D, 4], scores [B, D], classes [B, D] int32 (1..K-1), valid [B, D] bool.
  """
  probs = jax.nn.softmax(class_logits, axis=-1)[..., 1:]
  boxes = ops.decode(box_deltas[..., 1:, :], proposals[:, :, None, :], box_weights)
  h = image_sizes[:, 0].astype(jnp.float32)[:, None, None]
  w = image_sizes[:, 1].astype(jnp.float32)[:, None, None]
  boxes = ops.clip(boxes, h, w)
  valid = (proposal_valid[..., None] & (probs > score_threshold)
           & ((boxes[..., 2] - boxes[..., 0]) >= min_size)
           & ((boxes[..., 3] - boxes[..., 1]) >= min_size))
  # Classes as a batch dimension: [B, C, R, ...].
  cb = jnp.swapaxes(boxes, 1, 2)
  cs = jnp.swapaxes(probs, 1, 2)
  cv = jnp.swapaxes(valid, 1, 2)
  per_class = jax.vmap(jax.vmap(lambda b, s, v: ops.nms(b, s, nms_threshold, max_detections, v)))
  idx, kept = per_class(cb, cs, cv)  # [B, C, D]
  kb = jnp.take_along_axis(cb, idx[..., None], axis=2)
  ks = jnp.take_along_axis(cs, idx, axis=2)
  num_classes = probs.shape[-1]
  kc = jnp.broadcast_to(jnp.arange(1, num_classes + 1, dtype=jnp.int32)[None, :, None], ks.shape)
  b = boxes.shape[0]
  flat = lambda x: x.reshape(b, -1, *x.shape[3:])  # noqa: E731
  kb, ks, kc, kept = flat(kb), flat(ks), flat(kc), flat(kept)
  top, order = jax.lax.top_k(jnp.where(kept, ks, -1.0), max_detections)
  out_valid = top > -1.0
  return {
      "boxes": jnp.where(out_valid[..., None], jnp.take_along_axis(kb, order[..., None], 1), 0.0),
      "scores": jnp.where(out_valid, top, 0.0),
      "classes": jnp.where(out_valid, jnp.take_along_axis(kc, order, 1), 0),
      "valid": out_valid,
  }


def select_class_masks(mask_logits, classes):
  """mask_logits [..., S, S, K], classes [...] -> probabilities [..., S, S] of that class."""
  onehot = jax.nn.one_hot(classes, mask_logits.shape[-1], dtype=mask_logits.dtype)
  return jax.nn.sigmoid(jnp.einsum("...hwk,...k->...hw", mask_logits, onehot))


_MAX_BLOCK = max(c.num_landmarks for c in schema.CATEGORIES)
_OFFSETS = np.array([0] + [c.offset for c in schema.CATEGORIES], np.int32)
_COUNTS = np.array([0] + [c.num_landmarks for c in schema.CATEGORIES], np.int32)


def block_channels(classes):
  """[N] classes -> ([N, 39] landmark channel indices of the category, [N, 39] in-block mask)."""
  j = jnp.arange(_MAX_BLOCK)
  off = jnp.asarray(_OFFSETS)[classes]
  cnt = jnp.asarray(_COUNTS)[classes]
  idx = jnp.clip(off[:, None] + j[None, :], 0, schema.NUM_LANDMARKS - 1)
  return idx, j[None, :] < cnt[:, None]


def gather_block(landmarks, classes):
  """Global landmarks [N, 294, 3] -> the category's block [N, 39, 3] (zeros past its count)."""
  idx, in_block = block_channels(classes)
  block = jnp.take_along_axis(landmarks, idx[..., None], axis=1)
  return jnp.where(in_block[..., None], block, 0.0)


def decode_landmarks(heatmaps, boxes, classes):
  """Landmark positions from category-block heatmaps.

  Args:
    heatmaps: [N, H, W, 39] logits of the category's block (`block_channels`; -inf past its
      count).
    boxes: [N, 4] the detections' boxes; classes: [N].

  Returns:
    [N, 294, 3]: (x, y, heatmap logit) in the category's block, zeros elsewhere.
  """
  n, hh, ww, m = heatmaps.shape
  flat = heatmaps.reshape(n, hh * ww, m)
  best = jnp.argmax(flat, axis=1)  # [N, 39]
  score = jnp.max(flat, axis=1)
  iy, ix = best // ww, best % ww
  x1, y1, x2, y2 = (boxes[:, i:i + 1] for i in range(4))
  x = x1 + (ix + 0.5) * (x2 - x1) / ww
  y = y1 + (iy + 0.5) * (y2 - y1) / hh
  local = jnp.stack([x, y, score], -1)  # [N, 39, 3]
  g = jnp.arange(schema.NUM_LANDMARKS)
  j = g[None, :] - jnp.asarray(_OFFSETS)[classes][:, None]  # [N, 294]
  inside = (j >= 0) & (j < jnp.asarray(_COUNTS)[classes][:, None])
  picked = jnp.take_along_axis(local, jnp.clip(j, 0, _MAX_BLOCK - 1)[..., None], axis=1)
  return jnp.where(inside[..., None] & jnp.isfinite(picked), picked, 0.0)
