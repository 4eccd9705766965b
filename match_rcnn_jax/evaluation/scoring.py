"""Scores result files in the official DeepFashion2 format against a converted split.

Records are validated first; a malformed file fails with a message naming the record:
unknown image id, missing or mistyped keys, category outside 1..13, bbox not 4 numbers,
keypoints not 882 numbers, not 20 gallery entries. An empty file scores 0.

The metrics dict (and `metrics.json`): {"bbox" | "segm" | "landmarks_vis" |
"landmarks_vis_occ": {"AP", "AP50", "AP75"}, "subsets": {"bbox" | "segm" | "landmarks_vis":
{"scale" | "occlusion" | "zoom_in" | "viewpoint": {value name: {"AP", "AP50", "AP75"} or
null}}, "retrieval" | "retrieval_gt_boxes": {attribute: {value name: {"top1", ...} or null}}},
"retrieval" | "retrieval_gt_boxes": {"top1", "top5", "top10", "top15", "top20"},
"retrieval_diagnostics": {"hub_share", "hub_share_gt_boxes", "pair_auc_same_category"},
"retrieval_reference": {"category_chance" | "colour_histogram" | "colour_histogram_category":
{"top1", ..., "top20"}} (no-model rankers on the ground-truth items, `evaluation.reference`),
"retrieval_lift": {"top1", "top5"} (the ground-truth-box top-k minus the best reference's)}; a
task the records do not support is left out.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
from collections import Counter

from tqdm import tqdm

from match_rcnn_jax.data import schema
from match_rcnn_jax.evaluation import coco_metrics, diagnostics, retrieval
from match_rcnn_jax.evaluation import reference as reference_lib
from match_rcnn_jax.evaluation.record_store import RecordStore
from match_rcnn_jax.evaluation.result_files import ResultsError, all_numbers, iter_json_array
from match_rcnn_jax.evaluation.result_files import is_number as _number

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
                           or not all_numbers(r["keypoints"])):
    raise ResultsError(f"{where}: keypoints must be {3 * schema.NUM_LANDMARKS} numbers")
  if "segmentation" in r and not (isinstance(r["segmentation"], dict)
                                  and {"size", "counts"} <= set(r["segmentation"])):
    raise ResultsError(f"{where}: segmentation must be an RLE {{'size', 'counts'}}")
  if not {"bbox", "segmentation", "keypoints"} & set(r):
    raise ResultsError(f"{where}: needs at least one of bbox, segmentation, keypoints")


GROUP_MB = 256  # result-file megabytes per group of records scored at a time
# Memory scoring holds per detection record once every group is matched (its id, score and
# area, its packed per-image results and IoUs; a bound with some margin), and per byte of one
# group's records held as Python objects while that group is matched.
HELD_BYTES_PER_RECORD = 1500
HELD_BYTES_PER_GROUP_BYTE = 4


def _available_bytes() -> int | None:
  """MemAvailable of /proc/meminfo (None where there is none)."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    return None
  return None


def load_results(path: str, image_ids: set, group_mb: float = GROUP_MB,
                 spill_dir: str | None = None, show_progress: bool = False) -> RecordStore:
  """The records of result file `path` as a `RecordStore`, read one at a time
  (`result_files.iter_json_array`: the file's text is never held whole) and validated as read.

  A file larger than `group_mb` MB is spilled to a temporary folder in `spill_dir` (default
  `TMPDIR`) in groups of about `group_mb` MB, scored one group at a time. Raises ResultsError,
  before scoring starts, when that folder's disk lacks the room for the spill (about the file's
  size) or this machine's available memory is short of what scoring the records would hold.
  The caller closes the store (it removes the spill).
  """
  try:
    size = os.path.getsize(path)
  except OSError as e:
    raise ResultsError(f"{path}: cannot read JSON: {e}") from e
  num_groups = max(1, math.ceil(size / (group_mb * 2**20)))
  if num_groups > 1:
    where = spill_dir or tempfile.gettempdir()
    free = shutil.disk_usage(where).free
    if free < 1.1 * size:
      raise ResultsError(
          f"{path}: scoring its {size / 2**30:.1f} GB of records spills them to {where}, which "
          f"has {free / 2**30:.1f} GB free (about {1.1 * size / 2**30:.1f} GB needed); set "
          "TMPDIR to a folder on a larger disk")
  store = RecordStore(image_ids, num_groups, spill_dir, path)
  try:
    with tqdm(total=size, unit="B", unit_scale=True, desc=f"reading {os.path.basename(path)}",
              disable=not show_progress, leave=False) as bar:
      for i, r in enumerate(iter_json_array(path, progress=bar.update)):
        validate_record(r, i, image_ids, path)
        store.add(r, i)
    _check_memory(store, path, min(size, group_mb * 2**20))
  except BaseException:
    store.close()
    raise
  return store


def _check_memory(store: RecordStore, path: str, group_bytes: float) -> None:
  need = HELD_BYTES_PER_RECORD * len(store) + HELD_BYTES_PER_GROUP_BYTE * group_bytes
  available = _available_bytes()
  if available is not None and need > available:
    raise ResultsError(
        f"{path}: scoring its {len(store)} records needs about {need / 2**30:.1f} GB of "
        f"memory and this machine has {available / 2**30:.1f} GB available; score it on a "
        "machine with more memory, or split it by image ids")


def _round(m):
  return None if m is None else {k: round(m[k], 4) for k in _KEYS}


def score(gt_path: str, records: list, path: str = "results", subsets: bool = True) -> dict:
  """{task: {'AP', 'AP50', 'AP75'}, 'subsets': {...}} for the tasks the records support."""
  gt = coco_metrics.load_gt(gt_path)
  image_ids = set(gt.getImgIds())
  validate(records, image_ids, path)
  store = RecordStore(image_ids, 1, path=path)
  for i, r in enumerate(records):
    store.add(r, i)
  return score_records(gt, store, subsets)


def score_file_records(gt_path: str, results_path: str, subsets: bool = True,
                       show_progress: bool = False, group_mb: float = GROUP_MB,
                       spill_dir: str | None = None) -> dict:
  """`score` of the result file `results_path`, streamed (`load_results`)."""
  gt = coco_metrics.load_gt(gt_path)
  with load_results(results_path, set(gt.getImgIds()), group_mb, spill_dir,
                    show_progress) as store:
    return score_records(gt, store, subsets, show_progress)


def score_records(gt, store: RecordStore, subsets: bool = True,
                  show_progress: bool = False) -> dict:
  """`score` of the validated records of `store` against a loaded ground truth
  (`coco_metrics.load_gt`), one task and one group of records at a time."""
  metrics, subset_metrics = {}, {}
  for name, iou_type, visible_only in TASKS:
    field = {"bbox": "bbox", "segm": "segmentation", "keypoints": "keypoints"}[iou_type]
    if len(store) and not store.counts[field]:
      continue
    records = store.groups(field) if store.counts[field] else []
    summary, table = coco_metrics.evaluate_task(
        gt, records, iou_type, visible_only, subsets=subsets and name in SUBSET_TASKS,
        show_progress=show_progress, desc=name)
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


def score_retrieval(gt_dir: str, split: str, path: str, subsets: bool = True,
                    show_progress: bool = False) -> tuple[dict, dict | None, float]:
  """(top-k {'top1', ..., 'top20'}, per-subset top-k tables or None, hub share) of the
  retrieval result file `path` against `<split>_query.json` and `<split>_gallery.json`; image
  ids must be images of `<split>_coco.json`. The file is read, validated and judged one record
  at a time (`retrieval.query_results` keeps the best detection of each query item only)."""
  query_gt = _load_json(_gt_file(gt_dir, f"{split}_query.json"))
  gallery_gt = _load_json(_gt_file(gt_dir, f"{split}_gallery.json"))
  coco = _load_json(_gt_file(gt_dir, f"{split}_coco.json"))
  image_ids = {im["id"] for im in coco["images"]}
  firsts = Counter()
  try:
    size = os.path.getsize(path)
  except OSError as e:
    raise ResultsError(f"{path}: cannot read JSON: {e}") from e

  def records():
    with tqdm(total=size, unit="B", unit_scale=True, desc=f"reading {os.path.basename(path)}",
              disable=not show_progress, leave=False) as bar:
      for i, r in enumerate(iter_json_array(path, progress=bar.update)):
        retrieval.validate_record(r, i, image_ids, path)
        firsts[diagnostics.first_entry(r)] += 1
        yield r

  results = retrieval.query_results(query_gt, gallery_gt, records())
  table = None
  if subsets:
    table = {attr: {v: _round_top_k(m) for v, m in values.items()} for attr, values in
             retrieval.score_subsets(results, _attribute_lookup(coco)).items()}
  return (_round_top_k(retrieval.top_k(results)), table,
          round(diagnostics.hub_share_of(firsts), 4))


def score_file(gt_dir: str, split: str, results_path: str | None,
               retrieval_path: str | None = None,
               retrieval_gt_boxes_path: str | None = None,
               show_progress: bool = False) -> dict:
  """Scores a result file and / or retrieval result files of `split`: with detected query and
  gallery boxes (`retrieval_path`, the official protocol) and with ground-truth boxes
  (`retrieval_gt_boxes_path`, records whose queries and gallery are the ground-truth items)."""
  metrics = {}
  if results_path:
    gt_path = _gt_file(gt_dir, f"{split}_coco.json")
    metrics.update(score_file_records(gt_path, results_path, show_progress=show_progress))
  diagnostics = {}
  for key, path in (("retrieval", retrieval_path),
                    ("retrieval_gt_boxes", retrieval_gt_boxes_path)):
    if not path:
      continue
    metrics[key], table, hub = score_retrieval(gt_dir, split, path,
                                               show_progress=show_progress)
    metrics.setdefault("subsets", {})[key] = table
    diagnostics["hub_share" + key[len("retrieval"):]] = hub
  if diagnostics:
    metrics["retrieval_diagnostics"] = diagnostics
    reference = reference_rankers(gt_dir, split, show_progress)
    if reference:
      metrics["retrieval_reference"] = reference
      if "retrieval_gt_boxes" in metrics:
        metrics["retrieval_lift"] = reference_lib.lift(metrics["retrieval_gt_boxes"], reference)
  return metrics


def reference_rankers(gt_dir: str, split: str, show_progress: bool = False) -> dict | None:
  """`evaluation.reference` on the split's ground-truth query and gallery items, the images
  read from the converter's TFRecords in `gt_dir` (None, with a note on stderr, where the
  split's TFRecords are not there)."""
  from match_rcnn_jax.data import tfrecords
  info = os.path.join(tfrecords.split_dir(gt_dir, split), "dataset_info.json")
  if not os.path.exists(info):
    print(f"note: {info} not found: no reference rankers (they read the split's images)",
          file=sys.stderr)
    return None
  query_gt = _load_json(_gt_file(gt_dir, f"{split}_query.json"))
  gallery_gt = _load_json(_gt_file(gt_dir, f"{split}_gallery.json"))
  return reference_lib.evaluate_split(gt_dir, split, query_gt, gallery_gt, show_progress)
