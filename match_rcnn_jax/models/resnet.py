"""ResNet backbones (torchvision's v1.5: the stride sits on the 3x3 conv) returning C2..C5.

Depths 18 / 34 (basic blocks) and 50 / 101 (bottlenecks), plus a `tiny` preset for tests.
Submodule names follow torchvision's state_dict (`conv1`, `bn1`, `layer1_0/conv1`, ...) so
imported weights map one to one.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from match_rcnn_jax.models import layers

# depth -> (block, blocks per stage)
DEPTHS = {"18": ("basic", (2, 2, 2, 2)), "34": ("basic", (3, 4, 6, 3)),
          "50": ("bottleneck", (3, 4, 6, 3)), "101": ("bottleneck", (3, 4, 23, 3)),
          "tiny": ("bottleneck", (1, 1, 1, 1))}


class Bottleneck(nn.Module):
  width: int
  stride: int
  norm: callable
  dtype: layers.Dtype = jnp.float32
  expansion: int = 4
  convs: layers.Convs = layers.XLA  # how its convs are computed

  @nn.compact
  def __call__(self, x):
    out_c = self.width * self.expansion
    y = self.convs(self.width, 1, use_bias=False, name="conv1", dtype=self.dtype)(x)
    y = nn.relu(self.norm(name="bn1")(y))
    y = self.convs(self.width, 3, self.stride, use_bias=False, name="conv2", dtype=self.dtype)(y)
    y = nn.relu(self.norm(name="bn2")(y))
    y = self.convs(out_c, 1, use_bias=False, name="conv3", dtype=self.dtype)(y)
    y = self.norm(name="bn3")(y)
    if self.stride != 1 or x.shape[-1] != out_c:
      x = self.convs(out_c, 1, self.stride, use_bias=False, name="downsample_conv",
                      dtype=self.dtype)(x)
      x = self.norm(name="downsample_bn")(x)
    return nn.relu(x + y)


class BasicBlock(nn.Module):
  width: int
  stride: int
  norm: callable
  dtype: layers.Dtype = jnp.float32
  expansion: int = 1
  convs: layers.Convs = layers.XLA  # how its convs are computed

  @nn.compact
  def __call__(self, x):
    y = self.convs(self.width, 3, self.stride, use_bias=False, name="conv1", dtype=self.dtype)(x)
    y = nn.relu(self.norm(name="bn1")(y))
    y = self.convs(self.width, 3, use_bias=False, name="conv2", dtype=self.dtype)(y)
    y = self.norm(name="bn2")(y)
    if self.stride != 1 or x.shape[-1] != self.width:
      x = self.convs(self.width, 1, self.stride, use_bias=False, name="downsample_conv",
                      dtype=self.dtype)(x)
      x = self.norm(name="downsample_bn")(x)
    return nn.relu(x + y)


class ResNet(nn.Module):
  """Returns [C2, C3, C4, C5] (strides 4, 8, 16, 32)."""

  depth: int | str = 50
  width: int = 64  # stem / first-stage width (torchvision: 64)
  norm: str = "frozen_bn"
  norm_eps: float = 1e-5
  dtype: layers.Dtype = jnp.float32
  convs: layers.Convs = layers.XLA  # how its convs are computed

  @nn.compact
  def __call__(self, x) -> Sequence[jnp.ndarray]:
    if str(self.depth) not in DEPTHS:
      raise ValueError(f"depth must be one of {list(DEPTHS)}, got {self.depth!r}")
    kind, blocks = DEPTHS[str(self.depth)]
    block = Bottleneck if kind == "bottleneck" else BasicBlock
    norm = layers.norm_layer(self.norm, self.norm_eps, self.dtype)
    x = x.astype(self.dtype)
    x = self.convs(self.width, 7, 2, use_bias=False, name="conv1", dtype=self.dtype)(x)
    x = nn.relu(norm(name="bn1")(x))
    x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    outs = []
    for stage, n in enumerate(blocks):
      for i in range(n):
        stride = 2 if (stage > 0 and i == 0) else 1
        x = block(self.width * 2 ** stage, stride, norm, self.dtype,
                  convs=self.convs, name=f"layer{stage + 1}_{i}")(x)
      outs.append(x)
    return outs
