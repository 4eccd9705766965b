import json
import os
import subprocess
import sys

from match_rcnn_jax.evaluation import coco_metrics
from tests.test_evaluation import gt_as_records


def _run(args):
  return subprocess.run([sys.executable, "eval.py", *args], capture_output=True, text=True)


def _gt_retrieval(data_dir):
  """Retrieval records from the ground truth: each style > 0 query item with its targets
  ranked first; expected top-1 = share of those items that have a target."""
  with open(os.path.join(data_dir, "validation_query.json")) as f:
    query = json.load(f)
  with open(os.path.join(data_dir, "validation_gallery.json")) as f:
    gallery = json.load(f)
  records, found = [], 0
  for q in query:
    if q["style"] == 0:
      continue
    targets = [g for g in gallery if (g["pair_id"], g["style"]) == (q["pair_id"], q["style"])]
    found += bool(targets)
    ranked = (targets + gallery)[:20]
    ranked += ranked[-1:] * (20 - len(ranked))
    records.append({"query_image_id": q["query_image_id"], "query_bbox": q["bbox"],
                    "query_cls": q["cls"], "query_score": 1.0,
                    "gallery_image_id": [g["gallery_image_id"] for g in ranked],
                    "gallery_bbox": [g["bbox"] for g in ranked]})
  return records, found / len(records)


def test_scoring_mode(tiny_config, tmp_path):
  gt = coco_metrics.load_gt(os.path.join(tiny_config.data.dir, "validation_coco.json"))
  results = tmp_path / "r.json"
  results.write_text(json.dumps(gt_as_records(gt)))
  ret, expected_top1 = _gt_retrieval(tiny_config.data.dir)
  assert expected_top1 > 0
  (tmp_path / "q.json").write_text(json.dumps(ret))
  res = _run(["--gt_dir", tiny_config.data.dir, "--split", "validation", "--results",
              str(results), "--retrieval_results", str(tmp_path / "q.json"),
              "--retrieval_results_gt_boxes", str(tmp_path / "q.json")])
  assert res.returncode == 0, res.stderr[-2000:]
  metrics = json.loads((tmp_path / "metrics.json").read_text())
  assert set(metrics) == {"bbox", "segm", "landmarks_vis", "landmarks_vis_occ", "subsets",
                          "retrieval", "retrieval_gt_boxes", "retrieval_diagnostics",
                          "retrieval_reference", "retrieval_lift"}
  # The no-model rankers on the split's ground truth, and the lift of these (perfect) records.
  reference = metrics["retrieval_reference"]
  assert set(reference) == {"category_chance", "colour_histogram", "colour_histogram_category"}
  for m in reference.values():
    assert list(m) == ["top1", "top5", "top10", "top15", "top20"]
    assert all(0.0 <= v <= 1.0 for v in m.values()) and m["top1"] <= m["top20"]
  assert metrics["retrieval_lift"] == {
      k: round(1.0 - max(m[k] for m in reference.values()), 4) for k in ("top1", "top5")}
  assert "no-model reference rankers" in res.stdout and "colour_histogram_category" in res.stdout
  assert all(metrics[t] == {"AP": 1.0, "AP50": 1.0, "AP75": 1.0}
             for t in ("bbox", "segm", "landmarks_vis", "landmarks_vis_occ"))
  assert set(metrics["subsets"]) == {"bbox", "segm", "landmarks_vis", "retrieval",
                                     "retrieval_gt_boxes"}
  for name, task in metrics["subsets"].items():
    assert set(task) == {"scale", "occlusion", "zoom_in", "viewpoint"}
    key = "top1" if name.startswith("retrieval") else "AP"
    assert all(m is None or m[key] == 1.0 for values in task.values()
               for m in values.values())
    assert any(m is not None for values in task.values() for m in values.values())
  # Every query item has a target (the synthetic data guarantees it): all hits.
  assert expected_top1 == 1.0
  assert metrics["retrieval"] == {f"top{k}": 1.0 for k in (1, 5, 10, 15, 20)}
  assert 0.0 < metrics["retrieval_diagnostics"]["hub_share"] < 1.0
  assert "landmarks_vis_occ" in res.stdout and "retrieval, detected boxes: top1" in res.stdout
  # An empty file scores 0; output_dir is honoured.
  results.write_text("[]")
  res = _run(["--gt_dir", tiny_config.data.dir, "--results", str(results), "--output_dir",
              str(tmp_path / "d")])
  assert res.returncode == 0
  metrics = json.loads((tmp_path / "d" / "metrics.json").read_text())
  assert metrics["bbox"] == {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}


def test_malformed_results_name_the_record(tiny_config, tmp_path):
  gt = coco_metrics.load_gt(os.path.join(tiny_config.data.dir, "validation_coco.json"))
  records = gt_as_records(gt)
  cases = [({"image_id": 999999}, "record 1: image_id 999999 is not an image of the split"),
           ({"keypoints": [0.0] * 10}, "record 1: keypoints must be 882 numbers"),
           ({"category_id": 14}, "record 1: category_id 14 is not in 1..13")]
  for change, message in cases:
    bad = [dict(r) for r in records]
    bad[1].update(change)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    res = _run(["--gt_dir", tiny_config.data.dir, "--results", str(path)])
    assert res.returncode == 1 and message in res.stderr, res.stderr[-500:]
    assert "Traceback" not in res.stderr
  ret, _ = _gt_retrieval(tiny_config.data.dir)
  ret[2]["gallery_bbox"] = ret[2]["gallery_bbox"][:5]
  path.write_text(json.dumps(ret))
  res = _run(["--gt_dir", tiny_config.data.dir, "--retrieval_results", str(path)])
  assert res.returncode == 1 and "record 2: gallery_bbox must list 20 boxes" in res.stderr
  bad = [dict(r) for r in records]
  del bad[0]["score"]
  path.write_text(json.dumps(bad))
  res = _run(["--gt_dir", tiny_config.data.dir, "--results", str(path)])
  assert res.returncode == 1 and "record 0: missing key 'score'" in res.stderr
