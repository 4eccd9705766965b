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


def test_pair_targets_across_image_pairs():
  """A hand-built batch of 2 image pairs (pair_ids 5 and 9), 3 RoIs per image: every shop RoI
  is labelled against every user RoI of the batch, positive when both GT items have the same
  pair_id and the same style > 0, padding rows invalid."""
  shop = dict(shop_ids=jnp.array([5, 5, 5, 9, 9, 9]), shop_styles=jnp.array([1, 2, 0, 1, 1, 0]),
              shop_valid=jnp.array([1, 1, 0, 1, 1, 0], bool))
  user = dict(user_ids=jnp.array([5, 5, 5, 9, 9, 9]), user_styles=jnp.array([1, 0, 2, 1, 2, 0]),
              user_valid=jnp.array([1, 1, 0, 1, 1, 0], bool))
  labels, valid = jax.jit(T.pair_targets)(**shop, **user)
  expect = np.zeros((6, 6), int)
  expect[0, 0] = 1  # pair 0: style 1 = style 1
  expect[3, 3] = expect[4, 3] = 1  # pair 1: two shop RoIs of its style-1 product
  # (5, 1) vs (9, 1): same style, other pair_id: a negative across image pairs; (5, 2) vs the
  # padding row (5, 2): invalid; style 0 never matches, even itself.
  np.testing.assert_array_equal(labels, expect)
  rows = np.array([1, 1, 0, 1, 1, 0], bool)
  np.testing.assert_array_equal(valid, rows[:, None] & rows[None, :])
  # The same labels whatever the order of the RoIs (no dependence on position or image).
  perm_s, perm_u = np.array([4, 2, 0, 5, 1, 3]), np.array([3, 0, 5, 1, 4, 2])
  labels_p, _ = T.pair_targets(*(v[perm_s] for v in shop.values()),
                               *(v[perm_u] for v in user.values()))
  np.testing.assert_array_equal(labels_p, expect[perm_s][:, perm_u])


def test_match_rois_are_gt_boxes_then_tight_foreground():
  gt = jnp.array([[0, 0, 10, 10], [20, 20, 40, 40], [0, 0, 1, 1]], jnp.float32)
  gt_valid = jnp.array([True, True, False])
  rois = {"rois": jnp.array([[0, 0, 10, 9], [20, 20, 30, 30], [21, 20, 40, 40], [50, 50, 60, 60],
                             [0, 0, 10, 10]], jnp.float32),
          "matched": jnp.array([0, 1, 1, 0, 0]), "iou": jnp.array([0.9, 0.25, 0.95, 0.0, 1.0]),
          "is_fg": jnp.array([True, False, True, False, True]),
          "valid": jnp.array([True, True, True, True, False])}
  boxes, matched, valid = T.match_rois(gt, gt_valid, rois, num_rois=3, min_iou=0.7)
  np.testing.assert_array_equal(boxes[:3], gt)
  np.testing.assert_array_equal(matched[:5], [0, 1, 2, 0, 1])  # (the last slot: padding)
  # RoIs 0 and 2 are tight foreground; the third slot (RoI 1: IoU 0.25) is padding, and RoI 4
  # (not a valid sample) is never taken.
  np.testing.assert_array_equal(valid, [True, True, False, True, True, False])
  np.testing.assert_array_equal(boxes[3:5], rois["rois"][jnp.array([0, 2])])


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
      "landmark_valid": has(2, 3, 39), "pair_logits": f(8, 8),
      "pair_labels": jnp.eye(8, dtype=int), "pair_valid": has(8, 8)}


def test_compute_losses_and_empty_batches():
  w = ml_collections.ConfigDict({k: 1.0 for k in ("rpn_cls", "rpn_box", "cls", "box",
                                                  "landmark", "mask", "match")})
  out = _outputs(True)
  full = losses.compute(out, w)
  assert set(full) == (set(losses.NAMES) | set(losses.MATCH_PARTS) | set(losses.LIST_PARTS)
                       | {"loss"})
  assert all(float(v) > 0 for v in full.values())
  np.testing.assert_allclose(float(full["loss"]), sum(float(full[k]) for k in losses.NAMES),
                             rtol=1e-5)
  # The match loss weighs the 8 positive and the 56 negative pairs equally: the mean of the
  # positives' cross-entropy and the mean of the negatives'.
  d, y = np.asarray(out["pair_logits"], np.float64), np.eye(8)
  ce = np.logaddexp(0, d) - y * d  # softmax([0, d]) cross-entropy
  np.testing.assert_allclose(float(full["loss_match_pos"]), ce[y == 1].mean(), rtol=1e-5)
  np.testing.assert_allclose(float(full["loss_match_neg"]), ce[y == 0].mean(), rtol=1e-5)
  np.testing.assert_allclose(float(full["loss_match"]),
                             (ce[y == 1].mean() + ce[y == 0].mean()) / 2, rtol=1e-5)
  assert {k: int(v) for k, v in losses.pair_counts(out).items()} == {
      "match_pairs_pos": 8, "match_pairs_neg": 56}
  empty = losses.compute(_outputs(False), w)
  assert all(float(v) == 0.0 for v in empty.values())  # finite zeros, not NaN
  w.landmark = 0.0
  assert float(losses.compute(_outputs(True), w)["loss"]) < float(full["loss"])


def test_listwise_match_by_hand_with_a_memory():
  """The listwise term: per user RoI with a positive, logsumexp over its valid candidates (the
  batch's shop RoIs, then the memory's rows) minus logsumexp over its positives."""
  d = np.array([[2.0, -1.0], [0.5, 1.0]])  # 2 shop RoIs x 2 user RoIs
  mem = np.array([[0.0, 3.0], [1.5, -2.0], [9.0, 9.0]])  # 3 memory rows, the last invalid
  out = {"pair_logits": jnp.asarray(d), "pair_labels": jnp.asarray([[1, 0], [0, 0]]),
         "pair_valid": jnp.ones((2, 2), bool),
         "memory_logits": jnp.asarray(mem), "memory_labels": jnp.asarray([[0, 1], [1, 0],
                                                                          [1, 1]]),
         "memory_valid": jnp.asarray([[True, True], [True, True], [False, False]])}
  lse = lambda x: np.log(np.exp(x).sum())  # noqa: E731
  user0 = lse([2.0, 0.5, 0.0, 1.5]) - lse([2.0, 1.5])
  user1 = lse([-1.0, 1.0, 3.0, -2.0]) - lse([3.0])
  np.testing.assert_allclose(float(losses.listwise_match(out)), (user0 + user1) / 2, rtol=1e-6)
  # Without the memory, user 1 has no positive and does not count.
  batch_only = {k: out[k] for k in ("pair_logits", "pair_labels", "pair_valid")}
  np.testing.assert_allclose(float(losses.listwise_match(batch_only)),
                             lse([2.0, 0.5]) - 2.0, rtol=1e-6)


def test_match_memory_is_a_ring_buffer():
  from match_rcnn_jax.training import step as step_lib
  mem = step_lib.empty_memory(5, 2)
  assert not bool(mem["valid"].any())
  rows = lambda v: (jnp.full((3, 2), v, jnp.float32), jnp.full((3, 2), int(v), jnp.int32),  # noqa
                    jnp.asarray([True, False, True]))
  mem = step_lib.write_memory(mem, *rows(1.0))
  mem = step_lib.write_memory(mem, *rows(2.0))  # wraps: slots 3, 4, 0
  np.testing.assert_array_equal(np.asarray(mem["emb"])[:, 0], [2, 1, 1, 2, 2])
  np.testing.assert_array_equal(np.asarray(mem["key"])[:, 1], [2, 1, 1, 2, 2])
  np.testing.assert_array_equal(np.asarray(mem["valid"]), [True, False, True, True, False])
  assert int(mem["next"]) == 1
  assert step_lib.empty_memory(0, 2) == {}
