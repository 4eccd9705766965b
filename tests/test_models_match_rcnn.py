"""MatchRCNN on the tiny config: inference and training shapes, no recompilation, the heads on
the foreground / valid rows only equal to every slot, bfloat16."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import tiny
from match_rcnn_jax.data import schema
from match_rcnn_jax.models import match_rcnn


@pytest.fixture(scope="module")
def tiny_model():
  cfg = tiny.get_config().model
  cfg.match_head.features = "landmark+box+mask+image+crop"  # every MN stream, tested below
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
  t = cfg.sampling
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
    mc.implementation.train_heads = "chunked" if chunk else "dense"
    mc.implementation.train_head_chunk = chunk or 16
    mc.implementation.train_head_keep_rows = 4  # the first chunk kept, the later ones run again
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
  assert fg0 == fg1 and 4 < fg1 < n * cfg.sampling.mask_rois_per_image  # some slots are skipped
  assert l1["loss_mask"] > 0 and l1["loss_landmark"] > 0
  for k in l0:
    np.testing.assert_allclose(l1[k], l0[k], rtol=1e-5, atol=1e-6, err_msg=k)
  for path, a in jax.tree_util.tree_leaves_with_path(g0):
    b = functools.reduce(lambda d, key: d[key.key], path, g1)
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6, err_msg=jax.tree_util.keystr(path))
  heads_grad = g1["landmark_head"]["kp_fcn1"]["kernel"]
  assert np.abs(heads_grad).max() > 0


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
  size = cfg.match_head.crop_size
  pixels_crop = jnp.asarray(rng.normal(size=(n, size, size, 3)), jnp.float32)
  inputs = (pooled14, pooled14, pooled7, pixels7, pixels_crop, boxes, classes)
  every = jax.device_get(model.apply(variables, *inputs,
                                     method=match_rcnn.MatchRCNN.detection_heads))
  valid = np.zeros(n, bool)
  valid[[1, 4, 6, 9, 15]] = True  # 5 valid: two chunks of 3 run, the rest is never computed
  some = jax.device_get(model.apply(variables, inputs, jnp.asarray(valid), 3,
                                    method=match_rcnn.MatchRCNN.valid_detection_heads))
  for a, b in zip(every, some):
    np.testing.assert_allclose(b[valid], a[valid], rtol=1e-5, atol=1e-5)
    computed = np.any(b.reshape(n, -1) != 0, axis=1)
    assert computed.sum() == 5 and computed[valid].all()  # the filler of chunk 2 is zeroed


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
