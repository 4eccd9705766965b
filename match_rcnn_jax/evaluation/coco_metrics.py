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

At the released size the records come in groups of consecutive image ids
(`record_store.RecordStore`), each matched by its own COCOeval while its records are held;
`accumulate` and `summarize` then run on the packed per-image results of all groups
(`PackedEvalImgs`), so the numbers are pycocotools' for the whole set.
"""

from __future__ import annotations

import bisect
import contextlib
import copy
import io
from collections.abc import Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tqdm import tqdm

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


def _shell(gt: COCO, iou_type: str) -> COCOeval:
  """A COCOeval over every image and category of `gt` with the benchmark's parameters, holding
  no detections (the per-group evaluations fill its results in)."""
  with contextlib.redirect_stdout(io.StringIO()):
    ev = COCOeval(gt, None, iou_type)
  if iou_type == "keypoints":
    ev.params.kpt_oks_sigmas = schema.OKS_SIGMAS
    ev.params.maxDets = [20]
  p = ev.params
  p.imgIds, p.maxDets = [int(i) for i in np.unique(p.imgIds)], sorted(p.maxDets)
  return ev


def _group_eval(gt: COCO, records: list[dict], image_ids: list[int], iou_type: str,
                params) -> COCOeval:
  """COCOeval after `evaluate()` on the images `image_ids` (sorted) and their `records`.
  `loadRes` sets keys of the records it is given (`id`, `area`, `iscrowd`, ...) and replaces
  none of their values in place: shallow copies leave the caller's records as they were
  without copying their 882-number keypoints or their masks."""
  with contextlib.redirect_stdout(io.StringIO()):
    if records:
      dt = gt.loadRes([dict(r) for r in records])
    else:  # loadRes reads its first record; no detection is an empty result set
      dt = _coco({"images": gt.dataset["images"], "categories": gt.dataset["categories"],
                  "annotations": []})
    ev = COCOeval(gt, dt, iou_type)
    ev.params = copy.deepcopy(params)
    ev.params.imgIds = list(image_ids)
    ev.evaluate()
  return ev


class PackedEvalImgs(Sequence):
  """COCOeval's per-(category, area, image) results, `evalImgs`, with only what `accumulate`
  reads (`dtScores`, `dtMatches` as matched or not, `dtIgnore`, `gtIgnore`) packed into flat
  arrays: about 30 bytes a detection instead of a dict of arrays and lists of about 4 KB per
  slot. Reads back as `accumulate` expects: a dict of arrays, or None for an empty slot."""

  _BLOCK = 8192

  def __init__(self, size: int):
    self._entry = np.full(size, -1, np.int64)  # slot -> entry, -1: None
    self._starts = []  # first entry of each packed block
    self._blocks = []  # (dt offsets, gt offsets, scores, matched [T, D], dt ignore, gt ignore)
    self._pending = []
    self._count = 0

  def __len__(self) -> int:
    return len(self._entry)

  def put(self, slot: int, e: dict | None) -> None:
    if e is None:
      return
    self._entry[slot] = self._count
    self._count += 1
    self._pending.append((np.asarray(e["dtScores"], np.float64),
                          np.asarray(e["dtMatches"]) > 0, np.asarray(e["dtIgnore"], bool),
                          np.asarray(e["gtIgnore"], bool)))
    if len(self._pending) >= self._BLOCK:
      self.flush()

  def flush(self) -> None:
    """Packs the entries put since the last flush into one block."""
    if not self._pending:
      return
    scores, matched, dt_ignore, gt_ignore = zip(*self._pending)
    d_off = np.cumsum([0] + [len(s) for s in scores])
    g_off = np.cumsum([0] + [len(g) for g in gt_ignore])
    t = matched[0].shape[0]
    cat = lambda xs: np.concatenate([x.reshape(t, -1) for x in xs], axis=1)  # noqa: E731
    self._starts.append(self._count - len(self._pending))
    self._blocks.append((d_off, g_off, np.concatenate(scores), cat(matched), cat(dt_ignore),
                         np.concatenate(gt_ignore)))
    self._pending = []

  def __getitem__(self, slot):
    entry = int(self._entry[slot])
    if entry < 0:
      return None
    if self._pending:
      self.flush()
    b = bisect.bisect_right(self._starts, entry) - 1
    d_off, g_off, scores, matched, dt_ignore, gt_ignore = self._blocks[b]
    j = entry - self._starts[b]
    d0, d1, g0, g1 = d_off[j], d_off[j + 1], g_off[j], g_off[j + 1]
    return {"dtScores": scores[d0:d1], "dtMatches": matched[:, d0:d1],
            "dtIgnore": dt_ignore[:, d0:d1], "gtIgnore": gt_ignore[g0:g1]}


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


_EMPTY_IOUS: list = []


def evaluate_task(gt: COCO, records, iou_type: str, visible_only: bool = True,
                  subsets: bool = True, show_progress: bool = False,
                  desc: str = "") -> tuple[dict, dict | None]:
  """(`evaluate`'s summary, `evaluate_subsets`' table or None) of one task: the IoUs / OKS are
  computed once and serve the summary and every subset table.

  `records` is a list of result records, or an iterable of groups (sorted image ids, their
  records in file order) covering every image of `gt` once, in increasing order of image id
  (`records.RecordStore.groups`): each group is matched by its own COCOeval while its records
  are held, and only what the tables need afterwards is kept (the per-image results packed,
  `PackedEvalImgs`; per detection its id, score and area; the IoUs). The numbers are
  pycocotools' for the whole set: COCOeval matches every image and category on its own and
  `accumulate` reads the per-image results in image order.
  """
  if isinstance(records, list):
    if not records:
      summary = dict(EMPTY, stats=[0.0] * (10 if iou_type == "keypoints" else 12))
      return summary, _empty_subsets(gt, iou_type, visible_only) if subsets else None
    records = [(sorted(gt.getImgIds()), records)]
  if iou_type == "keypoints":
    gt = landmark_gt(gt, visible_only)
  whole = _shell(gt, iou_type)
  p = whole.params
  index = {img: i for i, img in enumerate(p.imgIds)}
  n_cat, n_area, n_img = len(p.catIds), len(p.areaRng), len(p.imgIds)
  packed = PackedEvalImgs(n_cat * n_area * n_img)
  with tqdm(total=n_img, desc=f"{desc or iou_type}: matching", unit="img",
            disable=not show_progress, leave=False) as bar:
    for image_ids, group in records:
      ev = _group_eval(gt, group, image_ids, iou_type, p)
      ids = ev.params.imgIds
      first, n = index[ids[0]], len(ids)
      if ids != p.imgIds[first:first + n]:
        raise ValueError("record groups must be runs of consecutive image ids, in order")
      for k in range(n_cat):
        for a in range(n_area):
          base, local = k * n_area * n_img + a * n_img + first, (k * n_area + a) * n
          for i in range(n):
            packed.put(base + i, ev.evalImgs[local + i])
      if subsets:  # what evaluateImg reads again for the subset tables
        for key, ds in ev._dts.items():
          if ds:
            whole._dts[key] = [{"id": d["id"], "area": d["area"], "score": d["score"]}
                               for d in ds]
        for key, gs in ev._gts.items():
          if gs:
            whole._gts[key] = gs
        for key, iou in ev.ious.items():
          whole.ious[key] = iou if len(iou) else _EMPTY_IOUS
      bar.update(n)
      del ev, group
  packed.flush()
  whole.evalImgs, whole._paramsEval = packed, copy.deepcopy(p)
  summary = _summary(whole)
  return summary, _subsets(whole, show_progress, desc or iou_type) if subsets else None


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


def _subsets(ev: COCOeval, show_progress: bool = False, desc: str = "") -> dict:
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
  # evaluateImg gives None where an image has neither items nor detections of a category.
  img_index, cat_index = ({v: i for i, v in enumerate(ids)} for ids in (p.imgIds, p.catIds))
  occupied = sorted((cat_index[cat] * len(p.imgIds) + img_index[img], (img, cat))
                    for (img, cat), v in (*ev._gts.items(), *ev._dts.items()) if v)
  occupied = list(dict(occupied).items())
  tables = sum((attr, value) in present for attr, names in SUBSETS.items() for value in names)
  bar = tqdm(total=tables, desc=f"{desc}: subset tables", unit="table",
             disable=not show_progress, leave=False)
  for attr, names in SUBSETS.items():
    for value, name in names.items():
      if (attr, value) not in present:
        continue
      for g, ignored in zip(items, base):
        g["ignore"] = ignored or g.get(attr) != value
      ev.evalImgs = PackedEvalImgs(len(p.catIds) * len(p.imgIds))  # one area range
      for slot, (img, cat) in occupied:
        ev.evalImgs.put(slot, ev.evaluateImg(img, cat, p.areaRng[0], p.maxDets[-1]))
      ev.evalImgs.flush()
      m = _summary(ev)
      out[attr][name] = {k: m[k] for k in ("AP", "AP50", "AP75")}
      bar.update(1)
  bar.close()
  for g, ignored in zip(items, base):
    g["ignore"] = ignored
  return out
