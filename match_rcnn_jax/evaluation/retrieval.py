"""Consumer-to-shop retrieval: the official top-k protocol.

Protocol (the official `deepfashion2_retrieval_test.py`, REFERENCE.md section 5.3), implemented
by `score` on the official file formats:
  1. Queries are detected items in user images; each submitted record is one detection with
     its 20 ranked gallery entries (shop image id + box).
  2. For each user image of the ground truth, every detection of that image is assigned to the
     ground-truth item it overlaps most (argmax IoU over all the image's items, style 0
     included, with no IoU floor: a detection overlapping nothing goes to the first item).
  3. Each ground-truth item with style > 0 is represented by its assigned detection of the
     same category with the highest score; with none (no detection, or only other categories)
     it is a miss.
  4. Targets are the ground-truth gallery items with the same pair_id and style; a hit at k
     when one of the first k entries is in a target image and its box has IoU >= 0.5 with a
     target box of that image. (An item without any target can never be hit.)
  5. top-k = hits / number of ground-truth query items with style > 0, k in 1, 5, 10, 15, 20.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import numpy as np

from match_rcnn_jax.data import schema
from match_rcnn_jax.evaluation.result_files import ResultsError
from match_rcnn_jax.evaluation.result_files import is_number as _number
from match_rcnn_jax.inference.ranking import NUM_RANKED

TOP_K = (1, 5, 10, 15, 20)
HIT_IOU = 0.5



class RetrievalResultsError(ResultsError):
  """A malformed retrieval result file."""


def _box(v) -> bool:
  return isinstance(v, list) and len(v) == 4 and all(_number(x) for x in v)


def validate(records, image_ids: set, path: str) -> None:
  """Raises RetrievalResultsError naming the first malformed record."""
  if not isinstance(records, list):
    raise RetrievalResultsError(
        f"{path}: expected a list of retrieval records, got {type(records).__name__}")
  for i, r in enumerate(records):
    validate_record(r, i, image_ids, path)


def validate_record(r, i: int, image_ids: set, path: str) -> None:
  """Raises RetrievalResultsError naming record `i` of `path` where it is malformed."""
  where = f"{path}: record {i}"
  if not isinstance(r, dict):
    raise RetrievalResultsError(f"{where}: expected an object")
  for key in ("query_image_id", "query_bbox", "query_cls", "query_score", "gallery_image_id",
              "gallery_bbox"):
    if key not in r:
      raise RetrievalResultsError(f"{where}: missing key '{key}'")
  if not isinstance(r["query_image_id"], int) or r["query_image_id"] not in image_ids:
    raise RetrievalResultsError(
        f"{where}: query_image_id {r['query_image_id']!r} is not an image of the split")
  if not _box(r["query_bbox"]):
    raise RetrievalResultsError(f"{where}: query_bbox must be 4 numbers [x1, y1, x2, y2]")
  if r["query_cls"] not in schema.CATEGORY_BY_ID:
    raise RetrievalResultsError(f"{where}: query_cls {r['query_cls']!r} is not in 1..13")
  if not _number(r["query_score"]):
    raise RetrievalResultsError(f"{where}: query_score {r['query_score']!r} is not a number")
  ids, boxes = r["gallery_image_id"], r["gallery_bbox"]
  if not isinstance(ids, list) or len(ids) != NUM_RANKED:
    raise RetrievalResultsError(f"{where}: gallery_image_id must list {NUM_RANKED} image ids")
  if not isinstance(boxes, list) or len(boxes) != NUM_RANKED:
    raise RetrievalResultsError(f"{where}: gallery_bbox must list {NUM_RANKED} boxes")
  for t, (gid, box) in enumerate(zip(ids, boxes)):
    if not isinstance(gid, int) or gid not in image_ids:
      raise RetrievalResultsError(
          f"{where}: gallery_image_id[{t}] {gid!r} is not an image of the split")
    if not _box(box):
      raise RetrievalResultsError(f"{where}: gallery_bbox[{t}] must be 4 numbers")


def iou_matrix(a, b) -> np.ndarray:
  """IoU [N, M] of boxes [N, 4] and [M, 4] in (x1, y1, x2, y2)."""
  a = np.asarray(a, np.float64).reshape(-1, 4)
  b = np.asarray(b, np.float64).reshape(-1, 4)
  area = lambda x: np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None)  # noqa
  lt = np.maximum(a[:, None, :2], b[None, :, :2])
  rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
  inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
  union = area(a)[:, None] + area(b)[None, :] - inter
  return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


@dataclasses.dataclass
class QueryResult:
  """One ground-truth query item with style > 0: the detection that represents it (None: a
  miss) and, per ranked gallery entry, whether it is one of the item's targets."""

  item: dict  # the query ground truth record
  record: dict | None
  hits: list  # [NUM_RANKED] bool (empty when record is None)

  @property
  def first_hit(self) -> int | None:
    return next((t for t, h in enumerate(self.hits) if h), None)


def query_results(query_gt: list[dict], gallery_gt: list[dict], records) -> list[QueryResult]:
  """Every ground-truth query item with style > 0 judged by the protocol (module docstring).

  `records` may be any iterable (a file read record by record): each detection is assigned to
  its image's item as it comes and only the best one of each item is kept, so memory grows
  with the ground truth, not with the number of records."""
  gt_by_image = defaultdict(list)
  for q in query_gt:
    gt_by_image[q["query_image_id"]].append(q)
  boxes_by_image = {image_id: np.asarray([q["bbox"] for q in items], np.float64)
                    for image_id, items in gt_by_image.items()}
  best = {}  # (image id, item index) -> its best detection so far
  for d in records:
    items = gt_by_image.get(d["query_image_id"])
    if not items:
      continue
    # argmax IoU over the image's items, no IoU floor; ties (and all zeros) -> the first item
    j = int(np.argmax(iou_matrix([d["query_bbox"]], boxes_by_image[d["query_image_id"]])[0]))
    if items[j]["style"] <= 0 or d["query_cls"] != items[j]["cls"]:
      continue
    key = (d["query_image_id"], j)
    if key not in best or d["query_score"] > best[key]["query_score"]:  # first of equal scores
      best[key] = d
  targets = target_boxes(gallery_gt)
  out = []
  for image_id, items in gt_by_image.items():
    for j, item in enumerate(items):
      if item["style"] <= 0:
        continue
      d = best.get((image_id, j))
      if d is None:  # no detection of its image assigned to it with its category: a miss
        out.append(QueryResult(item, None, []))
      else:
        out.append(QueryResult(item, d, _hits(d, targets.get(
            (item["pair_id"], item["style"]), {}))))
  return out


def target_boxes(gallery_gt: list[dict]) -> dict:
  """{(pair_id, style): {gallery image id: [boxes]}}: where each product's targets are."""
  targets = defaultdict(lambda: defaultdict(list))
  for g in gallery_gt:
    targets[g["pair_id"], g["style"]][g["gallery_image_id"]].append(g["bbox"])
  return targets


def top_k(results: list[QueryResult]) -> dict:
  """{'top1', ..., 'top20'}: the share of `results` with a target in the first k entries."""
  hits = np.zeros(len(TOP_K), np.int64)
  for r in results:
    if r.first_hit is not None:
      hits += np.asarray([r.first_hit < k for k in TOP_K])
  return {f"top{k}": (float(h) / len(results) if results else 0.0) for k, h in zip(TOP_K, hits)}


def score(query_gt: list[dict], gallery_gt: list[dict], records: list[dict]) -> dict:
  """{'top1', 'top5', 'top10', 'top15', 'top20'} of `records` (see the module docstring)."""
  return top_k(query_results(query_gt, gallery_gt, records))


SUBSETS: dict[str, dict[int, str]] = {
    attr: {int(v): v.name.lower() for v in values} for attr, values in schema.ATTRIBUTES.items()}


def score_subsets(results: list[QueryResult], attributes) -> dict:
  """{attribute: {value name: top-k dict or None}}: top-k over the query items with that value
  of the attribute (the paper's retrieval table by scale, occlusion, zoom-in and viewpoint of
  the query item; the gallery stays whole). `attributes(item)` gives a query item's
  {attribute: value} ({} when unknown); a subset without query items is None."""
  out = {}
  attrs = [attributes(r.item) for r in results]
  for attr, names in SUBSETS.items():
    out[attr] = {}
    for value, name in names.items():
      members = [r for r, a in zip(results, attrs) if a.get(attr) == value]
      out[attr][name] = top_k(members) if members else None
  return out


def _hits(record: dict, target_images: dict) -> list[bool]:
  """Per retrieved entry: a target (in a target image, IoU >= 0.5 with a target box)."""
  out = []
  for gid, box in zip(record["gallery_image_id"][:NUM_RANKED],
                      record["gallery_bbox"][:NUM_RANKED]):
    boxes = target_images.get(gid)
    out.append(bool(boxes) and bool(iou_matrix([box], boxes).max() >= HIT_IOU))
  return out


