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


def matmul_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                dimension_numbers=None, feature_group_count=1, precision=None,
                preferred_element_type=None):
  """`lax.conv_general_dilated` (NHWC x HWIO, stride 1, symmetric padding) as im2col + one
  matmul. Same numbers; used for the heads inside `lax.cond` on the CPU, where XLA's own
  convolution gradient runs some 50x slower than outside control flow (benchmarks/RESULTS.md)."""
  kh, kw = rhs.shape[:2]
  simple = (tuple(window_strides) == (1, 1) and kh == kw and feature_group_count == 1
            and not any(d != 1 for d in (lhs_dilation or ()) + (rhs_dilation or ()))
            and all(tuple(p) == (kh // 2, kh // 2) for p in padding))
  if not simple:
    return jax.lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
        feature_group_count, precision=precision, preferred_element_type=preferred_element_type)
  return jnp.dot(patches(lhs, kh, kh // 2), rhs.reshape(-1, rhs.shape[-1]), precision=precision,
                 preferred_element_type=preferred_element_type)


def conv(features: int, kernel: int, stride: int = 1, use_bias: bool = True, name=None,
         dtype: Dtype = jnp.float32, kernel_init=None, matmul: bool = False) -> nn.Conv:
  """A conv with explicit symmetric padding; `matmul`: run as im2col + matmul
  (`matmul_conv`), same parameters and numbers."""
  pad = kernel // 2
  kwargs = {} if kernel_init is None else {"kernel_init": kernel_init}
  if matmul:
    kwargs["conv_general_dilated"] = matmul_conv
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
