"""models.heads: shapes, the deconvolution's channel subset, the conv implementations equal to
XLA's."""

import jax
import jax.numpy as jnp
import numpy as np

from match_rcnn_jax.models import heads, layers


def test_landmark_head_upsampling_shape():
  head = heads.LandmarkHead(num_landmarks=5, channels=4, num_convs=1)
  x = jnp.ones((2, 3, 14, 14, 4))
  v = head.init(jax.random.PRNGKey(0), x)
  assert head.apply(v, x).shape == (2, 3, 56, 56, 5)


def test_deconv_channel_subset_equals_full():
  deconv = heads.Deconv2x(features=11, kernel=4, padding=1)
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 5, 5, 6))
  v = deconv.init(jax.random.PRNGKey(1), x)
  v = jax.tree.map(lambda a: a + 0.1, v)  # non-zero bias too
  full = deconv.apply(v, x)
  channels = jnp.array([[0, 3, 10], [2, 2, 5], [9, 1, 4]])
  sub = deconv.apply(v, x, channels)
  np.testing.assert_allclose(sub, jnp.take_along_axis(full, channels[:, None, None, :], -1),
                             rtol=1e-5, atol=1e-5)


def test_heads_cpu_convs_match_xla_convs():
  """The heads' convolutions as XLA:CPU's kernels compute them (`layers.CPU`;
  `layers.CPU_IN_LOOPS`, inside control flow) give the numbers and gradients of XLA's
  convolutions and patches (`layers.XLA`, the accelerators' and every module's default), with
  the same parameters."""
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 6, 6, 8))
  channels = jnp.array([[0, 5, 2], [1, 1, 7], [3, 4, 6]])
  for module, method, args in (
      (heads.MaskHead(num_classes=5, channels=8, num_convs=2), None, (x,)),
      (heads.LandmarkHead(num_landmarks=9, channels=8, num_convs=2), None, (x,)),
      (heads.LandmarkHead(num_landmarks=9, channels=8, num_convs=2),
       heads.LandmarkHead.block_logits, (x, channels))):
    assert module.convs is layers.XLA
    params = module.init(jax.random.PRNGKey(1), *args, method=method)

    def loss(p, inputs, m, method=method, rest=args[1:]):
      return jnp.sum(jnp.sin(m.apply(p, inputs, *rest, method=method)))
    g0 = jax.grad(loss, argnums=(0, 1))(params, x, module)
    for convs in (layers.CPU, layers.CPU_IN_LOOPS):
      fast = module.clone(convs=convs)
      np.testing.assert_allclose(fast.apply(params, *args, method=method),
                                 module.apply(params, *args, method=method), rtol=1e-4,
                                 atol=1e-5)
      g1 = jax.grad(loss, argnums=(0, 1))(params, x, fast)
      for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
