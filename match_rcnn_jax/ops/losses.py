"""Unreduced losses (the caller masks and normalises; an empty batch then gives 0, not NaN)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def smooth_l1(pred, target, beta: float):
  """[..., 4] -> [...]: sum over the last axis of Huber-like smooth L1 with transition `beta`."""
  d = jnp.abs(pred - target)
  per = jnp.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta) if beta > 0 else d
  return per.sum(-1)


def sigmoid_bce(logits, targets):
  """Elementwise binary cross-entropy with logits (numerically stable)."""
  return jnp.maximum(logits, 0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))


def softmax_ce(logits, labels):
  """logits [..., K], int labels [...] -> [...]."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.take_along_axis(logp, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]


def masked_mean(values, mask, eps: float = 1e-6):
  """Mean of `values` where `mask`; 0 when nothing is masked in."""
  mask = mask.astype(values.dtype)
  return (values * mask).sum() / (mask.sum() + eps)
