"""Shape, recompilation and post-processing tests of the model on the tiny config."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import tiny
from match_rcnn_jax.data import schema
from match_rcnn_jax.models import heads, match_rcnn, matching, postprocess, resnet


@pytest.fixture(scope="module")
def tiny_model():
  cfg = tiny.get_config().model
  cfg.match_head.features = "landmark+box+mask+image+colour"  # every MN stream, tested below
  model = match_rcnn.build(cfg)
  variables = match_rcnn.init(model, jax.random.PRNGKey(0), (128, 128))
  traces = []

  @jax.jit
  def infer(v, images, sizes):
    traces.append(1)  # runs only when jax traces, i.e. compiles
    return model.apply(v, images, image_sizes=sizes)

  return cfg, model, variables, infer, traces


def test_inference_shapes_and_no_recompilation(tiny_model):
  cfg, _, variables, infer, traces = tiny_model
  d = cfg.detections.per_image
  outs = []
  for seed in range(3):
    images = jax.random.normal(jax.random.PRNGKey(seed), (2, 128, 128, 3))
    sizes = jnp.array([[128.0, 128.0], [100.0 + seed, 120.0]])
    outs.append(jax.device_get(infer(variables, images, sizes)))
  assert len(traces) == 1  # new values, same shapes: compiled once
  out = outs[0]
  expect = {"boxes": (2, d, 4), "scores": (2, d), "classes": (2, d), "valid": (2, d),
            "masks": (2, d, 28, 28), "landmarks": (2, d, 294, 3),
            "embeddings": (2, d, cfg.match_head.dim),
            "proposals": (2, cfg.rpn.post_nms_top_k_test, 4)}
  for k, shape in expect.items():
    assert out[k].shape == shape, k
  for o in outs:
    v = o["valid"]
    assert ((o["classes"] >= 1) & (o["classes"] <= 13))[v].all()
    assert (o["classes"][~v] == 0).all() and (o["scores"][~v] == 0).all()
    assert np.all(np.diff(o["scores"], axis=1) <= 1e-6)  # sorted by score
    assert ((o["masks"] >= 0) & (o["masks"] <= 1)).all()
    b = o["boxes"]
    assert (b[..., 2] >= b[..., 0]).all() and (b[..., 3] >= b[..., 1]).all()
    assert (b[1, :, 2] <= o["boxes"][1, :, 2].max()).all()
  # The second image is clipped to its valid size.
  assert (outs[2]["boxes"][1, :, 2] <= 120.0 + 1e-4).all()
  assert (outs[2]["boxes"][1, :, 3] <= 102.0 + 1e-4).all()


def test_embeddings_of_given_boxes_are_those_of_the_same_detections(tiny_model):
  """`boxes=` (e.g. ground-truth garments, here K = 3 of the detected boxes and 2 others)
  gives `box_embeddings` [B, K, D]: the match embeddings the detections with those boxes got."""
  cfg, model, variables, infer, _ = tiny_model
  images = jax.random.normal(jax.random.PRNGKey(0), (2, 128, 128, 3))
  sizes = jnp.array([[128.0, 128.0], [128.0, 128.0]])
  dets = jax.device_get(infer(variables, images, sizes))
  assert dets["valid"][:, :3].all()
  boxes = np.concatenate([dets["boxes"][:, :3], np.tile([[[4.0, 4.0, 60, 90], [30, 8, 99, 40]]],
                                                         (2, 1, 1))], 1)
  out = jax.device_get(jax.jit(lambda v, x, s, b: model.apply(v, x, image_sizes=s, boxes=b))(
      variables, images, sizes, jnp.asarray(boxes, jnp.float32)))
  assert out["box_embeddings"].shape == (2, 5, cfg.match_head.dim)
  np.testing.assert_allclose(out["box_embeddings"][:, :3], dets["embeddings"][:, :3], rtol=1e-4,
                             atol=1e-4)
  assert not np.allclose(out["box_embeddings"][:, 3], out["box_embeddings"][:, 4], atol=1e-3)


def test_landmarks_only_in_predicted_block(tiny_model):
  cfg, _, variables, infer, _ = tiny_model
  out = jax.device_get(infer(variables, jax.random.normal(jax.random.PRNGKey(5), (2, 128, 128, 3)),
                             jnp.full((2, 2), 128.0)))
  for b in range(2):
    for k in np.nonzero(out["valid"][b])[0]:
      cat = schema.CATEGORY_BY_ID[int(out["classes"][b, k])]
      lm = out["landmarks"][b, k]
      outside = np.ones(294, bool)
      outside[cat.landmark_slice] = False
      assert (lm[outside] == 0).all()
      x1, y1, x2, y2 = out["boxes"][b, k]
      block = lm[cat.landmark_slice]
      assert ((block[:, 0] >= x1) & (block[:, 0] <= x2)).all()
      assert ((block[:, 1] >= y1) & (block[:, 1] <= y2)).all()


def test_training_forward_shapes(tiny_model):
  cfg, model, variables, _, _ = tiny_model
  t = cfg.train
  n, m = 4, 3
  rng = np.random.default_rng(0)
  xy = rng.uniform(0, 60, (n, m, 2))
  targets = {
      "boxes": jnp.asarray(np.concatenate([xy, xy + 40], -1), jnp.float32),
      "classes": jnp.asarray(rng.integers(1, 14, (n, m))),
      "valid": jnp.array([[True, True, False]] * n),
      "mask_crops": jnp.ones((n, m, 16, 16)),
      "landmarks": jnp.zeros((n, m, 294, 3)),
      "styles": jnp.ones((n, m), jnp.int32),
      "pair_id": jnp.array([1, 1, 2, 2]),
  }
  out, _ = jax.jit(lambda v, x, tg: model.apply(
      v, x, tg, train=True, rngs={"sampling": jax.random.PRNGKey(0)}, mutable=["batch_stats"]))(
          variables, jnp.zeros((n, 128, 128, 3)), targets)
  s = t.rois_per_image
  assert out["cls_logits"].shape == (n, s, cfg.num_classes)
  assert out["box_deltas"].shape == out["box_targets"].shape == (n, s, 4)
  assert out["mask_logits"].shape == out["mask_targets"].shape == (
      n, t.mask_rois_per_image, 28, 28)
  assert out["landmark_logits"].shape == (n, t.landmark_rois_per_image, 56 * 56, 39)
  assert out["landmark_targets"].shape == (n, t.landmark_rois_per_image, 39)
  # Every shop RoI of the batch against every user RoI: (GT boxes + tight RoIs) per image.
  rows = n // 2 * (m + t.pair_rois_per_image)
  assert out["pair_logits"].shape == out["pair_labels"].shape == (rows, rows)
  assert out["pair_valid"].shape == (rows, rows)
  # Pair 0's shop GT items (pair_id 1, style 1) match pair 0's user GT items, not pair 1's.
  labels, valid = np.asarray(out["pair_labels"]), np.asarray(out["pair_valid"])
  r = m + t.pair_rois_per_image
  assert labels[0, 0] == 1 and labels[0, r] == 0 and valid[0, r]
  assert not valid[2].any() and not valid[:, 2].any()  # the padding GT slot
  assert int(out["rpn_sampled"].sum(1).max()) <= t.rpn_batch_per_image
  # GT boxes are appended to the proposals, so every image has foreground RoIs.
  assert bool(out["roi_is_fg"].any(1).all())


def test_foreground_chunked_heads_match_every_slot(tiny_model):
  """The training heads run chunk by chunk on the foreground RoIs only (skipping the rest;
  the first chunk's activations kept for the backward pass, the later chunks' recomputed);
  losses and gradients are those of the heads on every RoI slot."""
  from match_rcnn_jax.training import losses as losses_lib
  cfg, _, variables, _, _ = tiny_model
  n, m = 2, 3
  rng = np.random.default_rng(1)
  xy = rng.uniform(0, 60, (n, m, 2))
  boxes = np.concatenate([xy, xy + rng.uniform(30, 60, (n, m, 2))], -1)
  landmarks = np.zeros((n, m, 294, 3), np.float32)
  landmarks[..., :2] = xy[:, :, None] + rng.uniform(0, 30, (n, m, 294, 2))
  landmarks[..., 2] = 2.0
  targets = {
      "boxes": jnp.asarray(boxes, jnp.float32),
      "classes": jnp.asarray(rng.integers(1, 14, (n, m))),
      "valid": jnp.ones((n, m), bool),
      "mask_crops": jnp.asarray(rng.uniform(0, 1, (n, m, 16, 16)) > 0.5, jnp.float32),
      "landmarks": jnp.asarray(landmarks),
  }
  images = jax.random.normal(jax.random.PRNGKey(2), (n, 128, 128, 3))
  weights = ml_collections.ConfigDict({k: 1.0 for k in (
      "rpn_cls", "rpn_box", "cls", "box", "landmark", "mask", "match")})
  results = []
  for chunk in (0, 4):
    mc = ml_collections.ConfigDict(cfg.to_dict())
    mc.train.head_chunk = chunk
    mc.train.head_keep_rows = 4  # the first chunk kept, the later ones run again
    model = match_rcnn.build(mc)

    def loss(params, model=model):
      out, _ = model.apply({**variables, "params": params}, images, targets, train=True,
                           rngs={"sampling": jax.random.PRNGKey(0)}, mutable=["batch_stats"])
      losses = losses_lib.compute(out, weights)
      return losses["loss"], (losses, out["mask_valid"].sum())
    (_, (losses, fg)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(
        variables["params"])
    results.append((jax.device_get(losses), jax.device_get(grads), int(fg)))
  (l0, g0, fg0), (l1, g1, fg1) = results
  assert fg0 == fg1 and 4 < fg1 < n * cfg.train.mask_rois_per_image  # some slots are skipped
  assert l1["loss_mask"] > 0 and l1["loss_landmark"] > 0
  for k in l0:
    np.testing.assert_allclose(l1[k], l0[k], rtol=1e-5, atol=1e-6, err_msg=k)
  for path, a in jax.tree_util.tree_leaves_with_path(g0):
    b = functools.reduce(lambda d, key: d[key.key], path, g1)
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6, err_msg=jax.tree_util.keystr(path))
  heads_grad = g1["landmark_head"]["kp_fcn1"]["kernel"]
  assert np.abs(heads_grad).max() > 0


@pytest.mark.parametrize("depth,stages", [(18, 64), (34, 64), (50, 256)])
def test_resnet_depths(depth, stages):
  net = resnet.ResNet(depth=depth, width=8 if depth != 50 else 64)
  x = jnp.zeros((1, 64, 96, 3))
  shapes = jax.eval_shape(lambda: net.init_with_output(jax.random.PRNGKey(0), x)[0])
  sizes = [s.shape for s in shapes]
  assert [s[1:3] for s in sizes] == [(16, 24), (8, 12), (4, 6), (2, 3)]
  if depth == 50:
    assert [s[-1] for s in sizes] == [256, 512, 1024, 2048]


def test_group_norm_backbone_and_bfloat16():
  net = resnet.ResNet(depth="tiny", width=32, norm="group_norm", dtype=jnp.bfloat16)
  x = jnp.ones((1, 32, 32, 3))
  v = jax.jit(net.init)(jax.random.PRNGKey(0), x)
  outs = jax.jit(net.apply)(v, x)
  assert outs[-1].dtype == jnp.bfloat16
  assert "batch_stats" not in v and all(jnp.isfinite(o.astype(jnp.float32)).all() for o in outs)


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


def test_detect_matches_torchvision_postprocess():
  torch = pytest.importorskip("torch")
  from torchvision.models.detection import roi_heads as tv_roi_heads
  from torchvision.models.detection._utils import BoxCoder
  rng = np.random.default_rng(0)
  r, k = 60, 5
  xy = rng.uniform(0, 80, (r, 2))
  props = np.concatenate([xy, xy + rng.uniform(5, 40, (r, 2))], 1).astype(np.float32)
  logits = rng.normal(scale=2, size=(r, k)).astype(np.float32)
  deltas = rng.normal(scale=0.3, size=(r, k * 4)).astype(np.float32)
  rh = tv_roi_heads.RoIHeads(None, None, None, 0.5, 0.5, 512, 0.25, (10.0, 10.0, 5.0, 5.0),
                             0.05, 0.5, 20)
  rh.box_coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
  boxes, scores, labels = rh.postprocess_detections(
      torch.from_numpy(logits), torch.from_numpy(deltas), [torch.from_numpy(props)], [(96, 100)])
  ours = jax.jit(functools.partial(postprocess.detect, max_detections=20))(
      jnp.asarray(props)[None], jnp.ones((1, r), bool), jnp.asarray(logits)[None],
      jnp.asarray(deltas).reshape(1, r, k, 4), jnp.array([[96.0, 100.0]]))
  n = int(ours["valid"].sum())
  assert n == len(scores[0])
  np.testing.assert_allclose(np.asarray(ours["scores"][0, :n]), scores[0].numpy(), rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(ours["classes"][0, :n]), labels[0].numpy())
  np.testing.assert_allclose(np.asarray(ours["boxes"][0, :n]), boxes[0].numpy(), atol=1e-3)


def test_decode_landmarks_hand_computed():
  heat = np.full((1, 4, 4, 39), -5.0, np.float32)
  heat[0, 1, 2, 0] = 3.0  # skirt landmark 1 at row 1, column 2
  heat[0, 3, 0, 7] = 2.0  # skirt landmark 8 at row 3, column 0
  box = jnp.array([[10.0, 20.0, 50.0, 60.0]])  # 40 x 40: 10 px per heatmap cell
  out = np.asarray(postprocess.decode_landmarks(jnp.asarray(heat), box, jnp.array([9])))
  off = schema.CATEGORY_BY_ID[9].offset
  np.testing.assert_allclose(out[0, off], [10 + 2.5 * 10, 20 + 1.5 * 10, 3.0])
  np.testing.assert_allclose(out[0, off + 7], [10 + 0.5 * 10, 20 + 3.5 * 10, 2.0])
  assert (out[0, :off] == 0).all() and (out[0, off + 8:] == 0).all()


def test_category_block_and_mask_selection():
  lowres = jnp.arange(294, dtype=jnp.float32)[None, None, None, :]
  block = np.asarray(postprocess.category_block(lowres, jnp.array([8])))
  off = schema.CATEGORY_BY_ID[8].offset
  np.testing.assert_array_equal(block[0, 0, 0, :14], np.arange(off, off + 14))
  assert np.isneginf(block[0, 0, 0, 14:]).all()
  logits = jnp.zeros((2, 3, 3, 14)).at[1, :, :, 5].set(10.0)
  probs = np.asarray(postprocess.select_class_masks(logits, jnp.array([5, 5])))
  np.testing.assert_allclose(probs[0], 0.5)
  assert (probs[1] > 0.99).all()


def test_landmark_head_upsampling_shape():
  head = heads.LandmarkHead(num_landmarks=5, channels=4, num_convs=1)
  x = jnp.ones((2, 3, 14, 14, 4))
  v = head.init(jax.random.PRNGKey(0), x)
  assert head.apply(v, x).shape == (2, 3, 56, 56, 5)


def test_bfloat16_inference_runs():
  cfg = tiny.get_config().model
  cfg.dtype = "bfloat16"
  model = match_rcnn.build(cfg)
  variables = match_rcnn.init(model, jax.random.PRNGKey(0), (64, 64))
  assert variables["params"]["fpn"]["inner_0"]["kernel"].dtype == jnp.float32  # fp32 params
  out = jax.jit(lambda v, x: model.apply(v, x))(
      variables, jax.random.normal(jax.random.PRNGKey(1), (1, 64, 64, 3)))
  assert out["boxes"].dtype == jnp.float32 and out["masks"].shape[-2:] == (28, 28)
  assert all(bool(jnp.isfinite(out[k]).all()) for k in ("boxes", "scores", "masks", "embeddings"))


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


def test_heads_on_valid_detections_only_match_all_slots(tiny_model):
  cfg, model, variables, _, _ = tiny_model
  rng = np.random.default_rng(0)
  n = 16
  pooled14 = jnp.asarray(rng.normal(size=(n, 14, 14, cfg.fpn_channels)), jnp.float32)
  pooled7 = jnp.asarray(rng.normal(size=(n, 7, 7, cfg.fpn_channels)), jnp.float32)
  xy = rng.uniform(0, 60, (n, 2))
  boxes = jnp.asarray(np.concatenate([xy, xy + rng.uniform(10, 60, (n, 2))], 1), jnp.float32)
  classes = jnp.asarray(rng.integers(1, 14, n), jnp.int32)
  pixels7 = jnp.asarray(rng.normal(size=(n, 7, 7, 3)), jnp.float32)
  pixels14 = jnp.asarray(rng.normal(size=(n, 14, 14, 3)), jnp.float32)
  inputs = (pooled14, pooled14, pooled7, pixels7, pixels14, boxes, classes)
  every = jax.device_get(model.apply(variables, *inputs, method=match_rcnn.MatchRCNN._heads))
  valid = np.zeros(n, bool)
  valid[[1, 4, 6, 9, 15]] = True  # 5 valid: two chunks of 3 run, the rest is never computed
  some = jax.device_get(model.apply(variables, inputs, jnp.asarray(valid), 3,
                                    method=match_rcnn.MatchRCNN._valid_heads))
  for a, b in zip(every, some):
    np.testing.assert_allclose(b[valid], a[valid], rtol=1e-5, atol=1e-5)
    computed = np.any(b.reshape(n, -1) != 0, axis=1)
    assert computed.sum() == 5 and computed[valid].all()  # the filler of chunk 2 is zeroed


def test_head_conv_impls_match_xla_convs():
  """The heads' convolutions as the CPU kernels run them ("cpu"; "matmul", inside control
  flow) give the numbers and gradients of XLA's convolutions and patches ("xla", the
  accelerators' path), with the same parameters."""
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 6, 6, 8))
  channels = jnp.array([[0, 5, 2], [1, 1, 7], [3, 4, 6]])
  for module, method, args in (
      (heads.MaskHead(num_classes=5, channels=8, num_convs=2), None, (x,)),
      (heads.LandmarkHead(num_landmarks=9, channels=8, num_convs=2), None, (x,)),
      (heads.LandmarkHead(num_landmarks=9, channels=8, num_convs=2),
       heads.LandmarkHead.block_logits, (x, channels))):
    assert module.conv_impl == "xla"
    params = module.init(jax.random.PRNGKey(1), *args, method=method)

    def loss(p, inputs, m, method=method, rest=args[1:]):
      return jnp.sum(jnp.sin(m.apply(p, inputs, *rest, method=method)))
    g0 = jax.grad(loss, argnums=(0, 1))(params, x, module)
    for impl in ("cpu", "matmul"):
      fast = module.clone(conv_impl=impl)
      np.testing.assert_allclose(fast.apply(params, *args, method=method),
                                 module.apply(params, *args, method=method), rtol=1e-4,
                                 atol=1e-5)
      g1 = jax.grad(loss, argnums=(0, 1))(params, x, fast)
      for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
