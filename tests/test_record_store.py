"""Result records spilled to disk in groups of images score exactly as the records held whole
and as pycocotools run on them; bad and too-large files fail before scoring, naming the file."""

import json
import os

import pytest

from benchmarks.scale_fixture import make_split
from match_rcnn_jax.data import schema
from match_rcnn_jax.evaluation import coco_metrics, record_store, scoring
from match_rcnn_jax.evaluation.result_files import ResultsError
from tests.test_evaluation import pycocotools_stats


@pytest.fixture(scope="module")
def split(tmp_path_factory):
  """2,000 validation-shaped images (3,378 garments), 2 detection records each."""
  d = str(tmp_path_factory.mktemp("scale"))
  make_split(d, images=2000, detections=2)
  return d


def test_spilled_groups_score_as_the_whole_and_as_pycocotools(split, tmp_path):
  gt_path = os.path.join(split, "validation_coco.json")
  results = os.path.join(split, "results.json")
  gt = coco_metrics.load_gt(gt_path)
  with scoring.load_results(results, set(gt.getImgIds()), group_mb=0.3,
                            spill_dir=str(tmp_path)) as store:
    assert store.spilled and len(store.image_groups) > 40 and len(store) == 4000
    ids, first = next(store.groups("keypoints"))  # every group's buffers are on disk now
    assert ids == store.image_groups[0] and {r["image_id"] for r in first} <= set(ids)
    assert len(os.listdir(store.dir)) == 3 * len(store.image_groups)  # base, masks, keypoints
    spilled = scoring.score_records(gt, store)
  assert os.listdir(tmp_path) == []  # the spill is removed
  whole = scoring.score_file_records(gt_path, results)  # one group, in memory
  assert spilled == whole
  records = json.load(open(results))
  for name, iou_type, visible_only in scoring.TASKS:
    stats = pycocotools_stats(gt, records, iou_type, visible_only)
    assert spilled[name] == {k: round(max(float(v), 0.0), 4) for k, v in zip(
        ("AP", "AP50", "AP75"), stats[:3])}, name
    assert 0 < spilled[name]["AP"] < 0.99, (name, spilled[name])
  for task in scoring.SUBSET_TASKS:  # every subset table filled
    assert all(m is not None for values in spilled["subsets"][task].values()
               for m in values.values()), task


def test_retrieval_read_record_by_record_equals_the_whole_list(split):
  """The streamed retrieval scoring (best detection per query item kept as records pass)
  equals the protocol run on the records held as a list, hits included."""
  from match_rcnn_jax.evaluation import diagnostics, retrieval
  records = json.load(open(os.path.join(split, "retrieval_results.json")))
  query = json.load(open(os.path.join(split, "validation_query.json")))
  gallery = json.load(open(os.path.join(split, "validation_gallery.json")))
  top, table, hub = scoring.score_retrieval(split, "validation",
                                            os.path.join(split, "retrieval_results.json"))
  expected = retrieval.score(query, gallery, records)
  assert top == {k: round(v, 4) for k, v in expected.items()}
  assert 0.1 < top["top20"] < 0.9 and top["top1"] < top["top20"]
  assert hub == round(diagnostics.hub_share(records), 4)
  assert set(table) == set(retrieval.SUBSETS)
  # Judged from a one-pass iterator, the same items with the same detections.
  listed = retrieval.query_results(query, gallery, records)
  streamed = retrieval.query_results(query, gallery, iter(records))
  assert [(r.item, r.record, r.hits) for r in listed] == [
      (r.item, r.record, r.hits) for r in streamed]


def test_store_rejects_mixed_boxes_and_unknown_images():
  store = record_store.RecordStore([1, 2, 3], num_groups=1, path="r.json")
  store.add({"image_id": 1, "category_id": 1, "score": 0.5, "bbox": [0, 0, 2, 2]}, 0)
  with pytest.raises(ResultsError, match=r"r.json: record 1: bbox is in some records"):
    store.add({"image_id": 2, "category_id": 1, "score": 0.5,
               "keypoints": [0.0] * 3 * schema.NUM_LANDMARKS}, 1)
  with pytest.raises(ResultsError, match=r"r.json: image_id 9 is not an image"):
    store.add({"image_id": 9, "category_id": 1, "score": 0.5, "bbox": [0, 0, 2, 2]}, 2)
  with pytest.raises(ValueError, match="field must be one of"):
    next(store.groups("mask"))


def test_too_large_results_fail_before_scoring(split, tmp_path, monkeypatch):
  gt_path = os.path.join(split, "validation_coco.json")
  results = os.path.join(split, "results.json")
  ids = set(coco_metrics.load_gt(gt_path).getImgIds())
  monkeypatch.setattr(scoring, "_available_bytes", lambda: 2**20)
  with pytest.raises(ResultsError, match=r"results.json: scoring its 4000 records needs about"):
    scoring.load_results(results, ids)
  monkeypatch.undo()

  class Usage:
    free = 1000
  monkeypatch.setattr(scoring.shutil, "disk_usage", lambda path: Usage)
  with pytest.raises(ResultsError, match=r"results.json: scoring its 0.0 GB of records spills "
                     "them to .* 0.0 GB free .* set TMPDIR"):
    scoring.load_results(results, ids, group_mb=1, spill_dir=str(tmp_path))
  assert os.listdir(tmp_path) == []
