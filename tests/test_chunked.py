"""models.chunked: a function on the selected rows only equals it on every row, with the
same gradients."""

import jax
import jax.numpy as jnp
import numpy as np

from match_rcnn_jax.models import chunked


def _fn(v, x, k):  # rows independent; k (int) picks a column of v["w"] per row
  h = jnp.tanh(x @ v["w"]) * v["b"]
  return h * jax.nn.one_hot(k, h.shape[-1]) + h ** 2


def _data():
  rng = np.random.default_rng(0)
  v = {"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32), "b": jnp.float32(1.5)}
  x = jnp.asarray(rng.normal(size=(11, 3)), jnp.float32)
  k = jnp.asarray(rng.integers(0, 4, 11), jnp.int32)
  cot = jnp.asarray(rng.normal(size=(11, 4)), jnp.float32)
  return v, x, k, cot


def test_row_order_puts_selected_rows_first_and_pads_with_the_zero_row():
  rows = jnp.asarray([False, True, False, True, True])
  order, count = chunked.row_order(rows, 2)
  assert order.tolist() == [1, 3, 4, 0, 2, 5] and int(count) == 3


def test_foreground_rows_value_and_gradients():
  """`foreground_rows` equals the function on every row with the unselected rows zeroed, with
  the same gradients for the parameters and the float inputs, for a selection that is not a
  multiple of the chunk (filler rows in the last chunk) and for none at all, with every
  chunk's forward run again in the backward (keep 0), the first chunk kept and the rest run
  again, and all kept (keep past the chunk count); integer inputs pass through."""
  v, x, k, cot = _data()
  for keep, selected in [(0, [1, 2, 5, 7, 10]), (1, [1, 2, 5, 7, 10]), (9, [0, 1, 2, 5, 7, 10]),
                         (1, [])]:
    rows = jnp.zeros(11, bool).at[jnp.asarray(selected, jnp.int32)].set(True)

    def dense(v, x, rows=rows):
      return jnp.sum(jnp.where(rows[:, None], _fn(v, x, k), 0) * cot)

    def chunks(v, x, rows=rows, keep=keep):
      return jnp.sum(chunked.foreground_rows(_fn, v, (x, k), rows, 2, keep) * cot)
    y = jax.jit(lambda v, x, rows=rows, keep=keep: chunked.foreground_rows(
        _fn, v, (x, k), rows, 2, keep))(v, x)
    np.testing.assert_allclose(y, jnp.where(rows[:, None], _fn(v, x, k), 0), rtol=1e-6,
                               atol=1e-6)
    (g_v, g_x), (r_v, r_x) = (jax.jit(jax.grad(f, (0, 1)))(v, x) for f in (chunks, dense))
    for a, b in zip(jax.tree.leaves((g_v, g_x)), jax.tree.leaves((r_v, r_x))):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert bool(jnp.all(g_x[~rows] == 0)) and (not selected or float(jnp.abs(g_v["w"]).sum()) > 0)


def test_kept_chunks_past_the_selection_are_skipped_forward_and_backward():
  """With every chunk kept (the `scan`), the chunks past the selected rows run neither
  forward nor backward: unselected rows holding NaNs (which would poison the gradients
  through any chunk that read them, even with their outputs masked) leave the values and the
  gradients equal to the function's on the selected rows alone."""
  v, x, k, cot = _data()
  selected = jnp.asarray([0, 4, 7, 9], jnp.int32)  # 2 full chunks of 2, then 4 unselected
  rows = jnp.zeros(11, bool).at[selected].set(True)
  poisoned = jnp.where(rows[:, None], x, jnp.nan)

  def loss(v, x):
    return jnp.sum(chunked.foreground_rows(_fn, v, (x, k), rows, 2, keep=6) * cot)

  def ref(v, x):
    return jnp.sum(_fn(v, x[selected], k[selected]) * cot[selected])
  (g_v, g_x), (r_v, r_x) = jax.jit(jax.grad(loss, (0, 1)))(v, poisoned), jax.grad(ref, (0, 1))(v, x)
  np.testing.assert_allclose(loss(v, poisoned), ref(v, x), rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g_v), jax.tree.leaves(r_v)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(g_x[selected], r_x[selected], rtol=1e-5, atol=1e-6)


def test_map_rows_computes_the_selected_rows_only():
  """`map_rows` (forward only, pytree outputs) gives the function's rows where selected and
  zeros elsewhere, and calls the function on ceil(count / chunk) chunks only."""
  v, x, k, _ = _data()
  rows = jnp.zeros(11, bool).at[jnp.asarray([0, 4, 9], jnp.int32)].set(True)
  calls = []

  def fn(v, x, k):
    jax.debug.callback(lambda: calls.append(1))
    y = _fn(v, x, k)
    return {"y": y, "s": y.sum(-1)}
  out = jax.jit(lambda v, x: chunked.map_rows(fn, v, (x, k), rows, 2))(v, x)
  ref = _fn(v, x, k)
  np.testing.assert_allclose(out["y"], jnp.where(rows[:, None], ref, 0), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(out["s"], jnp.where(rows, ref.sum(-1), 0), rtol=1e-6, atol=1e-6)
  jax.effects_barrier()
  assert len(calls) == 2  # 3 rows, chunks of 2
