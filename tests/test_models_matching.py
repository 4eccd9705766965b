"""models.matching: the MN's BatchNorm on real rows only, the similarity's sign constraint,
the colour stream's invariances."""

import jax
import jax.numpy as jnp
import numpy as np

from match_rcnn_jax.models import matching


def test_match_embedding_batch_norm_skips_padding_rows():
  emb = matching.MatchEmbedding(channels=(8, 8, 8, 16), dim=4)
  x = jax.random.normal(jax.random.PRNGKey(0), (6, 7, 7, 8))
  mask = jnp.array([True, True, True, True, False, False])
  v = emb.init(jax.random.PRNGKey(1), x)
  junk = x.at[4:].set(100.0)  # padding rows far from the real ones
  out, state = emb.apply(v, junk, train=True, mask=mask, mutable=["batch_stats"])
  ref, ref_state = emb.apply(v, x[:4], train=True, mutable=["batch_stats"])
  # The statistics (and the normalised rows) are those of the 4 real rows alone.
  np.testing.assert_allclose(np.asarray(out)[:4], np.asarray(ref), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(state["batch_stats"]["bn"]["mean"],
                             ref_state["batch_stats"]["bn"]["mean"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(out)[:4].mean(0), 0, atol=1e-5)


def test_similarity_cannot_reward_difference():
  """The effective weight w (d = w . (v1 - v2)^2 + b) is never positive, whatever the raw
  parameters (and after gradient steps that push it up), so moving two embeddings apart never
  raises their match logit; `pairwise` equals the pair-by-pair network."""
  sim = matching.Similarity(dim=16)
  v1 = jax.random.normal(jax.random.PRNGKey(0), (5, 16))
  v2 = jax.random.normal(jax.random.PRNGKey(1), (7, 16))
  params = sim.init(jax.random.PRNGKey(2), v1[:1], v2[:1])["params"]
  assert set(params) == {"weight", "bias"}
  w0, b0 = matching.effective_weights(params)
  scale = matching.Similarity.INIT_SCALE
  np.testing.assert_allclose(w0, -scale / 16, rtol=1e-5)  # initially -INIT_SCALE / D
  np.testing.assert_allclose(b0, scale, rtol=1e-6)
  for raw in (jnp.full((16,), -30.0), jnp.full((16,), 30.0),
              jax.random.normal(jax.random.PRNGKey(3), (16,)) * 10):
    w, _ = matching.effective_weights({"weight": raw, "bias": 0.0})
    assert bool((w <= 0).all())
  # Gradient ascent on the logit of an unrelated pair: w can only approach 0 from below.
  def logit(p):
    return sim.apply({"params": p}, v1[0], v2[0])[1]
  p = params
  for _ in range(50):
    g = jax.grad(logit)(p)
    p = jax.tree.map(lambda a, b: a + 10.0 * b, p, g)
  w, _ = matching.effective_weights(p)
  assert bool((w <= 0).all())
  far = v1[0] + 2.0 * (v2[0] - v1[0])  # twice as far from v1 along every dimension
  assert float(logit(p)) >= float(sim.apply({"params": p}, v1[0], far)[1])
  # The 2-way logits are [0, d]; pairwise gives d for every pair, symmetric in the two inputs.
  pair = sim.apply({"params": params}, v1[:, None], v2[None, :])
  np.testing.assert_array_equal(pair[..., 0], 0)
  d = sim.apply({"params": params}, v1, v2, method=matching.Similarity.pairwise)
  np.testing.assert_allclose(d, pair[..., 1], rtol=1e-5, atol=1e-5)
  d_t = sim.apply({"params": params}, v2, v1, method=matching.Similarity.pairwise)
  np.testing.assert_allclose(d_t, d.T, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(d, ((v1[:, None] - v2[None]) ** 2) @ w0 + b0, rtol=1e-5,
                             atol=1e-5)


def test_colour_features_ignore_brightness_and_background():
  """The "colour" stream: a garment lit darker has the same chromaticity and spread (its log
  intensity shifts by the log of the factor); with a garment mask as the weights, the corners'
  background leaves the whole-RoI statistics untouched; hand-computed values."""
  mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
  to_input = lambda rgb: (rgb - np.asarray(mean)) / np.asarray(std)  # noqa: E731
  size = 14
  garment = np.zeros((size, size, 3), np.float32)
  garment[:, :] = (0.6, 0.3, 0.1)
  garment[::2, :] = (0.2, 0.2, 0.6)  # a striped pattern of two colours
  inside = np.zeros((size, size), bool)
  inside[3:11, 2:12] = True
  scene = np.where(inside[..., None], garment, np.float32((0.1, 0.9, 0.1)))
  x = np.stack([to_input(scene), to_input(scene * 0.7), to_input(np.where(
      inside[..., None], garment, np.float32((0.9, 0.1, 0.5))))]).astype(np.float32)
  f = np.asarray(matching.colour_features(jnp.asarray(x), mean, std, weights=inside))
  assert f.shape == (3, 7, 7, 12)
  np.testing.assert_allclose(f[1][..., :3], f[0][..., :3], atol=2e-3)  # chromaticity
  np.testing.assert_allclose(f[1][..., 3], f[0][..., 3] + np.log(0.7), atol=5e-3)
  np.testing.assert_allclose(f[1][..., 8:11], f[0][..., 8:11], atol=2e-3)  # chroma spread
  np.testing.assert_allclose(f[2][..., 4:], f[0][..., 4:], atol=1e-5)  # other background
  assert not np.allclose(f[2][..., :3], f[0][..., :3], atol=0.1)  # the cells do see it
  # Hand-computed over the mask: rows alternate the two colours, half of the pixels each.
  rgb = garment[inside]
  chroma = 5.0 * (rgb / (rgb.sum(-1, keepdims=True) + 1e-3) - 1.0 / 3.0)
  np.testing.assert_allclose(f[0, 3, 3, 4:7], chroma.mean(0), atol=1e-3)
  np.testing.assert_allclose(f[0, 0, 6, 8:11], chroma.std(0), atol=1e-3)
  # Default weights: the centred Gaussian, summing to 1 and highest at the centre.
  w = matching.centre_weights(size)
  np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-6)
  assert w[6:8, 6:8].min() > 4 * w[0, 0]
