"""ops.cpu_conv: the CPU's matmul convolutions against XLA's, values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np

from match_rcnn_jax.ops import cpu_conv

_NHWC = ("NHWC", "HWIO", "NHWC")


def _assert_same_conv(ours, x, w, stride, pad):
  """`ours` (a `lax.conv_general_dilated` stand-in) gives XLA's output and gradients."""
  args = ((stride, stride), ((pad, pad), (pad, pad)))

  def ref(x, w):
    return jax.lax.conv_general_dilated(x, w, *args, dimension_numbers=_NHWC)

  def mine(x, w):
    return ours(x, w, *args, dimension_numbers=_NHWC)

  assert mine(x, w).shape == ref(x, w).shape
  np.testing.assert_allclose(mine(x, w), ref(x, w), rtol=1e-5, atol=1e-5)
  grads = [jax.grad(lambda x, w, f=f: jnp.sum(jnp.sin(f(x, w))), (0, 1))(x, w)
           for f in (ref, mine)]
  for a, b in zip(*grads):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)
  return mine


def test_matmul_conv_1x1_strided_and_fallthrough():
  """`matmul_conv` (every 1 x 1 conv on the CPU) equals XLA's convolution for 1 x 1
  convs of stride 1 and 2 on odd sizes, with its gradients, and hands cases it does not cover
  (a padded stride-2 3 x 3) to XLA unchanged."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 5, 6))
  for kernel, stride, pad in ((1, 1, 0), (1, 2, 0), (3, 2, 1), (3, 1, 1)):
    w = jax.random.normal(jax.random.PRNGKey(kernel + stride), (kernel, kernel, 6, 4))
    _assert_same_conv(cpu_conv.matmul_conv, x, w, stride, pad)


def test_winograd_conv_matches_xla_in_and_out_of_cond(monkeypatch):
  """`cpu_conv.winograd_conv` (the CPU's 3 x 3 convs, heads and large maps) gives XLA's outputs
  and both gradients on even and odd sizes, through `cpu_conv` and `matmul_conv`, and its
  gradient inside `lax.cond` is the same (no XLA convolution gradient there)."""
  monkeypatch.setattr(cpu_conv, "_WINOGRAD_MIN_PIXELS", 1)
  monkeypatch.setattr(cpu_conv, "_WINOGRAD_MIN_CHANNELS", 1)
  for shape, key in (((2, 8, 6, 5), 0), ((1, 9, 7, 5), 1)):
    x = jax.random.normal(jax.random.PRNGKey(key), shape)
    w = jax.random.normal(jax.random.PRNGKey(key + 10), (3, 3, 5, 6))
    for ours in (cpu_conv.cpu_conv, cpu_conv.matmul_conv):
      mine = _assert_same_conv(ours, x, w, 1, 1)
      assert "custom_vjp_call" in str(jax.make_jaxpr(mine)(x, w))  # the Winograd form ran

  def in_cond(x, w):
    return jax.lax.cond(x.sum() > -1e9, lambda: cpu_conv.winograd_conv(x, w),
                        lambda: jnp.zeros((*x.shape[:3], 6)))
  grads = [jax.grad(lambda x, w, f=f: jnp.sum(jnp.sin(f(x, w))), (0, 1))(x, w)
           for f in (cpu_conv.winograd_conv, in_cond)]
  for a, b in zip(*grads):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=2e-5)
  assert "conv_general_dilated" not in str(jax.make_jaxpr(jax.grad(
      lambda x, w: jnp.sum(in_cond(x, w)), (0, 1)))(x, w))
