"""Layer helpers shared by the modules: explicit-padding convs and normalisation choices.

Convolutions use explicit symmetric padding (k // 2 on each side), never 'SAME': for stride-2
convs 'SAME' pads (0, 1) and shifts every feature map against PyTorch-trained weights.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


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
  """`lax.conv_general_dilated` (NHWC x HWIO) as im2col + one matmul: stride-1 convs with
  symmetric padding, and unpadded 1 x 1 convs of any stride (a strided slice, then the matmul).
  Same numbers. Used on the CPU for the heads inside `lax.cond`, where XLA's own convolution
  gradient runs some 50x slower than outside control flow, and for every 1 x 1 conv, whose
  gradient XLA:CPU runs 2-6x slower as a convolution than as a matmul (benchmarks/RESULTS.md).
  Anything else falls through to `lax.conv_general_dilated`."""
  kh, kw = rhs.shape[:2]
  plain = _plain(lhs_dilation, rhs_dilation, feature_group_count)
  if (kh, kw) == (1, 1) and plain and all(tuple(p) == (0, 0) for p in padding):
    sh, sw = window_strides
    return jnp.dot(lhs[:, ::sh, ::sw, :], rhs.reshape(rhs.shape[-2:]), precision=precision,
                   preferred_element_type=preferred_element_type)
  if not (plain and _stride1_same(rhs, window_strides, padding)):
    return jax.lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
        feature_group_count, precision=precision, preferred_element_type=preferred_element_type)
  return jnp.dot(patches(lhs, kh, kh // 2), rhs.reshape(-1, rhs.shape[-1]), precision=precision,
                 preferred_element_type=preferred_element_type)


# XLA:CPU's kernel gradient of a stride-1 convolution slows down superlinearly past about 16k
# output pixels (N x H x W): 3x3, 256 -> 256 channels, on 2 x 128 x 128 pixels (the P2 level of
# a 512 x 512 pair, where the RPN head and the FPN output conv run) takes 1.11 s against 0.57 s
# as the shifted matmuls of `_shifted_conv` (benchmarks/RESULTS.md).
_SHIFTED_MIN_PIXELS = 16384
_SHIFTED_MIN_CHANNELS = 128


def _xla_conv(x, w, pad):
  return jax.lax.conv_general_dilated(x, w, (1, 1), ((pad, pad), (pad, pad)),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _shifted_conv(x, w, pad):
  """A stride-1 NHWC x HWIO convolution (XLA's) whose kernel gradient is one matmul per kernel
  tap, x shifted by the tap, transposed, times the output gradient: [C, NHW] x [NHW, O]."""
  return _xla_conv(x, w, pad)


def _shifted_conv_fwd(x, w, pad):
  return _xla_conv(x, w, pad), (x, w)


def _shifted_conv_bwd(pad, res, dy):
  x, w = res
  _, input_vjp = jax.vjp(lambda x: _xla_conv(x, w, pad), x)
  kh, kw, c, o = w.shape
  h, wd = dy.shape[1:3]
  xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  dy2 = dy.reshape(-1, o)
  taps = [xp[:, i:i + h, j:j + wd, :].reshape(-1, c).T @ dy2
          for i in range(kh) for j in range(kw)]
  return input_vjp(dy)[0], jnp.stack(taps).reshape(w.shape).astype(w.dtype)


_shifted_conv.defvjp(_shifted_conv_fwd, _shifted_conv_bwd)


def cpu_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
             dimension_numbers=None, feature_group_count=1, precision=None,
             preferred_element_type=None):
  """`lax.conv_general_dilated` for the CPU backend (NHWC x HWIO): 1 x 1 convs as a matmul
  (`matmul_conv`); stride-1 convs with symmetric padding over at least 16k output pixels and
  128 channels as `_shifted_conv` (same forward, faster kernel gradient); anything else as is.
  """
  kh, kw, c, o = rhs.shape
  if (kh, kw) == (1, 1):
    return matmul_conv(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                       dimension_numbers, feature_group_count, precision, preferred_element_type)
  pixels = lhs.shape[0] * lhs.shape[1] * lhs.shape[2]
  if (_plain(lhs_dilation, rhs_dilation, feature_group_count)
      and _stride1_same(rhs, window_strides, padding)
      and precision is None and preferred_element_type is None
      and pixels >= _SHIFTED_MIN_PIXELS and min(c, o) >= _SHIFTED_MIN_CHANNELS):
    return _shifted_conv(lhs, rhs, kh // 2)
  return jax.lax.conv_general_dilated(
      lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
      feature_group_count, precision=precision, preferred_element_type=preferred_element_type)


def conv(features: int, kernel: int, stride: int = 1, use_bias: bool = True, name=None,
         dtype: Dtype = jnp.float32, kernel_init=None, matmul: bool = False) -> nn.Conv:
  """A conv with explicit symmetric padding; `matmul`: run as im2col + matmul
  (`matmul_conv`), same parameters and numbers. On the CPU backend every other conv runs as
  `cpu_conv` (1 x 1 convs as a matmul: ResNet's bottlenecks are two thirds 1 x 1 convs)."""
  pad = kernel // 2
  kwargs = {} if kernel_init is None else {"kernel_init": kernel_init}
  if matmul:
    kwargs["conv_general_dilated"] = matmul_conv
  elif jax.default_backend() == "cpu":
    kwargs["conv_general_dilated"] = cpu_conv
  return nn.Conv(features, (kernel, kernel), (stride, stride), padding=((pad, pad), (pad, pad)),
                 use_bias=use_bias, dtype=dtype, name=name, **kwargs)


class FrozenBatchNorm(nn.Module):
  """BatchNorm with fixed statistics and affine terms (Detectron / torchvision FrozenBatchNorm2d).

  All four vectors live in the non-trainable `batch_stats` collection; y = x * a + b with
  a = scale / sqrt(var + eps), b = bias - mean * a.
  """

  eps: float = 1e-5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    scale = self.variable("batch_stats", "scale", lambda: jnp.ones(c, jnp.float32)).value
    bias = self.variable("batch_stats", "bias", lambda: jnp.zeros(c, jnp.float32)).value
    mean = self.variable("batch_stats", "mean", lambda: jnp.zeros(c, jnp.float32)).value
    var = self.variable("batch_stats", "var", lambda: jnp.ones(c, jnp.float32)).value
    a = scale / jnp.sqrt(var + self.eps)
    b = bias - mean * a
    return x * a.astype(self.dtype) + b.astype(self.dtype)


def norm_layer(kind: str, eps: float, dtype: Dtype, num_groups: int = 32):
  """A constructor for the backbone's normalisation: 'frozen_bn' or 'group_norm'."""
  if kind == "frozen_bn":
    return functools.partial(FrozenBatchNorm, eps=eps, dtype=dtype)
  if kind == "group_norm":
    return functools.partial(nn.GroupNorm, num_groups=num_groups, epsilon=eps, dtype=dtype)
  raise ValueError(f"norm must be 'frozen_bn' or 'group_norm', got {kind!r}")
