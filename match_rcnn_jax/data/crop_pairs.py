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

Each crop is the garment's box grown by `MARGIN` of its side on every side, resized to
`size` x `size`, kept as uint8 (size 40: 4.8 KB a garment). `sample` returns normalised
float32 arrays with the pipeline's pixel mean and std.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from match_rcnn_jax.data import schema

MARGIN = 0.125  # of the box's side, on every side of the crop


def gt_box_in_crop(size: int) -> tuple[float, float, float, float]:
  """Where the garment's box lies in a bank crop of `size` px: (x1, y1, x2, y2)."""
  m = size * MARGIN / (1.0 + 2.0 * MARGIN)
  return (m, m, size - m, size - m)


def crop(image: np.ndarray, box, size: int) -> np.ndarray:
  """uint8 [size, size, 3]: `box` (x1, y1, x2, y2 pixels) of `image` grown by MARGIN per side
  (clamped to the image), bilinearly resized."""
  x1, y1, x2, y2 = (float(v) for v in box)
  dx, dy = MARGIN * max(x2 - x1, 1.0), MARGIN * max(y2 - y1, 1.0)
  h, w = image.shape[:2]
  window = (max(x1 - dx, 0.0), max(y1 - dy, 0.0), min(x2 + dx, float(w)), min(y2 + dy, float(h)))
  window = (window[0], window[1], max(window[2], window[0] + 1), max(window[3], window[1] + 1))
  return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR, box=window))


class CropBank:
  """Crops uint8 [N, S, S, 3] of product garments with their key [N, 2] (pair_id, style) and
  whether each comes from a shop image [N]."""

  def __init__(self, crops: np.ndarray, keys: np.ndarray, shop: np.ndarray,
               pixel_mean=(0.485, 0.456, 0.406), pixel_std=(0.229, 0.224, 0.225)):
    self.crops = np.asarray(crops, np.uint8)
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
    crops, keys, shop = [], [], []
    shop_label = int(schema.Source.SHOP)
    for ex in tfds.as_numpy(ds):
      obj = ex["objects"]
      for box, style in zip(obj["bbox"], obj["style"]):
        if style > 0:
          crops.append(crop(ex["image"], box, size))
          keys.append((int(ex["pair_id"]), int(style)))
          shop.append(int(ex["source"]) == shop_label)
    if not crops:
      raise ValueError(f"{data_cfg.dir}: split '{split}' has no garment with style > 0 for "
                       "the matching network's crop pairs (data.crop_pairs)")
    bank = cls(np.stack(crops), np.asarray(keys), np.asarray(shop), data_cfg.pixel_mean,
               data_cfg.pixel_std)
    if not bank.products:
      raise ValueError(f"{data_cfg.dir}: split '{split}' has no product with both a shop and "
                       "a user garment for the matching network's crop pairs (data.crop_pairs)")
    return bank

  def sample(self, rng: np.random.Generator, pairs: int, per_group: int) -> dict:
    """`pairs` products, up to `per_group` of them from each pair_id group drawn (without
    replacement while the bank has enough groups): {"crop_pairs": float32 [pairs, 2, S, S, 3]
    (index 0 = a shop crop, 1 = a user crop; normalised), "crop_pair_key": int32
    [pairs, 2] (pair_id, style), "crop_pair_boxes": float32 [pairs, 2, 4] (the garment's box
    in each crop, `gt_box_in_crop`)}."""
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
    box = np.asarray(gt_box_in_crop(self.size), np.float32)
    return {"crop_pairs": (x - self.mean) / self.std,
            "crop_pair_key": np.asarray(chosen, np.int32).reshape(pairs, 2),
            "crop_pair_boxes": np.broadcast_to(box, (pairs, 2, 4)).copy()}
