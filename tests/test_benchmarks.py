"""Smoke tests of the benchmark harnesses: they run end to end and keep their JSON contracts.
(Their timings are measurements, never asserted.)"""

import json
import subprocess
import sys


def _run(args):
  res = subprocess.run([sys.executable, *args], capture_output=True, text=True)
  assert res.returncode == 0, res.stderr[-4000:]
  return res


def test_compare_torchvision_tiny(tmp_path):
  out = tmp_path / "bench.json"
  res = _run(["benchmarks/compare_torchvision.py", "--config", "configs/bench_tiny.py",
              "--json", str(out)])
  r = json.loads(out.read_text())
  assert {"device", "config", "ours", "torchvision", "speedup"} <= set(r)
  assert r["config"]["image_size"] == 128 and r["config"]["depth"] == "18"
  for key in ("train_step_s", "infer_s", "compile_s", "peak_rss_mb", "flops_per_image"):
    assert r["ours"][key] > 0, key
  for key in ("train_step_s", "infer_s", "peak_rss_mb"):
    assert r["torchvision"][key] > 0, key
  for side in ("ours", "torchvision"):
    assert len(r[side]["train_step_s_all"]) == r["config"]["runs"]
    n = r["config"]["train_images"]
    assert abs(r[side]["train_images_per_s"] - n / r[side]["train_step_s"]) < 0.02 * (
        r[side]["train_images_per_s"])
    # GT boxes join the proposals, so every image has at least its garments as foreground.
    assert r[side]["fg_rois_per_image"] >= r["config"]["garments_per_image"]
  assert abs(r["speedup"]["train"] - r["torchvision"]["train_step_s"]
             / r["ours"]["train_step_s"]) < 1e-2 * r["speedup"]["train"]
  assert abs(r["speedup"]["infer"] - r["torchvision"]["infer_s"] / r["ours"]["infer_s"]) < (
      1e-2 * r["speedup"]["infer"])
  assert "train step" in res.stdout and "speedup" in res.stdout


def test_retrieval_ranking_benchmark_agrees_with_pairwise(tmp_path):
  out = tmp_path / "rank.json"
  _run(["benchmarks/retrieval_ranking.py", "--queries", "300", "--gallery", "2000", "--dim",
        "32", "--runs", "1", "--naive_queries", "64", "--json", str(out)])
  r = json.loads(out.read_text())
  assert r["top_k_agreement"] == 1.0  # the matmul form ranks exactly as pair by pair
  assert r["ours_s"] > 0 and r["naive_s_extrapolated"] > 0 and r["ours_pairs_per_s"] > 0
