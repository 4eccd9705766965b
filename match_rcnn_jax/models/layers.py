"""Layer helpers shared by the modules: explicit-padding convs (their implementation an explicit
argument) and normalisation choices.

Convolutions use explicit symmetric padding (k // 2 on each side), never 'SAME': for stride-2
convs 'SAME' pads (0, 1) and shifts every feature map against PyTorch-trained weights.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from match_rcnn_jax.ops import cpu_conv

Dtype = Any


# config.model.kernels.conv values -> the `conv_general_dilated` of flax's nn.Conv (None:
# XLA's own). "matmul" is what the CPU's heads use inside control flow.
CONV_IMPLS = {"xla": None, "cpu": cpu_conv.cpu_conv, "matmul": cpu_conv.matmul_conv}


def conv(features: int, kernel: int, stride: int = 1, use_bias: bool = True, name=None,
         dtype: Dtype = jnp.float32, kernel_init=None, impl: str = "xla") -> nn.Conv:
  """A conv with explicit symmetric padding, run as `impl` says (`CONV_IMPLS`: "xla", or the
  CPU's matmul forms "cpu" / "matmul" of `ops.cpu_conv`): same parameters and numbers."""
  if impl not in CONV_IMPLS:
    raise ValueError(f"conv impl must be one of {sorted(CONV_IMPLS)}, got {impl!r}")
  pad = kernel // 2
  kwargs = {} if kernel_init is None else {"kernel_init": kernel_init}
  if CONV_IMPLS[impl] is not None:
    kwargs["conv_general_dilated"] = CONV_IMPLS[impl]
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
