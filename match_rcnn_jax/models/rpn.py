"""Region proposal network: the shared head, and static-shape proposal generation.

`generate_proposals` follows torchvision's RPN at inference: per level, top-k on objectness
logits (pre_nms_top_k), decode, clip to the image, drop boxes smaller than `min_size`, NMS per
level (torchvision's `batched_nms` with level ids: levels never suppress each other; every level
of every image in one vmapped NMS, the smaller levels padded with invalid boxes), then the
overall top `post_nms_top_k` by score. Every output has a fixed size with a validity mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from match_rcnn_jax import ops
from match_rcnn_jax.models import layers


class RPNHead(nn.Module):
  """3x3 conv + ReLU shared over levels, then objectness (A) and box deltas (4A) per location."""

  num_anchors: int = 3
  channels: int = 256
  dtype: layers.Dtype = jnp.float32
  convs: layers.Convs = layers.XLA  # how its convs are computed

  @nn.compact
  def __call__(self, feats: Sequence[jnp.ndarray]):
    init = nn.initializers.normal(0.01)
    conv = self.convs(self.channels, 3, name="conv", dtype=self.dtype, kernel_init=init)
    cls = self.convs(self.num_anchors, 1, name="cls_logits", dtype=self.dtype, kernel_init=init)
    box = self.convs(4 * self.num_anchors, 1, name="bbox_pred", dtype=self.dtype,
                      kernel_init=init)
    logits, deltas = [], []
    for f in feats:
      t = nn.relu(conv(f))
      b, h, w, _ = t.shape
      logits.append(cls(t).reshape(b, h * w * self.num_anchors).astype(jnp.float32))
      deltas.append(box(t).reshape(b, h * w * self.num_anchors, 4).astype(jnp.float32))
    return logits, deltas


def generate_proposals(logits: Sequence[jnp.ndarray], deltas: Sequence[jnp.ndarray],
                       anchors: Sequence[jnp.ndarray], image_sizes: jnp.ndarray,
                       pre_nms_top_k: int, post_nms_top_k: int, nms_threshold: float = 0.7,
                       min_size: float = 1e-3):
  """Proposals of a batch.

  Args:
    logits: per level [B, N_l] objectness logits.
    deltas: per level [B, N_l, 4].
    anchors: per level [N_l, 4].
    image_sizes: [B, 2] (height, width) of the valid image inside the canvas.

  Returns:
    boxes [B, post_nms_top_k, 4], scores [B, post_nms_top_k] (sigmoid), valid [B, K] bool; all
    outside the gradient path.
  """
  level_boxes, level_scores, level_valid = [], [], []
  h = image_sizes[:, 0:1].astype(jnp.float32)
  w = image_sizes[:, 1:2].astype(jnp.float32)
  top_k = max(min(pre_nms_top_k, lg.shape[1]) for lg in logits)
  for lg, dl, an in zip(logits, deltas, anchors):
    lg, dl = jax.lax.stop_gradient(lg), jax.lax.stop_gradient(dl)
    k = min(pre_nms_top_k, lg.shape[1])
    top, idx = jax.lax.top_k(lg, k)
    d = jnp.take_along_axis(dl, idx[..., None], axis=1)
    boxes = ops.decode(d, jnp.asarray(an)[idx])
    boxes = ops.clip(boxes, h, w)
    valid = ((boxes[..., 2] - boxes[..., 0]) >= min_size) & (
        (boxes[..., 3] - boxes[..., 1]) >= min_size)
    pad = top_k - k  # levels smaller than top_k: padded with invalid boxes
    level_boxes.append(jnp.pad(boxes, ((0, 0), (0, pad), (0, 0))))
    level_scores.append(jnp.pad(jax.nn.sigmoid(top), ((0, 0), (0, pad))))
    level_valid.append(jnp.pad(valid, ((0, 0), (0, pad))))
  # Every level of every image in one NMS call (one loop, not one per level): [B * L, K].
  b, n_levels = image_sizes.shape[0], len(logits)
  boxes = jnp.stack(level_boxes, 1).reshape(b * n_levels, top_k, 4)
  scores = jnp.stack(level_scores, 1).reshape(b * n_levels, top_k)
  valid = jnp.stack(level_valid, 1).reshape(b * n_levels, top_k)
  keep, keep_valid = ops.batched_nms(boxes, scores, nms_threshold, min(top_k, post_nms_top_k),
                                     valid)
  boxes = jnp.take_along_axis(boxes, keep[..., None], axis=1).reshape(b, -1, 4)
  scores = jnp.take_along_axis(scores, keep, axis=1).reshape(b, -1)
  valid = keep_valid.reshape(b, -1)
  k = min(post_nms_top_k, scores.shape[1])
  _, idx = jax.lax.top_k(jnp.where(valid, scores, -1.0), k)
  out = (jnp.take_along_axis(boxes, idx[..., None], axis=1),
         jnp.take_along_axis(scores, idx, axis=1), jnp.take_along_axis(valid, idx, axis=1))
  if k < post_nms_top_k:
    pad = post_nms_top_k - k
    out = (jnp.pad(out[0], ((0, 0), (0, pad), (0, 0))), jnp.pad(out[1], ((0, 0), (0, pad))),
           jnp.pad(out[2], ((0, 0), (0, pad))))
  return out
