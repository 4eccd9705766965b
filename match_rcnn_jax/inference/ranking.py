"""Exact match-network ranking at matmul speed.

The similarity network's preference for "same product" over "different" is
d = w . (v1 - v2)^2 + b (`models.matching`: the difference of its two output logits, with
w <= 0), and the match probability is sigmoid(d). Expanding the square, d = w . v1^2 + w . v2^2
- 2 (w * v1) . v2 + b: scoring every query against every gallery item is one matrix product plus
two vectors, exactly (no approximation), the same function that scores the training batch's
pairs (`models.matching.pairwise_logits`). `rank` does this in jitted blocks of queries against
a padded gallery and keeps the top k of each query. The evaluation, the retrieval index and the
retrieval CLI rank with it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from match_rcnn_jax.models import matching

NUM_RANKED = 20  # gallery entries per query in a result record


def similarity_vector(similarity_params) -> tuple[np.ndarray, float]:
  """(w [D], b) of the match logit d = w . (v1 - v2)^2 + b from the Similarity module's
  parameters (`models.matching.effective_weights`: w = -softplus(weight) <= 0)."""
  w, b = matching.effective_weights(similarity_params)
  return np.asarray(w, np.float32), float(b)


def pairwise_logits(queries, gallery, w, b):
  """Match logits [Q, G] of every query [Q, D] against every gallery item [G, D]: the network's
  own `models.matching.pairwise_logits`."""
  return matching.pairwise_logits(queries, gallery, jnp.asarray(w, jnp.float32), b)


# Added to the logit of a gallery item of another category than the query's when ranking
# within the category first: below every same-category item, in their own order after them.
OTHER_CATEGORY = -1e4


@functools.partial(jax.jit, static_argnames=("k",))
def _block_top_k(queries, gallery, gallery_valid, w, b, query_classes, gallery_classes, k: int):
  logits = pairwise_logits(queries, gallery, w, b)
  logits += jnp.where(query_classes[:, None] == gallery_classes[None, :], 0.0, OTHER_CATEGORY)
  logits = jnp.where(gallery_valid[None, :], logits, -jnp.inf)
  return jax.lax.top_k(logits, k)


def rank(queries: np.ndarray, gallery: np.ndarray, w, b, k: int = NUM_RANKED,
         block: int | None = None, progress=None, block_mb: float = 256,
         query_classes=None, gallery_classes=None) -> tuple[np.ndarray, np.ndarray]:
  """Top-k gallery indices [Q, k] and match logits [Q, k] of each query (best first); with
  `query_classes` [Q] and `gallery_classes` [G], the gallery items of the query's category
  first (their logits unchanged, the others' lowered by 10^4).

  Queries go through one compiled function in blocks of `block` (the last one padded; by
  default 1024, fewer where a block's logits against the gallery would pass `block_mb` MB:
  memory stays linear in the query and gallery counts); the gallery is padded to a multiple
  of 1024 so nearby gallery sizes share a compilation. Entries past the gallery size (k > G)
  have index -1 and logit -inf.
  """
  queries = np.asarray(queries, np.float32)
  gallery = np.asarray(gallery, np.float32)
  n_q, n_g = len(queries), len(gallery)
  dim = gallery.shape[1] if gallery.ndim == 2 else queries.shape[1]
  g_pad = max(1024, -(-n_g // 1024) * 1024)
  gal = np.zeros((g_pad, dim), np.float32)
  gal[:n_g] = gallery
  valid = np.arange(g_pad) < n_g
  kk = min(k, g_pad)
  if block is None:
    block = max(1, min(1024, int(block_mb * 2**20) // (4 * g_pad)))
  block = max(1, min(block, max(n_q, 1)))
  idx_out = np.full((n_q, k), -1, np.int64)
  val_out = np.full((n_q, k), -np.inf, np.float32)
  gal_d, valid_d = jnp.asarray(gal), jnp.asarray(valid)
  w = jnp.asarray(w, jnp.float32)
  by_class = query_classes is not None and gallery_classes is not None
  q_cls = np.zeros(n_q, np.int32) if not by_class else np.asarray(query_classes, np.int32)
  g_cls = np.zeros(g_pad, np.int32)
  if by_class:
    g_cls[:n_g] = np.asarray(gallery_classes, np.int32)
  g_cls = jnp.asarray(g_cls)
  for start in range(0, n_q, block):
    chunk = queries[start:start + block]
    cls = q_cls[start:start + block]
    n = len(chunk)
    if n < block:
      chunk = np.concatenate([chunk, np.zeros((block - n, dim), np.float32)])
      cls = np.concatenate([cls, np.zeros(block - n, np.int32)])
    vals, idx = jax.device_get(_block_top_k(chunk, gal_d, valid_d, w, b, cls, g_cls, kk))
    vals, idx = vals[:n], idx[:n]
    found = min(kk, n_g)
    idx_out[start:start + n, :found] = idx[:, :found]
    val_out[start:start + n, :found] = vals[:, :found]
    if progress is not None:
      progress(n)
  return idx_out, val_out


def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))
