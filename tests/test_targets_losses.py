import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from match_rcnn_jax import ops
from match_rcnn_jax.models import targets as T
from match_rcnn_jax.training import losses

torch = pytest.importorskip("torch")


def test_balanced_sample():
  rng = np.random.default_rng(0)
  for trial in range(5):
    fg = rng.random(300) < 0.1
    bg = ~fg & (rng.random(300) < 0.7)
    idx, is_fg, valid = jax.jit(lambda r, f, b: ops.sampling.balanced_sample(r, f, b, 64, 0.25))(
        jax.random.PRNGKey(trial), jnp.asarray(fg), jnp.asarray(bg))
    idx, is_fg, valid = map(np.asarray, (idx, is_fg, valid))
    n_fg = min(fg.sum(), 16)
    assert is_fg.sum() == n_fg and valid.sum() == min(64, n_fg + bg.sum())
    assert is_fg[:n_fg].all() and not is_fg[n_fg:].any()  # foreground first
    assert fg[idx[is_fg]].all() and bg[idx[valid & ~is_fg]].all()
    assert len(set(idx[valid])) == valid.sum()  # no duplicates
  # Fewer candidates than slots: everything is taken, the rest is invalid.
  fg = jnp.array([True, False, False, False])
  bg = jnp.array([False, True, False, True])
  idx, is_fg, valid = ops.sampling.balanced_sample(jax.random.PRNGKey(0), fg, bg, 8, 0.5)
  assert list(np.asarray(valid)) == [True] * 3 + [False] * 5
  assert sorted(np.asarray(idx)[:3]) == [0, 1, 3]


def test_rpn_targets_match_torchvision_matcher():
  from torchvision.models.detection._utils import Matcher
  rng = np.random.default_rng(1)
  xy = rng.uniform(0, 100, (200, 2))
  anchors = np.concatenate([xy, xy + rng.uniform(5, 40, (200, 2))], 1).astype(np.float32)
  gt = np.concatenate([anchors[:3] + rng.normal(0, 2, (3, 4)), np.zeros((2, 4))]).astype(
      np.float32)
  gt[3] = [10, 10, 80, 70]
  valid = np.array([True, True, True, True, False])
  labels, deltas = T.rpn_targets(jnp.asarray(anchors), jnp.asarray(gt), jnp.asarray(valid))
  matcher = Matcher(0.7, 0.3, allow_low_quality_matches=True)
  iou = ops.iou(jnp.asarray(gt[valid]), jnp.asarray(anchors))
  ref = matcher(torch.from_numpy(np.array(iou))).numpy()
  expect = np.where(ref >= 0, 1, np.where(ref == -1, 0, -1))
  np.testing.assert_array_equal(np.asarray(labels), expect)
  fg = ref >= 0
  np.testing.assert_allclose(np.asarray(deltas)[fg],
                             np.asarray(ops.encode(jnp.asarray(gt[valid][ref[fg]]),
                                                   jnp.asarray(anchors[fg]))), rtol=1e-5)
  assert (np.asarray(deltas)[~fg] == 0).all()
  # No ground truth at all: every anchor is background.
  labels, _ = T.rpn_targets(jnp.asarray(anchors), jnp.asarray(gt), jnp.zeros(5, bool))
  assert (np.asarray(labels) == 0).all()


def test_sample_rois_appends_ground_truth():
  gt = jnp.array([[10.0, 10, 50, 60], [0, 0, 0, 0]])
  classes = jnp.array([7, 0])
  gvalid = jnp.array([True, False])
  props = jnp.array([[12.0, 10, 50, 60], [200, 200, 220, 230], [0, 0, 1, 1]])
  out = T.sample_rois(jax.random.PRNGKey(0), props, jnp.array([True, True, False]), gt, classes,
                      gvalid, num_samples=4, positive_fraction=0.5)
  out = jax.tree.map(np.asarray, out)
  assert out["is_fg"].sum() == 2 and out["valid"].sum() == 3
  assert set(out["labels"][out["is_fg"]]) == {7} and (out["labels"][~out["is_fg"]] == 0).all()
  fg_rois = out["rois"][out["is_fg"]]
  assert any(np.allclose(r, [10, 10, 50, 60]) for r in fg_rois)  # the GT box itself
  for r, t in zip(out["rois"][out["is_fg"]], out["box_targets"][out["is_fg"]]):
    np.testing.assert_allclose(ops.decode(jnp.asarray(t), jnp.asarray(r), (10, 10, 5, 5)),
                               [10, 10, 50, 60], atol=1e-3)


def test_mask_targets_follow_the_roi():
  crop = np.zeros((1, 28, 28), np.float32)
  crop[0, :, :14] = 1.0  # left half of the garment
  gt = jnp.array([[20.0, 40, 76, 96]])
  same = T.mask_targets(gt, jnp.array([0]), gt, jnp.asarray(crop), 28)
  np.testing.assert_array_equal(np.asarray(same[0]), crop[0])
  left = T.mask_targets(jnp.array([[20.0, 40, 48, 96]]), jnp.array([0]), gt, jnp.asarray(crop),
                        28)
  assert np.asarray(left).min() == 1.0  # the RoI covers only the left half: all ones
  right = T.mask_targets(jnp.array([[48.0, 40, 76, 96]]), jnp.array([0]), gt, jnp.asarray(crop),
                         28)
  assert np.asarray(right).max() == 0.0


def test_landmark_targets_match_torchvision():
  from torchvision.models.detection.roi_heads import keypoints_to_heatmap
  rng = np.random.default_rng(2)
  rois = np.array([[10.0, 20, 66, 90], [0, 0, 30, 30]], np.float32)
  kps = np.stack([rng.uniform(0, 80, (2, 9)), rng.uniform(0, 100, (2, 9)),
                  rng.integers(0, 3, (2, 9))], -1).astype(np.float32)
  kps[0, 0] = [66, 50, 2]  # on the right edge: last cell
  index, valid = T.landmark_targets(jnp.asarray(rois), jnp.asarray(kps), 56)
  ref_idx, ref_valid = keypoints_to_heatmap(torch.from_numpy(kps), torch.from_numpy(rois), 56)
  np.testing.assert_array_equal(np.asarray(valid), ref_valid.numpy() > 0)
  np.testing.assert_array_equal(np.asarray(index)[np.asarray(valid)],
                                ref_idx.numpy()[ref_valid.numpy() > 0])
  assert valid[0, 0] and index[0, 0] % 56 == 55


def test_pair_targets():
  pm = jnp.array([[True, False], [False, False]])
  labels, valid = T.pair_targets(jnp.array([0, 1, 0]), jnp.array([True, True, False]),
                                 jnp.array([0, 0]), jnp.array([True, False]), pm)
  np.testing.assert_array_equal(labels, [[1, 1], [0, 0], [1, 1]])
  np.testing.assert_array_equal(valid, [[1, 0], [1, 0], [0, 0]])


def test_loss_functions_match_torch():
  import torch.nn.functional as F
  rng = np.random.default_rng(3)
  a, b = rng.normal(size=(2, 50, 4)).astype(np.float32)
  np.testing.assert_allclose(
      np.asarray(ops.losses.smooth_l1(jnp.asarray(a), jnp.asarray(b), 1 / 9)).sum(),
      F.smooth_l1_loss(torch.from_numpy(a), torch.from_numpy(b), beta=1 / 9,
                       reduction="sum").item(), rtol=1e-5)
  logits = rng.normal(scale=3, size=(40,)).astype(np.float32)
  targets = (rng.random(40) > 0.5).astype(np.float32)
  np.testing.assert_allclose(
      np.asarray(ops.losses.sigmoid_bce(jnp.asarray(logits), jnp.asarray(targets))).mean(),
      F.binary_cross_entropy_with_logits(torch.from_numpy(logits),
                                         torch.from_numpy(targets)).item(), rtol=1e-5)
  logits = rng.normal(size=(10, 7)).astype(np.float32)
  labels = rng.integers(0, 7, 10)
  np.testing.assert_allclose(
      np.asarray(ops.losses.softmax_ce(jnp.asarray(logits), jnp.asarray(labels))).mean(),
      F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item(), rtol=1e-5)


def _outputs(n_valid):
  rng = np.random.default_rng(4)
  f = lambda *s: jnp.asarray(rng.normal(size=s).astype(np.float32))  # noqa: E731
  has = lambda *s: jnp.zeros(s, bool) if not n_valid else jnp.ones(s, bool)  # noqa: E731
  return {
      "rpn_logits": f(2, 30), "rpn_deltas": f(2, 30, 4), "rpn_labels": jnp.ones((2, 30), int),
      "rpn_box_targets": f(2, 30, 4), "rpn_sampled": has(2, 30), "cls_logits": f(2, 8, 14),
      "roi_labels": jnp.zeros((2, 8), int), "roi_valid": has(2, 8), "roi_is_fg": has(2, 8),
      "box_deltas": f(2, 8, 4), "box_targets": f(2, 8, 4), "mask_logits": f(2, 3, 28, 28),
      "mask_targets": jnp.ones((2, 3, 28, 28)), "mask_valid": has(2, 3),
      "landmark_logits": f(2, 3, 3136, 39), "landmark_targets": jnp.zeros((2, 3, 39), int),
      "landmark_valid": has(2, 3, 39), "pair_logits": f(1, 4, 4, 2),
      "pair_labels": jnp.zeros((1, 4, 4), int), "pair_valid": has(1, 4, 4)}


def test_compute_losses_and_empty_batches():
  w = ml_collections.ConfigDict({k: 1.0 for k in ("rpn_cls", "rpn_box", "cls", "box",
                                                  "landmark", "mask", "match")})
  full = losses.compute(_outputs(True), w)
  assert set(full) == set(losses.NAMES) | {"loss"}
  assert all(float(v) > 0 for v in full.values())
  np.testing.assert_allclose(float(full["loss"]), sum(float(full[k]) for k in losses.NAMES),
                             rtol=1e-5)
  empty = losses.compute(_outputs(False), w)
  assert all(float(v) == 0.0 for v in empty.values())  # finite zeros, not NaN
  w.landmark = 0.0
  assert float(losses.compute(_outputs(True), w)["loss"]) < float(full["loss"])
