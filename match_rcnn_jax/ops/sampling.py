"""Fixed-count random sampling (static shapes): top-k over random priorities, never boolean
indexing."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def balanced_sample(rng, fg: jnp.ndarray, bg: jnp.ndarray, num_samples: int,
                    positive_fraction: float):
  """Samples up to `num_samples` elements, at most `num_samples * positive_fraction` of them
  foreground, the rest background (torchvision's BalancedPositiveNegativeSampler, at a static
  size).

  Args:
    rng: PRNG key.
    fg, bg: [N] bool candidate masks (disjoint).

  Returns:
    indices [num_samples] int32 (foreground first, then background, then unused slots),
    is_fg [num_samples] bool, valid [num_samples] bool.
  """
  n = fg.shape[0]
  max_pos = int(num_samples * positive_fraction)
  u = jax.random.uniform(rng, (n,))
  num_pos = jnp.minimum(fg.sum(), max_pos)
  num_neg = jnp.minimum(bg.sum(), num_samples - num_pos)
  # Rank of every candidate among its kind by priority (0 = highest).
  def ranks(mask):
    key = jnp.where(mask, u, -1.0)
    order = jnp.argsort(-key)
    return jnp.zeros(n, jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
  take_fg = fg & (ranks(fg) < num_pos)
  take_bg = bg & (ranks(bg) < num_neg)
  key = jnp.where(take_fg, 2.0 + u, jnp.where(take_bg, 1.0 + u, -u))
  k = min(num_samples, n)
  top, idx = jax.lax.top_k(key, k)
  valid = top >= 1.0
  is_fg = top >= 2.0
  if k < num_samples:
    pad = num_samples - k
    idx, valid, is_fg = (jnp.pad(idx, (0, pad)), jnp.pad(valid, (0, pad)),
                         jnp.pad(is_fg, (0, pad)))
  return idx.astype(jnp.int32), is_fg, valid
