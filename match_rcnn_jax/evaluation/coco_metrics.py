"""COCO AP with pycocotools' COCOeval (never a home-made AP).

Boxes and masks: the standard 12 numbers, AP / AP50 / AP75 reported. Landmarks: COCO keypoint
AP with the 294 DeepFashion2 OKS sigmas, maxDets 20, ground-truth area = box area (the
converter's `area`); `visible_only=True` keeps v = 2 ground-truth points only (the paper's
"visible" setting), otherwise v in {1, 2}.
"""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from match_rcnn_jax.data import schema

EMPTY = {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}


def load_gt(path_or_dict) -> COCO:
  with contextlib.redirect_stdout(io.StringIO()):
    if isinstance(path_or_dict, str):
      return COCO(path_or_dict)
    gt = COCO()
    gt.dataset = copy.deepcopy(path_or_dict)
    gt.createIndex()
    return gt


def landmark_gt(gt: COCO, visible_only: bool) -> COCO:
  """A copy of `gt` whose keypoints keep v = 2 only (visible_only) or v in {1, 2}."""
  data = copy.deepcopy(gt.dataset)
  for ann in data["annotations"]:
    kp = np.asarray(ann["keypoints"], np.float64).reshape(-1, 3)
    keep = kp[:, 2] == 2 if visible_only else kp[:, 2] > 0
    kp[~keep] = 0
    ann["keypoints"] = kp.reshape(-1).tolist()
    ann["num_keypoints"] = int(keep.sum())
  return load_gt(data)


def evaluate(gt: COCO, records: list[dict], iou_type: str, visible_only: bool = True) -> dict:
  """{'AP', 'AP50', 'AP75', 'stats': all 12 (10 for keypoints) numbers} for one task."""
  if not records:
    return dict(EMPTY, stats=[0.0] * (10 if iou_type == "keypoints" else 12))
  if iou_type == "keypoints":
    gt = landmark_gt(gt, visible_only)
  with contextlib.redirect_stdout(io.StringIO()):
    dt = gt.loadRes(copy.deepcopy(records))
    ev = COCOeval(gt, dt, iou_type)
    if iou_type == "keypoints":
      ev.params.kpt_oks_sigmas = schema.OKS_SIGMAS
      ev.params.maxDets = [20]
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
  stats = [max(float(s), 0.0) for s in ev.stats]
  return {"AP": stats[0], "AP50": stats[1], "AP75": stats[2], "stats": stats}
