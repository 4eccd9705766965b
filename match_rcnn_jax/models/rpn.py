"""Region proposal network: the shared head, and static-shape proposal generation.

`generate_proposals` follows torchvision's RPN at inference: per level, top-k on objectness
logits (pre_nms_top_k), decode, clip to the image, drop boxes smaller than `min_size`, NMS per
level (torchvision's `batched_nms` with level ids: levels never suppress each other), then the
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

  @nn.compact
  def __call__(self, feats: Sequence[jnp.ndarray]):
    init = nn.initializers.normal(0.01)
    conv = layers.conv(self.channels, 3, name="conv", dtype=self.dtype, kernel_init=init)
    cls = layers.conv(self.num_anchors, 1, name="cls_logits", dtype=self.dtype, kernel_init=init)
    box = layers.conv(4 * self.num_anchors, 1, name="bbox_pred", dtype=self.dtype,
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
  all_boxes, all_scores, all_valid = [], [], []
  h = image_sizes[:, 0:1].astype(jnp.float32)
  w = image_sizes[:, 1:2].astype(jnp.float32)
  for lg, dl, an in zip(logits, deltas, anchors):
    lg, dl = jax.lax.stop_gradient(lg), jax.lax.stop_gradient(dl)
    k = min(pre_nms_top_k, lg.shape[1])
    top, idx = jax.lax.top_k(lg, k)
    d = jnp.take_along_axis(dl, idx[..., None], axis=1)
    boxes = ops.decode(d, jnp.asarray(an)[idx])
    boxes = ops.clip(boxes, h, w)
    valid = ((boxes[..., 2] - boxes[..., 0]) >= min_size) & (
        (boxes[..., 3] - boxes[..., 1]) >= min_size)
    scores = jax.nn.sigmoid(top)
    keep, keep_valid = ops.batched_nms(boxes, scores, nms_threshold, min(k, post_nms_top_k),
                                       valid)
    all_boxes.append(jnp.take_along_axis(boxes, keep[..., None], axis=1))
    all_scores.append(jnp.take_along_axis(scores, keep, axis=1))
    all_valid.append(keep_valid)
  boxes = jnp.concatenate(all_boxes, 1)
  scores = jnp.concatenate(all_scores, 1)
  valid = jnp.concatenate(all_valid, 1)
  k = min(post_nms_top_k, scores.shape[1])
  _, idx = jax.lax.top_k(jnp.where(valid, scores, -1.0), k)
  out = (jnp.take_along_axis(boxes, idx[..., None], axis=1),
         jnp.take_along_axis(scores, idx, axis=1), jnp.take_along_axis(valid, idx, axis=1))
  if k < post_nms_top_k:
    pad = post_nms_top_k - k
    out = (jnp.pad(out[0], ((0, 0), (0, pad), (0, 0))), jnp.pad(out[1], ((0, 0), (0, pad))),
           jnp.pad(out[2], ((0, 0), (0, pad))))
  return out
