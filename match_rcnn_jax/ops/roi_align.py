"""RoIAlign in jax.numpy with `torchvision.ops.roi_align` semantics, and its multi-level form.

For each RoI and output bin, `sampling_ratio` x `sampling_ratio` points at
start + bin * p + (i + 0.5) * bin / sampling_ratio are bilinearly interpolated and averaged.
`aligned=True` shifts the box by -0.5 pixel; `aligned=False` forces RoI sides >= 1. A sample
with y < -1 or y > H (or x) contributes 0; y <= 0 is read at 0; y >= H - 1 at H - 1. These
weights are separable in y and x, which both backends use:

* "gather": reads the two neighbour rows x two neighbour columns of every sample with one
  gather (GPU/CPU friendly; in the multi-level form, from one flat buffer of all levels, so each
  RoI costs the same whatever its level);
* "einsum": per-RoI weight matrices [out_h, H] and [out_w, W] contracted with the feature map
  (no gather/scatter: TPU friendly; the multi-level form evaluates every level and masks).

The sampling ratio is static (torchvision's adaptive `sampling_ratio <= 0` is data-dependent).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

BACKENDS = ("gather", "einsum")


def _axis_samples(start, bin_size, out: int, grid: int, size):
  """Neighbour indices and weights along one axis.

  Args:
    start, bin_size: [...] RoI start and bin size (feature pixels).
    out, grid: output bins and samples per bin.
    size: [...] or scalar feature extent along the axis.

  Returns:
    idx [..., out, grid, 2] int32 (low, high neighbour) and w [..., out, grid, 2] float
    (bilinear weight x validity / grid).
  """
  p = jnp.arange(out, dtype=start.dtype)[:, None]
  g = jnp.arange(grid, dtype=start.dtype)[None, :]
  coord = (start[..., None, None] + p * bin_size[..., None, None]
           + (g + 0.5) * bin_size[..., None, None] / grid)
  size = jnp.asarray(size, start.dtype)
  size_b = size[..., None, None] if size.ndim else size
  valid = (coord >= -1.0) & (coord <= size_b)
  c = jnp.maximum(coord, 0.0)
  low = jnp.floor(c)
  at_edge = low >= size_b - 1
  low = jnp.where(at_edge, size_b - 1, low)
  high = jnp.where(at_edge, size_b - 1, low + 1)
  c = jnp.where(at_edge, low, c)
  frac = c - low
  scale = valid.astype(start.dtype) / grid
  w = jnp.stack([(1.0 - frac) * scale, frac * scale], axis=-1)
  idx = jnp.stack([low, high], axis=-1).astype(jnp.int32)
  return idx, w


def _roi_geometry(boxes, spatial_scale, output_size, aligned):
  offset = 0.5 if aligned else 0.0
  x1 = boxes[..., 0] * spatial_scale - offset
  y1 = boxes[..., 1] * spatial_scale - offset
  rw = boxes[..., 2] * spatial_scale - offset - x1
  rh = boxes[..., 3] * spatial_scale - offset - y1
  if not aligned:
    rw = jnp.maximum(rw, 1.0)
    rh = jnp.maximum(rh, 1.0)
  out_h, out_w = output_size
  return x1, y1, rw / out_w, rh / out_h


def _check(features, boxes):
  if features.ndim != 4:
    raise ValueError(f"features must be [B, H, W, C], got shape {features.shape}")
  if boxes.ndim != 3 or boxes.shape[-1] != 4 or boxes.shape[0] != features.shape[0]:
    raise ValueError(f"boxes must be [B, R, 4] with B = {features.shape[0]}, got {boxes.shape}")


def _pair(size):
  return (size, size) if isinstance(size, int) else tuple(size)


def _combine_gather(flat, iy, wy, ix, wx, row_stride, offset, forward_only=False, piece_mb=0):
  """Gathers [B, R, oh, g, 2] x [B, R, ow, g, 2] neighbours from flat [B, N, C] and reduces,
  in float32 whatever the features' dtype (as torchvision's RoIAlign accumulates; in bfloat16
  the gather's gradient, a scatter-add, loses precision).

  The 4 g^2 neighbours of a bin are gathered on the axis next to the channels and reduced by a
  batched [1, 4 g^2] x [4 g^2, C] product per bin, which reads the gathered values in place
  (contracted in their gathered [oh, g, 2, ow, g, 2] order, they would be transposed first).
  The gathered values take B R oh ow 4 g^2 C floats (784 MB for 2 x 512 RoIs at 7 x 7, 256
  channels): with `piece_mb` > 0 the B R RoIs are pooled in pieces whose gathered values take
  at most that many MB, one piece after the other (`lax.map`; its gradient adds each piece's
  scatter into one buffer), so neither pass holds them all.

  `forward_only`: the 4 g^2 neighbours gathered and weighted one at a time, summed in one fused
  loop: nothing of size 4 g^2 x C is written, but its gradient is 4 g^2 separate scatters,
  slower than the contraction's; for inference."""
  flat = flat.astype(jnp.float32)
  wy, wx = wy.astype(jnp.float32), wx.astype(jnp.float32)
  b, r, oh, g, _ = iy.shape
  ow = ix.shape[2]
  rows = offset[..., None, None, None] + iy * row_stride[..., None, None, None]
  index = (rows.reshape(b, r, oh, 1, 2 * g, 1)
           + ix.reshape(b, r, 1, ow, 1, 2 * g))  # [B, R, oh, ow, 2g (y), 2g (x)]
  weight = wy.reshape(b, r, oh, 1, 2 * g, 1) * wx.reshape(b, r, 1, ow, 1, 2 * g)
  k = 4 * g * g
  if forward_only:
    index, weight = index.reshape(b, r, oh, ow, k), weight.reshape(b, r, oh, ow, k)
    out = 0.0
    for j in range(k):
      out = out + jax.vmap(lambda f, i: f[i])(flat, index[..., j]) * weight[..., j, None]
    return out
  # One table of the B images' rows: RoI i of image j reads rows j N + ....
  n, c = flat.shape[1:]
  index = index.reshape(b * r, oh, ow, k) + jnp.repeat(jnp.arange(b, dtype=jnp.int32) * n,
                                                       r)[:, None, None, None]
  weight = weight.reshape(b * r, oh, ow, k)
  table = flat.reshape(b * n, c)

  def pool(args):  # a batched [1, k] x [k, C] product per bin: no transpose of the values
    i, w = args
    return jnp.einsum("...pqk,...pqkc->...pqc", w, table[i])
  per_roi = oh * ow * k * c * 4  # bytes of one RoI's gathered values
  piece = b * r if piece_mb <= 0 else max(1, min(b * r, int(piece_mb * 2**20) // per_roi))
  if piece >= b * r:
    out = pool((index, weight))
  else:
    out = jax.lax.map(pool, (index, weight), batch_size=piece)
  return out.reshape(b, r, oh, ow, c)


def _einsum_weights(idx, w, size):
  """[..., out, grid, 2] neighbours -> dense [..., out, size] weights."""
  onehot = jax.nn.one_hot(idx, size, dtype=w.dtype)  # [..., out, g, 2, size]
  return jnp.einsum("...ogk,...ogks->...os", w, onehot)


def roi_align(features: jnp.ndarray, boxes: jnp.ndarray, output_size, spatial_scale: float = 1.0,
              sampling_ratio: int = 2, aligned: bool = True,
              backend: str = "gather", forward_only: bool = False,
              piece_mb: float = 0) -> jnp.ndarray:
  """RoIAlign of one feature map.

  Args:
    features: [B, H, W, C] (NHWC).
    boxes: [B, R, 4] float, (x1, y1, x2, y2) in input pixels.
    output_size: int or (out_h, out_w).
    spatial_scale: feature pixels per input pixel.
    sampling_ratio: samples per bin along each axis (> 0, static).
    aligned: shift boxes by -0.5 pixel (Detectron2) or not (torchvision's default).
    backend: "gather" or "einsum" (same numbers).
    forward_only: ("gather") the form with the fastest forward and the slowest gradient (same
      numbers): for inference.
    piece_mb: ("gather", not `forward_only`) the RoIs pooled in pieces whose gathered
      neighbours take at most this many MB, one after the other (0: all at once; same
      numbers): bounds the memory of both passes.

  Returns:
    [B, R, out_h, out_w, C] in the dtype of `features`.
  """
  _check(features, boxes)
  if sampling_ratio <= 0:
    raise ValueError(f"sampling_ratio must be > 0 (static), got {sampling_ratio}")
  if backend not in BACKENDS:
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
  out_h, out_w = _pair(output_size)
  _, h, w, c = features.shape
  boxes = boxes.astype(jnp.float32)
  x1, y1, bin_w, bin_h = _roi_geometry(boxes, spatial_scale, (out_h, out_w), aligned)
  iy, wy = _axis_samples(y1, bin_h, out_h, sampling_ratio, h)
  ix, wx = _axis_samples(x1, bin_w, out_w, sampling_ratio, w)
  if backend == "einsum":
    ay = _einsum_weights(iy, wy, h).astype(features.dtype)
    ax = _einsum_weights(ix, wx, w).astype(features.dtype)
    return jnp.einsum("brph,bhwc,brqw->brpqc", ay, features, ax)
  flat = features.reshape(features.shape[0], h * w, c)
  zeros = jnp.zeros(boxes.shape[:2], jnp.int32)
  out = _combine_gather(flat, iy, wy.astype(features.dtype), ix, wx.astype(features.dtype),
                        zeros + w, zeros, forward_only, piece_mb)
  return out.astype(features.dtype)


def assign_levels(boxes: jnp.ndarray, min_level: int = 2, max_level: int = 5,
                  canonical_size: float = 224.0, canonical_level: int = 4) -> jnp.ndarray:
  """FPN level of each box: floor(4 + log2(sqrt(area) / 224) + 1e-6), clamped (torchvision)."""
  w = boxes[..., 2] - boxes[..., 0]
  h = boxes[..., 3] - boxes[..., 1]
  s = jnp.sqrt(jnp.maximum(w * h, 1e-12))
  lvl = jnp.floor(canonical_level + jnp.log2(s / canonical_size) + 1e-6)
  return jnp.clip(lvl, min_level, max_level).astype(jnp.int32)


def multilevel_roi_align(features: Sequence[jnp.ndarray], boxes: jnp.ndarray, output_size,
                         min_level: int = 2, sampling_ratio: int = 2, aligned: bool = False,
                         backend: str = "gather", forward_only: bool = False,
                         piece_mb: float = 0) -> jnp.ndarray:
  """RoIAlign over an FPN: each box pooled from its level (`assign_levels`); `backend`,
  `forward_only` and `piece_mb` as for `roi_align`.

  Args:
    features: per level [B, H_l, W_l, C], for levels min_level, min_level + 1, ...; level l has
      spatial scale 2 ** -l.
    boxes: [B, R, 4] in input pixels.

  Returns:
    [B, R, out_h, out_w, C].
  """
  for f in features:
    _check(f, boxes)
  out_h, out_w = _pair(output_size)
  max_level = min_level + len(features) - 1
  levels = assign_levels(boxes, min_level, max_level) - min_level  # [B, R]
  boxes = boxes.astype(jnp.float32)
  dtype = features[0].dtype
  if backend == "einsum":
    out = 0.0
    for i, f in enumerate(features):
      pooled = roi_align(f, boxes, (out_h, out_w), 2.0 ** -(min_level + i), sampling_ratio,
                         aligned, backend="einsum")
      out = out + jnp.where((levels == i)[..., None, None, None], pooled, 0)
    return out.astype(dtype)
  if backend != "gather":
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
  sizes = [(f.shape[1], f.shape[2]) for f in features]
  offsets, total = [], 0
  for h, w in sizes:
    offsets.append(total)
    total += h * w
  lvl_h = jnp.asarray([s[0] for s in sizes], jnp.float32)[levels]
  lvl_w = jnp.asarray([s[1] for s in sizes], jnp.float32)[levels]
  scale = jnp.asarray([2.0 ** -(min_level + i) for i in range(len(features))],
                      jnp.float32)[levels]
  offset = jnp.asarray(offsets, jnp.int32)[levels]
  x1, y1, bin_w, bin_h = _roi_geometry(boxes, scale, (out_h, out_w), aligned)
  iy, wy = _axis_samples(y1, bin_h, out_h, sampling_ratio, lvl_h)
  ix, wx = _axis_samples(x1, bin_w, out_w, sampling_ratio, lvl_w)
  flat = jnp.concatenate([f.reshape(f.shape[0], -1, f.shape[-1]) for f in features], axis=1)
  out = _combine_gather(flat, iy, wy.astype(dtype), ix, wx.astype(dtype),
                        lvl_w.astype(jnp.int32), offset, forward_only, piece_mb)
  return out.astype(dtype)
