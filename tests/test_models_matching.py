"""models.matching: the MN's BatchNorm on real rows only, the similarity's sign constraint,
the crop stream's shapes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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


def test_crop_stream_shapes_and_gradient():
  """The "crop" stream: 7 * 2^k pixels down to 7 x 7 with one conv per halving, learned (its
  first conv gets a gradient from the output); sizes it cannot halve to 7 are refused."""
  x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 28, 28, 3)), jnp.float32)
  stream = matching.CropStream(channels=(8, 16, 12))
  params = stream.init(jax.random.PRNGKey(0), x)
  y = stream.apply(params, x)
  assert y.shape == (3, 7, 7, 12)
  grad = jax.grad(lambda p: jnp.sum(stream.apply(p, x) ** 2))(params)
  assert float(jnp.abs(grad["params"]["conv1"]["kernel"]).sum()) > 0
  big = matching.CropStream(channels=(8, 8, 8, 8))
  assert big.apply(big.init(jax.random.PRNGKey(0), jnp.zeros((1, 56, 56, 3))),
                   jnp.zeros((1, 56, 56, 3))).shape == (1, 7, 7, 8)
  with pytest.raises(ValueError, match="7 \\* 2\\^k"):
    stream.init(jax.random.PRNGKey(0), jnp.zeros((1, 30, 30, 3)))
  with pytest.raises(ValueError, match="needs 3 entries"):
    big.init(jax.random.PRNGKey(0), x)
  # Two convs per size, max-pools between: 6 convs for 28 -> 14 -> 7.
  double = matching.CropStream(channels=(8, 16, 12), convs_per_size=2)
  params = double.init(jax.random.PRNGKey(0), x)
  assert sorted(k for k in params["params"] if k.startswith("conv")) == [
      f"conv{i}_{j}" for i in (1, 2, 3) for j in (1, 2)]
  assert double.apply(params, x).shape == (3, 7, 7, 12)
  grad = jax.grad(lambda p: jnp.sum(double.apply(p, x) ** 2))(params)
  assert float(jnp.abs(grad["params"]["conv1_1"]["kernel"]).sum()) > 0
  with pytest.raises(ValueError, match="crop_convs_per_size"):
    matching.CropStream(channels=(8, 16, 12), convs_per_size=3).init(jax.random.PRNGKey(0), x)


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_crop_stream_reads_the_scaled_window_of_its_box(scale):
  """`match_head.crop_box_scale`: the crop stream's pixels are those of the box scaled about
  its centre. On an image whose value is its x (channel 0) and y (channel 1) coordinate, the
  RoIAlign bins of the window [x1, x2] hold x1 + (i + 1/2) (x2 - x1) / S (bilinear sampling
  is exact on a linear ramp)."""
  from configs import tiny
  from match_rcnn_jax.models import match_rcnn
  cfg = tiny.get_config()
  cfg.model.match_head.features = "crop"
  cfg.model.match_head.crop_box_scale = scale
  model = match_rcnn.build(cfg.model)
  h = w = 64
  ys, xs = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32),
                       indexing="ij")
  image = np.stack([xs, ys, np.zeros_like(xs)], -1)[None]
  boxes = jnp.array([[[10.0, 20.0, 50.0, 40.0]]])
  px = np.asarray(model.apply({}, jnp.asarray(image), boxes,
                              method=match_rcnn.MatchRCNN.crop_pixels))[0, 0]
  s = model.apply({}, method=lambda m: m.crop_size)
  assert px.shape == (s, s, 3)
  # window: centre (30, 30), sides 40 x 20 times `scale`
  x1, x2 = 30 - 20 * scale, 30 + 20 * scale
  y1, y2 = 30 - 10 * scale, 30 + 10 * scale
  centres = (np.arange(s) + 0.5) / s
  np.testing.assert_allclose(px[0, :, 0], x1 + centres * (x2 - x1), atol=1e-4)
  np.testing.assert_allclose(px[:, 0, 1], y1 + centres * (y2 - y1), atol=1e-4)
