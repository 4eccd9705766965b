"""Box utilities. One convention everywhere: (x1, y1, x2, y2) in input pixels, width = x2 - x1.

The box coder follows torchvision's `BoxCoder` exactly: centre = x1 + 0.5 w, deltas
(dx, dy, dw, dh) scaled by `weights`, dw and dh clamped at log(1000 / 16) before `exp`.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

BBOX_XFORM_CLIP = math.log(1000.0 / 16)


def _check_last(x, name: str, size: int = 4):
  if x.ndim < 1 or x.shape[-1] != size:
    raise ValueError(f"{name} must have a last dimension of {size}, got shape {x.shape}")


def area(boxes: jnp.ndarray) -> jnp.ndarray:
  """boxes [..., 4] -> [...] (negative extents count as 0)."""
  _check_last(boxes, "boxes")
  w = jnp.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
  h = jnp.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
  return w * h


def iou(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
  """Pairwise IoU: a [..., N, 4], b [..., M, 4] -> [..., N, M]; 0 where the union is empty."""
  _check_last(a, "a")
  _check_last(b, "b")
  lt = jnp.maximum(a[..., :, None, :2], b[..., None, :, :2])
  rb = jnp.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
  wh = jnp.maximum(rb - lt, 0.0)
  inter = wh[..., 0] * wh[..., 1]
  union = area(a)[..., :, None] + area(b)[..., None, :] - inter
  return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1.0), 0.0)


def clip(boxes: jnp.ndarray, height, width) -> jnp.ndarray:
  """Clips boxes [..., 4] to [0, width] x [0, height] (scalars or arrays broadcastable to [...])."""
  _check_last(boxes, "boxes")
  height = jnp.asarray(height, boxes.dtype)
  width = jnp.asarray(width, boxes.dtype)
  x1 = jnp.clip(boxes[..., 0], 0, width)
  y1 = jnp.clip(boxes[..., 1], 0, height)
  x2 = jnp.clip(boxes[..., 2], 0, width)
  y2 = jnp.clip(boxes[..., 3], 0, height)
  return jnp.stack([x1, y1, x2, y2], axis=-1)


def _center_size(boxes):
  w = boxes[..., 2] - boxes[..., 0]
  h = boxes[..., 3] - boxes[..., 1]
  return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h


def encode(boxes: jnp.ndarray, anchors: jnp.ndarray,
           weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)) -> jnp.ndarray:
  """Regression targets of `boxes` relative to `anchors` (both [..., 4]) -> deltas [..., 4]."""
  _check_last(boxes, "boxes")
  _check_last(anchors, "anchors")
  wx, wy, ww, wh = weights
  ax, ay, aw, ah = _center_size(anchors)
  bx, by, bw, bh = _center_size(boxes)
  return jnp.stack([wx * (bx - ax) / aw, wy * (by - ay) / ah, ww * jnp.log(bw / aw),
                    wh * jnp.log(bh / ah)], axis=-1)


def decode(deltas: jnp.ndarray, anchors: jnp.ndarray,
           weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)) -> jnp.ndarray:
  """Boxes from `deltas` [..., 4] applied to `anchors` [..., 4] (the inverse of `encode`)."""
  _check_last(deltas, "deltas")
  _check_last(anchors, "anchors")
  wx, wy, ww, wh = weights
  ax, ay, aw, ah = _center_size(anchors)
  dx, dy = deltas[..., 0] / wx, deltas[..., 1] / wy
  dw = jnp.minimum(deltas[..., 2] / ww, BBOX_XFORM_CLIP)
  dh = jnp.minimum(deltas[..., 3] / wh, BBOX_XFORM_CLIP)
  cx, cy = dx * aw + ax, dy * ah + ay
  w, h = jnp.exp(dw) * aw, jnp.exp(dh) * ah
  return jnp.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)
