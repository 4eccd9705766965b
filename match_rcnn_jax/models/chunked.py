"""A function on the selected rows of a batch only, `chunk` rows at a time, with static shapes.

The heads of a detector run on a fixed number of RoI or detection slots, of which an image
holds far fewer real ones (foreground RoIs in training, valid detections at inference).
`map_rows` (forward only) and `foreground_rows` (differentiable) visit the selected rows,
first in a row order that puts them first, `chunk` at a time: the cost follows what the images
hold, not the slot count, and every shape stays static (the trip count is data-dependent).

`foreground_rows` runs the first `keep` chunks in a `lax.scan`, differentiated by JAX itself:
their activations are kept for the backward pass (JAX keeps what varies from chunk to chunk
and hoists what depends on the variables alone), in buffers of `keep` chunks; each of them is
a `lax.cond` that skips the chunk, forward and backward, once the selected rows are done, so
the kept chunks too cost what the batch holds, not `keep` chunks. The chunks past
those run in a `while_loop` whose custom VJP runs the loop again backward: each chunk's
forward once more, then its VJP, the variables' gradients summed in the loop's carry; so the
memory is bounded whatever the foreground. `fn(variables, *rows)` must treat rows
independently; integer inputs get no gradient. Outputs of unselected rows are zeros.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def row_order(rows, chunk: int):
  """(order, count): the row indices, selected rows first, padded to a multiple of `chunk`
  with the index N of an extra zero row (`with_zero_row`), and the number of selected rows."""
  n = rows.shape[0]
  order = jnp.argsort(~rows, stable=True).astype(jnp.int32)
  return jnp.concatenate([order, jnp.full((-n % chunk,), n, jnp.int32)]), rows.sum()


def with_zero_row(x):
  return jnp.concatenate([x, jnp.zeros((1, *x.shape[1:]), x.dtype)])


def _masked_call(fn, variables, padded, idx, position, count):
  """`fn` on the rows `idx` of `padded`, zeros for the rows at positions past `count`."""
  y = fn(variables, *(x[idx] for x in padded))
  keep = position < count

  def mask(a):
    return jnp.where(keep.reshape(-1, *(1,) * (a.ndim - 1)), a, 0).astype(a.dtype)
  return jax.tree.map(mask, y)


def _zeros_like_rows(fn, variables, padded, chunk):
  """Zero outputs for every row of `padded` (N + 1 rows)."""
  shapes = jax.eval_shape(fn, variables, *(x[:chunk] for x in padded))
  n1 = padded[0].shape[0]
  return jax.tree.map(lambda s: jnp.zeros((n1, *s.shape[1:]), s.dtype), shapes)


def _loop(fn, chunk, variables, padded, order, count):
  """The forward loop: `fn` on order[0:count] (positions of `order`), `chunk` at a time."""
  def body(carry):
    start, out = carry
    idx = jax.lax.dynamic_slice(order, (start,), (chunk,))
    y = _masked_call(fn, variables, padded, idx, start + jnp.arange(chunk), count)
    return start + chunk, jax.tree.map(lambda o, v: o.at[idx].set(v), out, y)

  init = (jnp.zeros((), jnp.int32), _zeros_like_rows(fn, variables, padded, chunk))
  return jax.lax.while_loop(lambda c: c[0] < count, body, init)[1]


def map_rows(fn, variables, inputs, rows, chunk: int):
  """`fn(variables, *inputs)` ([N, ...] rows; any pytree of [N, ...] outputs) on the rows where
  `rows` (bool [N]), `chunk` at a time; zeros for the other rows. Forward only."""
  order, count = row_order(rows, chunk)
  padded = tuple(with_zero_row(x) for x in inputs)
  out = _loop(fn, chunk, variables, padded, order, count)
  return jax.tree.map(lambda o: o[:rows.shape[0]], out)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _recomputed_rows(fn, chunk, variables, padded, order, count):
  return _loop(fn, chunk, variables, padded, order, count)


def _recomputed_fwd(fn, chunk, variables, padded, order, count):
  return _loop(fn, chunk, variables, padded, order, count), (variables, padded, order, count)


def _recomputed_bwd(fn, chunk, res, dy):
  variables, padded, order, count = res
  diff = [jnp.issubdtype(x.dtype, jnp.inexact) for x in padded]

  def body(carry):
    start, d_vars, d_rows = carry
    idx = jax.lax.dynamic_slice(order, (start,), (chunk,))
    position = start + jnp.arange(chunk)
    rows = [x[idx] for x in padded]

    def chunk_fn(v, *float_rows):
      it = iter(float_rows)
      return _masked_call(fn, v, [next(it) if d else x for x, d in zip(rows, diff)],
                          slice(None), position, count)
    # The VJP of the chunk's own rows: their gradients are added at `idx` in place.
    _, vjp = jax.vjp(chunk_fn, variables, *(x for x, d in zip(rows, diff) if d))
    grads = vjp(jax.tree.map(lambda g: g[idx], dy))
    return (start + chunk, jax.tree.map(jnp.add, d_vars, grads[0]),
            tuple(a.at[idx].add(g) for a, g in zip(d_rows, grads[1:])))

  init = (jnp.zeros((), jnp.int32), jax.tree.map(jnp.zeros_like, variables),
          tuple(jnp.zeros_like(x) for x, d in zip(padded, diff) if d))
  _, d_vars, d_rows = jax.lax.while_loop(lambda c: c[0] < count, body, init)
  it = iter(d_rows)
  d_padded = tuple(next(it) if d else np.zeros(x.shape, jax.dtypes.float0)
                   for x, d in zip(padded, diff))
  zero = lambda a: np.zeros(a.shape, jax.dtypes.float0)  # noqa: E731
  return d_vars, d_padded, zero(order), zero(count)


_recomputed_rows.defvjp(_recomputed_fwd, _recomputed_bwd)


def foreground_rows(fn, variables, inputs, rows, chunk: int, keep: int = 0):
  """`fn(variables, *inputs)` on the rows where `rows` (bool [N]), `chunk` rows at a time,
  differentiable (see the module docstring): the first `keep` chunks' activations kept for the
  backward pass, the later chunks' forward run again there. Zeros for the other rows."""
  n = rows.shape[0]
  order, count = row_order(rows, chunk)
  padded = tuple(with_zero_row(x) for x in inputs)
  keep = min(keep, order.shape[0] // chunk)
  kept = keep * chunk
  out = None
  if keep:
    base = _zeros_like_rows(fn, variables, padded, chunk)
    zeros = jax.tree.map(lambda z: z[:chunk], base)
    idx = order[:kept]
    # The kept rows are gathered once, outside the scan: the backward pass scatters their
    # gradients once too (a gather inside the scan would add a cotangent of all N rows per
    # chunk).
    chunks = tuple(x[idx].reshape(keep, chunk, *x.shape[1:]) for x in padded)

    def step(_, xs):
      chunk_rows, position = xs
      # A chunk past the selected rows is skipped, forward and backward (the transpose of a
      # `cond` runs the branch taken).
      return None, jax.lax.cond(
          position[0] < count,
          lambda: _masked_call(fn, variables, chunk_rows, slice(None), position, count),
          lambda: zeros)
    positions = jnp.arange(kept, dtype=jnp.int32).reshape(keep, chunk)
    _, ys = jax.lax.scan(step, None, (chunks, positions))
    out = jax.tree.map(lambda z, y: z.at[idx].set(y.reshape(kept, *y.shape[2:])), base, ys)
  if kept < order.shape[0]:
    rest = _recomputed_rows(fn, chunk, variables, padded, order[kept:], count - kept)
    out = rest if out is None else jax.tree.map(jnp.add, out, rest)
  return jax.tree.map(lambda o: o[:n], out)
