"""COCO AP with pycocotools' COCOeval (never a home-made AP).

Boxes and masks: the standard 12 numbers, AP / AP50 / AP75 reported. Landmarks: COCO keypoint
AP with the 294 DeepFashion2 OKS sigmas, maxDets 20, ground-truth area = box area (the
converter's `area`); `visible_only=True` keeps v = 2 ground-truth points only (the paper's
"visible" setting), otherwise v in {1, 2}.

Per-subset AP (the paper's tables by scale, occlusion, zoom-in and viewpoint; no official code
exists): for the subset "attribute = value", ground-truth items with another value become
ignore regions, exactly like COCO's crowd / out-of-area-range items: a detection matched to one
counts neither as a true nor as a false positive, and detections compete for the subset's items
first. Everything else is COCOeval unchanged (IoUs / OKS computed once and reused). A subset
without ground-truth items has no AP (None).
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
  """The ground truth (a `<split>_coco.json` path, or its dict, which is copied) as a COCO
  object whose keypoints are float64 arrays [882] (pycocotools reads arrays as it reads lists;
  an array takes 7 KB, a list of 882 Python floats about 28 KB)."""
  with contextlib.redirect_stdout(io.StringIO()):
    if isinstance(path_or_dict, str):
      gt = COCO(path_or_dict)
    else:
      gt = _coco(copy.deepcopy(path_or_dict))
  for ann in gt.dataset["annotations"]:
    if "keypoints" in ann:
      ann["keypoints"] = np.asarray(ann["keypoints"], np.float64)
  return gt


def _coco(dataset: dict) -> COCO:
  with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO()
    gt.dataset = dataset
    gt.createIndex()
  return gt


def landmark_gt(gt: COCO, visible_only: bool) -> COCO:
  """A copy of `gt` whose keypoints keep v = 2 only (visible_only) or v in {1, 2}."""
  data = {k: v for k, v in gt.dataset.items() if k != "annotations"}
  data["annotations"] = []
  for ann in gt.dataset["annotations"]:
    kp = np.array(ann["keypoints"], np.float64).reshape(-1, 3)
    keep = kp[:, 2] == 2 if visible_only else kp[:, 2] > 0
    kp[~keep] = 0
    data["annotations"].append({**ann, "keypoints": kp.reshape(-1),
                                "num_keypoints": int(keep.sum())})
  return _coco(data)


SUBSETS: dict[str, dict[int, str]] = {
    attr: {int(v): v.name.lower() for v in values} for attr, values in schema.ATTRIBUTES.items()}


def _evaluated(gt: COCO, records: list[dict], iou_type: str, visible_only: bool) -> COCOeval:
  """COCOeval after `evaluate()` (IoUs / OKS and per-image matching done). `loadRes` sets keys
  of the records it is given (`id`, `area`, `iscrowd`, ...) and replaces none of their values
  in place: shallow copies leave the caller's records as they were without copying their
  882-number keypoint lists or their masks."""
  if iou_type == "keypoints":
    gt = landmark_gt(gt, visible_only)
  with contextlib.redirect_stdout(io.StringIO()):
    dt = gt.loadRes([dict(r) for r in records])
    ev = COCOeval(gt, dt, iou_type)
    if iou_type == "keypoints":
      ev.params.kpt_oks_sigmas = schema.OKS_SIGMAS
      ev.params.maxDets = [20]
    ev.evaluate()
  return ev


def _summary(ev: COCOeval) -> dict:
  with contextlib.redirect_stdout(io.StringIO()):
    ev.accumulate()
    ev.summarize()
  stats = [round(max(float(s), 0.0), 6) for s in ev.stats]  # 1 - 1e-16 -> 1
  return {"AP": stats[0], "AP50": stats[1], "AP75": stats[2], "stats": stats}


def evaluate(gt: COCO, records: list[dict], iou_type: str, visible_only: bool = True) -> dict:
  """{'AP', 'AP50', 'AP75', 'stats': all 12 (10 for keypoints) numbers} for one task."""
  return evaluate_task(gt, records, iou_type, visible_only, subsets=False)[0]


def evaluate_subsets(gt: COCO, records: list[dict], iou_type: str,
                     visible_only: bool = True) -> dict:
  """{attribute: {value name: {'AP', 'AP50', 'AP75'} or None}} over SUBSETS (see the module
  docstring for the rule)."""
  return evaluate_task(gt, records, iou_type, visible_only, subsets=True)[1]


def evaluate_task(gt: COCO, records: list[dict], iou_type: str, visible_only: bool = True,
                  subsets: bool = True) -> tuple[dict, dict | None]:
  """(`evaluate`'s summary, `evaluate_subsets`' table or None) of one task, from one COCOeval:
  the IoUs / OKS are computed once and serve the summary and every subset table."""
  if not records:
    summary = dict(EMPTY, stats=[0.0] * (10 if iou_type == "keypoints" else 12))
    return summary, _empty_subsets(gt, iou_type, visible_only) if subsets else None
  ev = _evaluated(gt, records, iou_type, visible_only)
  summary = _summary(ev)
  return summary, _subsets(ev) if subsets else None


def _empty_subsets(gt: COCO, iou_type: str, visible_only: bool) -> dict:
  """The subset table of no records: 0 AP where the subset has items, None elsewhere."""
  out = {attr: {name: None for name in names.values()} for attr, names in SUBSETS.items()}
  if iou_type == "keypoints":  # items without labelled points are ignored by COCOeval
    gt = landmark_gt(gt, visible_only)
  for ann in gt.dataset["annotations"]:
    if iou_type != "keypoints" or ann["num_keypoints"] > 0:
      for attr, names in SUBSETS.items():
        if ann.get(attr) in names:
          out[attr][names[ann[attr]]] = dict(EMPTY)
  return out


def _subsets(ev: COCOeval) -> dict:
  """The subset tables from an evaluated COCOeval (its IoUs / OKS reused; its per-image
  results are replaced)."""
  out = {attr: {name: None for name in names.values()} for attr, names in SUBSETS.items()}
  p = ev.params
  # Subset tables report the "all" area range only: skip matching for the others.
  p.areaRng, p.areaRngLbl = p.areaRng[:1], p.areaRngLbl[:1]
  ev._paramsEval = copy.deepcopy(p)
  items = [g for gs in ev._gts.values() for g in gs]
  base = [bool(g["ignore"]) for g in items]
  present = {(attr, g.get(attr)) for g, ignored in zip(items, base) if not ignored
             for attr in SUBSETS}
  for attr, names in SUBSETS.items():
    for value, name in names.items():
      if (attr, value) not in present:
        continue
      for g, ignored in zip(items, base):
        g["ignore"] = ignored or g.get(attr) != value
      ev.evalImgs = [ev.evaluateImg(img, cat, rng, p.maxDets[-1]) for cat in p.catIds
                     for rng in p.areaRng for img in p.imgIds]
      m = _summary(ev)
      out[attr][name] = {k: m[k] for k in ("AP", "AP50", "AP75")}
  for g, ignored in zip(items, base):
    g["ignore"] = ignored
  return out
