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
  bench = r["config"]["bench"]
  assert bench["image_size"] == 128 and r["config"]["model"]["backbone"]["depth"] == "18"
  for key in ("train_step_s", "infer_s", "compile_s", "peak_rss_mb", "flops_per_image"):
    assert r["ours"][key] > 0, key
  for key in ("train_step_s", "infer_s", "peak_rss_mb"):
    assert r["torchvision"][key] > 0, key
  # Ours starts from torchvision's initial weights: backbone, FPN, RPN, box, mask, landmark heads.
  assert r["ours"]["weights_from_torchvision"] > 100
  for side in ("ours", "torchvision"):
    assert len(r[side]["train_step_s_all"]) == bench["runs"]
    n = bench["train_images"]
    assert abs(r[side]["train_images_per_s"] - n / r[side]["train_step_s"]) < 0.02 * (
        r[side]["train_images_per_s"])
    # GT boxes join the proposals, so every image has at least its garments as foreground.
    assert r[side]["fg_rois_per_image"] >= bench["garments_per_image"]
  assert abs(r["speedup"]["train"] - r["torchvision"]["train_step_s"]
             / r["ours"]["train_step_s"]) < 1e-2 * r["speedup"]["train"]
  assert abs(r["speedup"]["infer"] - r["torchvision"]["infer_s"] / r["ours"]["infer_s"]) < (
      1e-2 * r["speedup"]["infer"])
  assert "train step" in res.stdout and "speedup" in res.stdout


def test_compare_torchvision_save_init_writes_the_shared_initial_weights(tmp_path):
  """`--save_init` writes torchvision's seed-0 state_dict with its keypoint (landmark) head,
  the same on every call: the weights both sides of a run start from."""
  import numpy as np

  paths = [tmp_path / f"init{i}.npz" for i in range(2)]
  for path in paths:
    _run(["benchmarks/compare_torchvision.py", "--config", "configs/bench_tiny.py",
          "--save_init", str(path)])
  with np.load(paths[0]) as a, np.load(paths[1]) as b:
    assert sorted(a.files) == sorted(b.files) and len(a.files) > 100
    for k in a.files:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert any(k.startswith("roi_heads.keypoint_predictor.") for k in a.files)


def test_retrieval_ranking_benchmark_agrees_with_pairwise(tmp_path):
  out = tmp_path / "rank.json"
  _run(["benchmarks/retrieval_ranking.py", "--queries", "300", "--gallery", "2000", "--dim",
        "32", "--runs", "1", "--naive_queries", "64", "--json", str(out)])
  r = json.loads(out.read_text())
  assert r["top_k_agreement"] == 1.0  # the matmul form ranks exactly as pair by pair
  assert r["ours_s"] > 0 and r["naive_s_extrapolated"] > 0 and r["ours_pairs_per_s"] > 0


OPS_SCRIPT = """
import json, os, sys
os.environ["XLA_FLAGS"] = "--xla_cpu_enable_xprof_traceme=true"
sys.path.insert(0, "benchmarks")
import jax, jax.numpy as jnp
from profile_train_step import op_time_by_source

def loss(w, x):
  with jax.named_scope("wide"):
    h = jnp.tanh(x @ w)
  with jax.named_scope("narrow"):
    return jnp.sum(h[:, :8] ** 2)

step = jax.jit(jax.value_and_grad(loss))
w, x = jnp.ones((512, 512)) / 512, jnp.ones((1024, 512))
jax.block_until_ready(step(w, x))
hlo = step.lower(w, x).compile().as_text()
print(json.dumps(op_time_by_source(lambda: step(w, x), hlo, 10, depth=2)))
"""


def test_op_time_by_source_attributes_trace_events():
  """profile_train_step --ops: a traced step's op time, summed by the code that emitted each
  op, forward and backward."""
  res = _run(["-c", OPS_SCRIPT])
  out = json.loads(res.stdout.strip().splitlines()[-1])
  sources = {r["source"]: r["s"] for r in out["sources"]}
  assert out["total_s"] > 0 and abs(sum(sources.values()) - out["total_s"]) < 1e-3
  assert any(s.startswith("forward") and "wide" in s for s in sources), sources
  assert any(s.startswith("backward") and "wide" in s for s in sources), sources
  # The [1024, 512] x [512, 512] matmuls of `wide` outweigh the 8-column square of `narrow`.
  wide = sum(v for k, v in sources.items() if "wide" in k)
  narrow = sum(v for k, v in sources.items() if "narrow" in k)
  assert wide > narrow
