"""The matching network's side batch of ground-truth crop pairs (`data.crop_pairs`): the crops,
the bank of a converted split, the sampling by pair_id group, the jittered boxes, the train
forward's extra pair rows and the training loop's per-step sampler."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from match_rcnn_jax import ops
from match_rcnn_jax.data import crop_pairs
from match_rcnn_jax.models import match_rcnn
from match_rcnn_jax.models import targets as tgt
from match_rcnn_jax.training import loop


def test_crop_holds_the_box_where_gt_box_in_crop_says():
  image = np.zeros((100, 120, 3), np.uint8)
  image[20:60, 30:70] = (200, 40, 10)  # the garment: x 30-70, y 20-60
  size = 40
  out = crop_pairs.crop(image, (30, 20, 70, 60), size)
  assert out.shape == (size, size, 3) and out.dtype == np.uint8
  x1, y1, x2, y2 = crop_pairs.gt_box_in_crop(size)
  # the box grown by 1/8 of 40 px (5 px) per side is 50 px wide: the garment 40 of its 50 px
  assert (x1, x2) == pytest.approx((4.0, 36.0))
  inside = out[int(y1) + 1:int(y2) - 1, int(x1) + 1:int(x2) - 1]
  np.testing.assert_array_equal(inside.reshape(-1, 3).min(0), (200, 40, 10))
  assert out[:int(y1) - 1].max() == 0 and out[:, int(x2) + 1:].max() == 0  # the margin


def _hand_bank():
  # 3 pair_id groups; products (pid, style): group 1 has 3, group 2 has 2, group 3 has one
  # product with shop crops only (not drawn). Each crop's pixels hold its row index.
  rows = [((1, 1), True), ((1, 1), False), ((1, 2), True), ((1, 2), False), ((1, 2), False),
          ((1, 3), True), ((1, 3), False), ((2, 1), True), ((2, 1), False), ((2, 2), True),
          ((2, 2), False), ((3, 1), True)]
  crops = np.stack([np.full((8, 8, 3), i, np.uint8) for i in range(len(rows))])
  return crop_pairs.CropBank(crops, np.asarray([k for k, _ in rows]),
                             np.asarray([s for _, s in rows]), (0.0, 0.0, 0.0),
                             (1 / 255, 1 / 255, 1 / 255)), rows


def test_bank_samples_shop_and_user_crops_by_group():
  bank, rows = _hand_bank()
  assert sorted(bank.products) == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2)]
  assert bank.group_ids == [1, 2]
  out = bank.sample(np.random.default_rng(0), pairs=4, per_group=2)
  assert out["crop_pairs"].shape == (4, 2, 8, 8, 3) and out["crop_pairs"].dtype == np.float32
  assert out["crop_pair_boxes"].shape == (4, 2, 4)
  np.testing.assert_allclose(out["crop_pair_boxes"][0, 0], crop_pairs.gt_box_in_crop(8))
  keys = out["crop_pair_key"]
  # 2 products of one group, then 2 of the other, each product once
  assert keys[0, 0] == keys[1, 0] != keys[2, 0] == keys[3, 0]
  assert len({tuple(k) for k in keys}) == 4
  for (pid, style), pair in zip(keys, out["crop_pairs"]):
    # normalised with mean 0 and std 1 / 255: the row index
    shop_row, user_row = round(float(pair[0, 0, 0, 0])), round(float(pair[1, 0, 0, 0]))
    assert rows[shop_row] == ((pid, style), True) and rows[user_row] == ((pid, style), False)
  again = bank.sample(np.random.default_rng(0), pairs=4, per_group=2)
  np.testing.assert_array_equal(again["crop_pairs"], out["crop_pairs"])
  # more pairs than products: groups are drawn again
  many = bank.sample(np.random.default_rng(1), pairs=12, per_group=3)
  assert len(many["crop_pair_key"]) == 12


def test_crop_pair_boxes_move_each_side_within_the_jitter():
  boxes = jnp.tile(jnp.array([[10.0, 20.0, 50.0, 40.0]]), (500, 1))  # 40 x 20
  moved = np.asarray(tgt.crop_pair_boxes(jax.random.PRNGKey(0), boxes, 0.1))
  shift = moved - np.asarray(boxes)
  assert np.abs(shift[:, 0::2]).max() <= 4.0 + 1e-5 and np.abs(shift[:, 1::2]).max() <= 2.0 + 1e-5
  assert np.abs(shift[:, 0]).max() > 3.0  # the whole range is drawn
  np.testing.assert_array_equal(np.asarray(tgt.crop_pair_boxes(jax.random.PRNGKey(0), boxes, 0.0)),
                                np.asarray(boxes))


def test_bank_of_a_split_and_the_loops_sampler(tiny_config):
  config = tiny.get_config()
  config.data.dir = tiny_config.data.dir
  config.data.crop_pairs = 2
  config.data.crop_pairs_size = 24
  bank = crop_pairs.CropBank.from_split(config.data, "train", 24, host=(0, 1))
  d = config.data.dir
  items = [q for q in json.load(open(os.path.join(d, "train_query.json")))
           if q["style"] > 0] + json.load(open(os.path.join(d, "train_gallery.json")))
  assert len(bank.crops) == len([i for i in items if i["style"] > 0])
  assert int(bank.shop.sum()) == len([i for i in items if "gallery_image_id" in i
                                      and i["style"] > 0])
  sampler = loop._crop_pair_sampler(config, (0, 1))
  a, b, c = sampler(5), sampler(5), sampler(6)
  assert a["crop_pairs"].shape == (2, 2, 24, 24, 3)
  np.testing.assert_array_equal(a["crop_pairs"], b["crop_pairs"])  # a resumed step: the same
  assert not np.array_equal(a["crop_pairs"], c["crop_pairs"]) or len(bank.products) == 1


def test_train_forward_ranks_the_crop_pairs_beside_the_rois():
  cfg = tiny.get_config().model
  cfg.match_head.features = "crop"
  model = match_rcnn.build(cfg)
  variables = match_rcnn.init(model, jax.random.PRNGKey(0), (128, 128))
  n, m, k = 2, 2, 3
  targets = {
      "boxes": jnp.tile(jnp.array([[[10.0, 10.0, 60.0, 70.0], [50.0, 40.0, 110.0, 120.0]]]),
                        (n, 1, 1)),
      "classes": jnp.ones((n, m), jnp.int32), "valid": jnp.ones((n, m), bool),
      "mask_crops": jnp.ones((n, m, 16, 16)), "landmarks": jnp.zeros((n, m, 294, 3)),
      "styles": jnp.array([[1, 2], [1, 2]]), "pair_id": jnp.array([7, 7]),
      # side products: (7, 2) is the batch's second product, (8, 1) and (9, 1) are others
      "crop_pairs": jax.random.normal(jax.random.PRNGKey(1), (k, 2, 24, 24, 3)),
      "crop_pair_key": jnp.array([[7, 2], [8, 1], [9, 1]]),
      "crop_pair_boxes": jnp.tile(jnp.asarray(crop_pairs.gt_box_in_crop(24)), (k, 2, 1)),
  }
  out, _ = jax.jit(lambda v, x, t: model.apply(
      v, x, t, train=True, rngs={"sampling": jax.random.PRNGKey(0)}, mutable=["batch_stats"]))(
          variables, jnp.zeros((n, 128, 128, 3)), targets)
  rows = n // 2 * (m + cfg.sampling.pair_rois_per_image)
  assert out["pair_logits"].shape == (rows + k, rows + k)
  assert out["match_shop_emb"].shape == (rows + k, cfg.match_head.dim)
  labels, valid = np.asarray(out["pair_labels"]), np.asarray(out["pair_valid"])
  assert valid[rows:, rows:].all()
  np.testing.assert_array_equal(labels[rows:, rows:], np.eye(k))
  # the shop image's GT item of style 2 (row 1) and the side pair of (7, 2) are one product
  assert labels[1, rows] == 1 and labels[rows, 1] == 1 and labels[0, rows] == 0
  assert np.isfinite(np.asarray(out["pair_logits"])).all()

  paper = tiny.get_config().model  # landmark+box: the side batch has no FPN features
  paper_model = match_rcnn.build(paper)
  with pytest.raises(ValueError, match="crop_pairs > 0 needs model.match_head.features='crop'"):
    jax.eval_shape(lambda v: paper_model.apply(
        v, jnp.zeros((n, 128, 128, 3)), targets, train=True,
        rngs={"sampling": jax.random.PRNGKey(0)}, mutable=["batch_stats"]),
        match_rcnn.variable_shapes(paper_model, (128, 128)))


def test_crop_pair_pixels_pool_the_box_and_mirror_half():
  cfg = tiny.get_config().model
  cfg.match_head.features = "crop"
  cfg.sampling.crop_pair_jitter = 0.0
  k, size, c = 8, 24, cfg.match_head.crop_size
  crops = jax.random.normal(jax.random.PRNGKey(2), (k, 2, size, size, 3))
  boxes = jnp.tile(jnp.asarray(crop_pairs.gt_box_in_crop(size)), (k, 2, 1))

  def pixels(model_cfg):
    return np.asarray(match_rcnn.build(model_cfg).apply(
        {}, jax.random.PRNGKey(0), crops, boxes, method=match_rcnn.MatchRCNN.crop_pair_pixels))
  out = pixels(cfg)
  assert out.shape == (2 * k, c, c, 3)
  r = cfg.roi_align
  ref = np.asarray(ops.roi_align(crops.reshape(2 * k, size, size, 3),
                                 boxes.reshape(2 * k, 1, 4), c, 1.0, r.sampling_ratio,
                                 r.aligned))[:, 0]
  same = np.isclose(out, ref, atol=1e-5).all((1, 2, 3))
  mirrored = np.isclose(out, ref[:, :, ::-1], atol=1e-5).all((1, 2, 3))
  assert (same | mirrored).all() and same.any() and mirrored.any()
