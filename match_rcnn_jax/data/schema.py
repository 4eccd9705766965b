"""DeepFashion2 constants: categories, the 294-landmark layout, OKS sigmas, flip pairs, enums.

Every other module takes these facts from here. Sources: the official DeepFashion2 repository
(annotation README, `evaluation/deepfashion2_to_coco.py`, the bundled `cocoeval.py`) as summarised
in the project's dataset reference. Landmark indices in annotation files are *local* (1-based
within the item's category); the *global* layout concatenates the 13 category blocks into 294
points, global index = offset[category] + local index - 1.
"""

from __future__ import annotations

import dataclasses
import enum

import numpy as np

NUM_CATEGORIES = 13
NUM_LANDMARKS = 294


class Source(enum.IntEnum):
  """Who took the picture (image-level `source`)."""

  SHOP = 0  # commercial ("shop") image: the retrieval gallery
  USER = 1  # consumer ("user") image: the retrieval queries

  @property
  def json_name(self) -> str:
    return self.name.lower()

  @classmethod
  def from_json(cls, value: str) -> "Source":
    return cls[value.upper()]


class Visibility(enum.IntEnum):
  """Landmark visibility `v` in annotation files and in COCO keypoints."""

  NOT_LABELLED = 0  # x = y = 0, carries no loss and no OKS term
  OCCLUDED = 1  # labelled but hidden
  VISIBLE = 2


class Scale(enum.IntEnum):
  """Box area / image area: < 10% small, 10-40% moderate, > 40% large."""

  SMALL = 1
  MODERATE = 2
  LARGE = 3


class Occlusion(enum.IntEnum):
  SLIGHT = 1  # including none
  MEDIUM = 2
  HEAVY = 3


class ZoomIn(enum.IntEnum):
  NO = 1
  MEDIUM = 2
  LARGE = 3


class Viewpoint(enum.IntEnum):
  NO_WEAR = 1
  FRONTAL = 2
  SIDE_OR_BACK = 3


# Attribute name in the annotation file -> its enum. The order is the column order used by
# the input pipeline's `gt_attributes` array and by the per-subset evaluation tables.
ATTRIBUTES: dict[str, type[enum.IntEnum]] = {
    "scale": Scale,
    "occlusion": Occlusion,
    "zoom_in": ZoomIn,
    "viewpoint": Viewpoint,
}


@dataclasses.dataclass(frozen=True)
class Category:
  id: int  # 1..13, as in annotation files and COCO json
  name: str  # name in the annotation files ("short sleeve top")
  coco_name: str  # name in the official COCO conversion ("short_sleeved_shirt")
  num_landmarks: int
  offset: int  # first global (0-based) landmark index of this category's block

  @property
  def landmark_slice(self) -> slice:
    return slice(self.offset, self.offset + self.num_landmarks)


def _make_categories() -> tuple[Category, ...]:
  table = [
      ("short sleeve top", "short_sleeved_shirt", 25),
      ("long sleeve top", "long_sleeved_shirt", 33),
      ("short sleeve outwear", "short_sleeved_outwear", 31),
      ("long sleeve outwear", "long_sleeved_outwear", 39),
      ("vest", "vest", 15),
      ("sling", "sling", 15),
      ("shorts", "shorts", 10),
      ("trousers", "trousers", 14),
      ("skirt", "skirt", 8),
      ("short sleeve dress", "short_sleeved_dress", 29),
      ("long sleeve dress", "long_sleeved_dress", 37),
      ("vest dress", "vest_dress", 19),
      ("sling dress", "sling_dress", 19),
  ]
  cats, offset = [], 0
  for i, (name, coco_name, n) in enumerate(table, start=1):
    cats.append(Category(i, name, coco_name, n, offset))
    offset += n
  assert offset == NUM_LANDMARKS
  return tuple(cats)


CATEGORIES: tuple[Category, ...] = _make_categories()
CATEGORY_BY_ID: dict[int, Category] = {c.id: c for c in CATEGORIES}

# Global landmark index -> owning category id (1..13), shape [294].
LANDMARK_CATEGORY = np.concatenate(
    [np.full(c.num_landmarks, c.id, np.int32) for c in CATEGORIES])

# OKS sigmas of the official evaluation (cocoeval.py computeOks), local order per category.
_SIGMAS = {
    1: [.012, .0158, .0169, .0165, .0169, .0158, .0298, .0329, .0321, .0323, .034, .0388, .0452,
        .0574, .0492, .0352, .0492, .0574, .0452, .0388, .034, .0323, .0321, .0329, .0298],
    2: [.0194, .017, .0185, .0193, .0185, .017, .0286, .0471, .0547, .0526, .043, .0392, .0513,
        .0566, .0509, .0564, .0542, .0604, .0599, .052, .0599, .0604, .0542, .0564, .0509, .0566,
        .0513, .0392, .043, .0526, .0547, .0471, .0286],
    3: [.0074, .0085, .0165, .0248, .0165, .0085, .0156, .0231, .0296, .0137, .0195, .025, .0347,
        .038, .0257, .037, .0257, .038, .0347, .025, .0195, .0137, .0296, .0231, .0156, .0248,
        .0469, .0632, .037, .0469, .0632],
    4: [.0137, .0153, .0243, .0377, .0243, .0153, .0203, .0366, .0467, .0433, .0393, .0329, .0418,
        .0477, .0399, .0331, .042, .0492, .0436, .0478, .0436, .0492, .042, .0331, .0399, .0477,
        .0418, .0329, .0393, .0433, .0467, .0366, .0203, .0377, .0645, .0573, .0478, .0645, .0573],
    5: [.0352, .0158, .021, .0214, .021, .0158, .0196, .05, .0489, .0404, .0401, .0404, .0489, .05,
        .0196],
    6: [.0276, .0548, .0283, .0204, .0283, .0548, .0369, .0726, .0677, .064, .0251, .064, .0677,
        .0726, .0369],
    7: [.0308, .0216, .0308, .0506, .0494, .0463, .0477, .0463, .0494, .0506],
    8: [.0275, .0202, .0275, .0651, .0451, .035, .028, .0392, .0362, .0392, .028, .035, .0451,
        .0651],
    9: [.0253, .0195, .0253, .0513, .0543, .0415, .0543, .0513],
    10: [.0153, .023, .0167, .0145, .0167, .023, .0332, .0391, .0391, .0396, .044, .0452, .0498,
         .0514, .0585, .0655, .0635, .0602, .0635, .0655, .0585, .0514, .0498, .0452, .044, .0396,
         .0391, .0391, .0332],
    11: [.0121, .0134, .0158, .0162, .0158, .0134, .0246, .0406, .047, .0404, .0463, .0466, .0435,
         .0499, .0455, .044, .0411, .049, .0576, .0685, .0618, .0483, .0618, .0685, .0576, .049,
         .0411, .044, .0486, .0499, .0435, .0466, .0463, .0404, .047, .0406, .0246],
    12: [.0116, .0167, .016, .018, .016, .0167, .0196, .0385, .0421, .0497, .0562, .0528, .0428,
         .0528, .0562, .0497, .0421, .0385, .0196],
    13: [.0244, .0297, .0244, .0208, .0244, .0297, .0173, .0616, .0659, .0712, .0707, .0685, .0339,
         .0685, .0707, .0712, .0659, .0616, .0173],
}
OKS_SIGMAS = np.concatenate([np.asarray(_SIGMAS[c.id], np.float64) for c in CATEGORIES])


def _mirror(lo: int, hi: int, total: int) -> list[tuple[int, int]]:
  """Pairs k <-> total - k for k = lo..hi."""
  return [(k, total - k) for k in range(lo, hi + 1)]


# Left/right flip pairs (local 1-based indices): the recommended 131-pair table of the dataset
# reference (mmpose/svip-lab pairs, with the sigma-consistent 2-6, 4-26 / 4-34 convention for the
# outwear collars and vest-dress/sling-dress 9-17 included). Points absent here map to themselves.
FLIP_PAIRS: dict[int, tuple[tuple[int, int], ...]] = {
    1: tuple([(2, 6), (3, 5)] + _mirror(7, 15, 32)),
    2: tuple([(2, 6), (3, 5)] + _mirror(7, 19, 40)),
    3: tuple([(2, 6), (3, 5), (4, 26)] + _mirror(7, 15, 32) + [(16, 29), (27, 30), (28, 31)]),
    4: tuple([(2, 6), (3, 5), (4, 34)] + _mirror(7, 19, 40) + [(20, 37), (35, 38), (36, 39)]),
    5: ((2, 6), (3, 5), (7, 15), (8, 14), (9, 13), (10, 12)),
    6: ((2, 6), (3, 5), (7, 15), (8, 14), (9, 13), (10, 12)),
    7: ((1, 3), (4, 10), (5, 9), (6, 8)),
    8: ((1, 3), (4, 14), (5, 13), (6, 12), (7, 11), (8, 10)),
    9: ((1, 3), (4, 8), (5, 7)),
    10: tuple([(2, 6), (3, 5)] + _mirror(7, 17, 36)),
    11: tuple([(2, 6), (3, 5)] + _mirror(7, 21, 44)),
    12: tuple([(2, 6), (3, 5)] + _mirror(7, 12, 26)),
    13: tuple([(2, 6), (3, 5)] + _mirror(7, 12, 26)),
}


def _flip_permutation() -> np.ndarray:
  perm = np.arange(NUM_LANDMARKS, dtype=np.int32)
  for cat_id, pairs in FLIP_PAIRS.items():
    off = CATEGORY_BY_ID[cat_id].offset - 1
    for a, b in pairs:
      perm[off + a], perm[off + b] = off + b, off + a
  return perm


# Global permutation: after a horizontal flip, the point stored at global index i comes from
# global index FLIP_PERMUTATION[i]. Swaps never leave a category block and the permutation is its
# own inverse, so one gather flips the landmarks of every category at once.
FLIP_PERMUTATION = _flip_permutation()


def local_to_global(category_id: int, local: np.ndarray) -> np.ndarray:
  """Scatters an item's local landmarks [n, 3] into the global layout [294, 3] (zeros elsewhere)."""
  cat = CATEGORY_BY_ID[category_id]
  local = np.asarray(local, np.float32).reshape(-1, 3)
  if local.shape[0] != cat.num_landmarks:
    raise ValueError(f"category {category_id} has {cat.num_landmarks} landmarks, got "
                     f"{local.shape[0]}")
  out = np.zeros((NUM_LANDMARKS, 3), np.float32)
  out[cat.landmark_slice] = local
  return out


def scale_from_area_ratio(ratio: float) -> Scale:
  """The dataset's scale attribute from box area / image area (thresholds 10% and 40%)."""
  if ratio < 0.10:
    return Scale.SMALL
  if ratio <= 0.40:
    return Scale.MODERATE
  return Scale.LARGE
