"""The matching network (MN): per-RoI embedding and the similarity network.

Feature extractor (the DeepFashion2 maintainers' description): 3x3 conv 256, 256, 256, 1024
with ReLU, global average pool, ReLU, fc 1024 -> 256, BatchNorm. The same weights embed user and
shop items. Its input is the RoI features of one or more PN streams (`FEATURE_STREAMS`).

Similarity: (v1 - v2)^2 -> fc -> 2-way softmax (index 1 = same product). A softmax over two
logits depends on their difference only, d = w . (v1 - v2)^2 + b (w, b: the differences of the
fc layer's two output rows), so the layer is held as that difference: logits [0, d], the same
function as the paper's 2-output fc. Its weight is parameterised as w = -softplus(u): never
positive, so along no dimension can being *more different* score as *more similar*
(unconstrained, half of w's dimensions had the wrong sign after training and the ranking
barely depended on the query). `pairwise_logits` scores every pair of two sets at matmul speed
with exactly these numbers; training and retrieval both rank with it.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from match_rcnn_jax.models import layers

# MN input streams, and the paper's names for them (its retrieval table: "class", "pose",
# "mask", "pose+class", "mask+class"): the box stream's 7 x 7 RoI features, the landmark
# stream's conv features and the mask stream's conv features (14 x 14, average-pooled to 7 x 7).
# Not in the paper: "image", the RoI of the input image itself, 7 x 7 x 3 normalised pixels
# (the garment's colours and coarse layout); "crop", the RoI of the input image at
# `match_head.crop_size` (a multiple of 7, >= 28) through its own learned convs (`CropStream`)
# down to 7 x 7: the print's motif and scale, which 7 x 7 RoI features of a detection backbone
# blur away.
FEATURE_STREAMS = {"box": "class", "landmark": "pose", "mask": "mask", "image": "image",
                   "crop": "crop"}


def parse_features(spec: str) -> tuple[str, ...]:
  """'landmark+box' -> ('landmark', 'box'); raises ValueError for unknown streams."""
  streams = tuple(s.strip() for s in str(spec).split("+"))
  bad = [s for s in streams if s not in FEATURE_STREAMS]
  if bad or not streams or len(set(streams)) != len(streams):
    raise ValueError(f"match_head.features must be streams of {sorted(FEATURE_STREAMS)} joined "
                     f"by '+', each once (e.g. 'landmark+box'), got {spec!r}")
  return streams


class CropStream(nn.Module):
  """The "crop" stream: RoI pixels [N, S, S, 3] (S = 7 * 2^k) -> [N, 7, 7, channels[-1]]:
  `channels` has one width per size from S down to 7. With `convs_per_size` 1, a 3 x 3 conv at
  S, then one stride-2 3 x 3 conv per halving; with 2, two 3 x 3 convs at each size and a
  2 x 2 max-pool between sizes. Each conv has GroupNorm and ReLU. Learned from the pixels with
  the MN's loss only."""

  channels: tuple[int, ...] = (32, 64, 64)
  convs_per_size: int = 1
  dtype: layers.Dtype = jnp.float32
  convs: layers.Convs = layers.XLA  # how its convs are computed

  @nn.compact
  def __call__(self, x):
    size = x.shape[-2]
    halvings = 0
    while size > 7 and size % 2 == 0:
      size //= 2
      halvings += 1
    if size != 7:
      raise ValueError(f"match_head.crop_size must be 7 * 2^k, got {x.shape[-2]}")
    if len(self.channels) != halvings + 1:
      raise ValueError(f"match_head.crop_channels needs {halvings + 1} entries for crop size "
                       f"{x.shape[-2]} (one width per size, {x.shape[-2]} down to 7), got "
                       f"{tuple(self.channels)}")
    if self.convs_per_size not in (1, 2):
      raise ValueError(f"match_head.crop_convs_per_size must be 1 or 2, got "
                       f"{self.convs_per_size}")
    norm = lambda c, name: nn.GroupNorm(num_groups=math.gcd(8, c), name=name)  # noqa: E731
    for i, c in enumerate(self.channels):
      if self.convs_per_size == 1:
        x = self.convs(c, 3, stride=1 if i == 0 else 2, name=f"conv{i + 1}", dtype=self.dtype)(x)
        x = nn.relu(norm(c, f"gn{i + 1}")(x))
        continue
      if i:
        x = nn.max_pool(x, (2, 2), (2, 2))
      for j in (1, 2):
        x = self.convs(c, 3, name=f"conv{i + 1}_{j}", dtype=self.dtype)(x)
        x = nn.relu(norm(c, f"gn{i + 1}_{j}")(x))
    return x


class MatchEmbedding(nn.Module):
  channels: tuple[int, ...] = (256, 256, 256, 1024)
  dim: int = 256
  norm: str = "batch"  # the embedding's normalisation: "batch" (BatchNorm) or "l2"
  bn_momentum: float = 0.9
  dtype: layers.Dtype = jnp.float32
  convs: layers.Convs = layers.XLA  # how its convs are computed

  @nn.compact
  def __call__(self, x, train: bool = False, mask=None):
    """x [..., S, S, C] RoI features -> embeddings [..., dim] float32.

    In training the BatchNorm uses the statistics of the embeddings where `mask` ([...] bool,
    default all) is set: the real garments of the global batch when called under a sharded
    jit, never its padding rows. (With no row set, all rows are used.)
    """
    lead = x.shape[:-3]
    x = x.reshape(-1, *x.shape[-3:])
    for i, c in enumerate(self.channels):
      x = nn.relu(self.convs(c, 3, name=f"conv{i + 1}", dtype=self.dtype)(x))
    x = nn.relu(jnp.mean(x.astype(jnp.float32), axis=(1, 2)))
    x = nn.Dense(self.dim, name="fc")(x)
    if self.norm == "l2":  # each embedding on its own: length sqrt(D), unit RMS per dimension
      x = x * jax.lax.rsqrt(jnp.sum(x * x, -1, keepdims=True) / self.dim + 1e-12)
      return x.reshape(*lead, self.dim)
    if self.norm != "batch":
      raise ValueError(f"match_head.norm must be 'batch' or 'l2', got {self.norm!r}")
    bn_mask = None
    if mask is not None:
      rows = mask.reshape(-1)
      rows = rows | ~rows.any()
      bn_mask = jnp.broadcast_to(rows[:, None], x.shape)
    x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, name="bn")(
        x, mask=bn_mask)
    return x.reshape(*lead, self.dim)


def effective_weights(params) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(w [D], b []) of d = w . (v1 - v2)^2 + b from the Similarity module's parameters
  ({'weight': [D], 'bias': []}, w = -softplus(weight))."""
  return -jax.nn.softplus(jnp.asarray(params["weight"], jnp.float32)), jnp.asarray(
      params["bias"], jnp.float32)


def pairwise_logits(v1, v2, w, b):
  """d [A, B] = w . (v1[a] - v2[b])^2 + b for every row of v1 [A, D] and v2 [B, D], expanded as
  w . v1^2 + w . v2^2 - 2 (w * v1) . v2 + b: one matrix product and two vectors, exact up to
  float rounding (highest matmul precision)."""
  v1 = jnp.asarray(v1, jnp.float32)
  v2 = jnp.asarray(v2, jnp.float32)
  hi = jax.lax.Precision.HIGHEST
  aa = jnp.dot(v1 * v1, w, precision=hi)
  bb = jnp.dot(v2 * v2, w, precision=hi)
  cross = jnp.dot(v1 * w, v2.T, precision=hi)
  return aa[:, None] + bb[None, :] - 2.0 * cross + b


class Similarity(nn.Module):
  """The similarity network on embedding pairs of `dim` (see the module docstring)."""

  dim: int = 256

  # The initial logit scale: w = -INIT_SCALE / D and b = INIT_SCALE, so d = INIT_SCALE for
  # equal embeddings and about -INIT_SCALE for unrelated ones of unit variance (BatchNorm's
  # output: (v1 - v2)^2 is 2 per dimension on average). Adam moves b by about the learning rate
  # per step, and w by that fraction of itself (softplus is exponential there), so neither can
  # grow much in a short run: at 1 / D and 1 the logits spanned about [-1, 1], and the positive
  # pairs' cross-entropy could not fall below log(1 + e^-1) = 0.31.
  INIT_SCALE = 4.0

  def setup(self):
    raw = float(np.log(np.expm1(self.INIT_SCALE / self.dim)))
    self.weight = self.param("weight", nn.initializers.constant(raw), (self.dim,))
    self.bias = self.param("bias", nn.initializers.constant(self.INIT_SCALE), ())

  def __call__(self, v1, v2):
    """Match logits [..., 2] of the pairs (v1 [..., D], v2 [..., D]); index 1 = same product."""
    w, b = effective_weights({"weight": self.weight, "bias": self.bias})
    d = jnp.dot((v1 - v2) ** 2, w) + b
    return jnp.stack([jnp.zeros_like(d), d], axis=-1)

  def pairwise(self, v1, v2):
    """The 'same product' logit difference d [A, B] of every v1 [A, D] against every v2 [B, D]
    (`pairwise_logits`); softmax([0, d])[1] = sigmoid(d) is the match probability."""
    w, b = effective_weights({"weight": self.weight, "bias": self.bias})
    return pairwise_logits(v1, v2, w, b)
