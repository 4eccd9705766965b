"""Reads and validates one DeepFashion2 annotation (`annos/NNNNNN.json`) and its image.

`parse_example` never raises on bad data: it returns the record (or None) together with the
list of problems found, each rendered as `file: item: field: what is wrong`. Problems are
`errors` (the item, or the whole file when the item is `-`, cannot be used) or `warnings` (the
data was repaired: a box clipped to the image, a degenerate polygon dropped). The caller
decides what an error means (`convert --on_error fail|skip`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from typing import Any

import numpy as np
from PIL import Image

from match_rcnn_jax.data import schema

BOX_TOLERANCE_PX = 1.0
_ITEM_KEY = re.compile(r"^item[1-9][0-9]*$")
FILE_LEVEL = "-"


@dataclasses.dataclass(frozen=True)
class Problem:
  file: str
  item: str  # "item3", or "-" for the whole file
  field: str
  message: str

  def __str__(self) -> str:
    return f"{self.file}: {self.item}: {self.field}: {self.message}"


@dataclasses.dataclass
class ItemRecord:
  key: str  # "item1", ...
  category_id: int
  category_name: str
  style: int
  bbox: tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels (after clipping)
  raw_bbox: list  # the box exactly as written in the file (the official COCO conversion uses it)
  landmarks: np.ndarray  # [n, 3] float32, local layout (x, y, v)
  segmentation: list[list[float]]  # polygons kept (>= 3 points each)
  raw_segmentation: list  # polygons exactly as written in the file
  scale: int
  occlusion: int
  zoom_in: int
  viewpoint: int

  @property
  def global_landmarks(self) -> np.ndarray:
    """[294, 3] float32, zeros outside the category's block."""
    return schema.local_to_global(self.category_id, self.landmarks)

  @property
  def attributes(self) -> tuple[int, int, int, int]:
    return (self.scale, self.occlusion, self.zoom_in, self.viewpoint)


@dataclasses.dataclass
class ImageRecord:
  image_id: int  # int(file stem): the id used by every DeepFashion2 evaluation
  anno_path: str
  image_path: str
  source: schema.Source
  pair_id: int
  width: int
  height: int
  items: list[ItemRecord]


@dataclasses.dataclass
class ParseResult:
  record: ImageRecord | None  # None when a file-level error occurred
  errors: list[Problem]
  warnings: list[Problem]
  skipped_items: list[str]  # keys of items left out because of item-level errors

  @property
  def ok(self) -> bool:
    return not self.errors


def _is_int(v: Any) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
  return (isinstance(v, (int, float)) and not isinstance(v, bool))


class _Checker:
  """Collects problems for one file."""

  def __init__(self, file: str):
    self.file = file
    self.errors: list[Problem] = []
    self.warnings: list[Problem] = []

  def error(self, item: str, field: str, message: str) -> None:
    self.errors.append(Problem(self.file, item, field, message))

  def warn(self, item: str, field: str, message: str) -> None:
    self.warnings.append(Problem(self.file, item, field, message))


def _check_numbers(values: Any, ck: _Checker, item: str, field: str) -> bool:
  if not isinstance(values, list):
    ck.error(item, field, f"expected a list of numbers, got {type(values).__name__}")
    return False
  for i, v in enumerate(values):
    if not _is_number(v):
      ck.error(item, field, f"element {i} is {v!r}, not a number")
      return False
    if not math.isfinite(v):
      ck.error(item, field, f"element {i} is {v!r}, not a finite number")
      return False
  return True


def _parse_item(key: str, raw: Any, width: int, height: int, ck: _Checker) -> ItemRecord | None:
  n_errors = len(ck.errors)
  if not isinstance(raw, dict):
    ck.error(key, FILE_LEVEL, f"expected an object, got {type(raw).__name__}")
    return None
  required = ("category_id", "category_name", "style", "bounding_box", "landmarks",
              "segmentation", *schema.ATTRIBUTES)
  missing = [k for k in required if k not in raw]
  for k in missing:
    ck.error(key, k, "missing")
  if missing:
    return None

  cat_id = raw["category_id"]
  cat = None
  if not _is_int(cat_id):
    ck.error(key, "category_id", f"expected an int, got {cat_id!r}")
  elif cat_id not in schema.CATEGORY_BY_ID:
    ck.error(key, "category_id", f"{cat_id} is not a category id (1..{schema.NUM_CATEGORIES})")
  else:
    cat = schema.CATEGORY_BY_ID[cat_id]

  name = raw["category_name"]
  if not isinstance(name, str):
    ck.error(key, "category_name", f"expected a string, got {name!r}")
  elif cat is not None and name.strip().lower() not in (cat.name, cat.coco_name):
    ck.warn(key, "category_name", f"{name!r} does not match category_id {cat_id} ({cat.name!r})")

  style = raw["style"]
  if not _is_int(style) or style < 0:
    ck.error(key, "style", f"expected an int >= 0, got {style!r}")

  for attr, enum_cls in schema.ATTRIBUTES.items():
    v = raw[attr]
    if not _is_int(v) or v not in {int(e) for e in enum_cls}:
      ck.error(key, attr, f"expected an int in 1..3, got {v!r}")

  # Bounding box: x2 > x1, y2 > y1, inside the image up to a 1-pixel tolerance.
  box = raw["bounding_box"]
  bbox = None
  if _check_numbers(box, ck, key, "bounding_box"):
    if len(box) != 4:
      ck.error(key, "bounding_box", f"expected 4 numbers [x1, y1, x2, y2], got {len(box)}")
    else:
      x1, y1, x2, y2 = (float(v) for v in box)
      if not (x2 > x1 and y2 > y1):
        ck.error(key, "bounding_box", f"{box} is empty or inverted (needs x2 > x1 and y2 > y1)")
      else:
        t = BOX_TOLERANCE_PX
        if x1 < -t or y1 < -t or x2 > width + t or y2 > height + t:
          ck.warn(key, "bounding_box",
                  f"{box} extends beyond the {width}x{height} image by more than {t:g} px; clipped")
        cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
        cx2, cy2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
        if not (cx2 > cx1 and cy2 > cy1):
          ck.error(key, "bounding_box", f"{box} lies outside the {width}x{height} image")
        else:
          bbox = (cx1, cy1, cx2, cy2)

  landmarks = None
  lm = raw["landmarks"]
  if _check_numbers(lm, ck, key, "landmarks") and cat is not None:
    if len(lm) != 3 * cat.num_landmarks:
      ck.error(key, "landmarks", f"expected {3 * cat.num_landmarks} values (3 x "
               f"{cat.num_landmarks} landmarks of category {cat.id}), got {len(lm)}")
    else:
      arr = np.asarray(lm, np.float32).reshape(-1, 3)
      bad = [i + 1 for i, v in enumerate(lm[2::3]) if v not in (0, 1, 2)]
      if bad:
        ck.error(key, "landmarks", f"visibility must be 0, 1 or 2; landmark(s) {bad[:5]} are not")
      else:
        landmarks = arr

  polygons: list[list[float]] = []
  seg = raw["segmentation"]
  if not isinstance(seg, list):
    ck.error(key, "segmentation", f"expected a list of polygons, got {type(seg).__name__}")
  else:
    for i, poly in enumerate(seg):
      if not _check_numbers(poly, ck, key, f"segmentation[{i}]"):
        continue
      if len(poly) % 2:
        ck.warn(key, f"segmentation[{i}]", f"odd number of coordinates ({len(poly)}); dropped")
      elif len(poly) < 6:
        ck.warn(key, f"segmentation[{i}]",
                f"degenerate polygon with {len(poly) // 2} point(s); dropped")
      else:
        polygons.append([float(v) for v in poly])
    if not polygons and len(ck.errors) == n_errors:
      ck.error(key, "segmentation", "no polygon with at least 3 points")

  if len(ck.errors) > n_errors:
    return None
  return ItemRecord(
      key=key, category_id=cat_id, category_name=name, style=style, bbox=bbox, raw_bbox=box,
      landmarks=landmarks, segmentation=polygons, raw_segmentation=seg,
      scale=raw["scale"], occlusion=raw["occlusion"], zoom_in=raw["zoom_in"],
      viewpoint=raw["viewpoint"])


def read_image_size(image_path: str) -> tuple[int, int]:
  """Fully decodes the image (so truncated or corrupt files fail here) and returns (w, h)."""
  with Image.open(image_path) as im:
    im.load()
    return im.size


def parse_example(anno_path: str, image_path: str | None = None,
                  image_size: tuple[int, int] | None = None) -> ParseResult:
  """Parses `anno_path` and its image (default: `../image/<stem>.jpg`).

  Args:
    anno_path: path of `annos/NNNNNN.json`.
    image_path: path of the image; by default the released layout's sibling `image/` folder.
    image_size: (width, height) when already known; skips decoding the image.

  Returns:
    A ParseResult. `record.items` holds the valid items only; item-level errors are listed in
    `errors` and the item keys in `skipped_items`.
  """
  stem = os.path.splitext(os.path.basename(anno_path))[0]
  if image_path is None:
    image_path = os.path.join(os.path.dirname(os.path.dirname(anno_path)), "image", stem + ".jpg")
  ck = _Checker(anno_path)
  fail = lambda: ParseResult(None, ck.errors, ck.warnings, [])  # noqa: E731

  if not stem.isdigit():
    ck.error(FILE_LEVEL, "file name", f"stem {stem!r} is not a number (expected NNNNNN.json)")
    return fail()
  try:
    with open(anno_path, "rb") as f:
      raw = json.loads(f.read().decode("utf-8"))
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    ck.error(FILE_LEVEL, "json", f"cannot read JSON: {e}")
    return fail()
  if not isinstance(raw, dict):
    ck.error(FILE_LEVEL, "json", f"expected an object at top level, got {type(raw).__name__}")
    return fail()

  source = raw.get("source")
  if "source" not in raw:
    ck.error(FILE_LEVEL, "source", "missing")
  elif not isinstance(source, str) or source not in ("shop", "user"):
    ck.error(FILE_LEVEL, "source", f"expected 'shop' or 'user', got {source!r}")
  if "pair_id" not in raw:
    ck.error(FILE_LEVEL, "pair_id", "missing")
  elif not _is_int(raw["pair_id"]):
    ck.error(FILE_LEVEL, "pair_id", f"expected an int, got {raw['pair_id']!r}")

  if image_size is None:
    if not os.path.exists(image_path):
      ck.error(FILE_LEVEL, "image", f"image file {image_path} does not exist")
    else:
      try:
        image_size = read_image_size(image_path)
      except Exception as e:  # PIL raises several types for corrupt data  # noqa: BLE001
        ck.error(FILE_LEVEL, "image", f"cannot decode {image_path}: {e}")
  if ck.errors:
    return fail()
  width, height = image_size

  item_keys = [k for k in raw if k not in ("source", "pair_id")]
  if not item_keys:
    ck.error(FILE_LEVEL, "items", "no item (expected keys item1, item2, ...)")
    return fail()
  items, skipped = [], []
  for key in item_keys:
    if not _ITEM_KEY.match(key):
      ck.error(key, FILE_LEVEL, "unexpected key (expected source, pair_id or itemN)")
      skipped.append(key)
      continue
    item = _parse_item(key, raw[key], width, height, ck)
    if item is None:
      skipped.append(key)
    else:
      items.append(item)
  record = ImageRecord(
      image_id=int(stem), anno_path=anno_path, image_path=image_path,
      source=schema.Source.from_json(source), pair_id=raw["pair_id"], width=width,
      height=height, items=items)
  return ParseResult(record, ck.errors, ck.warnings, skipped)
