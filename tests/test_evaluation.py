import json
import os

import numpy as np
from pycocotools import mask as mask_utils

from match_rcnn_jax.data import schema
from match_rcnn_jax.evaluation import coco_metrics, result_files
from match_rcnn_jax.inference import records as records_lib


def gt_as_records(gt):
  records = []
  for ann in gt.dataset["annotations"]:
    rle = gt.annToRLE(ann)
    rle = {"size": rle["size"], "counts": rle["counts"].decode("ascii")
           if isinstance(rle["counts"], bytes) else rle["counts"]}
    kp = np.array(ann["keypoints"], np.float64).reshape(-1, 3)  # a copy: the GT keeps its own
    kp[:, 2] = 1
    records.append({"image_id": ann["image_id"], "category_id": ann["category_id"],
                    "bbox": ann["bbox"], "score": 1.0, "segmentation": rle,
                    "keypoints": kp.reshape(-1).tolist()})
  return records


def test_ground_truth_as_predictions_scores_one(tiny_config):
  gt = coco_metrics.load_gt(os.path.join(tiny_config.data.dir, "validation_coco.json"))
  records = gt_as_records(gt)
  for iou_type, visible_only in (("bbox", True), ("segm", True), ("keypoints", True),
                                 ("keypoints", False)):
    m = coco_metrics.evaluate(gt, records, iou_type, visible_only)
    assert m["AP"] == m["AP50"] == m["AP75"] == 1.0, (iou_type, m)


def test_shifted_boxes_lose_ap_and_empty_results_score_zero(tiny_config):
  gt = coco_metrics.load_gt(os.path.join(tiny_config.data.dir, "validation_coco.json"))
  records = gt_as_records(gt)
  for r in records:
    x, y, w, h = r["bbox"]
    r["bbox"] = [x + 0.3 * w, y, w, h]  # IoU 0.54 with its GT box
  m = coco_metrics.evaluate(gt, records, "bbox")
  assert m["AP50"] == 1.0 and m["AP75"] == 0.0 and 0 < m["AP"] < 0.5
  assert coco_metrics.evaluate(gt, [], "bbox")["AP"] == 0.0


def test_landmark_gt_settings(tiny_config):
  gt = coco_metrics.load_gt(os.path.join(tiny_config.data.dir, "validation_coco.json"))
  vis = coco_metrics.landmark_gt(gt, visible_only=True)
  occ = coco_metrics.landmark_gt(gt, visible_only=False)
  raw = {a["id"]: np.asarray(a["keypoints"]).reshape(-1, 3) for a in gt.dataset["annotations"]}
  for a in vis.dataset["annotations"]:
    assert a["num_keypoints"] == (raw[a["id"]][:, 2] == 2).sum()
  for a in occ.dataset["annotations"]:
    assert a["num_keypoints"] == (raw[a["id"]][:, 2] > 0).sum()


def test_paste_mask_and_records():
  prob = np.zeros((28, 28), np.float32)
  prob[:, :14] = 1.0
  m = records_lib.paste_mask(prob, (10, 20, 30, 40), 50, 60)
  assert m.shape == (50, 60) and m.sum() == 20 * 10
  assert m[20:40, 10:20].all() and not m[:, 20:].any()
  outputs = {"valid": np.array([[True, False]]), "boxes": np.array([[[20, 40, 60, 80],
                                                                     [0, 0, 1, 1]]], np.float32),
             "classes": np.array([[3, 0]]), "scores": np.array([[0.9, 0.0]], np.float32),
             "masks": np.ones((1, 2, 28, 28), np.float32),
             "landmarks": np.zeros((1, 2, 294, 3), np.float32)}
  outputs["landmarks"][0, 0, 60] = [30, 50, 4.0]
  info = np.array([[100, 120, 2.0, 2.0, 200, 240]], np.float32)  # resized x2
  (rec,) = records_lib.to_records(outputs, [7], info)
  assert rec["image_id"] == 7 and rec["category_id"] == 3 and rec["score"] == np.float32(0.9)
  np.testing.assert_allclose(rec["bbox"], [10, 20, 20, 20])
  assert len(rec["keypoints"]) == 882 and rec["keypoints"][180:183] == [15.0, 25.0, 1.0]
  assert mask_utils.area(rec["segmentation"]) == 400
  json.dumps(rec)


def test_subsets_of_ground_truth_as_predictions_score_one(tiny_config):
  gt = coco_metrics.load_gt(os.path.join(tiny_config.data.dir, "validation_coco.json"))
  records = gt_as_records(gt)
  for iou_type in ("bbox", "segm", "keypoints"):
    table = coco_metrics.evaluate_subsets(gt, records, iou_type)
    assert set(table) == {"scale", "occlusion", "zoom_in", "viewpoint"}
    scored = [m for values in table.values() for m in values.values() if m is not None]
    assert len(scored) >= 6, table
    assert all(m == {"AP": 1.0, "AP50": 1.0, "AP75": 1.0} for m in scored), (iou_type, table)
    # Subsets without items have no AP, and exactly those.
    present = {(a, ann[a]) for ann in gt.dataset["annotations"] for a in table}
    for attr, values in table.items():
      for value, name in coco_metrics.SUBSETS[attr].items():
        if iou_type != "keypoints":
          assert (values[name] is None) == ((attr, value) not in present)
  empty = coco_metrics.evaluate_subsets(gt, [], "bbox")
  assert all(m in (None, {"AP": 0.0, "AP50": 0.0, "AP75": 0.0})
             for values in empty.values() for m in values.values())


def _one_image_gt():
  def ann(i, box, scale):
    x, y, w, h = box
    return {"id": i, "image_id": 1, "category_id": 1, "bbox": box, "area": w * h,
            "iscrowd": 0, "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
            "num_keypoints": 0, "keypoints": [0] * 882, "scale": scale, "occlusion": 1,
            "zoom_in": 1, "viewpoint": 2}
  return coco_metrics.load_gt({
      "images": [{"id": 1, "width": 200, "height": 200}],
      "categories": [{"id": c, "name": str(c)} for c in range(1, 14)],
      "annotations": [ann(1, [10, 10, 20, 20], 1), ann(2, [100, 100, 90, 90], 3)]})


def test_subset_rule_items_outside_the_subset_are_ignore_regions():
  gt = _one_image_gt()
  det = lambda box, s: {"image_id": 1, "category_id": 1, "bbox": box, "score": s}  # noqa
  small, large = det([10, 10, 20, 20], 0.9), det([100, 100, 90, 90], 0.95)
  table = coco_metrics.evaluate_subsets(gt, [small, large], "bbox")
  # The higher-scored detection of the large item is neither TP nor FP for "small": AP 1.
  # (Counted as a false positive it would give precision 1/2 at full recall: AP 0.5.)
  assert table["scale"]["small"] == {"AP": 1.0, "AP50": 1.0, "AP75": 1.0}
  assert table["scale"]["large"] == {"AP": 1.0, "AP50": 1.0, "AP75": 1.0}
  assert table["scale"]["moderate"] is None
  assert table["viewpoint"]["frontal"]["AP"] == 1.0 and table["viewpoint"]["no_wear"] is None
  # A detection matching nothing is a false positive in every subset: with the highest score
  # it halves precision at full recall, so AP = 0.5 exactly (101-point interpolation).
  table = coco_metrics.evaluate_subsets(gt, [small, large, det([150, 0, 30, 30], 0.99)], "bbox")
  assert table["scale"]["small"] == {"AP": 0.5, "AP50": 0.5, "AP75": 0.5}
  # The plain evaluation is left intact after the subsets ran.
  assert coco_metrics.evaluate(gt, [small, large], "bbox")["AP"] == 1.0


def pycocotools_stats(gt, records, iou_type: str, visible_only: bool) -> np.ndarray:
  """The reference: pycocotools' COCOeval on deep copies of all the records at once, with the
  benchmark's landmark settings."""
  import copy

  from pycocotools.cocoeval import COCOeval
  ref_gt = coco_metrics.landmark_gt(gt, visible_only) if iou_type == "keypoints" else gt
  ev = COCOeval(ref_gt, ref_gt.loadRes(copy.deepcopy(records)), iou_type)
  if iou_type == "keypoints":
    ev.params.kpt_oks_sigmas = schema.OKS_SIGMAS
    ev.params.maxDets = [20]
  ev.evaluate()
  ev.accumulate()
  ev.summarize()
  return np.asarray(ev.stats)


def test_one_evaluation_per_task_equals_pycocotools_and_leaves_records_unchanged(tiny_config):
  """`evaluate_task` (shallow copies of the records, one COCOeval for the summary and the
  subset tables) against pycocotools run on deep copies, as the evaluation did before; the
  caller's records are left as they were."""
  import copy

  gt = coco_metrics.load_gt(os.path.join(tiny_config.data.dir, "validation_coco.json"))
  rng = np.random.default_rng(0)
  records = gt_as_records(gt)
  for r in records:  # imperfect predictions: shifted boxes and points, varied scores
    x, y, w, h = r["bbox"]
    r["bbox"] = [x + rng.uniform(-0.2, 0.2) * w, y + rng.uniform(-0.2, 0.2) * h, w, h]
    kp = np.asarray(r["keypoints"]).reshape(-1, 3)
    kp[:, :2] += rng.normal(0, 4, (len(kp), 2))
    r["keypoints"] = kp.reshape(-1).tolist()
    r["score"] = float(rng.uniform(0.1, 1.0))
    if rng.uniform() < 0.5:  # the mask: the shifted box's rectangle
      size = r["segmentation"]["size"]
      rle = mask_utils.frPyObjects(np.asarray([r["bbox"]], np.float64), *size)[0]
      r["segmentation"] = {"size": size, "counts": rle["counts"].decode("ascii")}
  before = copy.deepcopy(records)
  for iou_type, visible_only in (("bbox", True), ("segm", True), ("keypoints", False)):
    summary, table = coco_metrics.evaluate_task(gt, records, iou_type, visible_only)
    np.testing.assert_allclose(summary["stats"], np.maximum(
        pycocotools_stats(gt, records, iou_type, visible_only), 0), atol=1e-6)
    assert 0 < summary["AP"] < 1, (iou_type, summary)
    assert table == coco_metrics.evaluate_subsets(gt, records, iou_type, visible_only)
  assert records == before


def test_json_array_read_in_pieces_equals_json_load(tmp_path):
  """`result_files.iter_json_array` with chunks of 1 to 40 characters (elements, numbers and
  strings cut anywhere) yields what `json.load` gives; malformed text fails naming the file."""
  import pytest
  rng = np.random.default_rng(3)
  path = tmp_path / "a.json"
  for trial in range(60):
    n = int(rng.integers(0, 12))
    data = [{"image_id": int(rng.integers(1, 10**6)), "score": float(rng.uniform()) * 10.0**int(
        rng.integers(-3, 6)), "keypoints": rng.normal(size=int(rng.integers(0, 30))).tolist(),
        "name": "x" * int(rng.integers(0, 20))} for _ in range(n)]
    if trial % 5 == 0:
      data = [int(v) for v in rng.integers(0, 10**9, n)]  # bare numbers: cut mid-number
    path.write_text(json.dumps(data, indent=1 if trial % 2 else None))
    chunk = int(rng.integers(1, 41))
    assert list(result_files.iter_json_array(str(path), chunk_chars=chunk)) == data, (trial, chunk)
  for text, message in (("", "expected a JSON array"), ("{}", "expected a JSON array"),
                        ("[1, 2", "without ']'"), ("[1 2]", "expected ',' or ']' after record 0"),
                        ("[1,]", "record 1: invalid JSON"), ("[1] x", "after the array")):
    path.write_text(text)
    with pytest.raises(result_files.ResultsError, match=message) as err:
      list(result_files.iter_json_array(str(path), chunk_chars=3))
    assert str(path) in str(err.value)


def test_results_file_streamed_scores_as_the_whole(tiny_config, tmp_path):
  """A result file read record by record (keypoints compacted to arrays) scores exactly as
  its records held in memory, every table included."""
  from match_rcnn_jax.evaluation import scoring
  gt_path = os.path.join(tiny_config.data.dir, "validation_coco.json")
  gt = coco_metrics.load_gt(gt_path)
  rng = np.random.default_rng(4)
  records = gt_as_records(gt)
  for r in records:
    x, y, w, h = r["bbox"]
    r["bbox"] = [x + rng.uniform(-0.3, 0.3) * w, y, w, h]
    r["keypoints"] = (np.asarray(r["keypoints"]) + rng.normal(0, 3, 882)).tolist()
    r["score"] = float(rng.uniform())
  path = tmp_path / "results.json"
  path.write_text(json.dumps(records))
  whole = scoring.score(gt_path, records, str(path))
  streamed = scoring.score_file_records(gt_path, str(path))
  assert streamed == whole
  assert 0 < whole["bbox"]["AP"] < 1 and 0 < whole["landmarks_vis"]["AP"] < 1
