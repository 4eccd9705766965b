"""Training targets, one image at a time (vmap over the batch), every shape static.

* `rpn_targets`: anchor labels by IoU (fg >= 0.7, bg < 0.3, plus each GT's best anchors, as
  torchvision's Matcher with low-quality matches) and box targets.
* `sample_rois`: GT boxes appended to the proposals, IoU >= 0.5 foreground, a fixed number of
  RoIs with a fixed foreground share; returns the matched GT index of every RoI.
* `mask_targets`: the matched GT's host-side mask crop resampled at the RoI's 28 x 28 bin
  centres, thresholded at 0.5.
* `landmark_targets`: per landmark of the matched GT, the index of its cell on the RoI's
  56 x 56 heatmap (torchvision's keypoints_to_heatmap), valid when v > 0 and inside the RoI.
* `match_rois`: the RoIs of the matching network: the GT boxes and tight foreground RoIs.
* `pair_targets`: labels of every (shop RoI, user RoI) combination of the global batch.

The batch (`*_batch`, what the training forward calls): the same, vmapped over the images of a
batch with the sample counts and thresholds of `config.model.sampling`.

All targets are computed under stop_gradient.
"""

from __future__ import annotations

import enum

import jax
import jax.numpy as jnp

from match_rcnn_jax import ops
from match_rcnn_jax.models import postprocess


class Match(enum.IntEnum):
  """Anchor / RoI assignment labels."""

  IGNORE = -1
  BACKGROUND = 0
  FOREGROUND = 1


def rpn_targets(anchors, gt_boxes, gt_valid, fg_iou: float = 0.7, bg_iou: float = 0.3):
  """Anchor labels [A] (Match) and box targets [A, 4] (weights 1, 1, 1, 1).

  Args:
    anchors: [A, 4]; gt_boxes: [M, 4]; gt_valid: [M] bool.
  """
  iou = jnp.where(gt_valid[None, :], ops.iou(anchors, gt_boxes), -1.0)
  best = iou.max(axis=1)
  matched = iou.argmax(axis=1)
  gt_best = iou.max(axis=0)  # [M]
  low_quality = ((iou == gt_best[None, :]) & gt_valid[None, :] & (gt_best[None, :] > 0)).any(1)
  labels = jnp.where(best >= fg_iou, Match.FOREGROUND,
                     jnp.where(best < bg_iou, Match.BACKGROUND, Match.IGNORE))
  labels = jnp.where(low_quality, Match.FOREGROUND, labels).astype(jnp.int32)
  deltas = ops.encode(gt_boxes[matched], anchors)
  deltas = jnp.where((labels == Match.FOREGROUND)[:, None], deltas, 0.0)
  return jax.lax.stop_gradient(labels), jax.lax.stop_gradient(deltas)


def sample_anchors(rng, labels, num_samples: int = 256, positive_fraction: float = 0.5):
  """[A] bool mask of the anchors that carry the RPN losses."""
  idx, _, valid = ops.sampling.balanced_sample(
      rng, labels == Match.FOREGROUND, labels == Match.BACKGROUND, num_samples, positive_fraction)
  return jnp.zeros(labels.shape, bool).at[idx].max(valid)


def sample_rois(rng, proposals, proposal_valid, gt_boxes, gt_classes, gt_valid,
                num_samples: int = 512, positive_fraction: float = 0.25, fg_iou: float = 0.5,
                box_weights=(10.0, 10.0, 5.0, 5.0)):
  """Fixed-count RoI sampling.

  Returns a dict: rois [S, 4], labels [S] (category or 0), matched [S] (GT index), iou [S]
  (with that GT), is_fg [S], valid [S], box_targets [S, 4]; foreground RoIs come first.
  """
  boxes = jnp.concatenate([proposals, gt_boxes], 0)
  valid = jnp.concatenate([proposal_valid, gt_valid], 0)
  iou = jnp.where(gt_valid[None, :], ops.iou(boxes, gt_boxes), -1.0)
  best = iou.max(1)
  matched = iou.argmax(1)
  fg = valid & (best >= fg_iou)
  bg = valid & (best < fg_iou)
  idx, is_fg, ok = ops.sampling.balanced_sample(rng, fg, bg, num_samples, positive_fraction)
  rois = boxes[idx]
  m = matched[idx]
  targets = ops.encode(gt_boxes[m], rois, box_weights)
  out = {"rois": rois, "labels": jnp.where(is_fg, gt_classes[m], 0).astype(jnp.int32),
         "matched": m, "iou": best[idx], "is_fg": is_fg, "valid": ok,
         "box_targets": jnp.where(is_fg[:, None], targets, 0.0)}
  return jax.tree.map(jax.lax.stop_gradient, out)


def mask_targets(rois, matched, gt_boxes, gt_mask_crops, size: int = 28):
  """Binary targets [K, size, size] of RoIs [K, 4] from the matched GT's crop [M, S, S].

  The crop covers its GT box with S x S cells; each target pixel is the crop's bilinear value
  at the centre of the RoI's bin (in the crop's frame), >= 0.5.
  """
  gt = gt_boxes[matched]
  crops = gt_mask_crops[matched]  # [K, S, S]
  s = crops.shape[-1]
  gw = jnp.maximum(gt[:, 2] - gt[:, 0], 1e-6)
  gh = jnp.maximum(gt[:, 3] - gt[:, 1], 1e-6)
  rel = jnp.stack([(rois[:, 0] - gt[:, 0]) / gw, (rois[:, 1] - gt[:, 1]) / gh,
                   (rois[:, 2] - gt[:, 0]) / gw, (rois[:, 3] - gt[:, 1]) / gh], -1) * s
  out = ops.roi_align(crops[..., None], rel[:, None, :], size, 1.0, 1, aligned=True)
  return jax.lax.stop_gradient((out[:, 0, ..., 0] >= 0.5).astype(jnp.float32))


def landmark_targets(rois, landmarks, size: int = 56):
  """Heatmap cell targets of landmarks [K, L, 3] (x, y, v) in RoIs [K, 4].

  Returns (index [K, L] int32 in [0, size * size), valid [K, L] bool).
  """
  x1, y1, x2, y2 = (rois[:, i:i + 1] for i in range(4))
  sx = size / jnp.maximum(x2 - x1, 1e-6)
  sy = size / jnp.maximum(y2 - y1, 1e-6)
  x, y, v = landmarks[..., 0], landmarks[..., 1], landmarks[..., 2]
  gx = jnp.floor((x - x1) * sx)
  gy = jnp.floor((y - y1) * sy)
  # A landmark exactly on the right / bottom edge belongs to the last cell.
  gx = jnp.where(x == x2, size - 1, gx)
  gy = jnp.where(y == y2, size - 1, gy)
  valid = (v > 0) & (gx >= 0) & (gx < size) & (gy >= 0) & (gy < size)
  index = jnp.where(valid, gy * size + gx, 0).astype(jnp.int32)
  return jax.lax.stop_gradient(index), jax.lax.stop_gradient(valid)


def match_rois(gt_boxes, gt_valid, rois, num_rois: int, min_iou: float = 0.7):
  """The RoIs of one image that feed the matching network: its GT boxes, then `num_rois` of
  the sampled RoIs that overlap their GT tightly (foreground with IoU >= `min_iou`).

  Args:
    gt_boxes [M, 4], gt_valid [M]; rois: `sample_rois`' dict (foreground first, random order).
  Returns:
    boxes [M + num_rois, 4], matched [M + num_rois] (GT index), valid [M + num_rois] bool.
  """
  tight = rois["valid"] & rois["is_fg"] & (rois["iou"] >= min_iou)
  pick = jnp.argsort(~tight, stable=True)[:num_rois]
  m = gt_boxes.shape[0]
  out = (jnp.concatenate([gt_boxes, rois["rois"][pick]], 0),
         jnp.concatenate([jnp.arange(m, dtype=jnp.int32), rois["matched"][pick].astype(
             jnp.int32)], 0),
         jnp.concatenate([gt_valid, tight[pick]], 0))
  return jax.tree.map(jax.lax.stop_gradient, out)


def pair_targets(shop_ids, shop_styles, shop_valid, user_ids, user_styles, user_valid):
  """Labels [A, B] (1 = same product) and validity of every (shop RoI, user RoI) combination of
  a batch: the two RoIs' GT items have the same pair_id and the same style > 0 (the dataset's
  definition), whichever image pair, device or host they come from.

  Args:
    shop_ids / shop_styles: [A] pair_id and style of each shop RoI's GT item; shop_valid [A].
    user_ids / user_styles / user_valid: the same for [B] user RoIs.
  """
  same = ((shop_ids[:, None] == user_ids[None, :]) & (shop_styles[:, None] == user_styles[None, :])
          & (shop_styles[:, None] > 0))
  valid = shop_valid[:, None] & user_valid[None, :]
  return (jax.lax.stop_gradient((same & valid).astype(jnp.int32)),
          jax.lax.stop_gradient(valid))


# -- the batch: [N, ...] images' targets, config.model.sampling's counts and thresholds ------


def rpn_batch(rng, anchors, gt_boxes, gt_valid, t):
  """(labels [N, A], box targets [N, A, 4], sampled [N, A]) of the anchors of N images."""
  labels, box_targets = jax.vmap(
      lambda b, v: rpn_targets(anchors, b, v, t.rpn_fg_iou, t.rpn_bg_iou))(gt_boxes, gt_valid)
  sampled = jax.vmap(
      lambda r, lab: sample_anchors(r, lab, t.rpn_batch_per_image, t.rpn_positive_fraction))(
          jax.random.split(rng, labels.shape[0]), labels)
  return labels, box_targets, sampled


def roi_batch(rng, proposals, proposal_valid, gt_boxes, gt_classes, gt_valid, t, box_weights):
  """`sample_rois` of N images: a dict of [N, rois_per_image, ...] arrays."""
  return jax.vmap(lambda r, p, pv, b, cl, v: sample_rois(
      r, p, pv, b, cl, v, t.rois_per_image, t.roi_positive_fraction, t.roi_fg_iou,
      box_weights))(jax.random.split(rng, proposals.shape[0]), proposals, proposal_valid,
                    gt_boxes, gt_classes, gt_valid)


def mask_batch(rois, matched, gt_boxes, gt_mask_crops, size: int):
  """`mask_targets` of N images: rois / matched [N, K, ...] -> [N, K, size, size]."""
  return jax.vmap(lambda r, m, b, cr: mask_targets(r, m, b, cr, size))(
      rois, matched, gt_boxes, gt_mask_crops)


def landmark_batch(rois, matched, classes, gt_landmarks, size: int):
  """Heatmap cell targets of N images' RoIs [N, K, 4] in the category blocks of their classes
  [N, K]: the matched GT's landmarks (gt_landmarks [N, M, 294, 3]) of the block of the RoI's
  class. Returns (index [N, K, 39], valid [N, K, 39])."""
  n, k = classes.shape
  gt = jnp.take_along_axis(gt_landmarks, matched[..., None, None], axis=1)
  block = postprocess.gather_block(gt.reshape(n * k, -1, 3), classes.reshape(-1))
  return jax.vmap(lambda r, lm: landmark_targets(r, lm, size))(rois, block.reshape(n, k, -1, 3))


def match_roi_batch(gt_boxes, gt_valid, rois, t):
  """`match_rois` of N images: (boxes [N, R, 4], matched [N, R], valid [N, R])."""
  return jax.vmap(lambda b, v, r: match_rois(b, v, r, t.pair_rois_per_image, t.match_fg_iou))(
      gt_boxes, gt_valid, rois)


def crop_pair_boxes(rng, boxes, jitter: float):
  """boxes [n, 4] (x1, y1, x2, y2) with each side moved by a uniform draw in +-`jitter` of the
  box's width (x) or height (y): the offsets of a detection around its garment (jitter 0.1:
  IoU about 0.7 at the worst draws)."""
  boxes = jnp.asarray(boxes, jnp.float32)
  size = jnp.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, -1)
  shift = jax.random.uniform(rng, boxes.shape, minval=-jitter, maxval=jitter) * size
  return jax.lax.stop_gradient(boxes + shift)


def shop_rows(x):
  """The rows of the shop images (2p) of a pair batch [2P, R, ...] -> [P R, ...]."""
  return x[0::2].reshape(-1, *x.shape[2:])


def user_rows(x):
  """The rows of the user images (2p + 1) of a pair batch [2P, R, ...] -> [P R, ...]."""
  return x[1::2].reshape(-1, *x.shape[2:])


def roi_keys(pair_id, styles, matched):
  """The product key [N, R, 2] (pair_id, style of the matched GT item) of the MN's RoIs of N
  images: pair_id [N], styles [N, M], matched [N, R]."""
  roi_styles = jnp.take_along_axis(styles.astype(jnp.int32), matched, axis=1)
  ids = jnp.broadcast_to(pair_id.astype(jnp.int32)[:, None], matched.shape)
  return jax.lax.stop_gradient(jnp.stack([ids, roi_styles], -1))
