"""Scores result files in the official DeepFashion2 format against a converted split.

Records are validated first; a malformed file fails with a message naming the record:
unknown image id, missing or mistyped keys, category outside 1..13, bbox not 4 numbers,
keypoints not 882 numbers, not 20 gallery entries. An empty file scores 0.

The metrics dict (and `metrics.json`): {"bbox" | "segm" | "landmarks_vis" |
"landmarks_vis_occ": {"AP", "AP50", "AP75"}, "subsets": {"bbox" | "segm" | "landmarks_vis":
{"scale" | "occlusion" | "zoom_in" | "viewpoint": {value name: {"AP", "AP50", "AP75"} or
null}}, "retrieval" | "retrieval_gt_boxes": {attribute: {value name: {"top1", ...} or null}}},
"retrieval" | "retrieval_gt_boxes": {"top1", "top5", "top10", "top15", "top20"},
"retrieval_diagnostics": {"hub_share", "hub_share_gt_boxes", "pair_auc_same_category"}}; a
task the records do not support is left out.
"""

from __future__ import annotations

import json
import os

import numpy as np

from match_rcnn_jax.data import schema
from match_rcnn_jax.evaluation import coco_metrics, retrieval
from match_rcnn_jax.evaluation.results import ResultsError, iter_json_array
from match_rcnn_jax.evaluation.results import is_number as _number

TASKS = (("bbox", "bbox", True), ("segm", "segm", True), ("landmarks_vis", "keypoints", True),
         ("landmarks_vis_occ", "keypoints", False))
SUBSET_TASKS = ("bbox", "segm", "landmarks_vis")
_KEYS = ("AP", "AP50", "AP75")


def validate(records, image_ids: set, path: str) -> None:
  if not isinstance(records, list):
    raise ResultsError(f"{path}: expected a list of result records, got {type(records).__name__}")
  for i, r in enumerate(records):
    validate_record(r, i, image_ids, path)


def validate_record(r, i: int, image_ids: set, path: str) -> None:
  """Raises ResultsError naming record `i` of `path` where it is malformed."""
  where = f"{path}: record {i}"
  if not isinstance(r, dict):
    raise ResultsError(f"{where}: expected an object")
  for key in ("image_id", "category_id", "score"):
    if key not in r:
      raise ResultsError(f"{where}: missing key '{key}'")
  if not isinstance(r["image_id"], int) or r["image_id"] not in image_ids:
    raise ResultsError(f"{where}: image_id {r['image_id']!r} is not an image of the split")
  if r["category_id"] not in schema.CATEGORY_BY_ID:
    raise ResultsError(f"{where}: category_id {r['category_id']!r} is not in 1..13")
  if not _number(r["score"]):
    raise ResultsError(f"{where}: score {r['score']!r} is not a finite number")
  if "bbox" in r and (not isinstance(r["bbox"], list) or len(r["bbox"]) != 4
                      or not all(_number(v) for v in r["bbox"])):
    raise ResultsError(f"{where}: bbox must be 4 numbers [x, y, w, h]")
  if "keypoints" in r and (not isinstance(r["keypoints"], list)
                           or len(r["keypoints"]) != 3 * schema.NUM_LANDMARKS
                           or not all(_number(v) for v in r["keypoints"])):
    raise ResultsError(f"{where}: keypoints must be {3 * schema.NUM_LANDMARKS} numbers")
  if "segmentation" in r and not (isinstance(r["segmentation"], dict)
                                  and {"size", "counts"} <= set(r["segmentation"])):
    raise ResultsError(f"{where}: segmentation must be an RLE {{'size', 'counts'}}")
  if not {"bbox", "segmentation", "keypoints"} & set(r):
    raise ResultsError(f"{where}: needs at least one of bbox, segmentation, keypoints")


def compact(record: dict) -> dict:
  """The record with its keypoints as one float64 array [882] (7 KB instead of about 28 KB of
  Python floats; pycocotools reads either, with the same numbers)."""
  if "keypoints" in record:
    record["keypoints"] = np.asarray(record["keypoints"], np.float64)
  return record


def load_results(path: str, image_ids: set) -> list[dict]:
  """The records of result file `path`, read one at a time (`results.iter_json_array`: the
  file's text is never held whole), each validated and compacted as it is read."""
  records = []
  for i, r in enumerate(iter_json_array(path)):
    validate_record(r, i, image_ids, path)
    records.append(compact(r))
  return records


def _round(m):
  return None if m is None else {k: round(m[k], 4) for k in _KEYS}


def score(gt_path: str, records: list, path: str = "results", subsets: bool = True) -> dict:
  """{task: {'AP', 'AP50', 'AP75'}, 'subsets': {...}} for the tasks the records support."""
  gt = coco_metrics.load_gt(gt_path)
  validate(records, set(gt.getImgIds()), path)
  return score_records(gt, [compact(dict(r)) for r in records], subsets)


def score_file_records(gt_path: str, results_path: str, subsets: bool = True) -> dict:
  """`score` of the result file `results_path`, streamed (`load_results`)."""
  gt = coco_metrics.load_gt(gt_path)
  return score_records(gt, load_results(results_path, set(gt.getImgIds())), subsets)


def score_records(gt, records: list, subsets: bool = True) -> dict:
  """`score` of validated records against a loaded ground truth (`coco_metrics.load_gt`)."""
  metrics, subset_metrics = {}, {}
  for name, iou_type, visible_only in TASKS:
    key = {"bbox": "bbox", "segm": "segmentation", "keypoints": "keypoints"}[iou_type]
    usable = [r for r in records if key in r and (iou_type != "bbox" or "bbox" in r)]
    if records and not usable:
      continue
    summary, table = coco_metrics.evaluate_task(gt, usable, iou_type, visible_only,
                                                subsets=subsets and name in SUBSET_TASKS)
    metrics[name] = _round(summary)
    if table is not None:
      subset_metrics[name] = {attr: {v: _round(m) for v, m in values.items()}
                              for attr, values in table.items()}
  if subsets:
    metrics["subsets"] = subset_metrics
  return metrics


def _load_json(path: str):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ResultsError(f"{path}: cannot read JSON: {e}") from e


def _gt_file(gt_dir: str, name: str) -> str:
  path = os.path.join(gt_dir, name)
  if not os.path.exists(path):
    raise ResultsError(f"{path}: no ground truth; run match_rcnn_jax.data.convert first")
  return path


def _attribute_lookup(coco: dict):
  """query item -> its {attribute: value} from the converter's `<split>_coco.json` annotations
  (matched by image id and box; {} where the annotations carry no attributes)."""
  table = {}
  for a in coco.get("annotations", []):
    x, y, w, h = a["bbox"]
    key = (a["image_id"], *(round(float(v), 2) for v in (x, y, x + w, y + h)))
    table[key] = {k: a[k] for k in retrieval.SUBSETS if k in a}
  return lambda item: table.get((item["query_image_id"], *(round(float(v), 2)
                                                           for v in item["bbox"])), {})


def _round_top_k(m):
  return None if m is None else {k: round(v, 4) for k, v in m.items()}


def score_retrieval(gt_dir: str, split: str, records: list, path: str = "retrieval",
                    subsets: bool = True) -> tuple[dict, dict | None, float]:
  """(top-k {'top1', ..., 'top20'}, per-subset top-k tables or None, hub share) of retrieval
  result records against `<split>_query.json` and `<split>_gallery.json`; image ids must be
  images of `<split>_coco.json`."""
  query_gt = _load_json(_gt_file(gt_dir, f"{split}_query.json"))
  gallery_gt = _load_json(_gt_file(gt_dir, f"{split}_gallery.json"))
  coco = _load_json(_gt_file(gt_dir, f"{split}_coco.json"))
  image_ids = {im["id"] for im in coco["images"]}
  retrieval.validate(records, image_ids, path)
  results = retrieval.query_results(query_gt, gallery_gt, records)
  table = None
  if subsets:
    table = {attr: {v: _round_top_k(m) for v, m in values.items()} for attr, values in
             retrieval.score_subsets(results, _attribute_lookup(coco)).items()}
  return (_round_top_k(retrieval.top_k(results)), table,
          round(retrieval.hub_share(records), 4))


def score_file(gt_dir: str, split: str, results_path: str | None,
               retrieval_path: str | None = None,
               retrieval_gt_boxes_path: str | None = None) -> dict:
  """Scores a result file and / or retrieval result files of `split`: with detected query and
  gallery boxes (`retrieval_path`, the official protocol) and with ground-truth boxes
  (`retrieval_gt_boxes_path`, records whose queries and gallery are the ground-truth items)."""
  metrics = {}
  if results_path:
    gt_path = _gt_file(gt_dir, f"{split}_coco.json")
    metrics.update(score_file_records(gt_path, results_path))
  diagnostics = {}
  for key, path in (("retrieval", retrieval_path),
                    ("retrieval_gt_boxes", retrieval_gt_boxes_path)):
    if not path:
      continue
    metrics[key], table, hub = score_retrieval(gt_dir, split, _load_json(path), path)
    metrics.setdefault("subsets", {})[key] = table
    diagnostics["hub_share" + key[len("retrieval"):]] = hub
  if diagnostics:
    metrics["retrieval_diagnostics"] = diagnostics
  return metrics
