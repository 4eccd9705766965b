"""The matching network (MN): per-RoI embedding and the similarity network.

Feature extractor (the DeepFashion2 maintainers' description): 3x3 conv 256, 256, 256, 1024
with ReLU, global average pool, ReLU, fc 1024 -> 256, BatchNorm. The same weights embed user and
shop items. Similarity: (v1 - v2)^2 -> fc 256 -> 2 logits (index 1 = same product).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from match_rcnn_jax.models import layers


class MatchEmbedding(nn.Module):
  channels: tuple[int, ...] = (256, 256, 256, 1024)
  dim: int = 256
  bn_momentum: float = 0.9
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    """x [..., S, S, C] RoI features -> embeddings [..., dim] float32.

    In training the BatchNorm uses the statistics of all the embeddings given, i.e. of the
    global batch when called under a sharded jit.
    """
    lead = x.shape[:-3]
    x = x.reshape(-1, *x.shape[-3:])
    for i, c in enumerate(self.channels):
      x = nn.relu(layers.conv(c, 3, name=f"conv{i + 1}", dtype=self.dtype)(x))
    x = nn.relu(jnp.mean(x.astype(jnp.float32), axis=(1, 2)))
    x = nn.Dense(self.dim, name="fc")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, name="bn")(x)
    return x.reshape(*lead, self.dim)


class Similarity(nn.Module):
  """Match logits [..., 2] of embedding pairs; index 1 = same product."""

  @nn.compact
  def __call__(self, v1, v2):
    return nn.Dense(2, name="fc")((v1 - v2) ** 2)
