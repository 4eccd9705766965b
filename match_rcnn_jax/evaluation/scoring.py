"""Scores result files in the official DeepFashion2 format against a converted split.

Records are validated first; a malformed file fails with a message naming the record:
unknown image id, missing or mistyped keys, category outside 1..13, bbox not 4 numbers,
keypoints not 882 numbers. An empty file scores 0.
"""

from __future__ import annotations

import json
import math
import os

from match_rcnn_jax.data import schema
from match_rcnn_jax.evaluation import coco_metrics

TASKS = (("bbox", "bbox", True), ("segm", "segm", True), ("landmarks_vis", "keypoints", True),
         ("landmarks_vis_occ", "keypoints", False))


class ResultsError(ValueError):
  """A malformed result file."""


def _number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def validate(records, image_ids: set, path: str) -> None:
  if not isinstance(records, list):
    raise ResultsError(f"{path}: expected a list of result records, got {type(records).__name__}")
  for i, r in enumerate(records):
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


def score(gt_path: str, records: list, path: str = "results") -> dict:
  """{task: {'AP', 'AP50', 'AP75'}} for the tasks the records support."""
  gt = coco_metrics.load_gt(gt_path)
  validate(records, set(gt.getImgIds()), path)
  metrics = {}
  for name, iou_type, visible_only in TASKS:
    key = {"bbox": "bbox", "segm": "segmentation", "keypoints": "keypoints"}[iou_type]
    usable = [r for r in records if key in r and (iou_type != "bbox" or "bbox" in r)]
    if records and not usable:
      continue
    m = coco_metrics.evaluate(gt, usable, iou_type, visible_only)
    metrics[name] = {k: round(m[k], 4) for k in ("AP", "AP50", "AP75")}
  return metrics


def score_file(gt_dir: str, split: str, results_path: str) -> dict:
  gt_path = os.path.join(gt_dir, f"{split}_coco.json")
  if not os.path.exists(gt_path):
    raise ResultsError(f"{gt_path}: no ground truth; run match_rcnn_jax.data.convert first")
  try:
    with open(results_path) as f:
      records = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ResultsError(f"{results_path}: cannot read JSON: {e}") from e
  return score(gt_path, records, results_path)
