"""Anchor generation with torchvision's `AnchorGenerator` semantics.

Per level: base anchors for each (size, aspect ratio) with ratio = h / w, zero-centred and
rounded to integers, aspect-ratio major; shifted by multiples of the level's stride (anchor
centres at 0, stride, 2 * stride, ...). The flat order is (y, x, anchor), matching the RPN
head's NHWC outputs reshaped to [H * W * A].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def base_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float]) -> np.ndarray:
  """[len(sizes) * len(ratios), 4] float32 zero-centred anchors (ratio-major order)."""
  ratios = np.asarray(aspect_ratios, np.float32)
  scales = np.asarray(sizes, np.float32)
  h_ratios = np.sqrt(ratios)
  w_ratios = 1.0 / h_ratios
  ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
  hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
  return np.round(np.stack([-ws, -hs, ws, hs], axis=1) / 2).astype(np.float32)


def level_anchors(feature_size: tuple[int, int], stride: tuple[int, int],
                  sizes: Sequence[float], aspect_ratios: Sequence[float]) -> np.ndarray:
  """[H * W * A, 4] anchors of one feature level (computed once, on the host)."""
  h, w = feature_size
  sy, sx = stride
  base = base_anchors(sizes, aspect_ratios)
  ys = np.arange(h, dtype=np.float32) * sy
  xs = np.arange(w, dtype=np.float32) * sx
  yy, xx = np.meshgrid(ys, xs, indexing="ij")
  shifts = np.stack([xx, yy, xx, yy], axis=-1).reshape(-1, 1, 4)
  return (shifts + base[None]).reshape(-1, 4)


def multilevel_anchors(image_size: tuple[int, int], feature_sizes: Sequence[tuple[int, int]],
                       sizes: Sequence[Sequence[float]],
                       aspect_ratios: Sequence[Sequence[float]]) -> list[np.ndarray]:
  """Anchors of every level; the stride of a level is image size // feature size (as
  torchvision computes it)."""
  if not len(feature_sizes) == len(sizes) == len(aspect_ratios):
    raise ValueError("feature_sizes, sizes and aspect_ratios need one entry per level, got "
                     f"{len(feature_sizes)}, {len(sizes)}, {len(aspect_ratios)}")
  out = []
  for fs, s, r in zip(feature_sizes, sizes, aspect_ratios):
    stride = (image_size[0] // fs[0], image_size[1] // fs[1])
    out.append(level_anchors(fs, stride, s, r))
  return out
