"""Convolutions as matmuls, for XLA:CPU: what `models.layers.CPU` and `layers.CPU_IN_LOOPS`
compute convolutions with (`config.model.implementation.conv: cpu`).

XLA:CPU runs the gradient of a 1 x 1 convolution slower as a convolution than as a matmul, and
any convolution gradient inside control flow (the heads' chunk loops) far slower than outside.
These give the numbers of `lax.conv_general_dilated` (up to
float rounding) with matmuls and additions only:

- `cpu_conv`: 1 x 1 convs as one matmul; 3 x 3 stride-1 pad-1 convs over at least 1k output
  pixels and 128 channels as `winograd_conv`; anything else XLA's own convolution.
- `matmul_conv`: `cpu_conv`, and every other stride-1 conv with symmetric padding as
  im2col (`patches`) + one matmul: no XLA convolution at all, for use inside control flow.

Nothing here asks which backend runs: the model picks its convolutions once, when it is built
(`match_rcnn_jax.backend.resolve`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def patches(x, size: int, pad: int):
  """Stride-1 im2col by shifted slices: x [N, H, W, C] -> [N, H', W', size * size * C], the
  last axis ordered (kh, kw, C) as an HWIO kernel reshaped to [kh * kw * C, O]. Its gradient
  is slices and pads (no convolution)."""
  x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  h, w = x.shape[1] - size + 1, x.shape[2] - size + 1
  return jnp.concatenate([x[:, i:i + h, j:j + w, :] for i in range(size) for j in range(size)],
                         axis=-1)


def _plain(lhs_dilation, rhs_dilation, feature_group_count) -> bool:
  """No dilation, no feature groups."""
  return (feature_group_count == 1
          and not any(d != 1 for d in (lhs_dilation or ()) + (rhs_dilation or ())))


def _stride1_same(rhs, window_strides, padding) -> bool:
  """A square kernel, stride 1 and k // 2 padding on every side."""
  kh, kw = rhs.shape[:2]
  return (tuple(window_strides) == (1, 1) and kh == kw
          and all(tuple(p) == (kh // 2, kh // 2) for p in padding))


def matmul_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                dimension_numbers=None, feature_group_count=1, precision=None,
                preferred_element_type=None):
  """`lax.conv_general_dilated` (NHWC x HWIO) as matmuls: unpadded 1 x 1 convs of any stride
  (a strided slice, then one matmul), 3 x 3 stride-1 pad-1 convs over at least 1k output
  pixels and 128 channels as `winograd_conv`, other stride-1 convs with symmetric padding as
  im2col + one matmul. Same numbers up to float rounding. Used on the CPU for the heads inside
  control flow, where XLA's own convolution gradient runs far slower than outside, and for
  every 1 x 1 conv, whose gradient XLA:CPU runs slower as a convolution than as a matmul.
  Anything else falls through to `lax.conv_general_dilated`."""
  kh, kw = rhs.shape[:2]
  plain = _plain(lhs_dilation, rhs_dilation, feature_group_count)
  if (kh, kw) == (1, 1) and plain and all(tuple(p) == (0, 0) for p in padding):
    sh, sw = window_strides
    return jnp.dot(lhs[:, ::sh, ::sw, :], rhs.reshape(rhs.shape[-2:]), precision=precision,
                   preferred_element_type=preferred_element_type)
  if _winograd_pays(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                    feature_group_count, precision, preferred_element_type):
    return winograd_conv(lhs, rhs)
  if not (plain and _stride1_same(rhs, window_strides, padding)):
    return jax.lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
        feature_group_count, precision=precision, preferred_element_type=preferred_element_type)
  return jnp.dot(patches(lhs, kh, kh // 2), rhs.reshape(-1, rhs.shape[-1]), precision=precision,
                 preferred_element_type=preferred_element_type)


# Winograd F(2 x 2, 3 x 3) (Lavin and Gray, 2016): each 2 x 2 output tile of a 3 x 3, stride-1,
# pad-1 convolution is A^T [(G g G^T) * (B^T d B)] A over the 4 x 4 input tile d around it, so the
# convolution becomes 16 matmuls [tiles, C] x [C, O], one per point of the transformed tile:
# 16 / (9 x 4) = 0.44 of the direct multiply-adds. The transforms are additions on whole feature
# maps. The 1-D transforms below act on lists of equally shaped arrays.


def _bt(v):  # B^T: 4 -> 4, input tiles
  return [v[0] - v[2], v[1] + v[2], v[2] - v[1], v[1] - v[3]]


def _b(u):  # its adjoint
  return [u[0], u[1] - u[2] + u[3], u[1] + u[2] - u[0], -u[3]]


# G (4 x 3), the kernel transform, along both axes at once: G g G^T of every (in, out) pair is
# one [16, 9] x [9, in * out] product (a pass over the kernel: twice as fast as 2-D lists of
# [in, out] slices); its adjoint is the transposed product.
_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32)
_GG = np.kron(_G, _G)  # [16, 9]: (p, q) x (i, j), row-major


def _at(v):  # A^T: 4 -> 2, output tiles
  return [v[0] + v[1] + v[2], v[1] - v[2] - v[3]]


def _a(u):  # its adjoint
  return [u[0], u[0] + u[1], u[0] - u[1], -u[1]]


def _both_axes(f, grid):
  """A 1-D transform `f` applied along both axes of a 2-D list of arrays."""
  cols = [f([row[j] for row in grid]) for j in range(len(grid[0]))]  # cols[j][p]
  return [f([col[p] for col in cols]) for p in range(len(cols[0]))]


def _input_tiles(x):
  """x [N, H, W, C] (H, W even) -> d[a][b] [N, H / 2, W / 2, C]: element (a, b) of the 4 x 4
  input tile of every 2 x 2 output tile, from the map padded by 1 (no gather: a reshape into
  row and column parities, then slices)."""
  n, h, w, c = x.shape
  th, tw = h // 2, w // 2
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))).reshape(n, th + 1, 2, tw + 1, 2, c)
  return [[xp[:, a // 2:a // 2 + th, a % 2, b // 2:b // 2 + tw, b % 2] for b in range(4)]
          for a in range(4)]


def _input_tiles_adjoint(d, shape):
  """The adjoint of `_input_tiles`: overlapping tiles d[a][b] summed back into [N, H, W, C]."""
  n, h, w, c = shape
  parity = [[0, 0], [0, 0]]
  for a in range(4):
    for b in range(4):
      parity[a % 2][b % 2] += jnp.pad(
          d[a][b], ((0, 0), (a // 2, 1 - a // 2), (b // 2, 1 - b // 2), (0, 0)))
  y = jnp.stack([jnp.stack(row, 3) for row in parity], 2)  # [N, H / 2 + 1, 2, W / 2 + 1, 2, C]
  return y.reshape(n, h + 2, w + 2, c)[:, 1:-1, 1:-1]


def _flat16(grid, c):
  return jnp.stack([grid[p][q].reshape(-1, c) for p in range(4) for q in range(4)])


def _grid16(m, shape):
  return [[m[4 * p + q].reshape(shape) for q in range(4)] for p in range(4)]


def _winograd_input(x):
  return _flat16(_both_axes(_bt, _input_tiles(x)), x.shape[-1])  # [16, tiles, C]


def _winograd_kernel(w):
  """w [3, 3, C, O] -> G w G^T [16, C, O]."""
  return (_GG.astype(w.dtype) @ w.reshape(9, -1)).reshape(16, *w.shape[2:])


def _matmuls16(a, b, transpose_b: bool = False):
  """a[i] @ b[i] (or b[i]^T) for the 16 points: XLA:CPU runs 16 dots faster than one batched
  dot_general; the transposed product reads b as it is (no transposed copy)."""
  dims = (((1,), (1 if transpose_b else 0,)), ((), ()))
  return jnp.stack([jax.lax.dot_general(a[i], b[i], dims) for i in range(16)])


@jax.custom_vjp
def _winograd(x, w):
  n, h, wd, _ = x.shape
  o = w.shape[-1]
  m = _matmuls16(_winograd_input(x), _winograd_kernel(w))  # [16, tiles, O]
  y = _both_axes(_at, _grid16(m, (n, h // 2, wd // 2, o)))  # y[r][s] [N, H / 2, W / 2, O]
  return jnp.stack([jnp.stack(row, 3) for row in y], 2).reshape(n, h, wd, o)


def _winograd_fwd(x, w):
  return _winograd(x, w), (x, w)


def _winograd_bwd(res, dy):
  """Both gradients through the same transforms: the output gradient's tiles to the Winograd
  domain (A), 16 matmuls each for the input and kernel gradients, then back (B, G^T)."""
  x, w = res
  n, h, wd, c = x.shape
  o = w.shape[-1]
  th, tw = h // 2, wd // 2
  dy = dy.reshape(n, th, 2, tw, 2, o)
  dm = _flat16(_both_axes(_a, [[dy[:, :, r, :, s] for s in range(2)] for r in range(2)]), o)
  dv = _matmuls16(dm, _winograd_kernel(w), transpose_b=True)  # [16, tiles, C]
  v = _winograd_input(x)
  du = jnp.stack([v[i].T @ dm[i] for i in range(16)])  # [16, C, O]
  dx = _input_tiles_adjoint(_both_axes(_b, _grid16(dv, (n, th, tw, c))), x.shape)
  dw = _GG.T.astype(du.dtype) @ du.reshape(16, -1)  # G^T du G: [9, C * O]
  return dx, dw.reshape(w.shape).astype(w.dtype)


_winograd.defvjp(_winograd_fwd, _winograd_bwd)


def winograd_conv(x, w):
  """A 3 x 3, stride-1, pad-1 convolution, NHWC x HWIO, as Winograd F(2 x 2, 3 x 3), with
  gradients through the same transforms (a custom VJP): matmuls and additions only, so it runs
  as fast inside `lax.cond` as outside, where XLA:CPU's own convolution gradient is far
  slower. The same numbers as `lax.conv_general_dilated` up to float rounding (about 1e-6
  relative in float32). Odd sizes are padded by a zero row / column and cropped."""
  h, wd = x.shape[1:3]
  if h % 2 or wd % 2:
    x = jnp.pad(x, ((0, 0), (0, h % 2), (0, wd % 2), (0, 0)))
  return _winograd(x, w)[:, :h, :wd]


# Below about 1k output pixels or 128 channels, XLA:CPU's own 3 x 3 convolution (or im2col
# inside control flow) is as fast, and compiles to far fewer ops.
_WINOGRAD_MIN_PIXELS = 1024
_WINOGRAD_MIN_CHANNELS = 128


def _winograd_pays(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                   feature_group_count, precision, preferred_element_type) -> bool:
  """A 3 x 3, stride-1, pad-1 plain convolution over at least 1k output pixels and 128
  channels in and out."""
  pixels = lhs.shape[0] * lhs.shape[1] * lhs.shape[2]
  return (rhs.shape[:2] == (3, 3) and _plain(lhs_dilation, rhs_dilation, feature_group_count)
          and _stride1_same(rhs, window_strides, padding)
          and precision is None and preferred_element_type is None
          and pixels >= _WINOGRAD_MIN_PIXELS and min(rhs.shape[2:]) >= _WINOGRAD_MIN_CHANNELS)


def cpu_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
             dimension_numbers=None, feature_group_count=1, precision=None,
             preferred_element_type=None):
  """`lax.conv_general_dilated` for the CPU backend (NHWC x HWIO): 1 x 1 convs as a matmul
  (`matmul_conv`); 3 x 3, stride-1, pad-1 convs over at least 1k output pixels and 128
  channels as `winograd_conv`; anything else as is."""
  kh, kw = rhs.shape[:2]
  if (kh, kw) == (1, 1):
    return matmul_conv(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                       dimension_numbers, feature_group_count, precision, preferred_element_type)
  if _winograd_pays(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                    feature_group_count, precision, preferred_element_type):
    return winograd_conv(lhs, rhs)
  return jax.lax.conv_general_dilated(
      lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
      feature_group_count, precision=precision, preferred_element_type=preferred_element_type)
