"""(shop, user) ground-truth crop pairs of many products: the matching network's side batch.

A detector's batch holds a few images, so the matching network sees a few products a step
(the demo: 2 image pairs). `CropBank` keeps a crop of every product garment (style > 0) of
this host's share of a split, read once from the converter's TFRecords, and `sample` draws
`pairs` products a step that have both a shop and a user garment, `per_group` of them from one
pair_id group (products of one group are the hardest negatives: in DeepFashion2 the same
consumer / shop set, in the synthetic proxy one family of one palette), one shop crop and one
user crop each. The train step pools each crop's box (jittered like a detection) at the MN's
`crop_size` with the same RoIAlign as inference (`models.targets.crop_pair_boxes`), and the
MN's pair loss ranks these pairs beside the batch's RoIs (`MatchRCNN.train_forward`).

Each crop is the garment's box grown by `MARGIN` of its side on every side, at the scale the
input pipeline gives its image where it then fits in `size` x `size` (scaled down to fit
otherwise), the rest filled with the pixel mean (what normalises to 0, as the pipeline pads
its canvas), kept as uint8 with the box's place in it. At that scale the step's RoIAlign
samples a garment's pixels as inference samples them from the canvas; a crop first resized to
a fixed size blurs or magnifies the fine motifs that inference sees at their own scale.
`sample` returns normalised float32 arrays with the pipeline's pixel mean and std.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from match_rcnn_jax.data import schema

MARGIN = 0.125  # of the box's side, on every side of the crop


def crop(image: np.ndarray, box, size: int, fill=(0, 0, 0),
         image_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
  """(uint8 [size, size, 3], the box in it [4]): `box` (x1, y1, x2, y2 pixels) of `image` grown
  by MARGIN of its side on every side (clamped to the image), at the scale the pipeline gives
  the image (`image_scale`, `pipeline_scale`) when that window then fits in `size` x `size`,
  else scaled down (antialiased) to fit; placed at the crop's top left, the rest `fill`."""
  x1, y1, x2, y2 = (float(v) for v in box)
  dx, dy = MARGIN * max(x2 - x1, 1.0), MARGIN * max(y2 - y1, 1.0)
  h, w = image.shape[:2]
  left, top = int(max(np.floor(x1 - dx), 0)), int(max(np.floor(y1 - dy), 0))
  right = int(min(np.ceil(x2 + dx), w))
  bottom = int(min(np.ceil(y2 + dy), h))
  right, bottom = max(right, left + 1), max(bottom, top + 1)
  window = image[top:bottom, left:right]
  scale = min(float(image_scale), size / max(window.shape[0], window.shape[1]))
  scale_x = scale_y = 1.0
  if scale != 1.0:
    shape = (max(1, min(size, round(window.shape[1] * scale))),
             max(1, min(size, round(window.shape[0] * scale))))
    window = np.asarray(Image.fromarray(window).resize(shape, Image.BILINEAR))
    scale_x, scale_y = shape[0] / (right - left), shape[1] / (bottom - top)
  out = np.empty((size, size, 3), np.uint8)
  out[:] = np.asarray(fill, np.uint8)
  out[:window.shape[0], :window.shape[1]] = window
  inside = np.asarray([(x1 - left) * scale_x, (y1 - top) * scale_y, (x2 - left) * scale_x,
                       (y2 - top) * scale_y], np.float32)
  return out, inside


def pipeline_scale(height: int, width: int, data_cfg) -> float:
  """The scale the input pipeline resizes an image of this size by (without scale jitter):
  short side to `short_side`, long side at most `max_side`, never beyond the canvas
  (`transforms.resize_and_pad`)."""
  ch, cw = data_cfg.canvas
  scale = min(data_cfg.short_side / min(height, width), data_cfg.max_side / max(height, width))
  return min(scale, ch / height, cw / width)


def fill_colour(pixel_mean) -> tuple[int, int, int]:
  """The uint8 colour that the pixel normalisation maps to 0."""
  return tuple(int(round(255.0 * float(m))) for m in pixel_mean)


class CropBank:
  """Crops uint8 [N, S, S, 3] of product garments with their key [N, 2] (pair_id, style) and
  whether each comes from a shop image [N]."""

  def __init__(self, crops: np.ndarray, boxes: np.ndarray, keys: np.ndarray, shop: np.ndarray,
               pixel_mean=(0.485, 0.456, 0.406), pixel_std=(0.229, 0.224, 0.225)):
    self.crops = np.asarray(crops, np.uint8)
    self.boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    self.keys = np.asarray(keys, np.int64).reshape(-1, 2)
    self.shop = np.asarray(shop, bool)
    self.mean = np.asarray(pixel_mean, np.float32)
    self.std = np.asarray(pixel_std, np.float32)
    # products with a crop of each source, grouped by pair_id
    rows: dict[tuple[int, int], tuple[list[int], list[int]]] = {}
    for i, (key, is_shop) in enumerate(zip(map(tuple, self.keys.tolist()), self.shop)):
      rows.setdefault(key, ([], []))[0 if is_shop else 1].append(i)
    self.products = {k: (np.asarray(s), np.asarray(u)) for k, (s, u) in rows.items()
                     if s and u}
    self.groups: dict[int, list[tuple[int, int]]] = {}
    for key in sorted(self.products):
      self.groups.setdefault(key[0], []).append(key)
    self.group_ids = sorted(self.groups)

  @property
  def size(self) -> int:
    return self.crops.shape[1]

  @classmethod
  def from_split(cls, data_cfg, split: str, size: int, host=None) -> "CropBank":
    """The bank of this host's share of `split`'s files (`data_cfg.dir`, read as the training
    pipeline reads them), every garment with style > 0."""
    import tensorflow_datasets as tfds

    from match_rcnn_jax.data import pipeline
    ds = pipeline.read_split(data_cfg.dir, split, shuffle=False, seed=0, host=host,
                             decoders={"objects": {"mask": tfds.decode.SkipDecoding()}})
    crops, boxes, keys, shop = [], [], [], []
    shop_label = int(schema.Source.SHOP)
    fill = fill_colour(data_cfg.pixel_mean)
    for ex in tfds.as_numpy(ds):
      obj = ex["objects"]
      for box, style in zip(obj["bbox"], obj["style"]):
        if style > 0:
          pixels, inside = crop(ex["image"], box, size, fill,
                                pipeline_scale(*ex["image"].shape[:2], data_cfg))
          crops.append(pixels)
          boxes.append(inside)
          keys.append((int(ex["pair_id"]), int(style)))
          shop.append(int(ex["source"]) == shop_label)
    if not crops:
      raise ValueError(f"{data_cfg.dir}: split '{split}' has no garment with style > 0 for "
                       "the matching network's crop pairs (data.crop_pairs)")
    bank = cls(np.stack(crops), np.stack(boxes), np.asarray(keys), np.asarray(shop),
               data_cfg.pixel_mean, data_cfg.pixel_std)
    if not bank.products:
      raise ValueError(f"{data_cfg.dir}: split '{split}' has no product with both a shop and "
                       "a user garment for the matching network's crop pairs (data.crop_pairs)")
    return bank

  def sample(self, rng: np.random.Generator, pairs: int, per_group: int) -> dict:
    """`pairs` products, up to `per_group` of them from each pair_id group drawn (without
    replacement while the bank has enough groups): {"crop_pairs": float32 [pairs, 2, S, S, 3]
    (index 0 = a shop crop, 1 = a user crop; normalised), "crop_pair_key": int32
    [pairs, 2] (pair_id, style), "crop_pair_boxes": float32 [pairs, 2, 4] (the garment's box
    in each crop)}."""
    chosen: list[tuple[int, int]] = []
    order = rng.permutation(len(self.group_ids))
    i = 0
    while len(chosen) < pairs:
      if i == len(order):  # every group used once: draw again
        order, i = rng.permutation(len(self.group_ids)), 0
      group = self.groups[self.group_ids[order[i]]]
      i += 1
      take = rng.permutation(len(group))[:min(per_group, pairs - len(chosen))]
      chosen += [group[t] for t in take]
    index = np.empty((pairs, 2), np.int64)
    for p, key in enumerate(chosen):
      shop_rows, user_rows = self.products[key]
      index[p] = (shop_rows[rng.integers(len(shop_rows))], user_rows[rng.integers(len(user_rows))])
    x = self.crops[index].astype(np.float32) / 255.0
    return {"crop_pairs": (x - self.mean) / self.std,
            "crop_pair_key": np.asarray(chosen, np.int32).reshape(pairs, 2),
            "crop_pair_boxes": self.boxes[index]}
