import json
import os
import subprocess
import sys

from match_rcnn_jax.evaluation import coco_metrics
from tests.test_evaluation import _gt_as_records


def _run(args):
  return subprocess.run([sys.executable, "eval.py", *args], capture_output=True, text=True)


def test_scoring_mode(tiny_config, tmp_path):
  gt = coco_metrics.load_gt(os.path.join(tiny_config.data.dir, "validation_coco.json"))
  results = tmp_path / "r.json"
  results.write_text(json.dumps(_gt_as_records(gt)))
  res = _run(["--gt_dir", tiny_config.data.dir, "--split", "validation", "--results",
              str(results)])
  assert res.returncode == 0, res.stderr[-2000:]
  metrics = json.loads((tmp_path / "metrics.json").read_text())
  assert set(metrics) == {"bbox", "segm", "landmarks_vis", "landmarks_vis_occ"}
  assert all(m == {"AP": 1.0, "AP50": 1.0, "AP75": 1.0} for m in metrics.values())
  assert "landmarks_vis_occ" in res.stdout
  # An empty file scores 0; output_dir is honoured.
  results.write_text("[]")
  res = _run(["--gt_dir", tiny_config.data.dir, "--results", str(results), "--output_dir",
              str(tmp_path / "d")])
  assert res.returncode == 0
  metrics = json.loads((tmp_path / "d" / "metrics.json").read_text())
  assert metrics["bbox"] == {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}


def test_malformed_results_name_the_record(tiny_config, tmp_path):
  gt = coco_metrics.load_gt(os.path.join(tiny_config.data.dir, "validation_coco.json"))
  records = _gt_as_records(gt)
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
  bad = [dict(r) for r in records]
  del bad[0]["score"]
  path.write_text(json.dumps(bad))
  res = _run(["--gt_dir", tiny_config.data.dir, "--results", str(path)])
  assert res.returncode == 1 and "record 0: missing key 'score'" in res.stderr
