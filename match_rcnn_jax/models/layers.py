"""Layer helpers shared by the modules: how convolutions are computed (`Convs`, injected into
the modules) and normalisation choices.

Convolutions use explicit symmetric padding (k // 2 on each side), never 'SAME': for stride-2
convs 'SAME' pads (0, 1) and shifts every feature map against PyTorch-trained weights.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from match_rcnn_jax.ops import cpu_conv

Dtype = Any


def xla_patches(x, size: int, pad: int):
  """Stride-1 im2col by XLA's own op: x [N, H, W, C] -> [N, H', W', C * size * size], the last
  axis ordered (C, kh, kw)."""
  return jax.lax.conv_general_dilated_patches(x, (size, size), (1, 1), ((pad, pad), (pad, pad)),
                                              dimension_numbers=("NHWC", "HWIO", "NHWC"))


@dataclasses.dataclass(frozen=True)
class Convs:
  """How the model's convolutions are computed, injected into every module that has convs
  (as flax's ResNet example takes `conv: ModuleDef`) and chosen once, when the model is built
  (`models.match_rcnn.build`). Whichever is chosen, the parameters and the numbers are the
  same (up to float rounding).

  `general`: a function with the signature of `jax.lax.conv_general_dilated` (NHWC x HWIO);
  `patches(x, size, pad)`: stride-1 im2col, its last axis ordered (kh, kw, C) when
  `patches_tap_major`, else (C, kh, kw); `deconv_general`: the convolution of the heads'
  deconvolutions (a stride-1 conv of their phase kernel, `heads.Deconv2x`).
  """

  general: Callable = jax.lax.conv_general_dilated
  patches: Callable = xla_patches
  patches_tap_major: bool = False
  deconv_general: Callable = jax.lax.conv_general_dilated

  def __call__(self, features: int, kernel: int, stride: int = 1, use_bias: bool = True,
               name=None, dtype: Dtype = jnp.float32, kernel_init=None) -> nn.Conv:
    """A conv with explicit symmetric padding (k // 2 on each side), computed by `general`."""
    pad = kernel // 2
    kwargs = {} if kernel_init is None else {"kernel_init": kernel_init}
    if self.general is not jax.lax.conv_general_dilated:
      kwargs["conv_general_dilated"] = self.general
    return nn.Conv(features, (kernel, kernel), (stride, stride), padding=((pad, pad), (pad, pad)),
                   use_bias=use_bias, dtype=dtype, name=name, **kwargs)


# XLA's own convolutions: the accelerators' choice, and every module's default.
XLA = Convs()
# XLA:CPU's: 1 x 1 convs as matmuls, large 3 x 3 convs as Winograd matmuls (`ops.cpu_conv`);
# im2col by shifted slices (XLA:CPU runs XLA's patches op as a convolution with an identity
# kernel, slower than the per-sample product that follows it in `heads.Deconv2x`).
# Its deconvolutions XLA's (as fast on the CPU, outside control flow, at the heads' sizes).
CPU = Convs(cpu_conv.cpu_conv, cpu_conv.patches, True)
# XLA:CPU's inside control flow (the training heads' chunk loops): no XLA convolution at all.
CPU_IN_LOOPS = Convs(cpu_conv.matmul_conv, cpu_conv.patches, True, cpu_conv.matmul_conv)
# config.model.implementation.conv -> (the convs, the convs inside the heads' chunk loops).
CONVS = {"xla": (XLA, XLA), "cpu": (CPU, CPU_IN_LOOPS)}


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
