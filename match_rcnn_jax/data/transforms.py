"""Host-side preprocessing ops for tf.data: small `dict -> dict` functions.

Coordinates are continuous pixels (pixel i covers [i, i + 1]); boxes are (x1, y1, x2, y2).
A horizontal flip maps x -> W - x for boxes and labelled landmarks, swaps left/right landmarks
inside each category's block (`schema.FLIP_PERMUTATION`), and mirrors the mask crops. Landmarks
with v = 0 stay (0, 0, 0). Geometric ops move image, boxes, masks and landmarks together.

Keys of an example after `from_tfds`:
  image [H, W, 3] uint8; image_id, pair_id, group_size int64 []; source int64 [];
  boxes [N, 4] float32; classes [N] int32 (1..13); styles [N] int32; attributes [N, 4] int32
  (scale, occlusion, zoom_in, viewpoint); landmarks [N, 294, 3] float32 (x, y, v);
  masks [N, H, W] uint8 (until `crop_masks` replaces them by mask_crops [N, S, S] float32).
"""

from __future__ import annotations

import tensorflow as tf

from match_rcnn_jax.data import schema


def from_tfds(ex: dict) -> dict:
  obj = ex["objects"]
  return {
      "image": ex["image"],
      "image_id": ex["image_id"],
      "pair_id": ex["pair_id"],
      "group_size": ex["group_size"],
      "source": ex["source"],
      "boxes": obj["bbox"],
      "classes": tf.cast(obj["category_id"], tf.int32),
      "styles": tf.cast(obj["style"], tf.int32),
      "attributes": tf.cast(tf.stack([obj[k] for k in schema.ATTRIBUTES], axis=-1), tf.int32),
      "landmarks": obj["landmarks"],
      "masks": obj["mask"][..., 0],
  }


def crop_masks(ex: dict, size: int) -> dict:
  """Replaces full-image masks by [N, size, size] float32 crops inside each GT box.

  Sample (i, j) is the bilinear value of the mask at the centre of bin (i, j) of the box, the
  grid the RoI mask targets are later resampled from (as the TF TPU Mask R-CNN does on the host).
  """
  ex = dict(ex)
  masks = ex.pop("masks")
  h = tf.cast(tf.shape(masks)[1], tf.float32)
  w = tf.cast(tf.shape(masks)[2], tf.float32)
  x1, y1, x2, y2 = tf.unstack(ex["boxes"], axis=-1)
  bw, bh = (x2 - x1) / size, (y2 - y1) / size
  # crop_and_resize samples row k at y1n * (H - 1) + k * (y2n - y1n) * (H - 1) / (size - 1) in
  # pixel-index units; choose y1n, y2n so that row k lands on bin centre y1 + (k + .5) bh - .5.
  ys = tf.stack([y1 + 0.5 * bh - 0.5, y2 - 0.5 * bh - 0.5], -1) / tf.maximum(h - 1.0, 1.0)
  xs = tf.stack([x1 + 0.5 * bw - 0.5, x2 - 0.5 * bw - 0.5], -1) / tf.maximum(w - 1.0, 1.0)
  norm_boxes = tf.stack([ys[:, 0], xs[:, 0], ys[:, 1], xs[:, 1]], -1)
  n = tf.shape(masks)[0]
  crops = tf.image.crop_and_resize(
      tf.cast(masks[..., None], tf.float32), norm_boxes, tf.range(n), [size, size],
      method="bilinear", extrapolation_value=0.0)
  ex["mask_crops"] = tf.reshape(crops, [n, size, size])
  return ex


def flip_landmarks(landmarks: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
  """[N, 294, 3] landmarks of an image of the given width, flipped horizontally."""
  x, y, v = tf.unstack(landmarks, axis=-1)
  labelled = v > 0
  x = tf.where(labelled, width - x, x)
  flipped = tf.stack([x, y, v], axis=-1)
  return tf.gather(flipped, schema.FLIP_PERMUTATION, axis=1)


def hflip(ex: dict) -> dict:
  """Flips image, boxes, landmarks and masks / mask crops horizontally."""
  ex = dict(ex)
  width = tf.cast(tf.shape(ex["image"])[1], tf.float32)
  ex["image"] = ex["image"][:, ::-1]
  x1, y1, x2, y2 = tf.unstack(ex["boxes"], axis=-1)
  ex["boxes"] = tf.stack([width - x2, y1, width - x1, y2], axis=-1)
  ex["landmarks"] = flip_landmarks(ex["landmarks"], width)
  if "masks" in ex:
    ex["masks"] = ex["masks"][:, :, ::-1]
  if "mask_crops" in ex:
    ex["mask_crops"] = ex["mask_crops"][:, :, ::-1]
  return ex


def random_hflip(ex: dict, seed: tf.Tensor, prob: float) -> dict:
  """Flips with probability `prob`; records the decision in `flipped` (bool)."""
  flip = tf.random.stateless_uniform([], seed=seed) < prob
  out = tf.cond(flip, lambda: hflip(ex), lambda: dict(ex))
  out["flipped"] = flip
  return out


def resize_and_pad(ex: dict, short_side: int, max_side: int, canvas: tuple[int, int],
                   jitter: tf.Tensor | float = 1.0) -> dict:
  """Resizes so the short side is `short_side` (long side <= `max_side`), times `jitter`, never
  beyond the canvas, and pads bottom/right with zeros to `canvas` (H, W).

  Adds `image_info` [6] float32: original (h, w), the y and x scale factors, resized (h, w).
  """
  ex = dict(ex)
  image = ex["image"]
  h = tf.cast(tf.shape(image)[0], tf.float32)
  w = tf.cast(tf.shape(image)[1], tf.float32)
  ch, cw = canvas
  scale = tf.minimum(short_side / tf.minimum(h, w), max_side / tf.maximum(h, w)) * jitter
  scale = tf.minimum(scale, tf.minimum(ch / h, cw / w))
  nh = tf.clip_by_value(tf.round(h * scale), 1.0, float(ch))
  nw = tf.clip_by_value(tf.round(w * scale), 1.0, float(cw))
  sy, sx = nh / h, nw / w
  image = tf.image.resize(image, tf.cast(tf.stack([nh, nw]), tf.int32), method="bilinear",
                          antialias=True)
  ex["image"] = tf.image.pad_to_bounding_box(image, 0, 0, ch, cw)
  ex["boxes"] = ex["boxes"] * tf.stack([sx, sy, sx, sy])
  x, y, v = tf.unstack(ex["landmarks"], axis=-1)
  ex["landmarks"] = tf.stack([x * sx, y * sy, v], axis=-1)
  ex["image_info"] = tf.stack([h, w, sy, sx, nh, nw])
  return ex


def normalize(ex: dict, mean: tuple[float, ...], std: tuple[float, ...]) -> dict:
  """image in [0, 255] -> ((image / 255) - mean) / std, padding kept at 0 (as torchvision)."""
  ex = dict(ex)
  info = ex["image_info"]
  ch, cw = ex["image"].shape[0], ex["image"].shape[1]
  img = (ex["image"] / 255.0 - tf.constant(mean)) / tf.constant(std)
  rows = tf.range(ch, dtype=tf.float32)[:, None] < info[4]
  cols = tf.range(cw, dtype=tf.float32)[None, :] < info[5]
  ex["image"] = tf.where((rows & cols)[..., None], img, 0.0)
  return ex


def pad_instances(ex: dict, max_instances: int) -> dict:
  """Pads (or truncates) per-instance fields to `max_instances`; adds `valid` [M] bool and
  `num_instances` (the count before truncation)."""
  ex = dict(ex)
  n = tf.shape(ex["classes"])[0]
  ex["num_instances"] = n
  keep = tf.minimum(n, max_instances)
  for key in ("boxes", "classes", "styles", "attributes", "landmarks", "mask_crops"):
    if key not in ex:
      continue
    t = ex[key][:keep]
    pad = [[0, max_instances - keep]] + [[0, 0]] * (len(t.shape) - 1)
    t = tf.pad(t, pad)
    t.set_shape([max_instances] + t.shape[1:].as_list())
    ex[key] = t
  ex["valid"] = tf.range(max_instances) < keep
  return ex
