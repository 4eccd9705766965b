"""Detection result records grouped by image for scoring, held in memory or spilled to disk.

A result file of the released validation split is gigabytes of records (32,153 images, up to
100 detections each with an RLE mask and 882 keypoint values); held as Python objects it needs
several times its size in memory. A `RecordStore` splits the split's sorted image ids into
`num_groups` runs of consecutive ids and keeps each run's records in their order in the file.
With one group the records stay in memory; with more they are spilled, as they are added, to a
temporary folder (pickle streams, one per group and field: the boxes and scores, the masks, the
keypoints), so that scoring holds one group of one task's fields at a time
(`coco_metrics.evaluate_task` over `groups(field)`).
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile

import numpy as np

from match_rcnn_jax.evaluation.result_files import ResultsError

FIELDS = ("bbox", "segmentation", "keypoints")
_FLUSH = 256  # records a group's stream buffers before writing them


class RecordStore:
  """Validated result records of a split, grouped by runs of consecutive image ids.

  Args:
    image_ids: the split's image ids (every record's image must be one of them).
    num_groups: how many groups (at most one per image); 1 keeps the records in memory.
    spill_dir: where the temporary folder of a spilled store goes (default: the system's
      temporary directory, `TMPDIR`).
    path: the result file's name, for error messages.

  Every record must carry `bbox` or every record none: pycocotools reads the first record's
  fields to choose how to read all of them, and a spilled store's groups each start afresh.
  """

  def __init__(self, image_ids, num_groups: int = 1, spill_dir: str | None = None,
               path: str = "results"):
    ids = sorted(int(i) for i in image_ids)
    num_groups = max(1, min(int(num_groups), len(ids)))
    self.path = path
    self.image_groups = [[int(i) for i in g] for g in np.array_split(ids, num_groups)] if ids \
        else [[]]
    self._group_of = {i: g for g, run in enumerate(self.image_groups) for i in run}
    self.counts = dict.fromkeys(("records", *FIELDS), 0)
    self._with_bbox = None
    self.spilled = num_groups > 1
    if self.spilled:
      self.dir = tempfile.mkdtemp(prefix="match_rcnn_jax_records_", dir=spill_dir)
      self._buffers = [{f: [] for f in ("base", *FIELDS[1:])} for _ in self.image_groups]
    else:
      self.dir = None
      self._records = []

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def __len__(self) -> int:
    return self.counts["records"]

  def close(self) -> None:
    """Removes the spilled files."""
    if self.dir is not None:
      shutil.rmtree(self.dir, ignore_errors=True)
      self.dir = None

  def add(self, record: dict, index: int | None = None) -> None:
    """Adds a validated record (keypoints as an array or a list of numbers)."""
    has_bbox = "bbox" in record
    if self._with_bbox is None:
      self._with_bbox = has_bbox
    elif has_bbox != self._with_bbox:
      where = f"record {index if index is not None else self.counts['records']}"
      raise ResultsError(f"{self.path}: {where}: bbox is in some records and not in others "
                         "(give every record a bbox, or none)")
    group = self._group_of.get(record["image_id"])
    if group is None:
      raise ResultsError(f"{self.path}: image_id {record['image_id']!r} is not an image of "
                         "the split")
    self.counts["records"] += 1
    for f in FIELDS:
      self.counts[f] += f in record
    if "keypoints" in record:
      record = {**record, "keypoints": np.asarray(record["keypoints"], np.float64)}
    if not self.spilled:
      self._records.append(record)
      return
    buffers = self._buffers[group]
    buffers["base"].append((record["image_id"], record["category_id"], record["score"],
                            record.get("bbox"), "segmentation" in record, "keypoints" in record))
    for f in FIELDS[1:]:
      if f in record:
        buffers[f].append(record[f])
    if len(buffers["base"]) >= _FLUSH:
      self._flush(group)

  def _file(self, group: int, stream: str) -> str:
    return os.path.join(self.dir, f"{group:05d}.{stream}.pkl")

  def _flush(self, group: int) -> None:
    for stream, items in self._buffers[group].items():
      if items:
        with open(self._file(group, stream), "ab") as f:
          pickle.dump(items, f, protocol=pickle.HIGHEST_PROTOCOL)
        items.clear()

  def _read(self, group: int, stream: str) -> list:
    out, path = [], self._file(group, stream)
    if os.path.exists(path):
      with open(path, "rb") as f:
        while True:
          try:
            out += pickle.load(f)
          except EOFError:
            return out
    return out

  def groups(self, field: str):
    """(sorted image ids, their records that carry `field`, in file order) per group, in
    increasing order of image id; each record holds image_id, category_id, score, bbox (where
    the file gives one) and `field`. A spilled group is read from disk when its turn comes."""
    if field not in FIELDS:
      raise ValueError(f"field must be one of {FIELDS}, got {field!r}")
    if not self.spilled:
      yield self.image_groups[0], [r for r in self._records if field in r]
      return
    for group in range(len(self.image_groups)):
      self._flush(group)
    for group, image_ids in enumerate(self.image_groups):
      values = iter(self._read(group, field)) if field != "bbox" else None
      records = []
      for image_id, category_id, score, bbox, has_segm, has_kp in self._read(group, "base"):
        rec = {"image_id": image_id, "category_id": category_id, "score": score}
        if bbox is not None:
          rec["bbox"] = bbox
        if field == "bbox":
          if bbox is not None:
            records.append(rec)
        elif (has_segm if field == "segmentation" else has_kp):
          rec[field] = next(values)
          records.append(rec)
      yield image_ids, records
