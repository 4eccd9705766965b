"""Feature pyramid (torchvision / Detectron FPN): P2..P5 from C2..C5, P6 by max-pool of P5."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from match_rcnn_jax.models import layers


def upsample_nearest(x: jnp.ndarray, size: tuple[int, int]) -> jnp.ndarray:
  """Nearest resize of [B, h, w, C] to `size` with PyTorch's index rule floor(i * in / out)."""
  h, w = x.shape[1:3]
  ys = (jnp.arange(size[0]) * h) // size[0]
  xs = (jnp.arange(size[1]) * w) // size[1]
  return x[:, ys][:, :, xs]


class FPN(nn.Module):
  channels: int = 256
  extra_max_pool: bool = True  # P6 = max_pool(P5, kernel 1, stride 2)
  dtype: layers.Dtype = jnp.float32
  convs: layers.Convs = layers.XLA  # how its convs are computed

  @nn.compact
  def __call__(self, feats: Sequence[jnp.ndarray]) -> list[jnp.ndarray]:
    init = nn.initializers.kaiming_uniform()  # torchvision: kaiming_uniform_(a=1), bias 0
    inner = [self.convs(self.channels, 1, name=f"inner_{i}", dtype=self.dtype,
                         kernel_init=init) for i in range(len(feats))]
    outer = [self.convs(self.channels, 3, name=f"layer_{i}", dtype=self.dtype,
                         kernel_init=init) for i in range(len(feats))]
    last = inner[-1](feats[-1])
    results = [outer[-1](last)]
    for i in range(len(feats) - 2, -1, -1):
      lateral = inner[i](feats[i])
      last = lateral + upsample_nearest(last, lateral.shape[1:3])
      results.insert(0, outer[i](last))
    if self.extra_max_pool:
      results.append(results[-1][:, ::2, ::2])
    return results
