"""Data parallelism: 4 devices of one process, and 2 processes joined by jax.distributed, give
the losses of 1 device on the same global batches, and the evaluation's results and metrics of
1 device."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest


@pytest.fixture(scope="module")
def one_and_four_devices(tiny_config):
  """sharded_steps.py's output: 2 steps on 1 device and on 4 (CPU) devices."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
  res = subprocess.run([sys.executable, "tests/scripts/sharded_steps.py", tiny_config.data.dir],
                       capture_output=True, text=True, env=env)
  assert res.returncode == 0, res.stderr[-3000:]
  return json.loads(res.stdout.strip().splitlines()[-1])


def _assert_same_losses(losses, reference):
  assert len(losses) == len(reference)
  for a, b in zip(losses, reference):
    assert set(a) == set(b)
    for k in a:
      np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-5, err_msg=k)


def test_four_devices_match_one(one_and_four_devices):
  """Data parallelism over 4 (CPU) devices gives the losses and parameters of 1 device on the
  same global batches."""
  out = one_and_four_devices
  assert out["devices"] == 4
  _assert_same_losses(out["many"], out["one"])
  assert out["one"][1]["loss"] != out["one"][0]["loss"]  # the first step changed the model
  assert out["max_param_diff"] <= 1e-5 * max(1.0, out["max_param"])


def _free_port():
  import socket
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _run_two_processes(tmp_path, argv) -> list[str]:
  """Runs `argv(i, port)` as processes i = 0, 1 (to be joined by jax.distributed on
  127.0.0.1:port), each compiling for itself (no persistent compilation cache, one CPU device);
  asserts both succeed and returns their standard outputs."""
  env = {k: v for k, v in os.environ.items() if k not in ("JAX_COMPILATION_CACHE_DIR",
                                                            "XLA_FLAGS")}
  port = str(_free_port())
  # Output to files, not pipes: a process blocked on a full pipe would stall the other one in
  # a collective while this test waits on the first.
  logs = [(tmp_path / f"out{i}", tmp_path / f"err{i}") for i in range(2)]
  procs = []
  for i, (out, err) in enumerate(logs):
    with open(out, "w") as fo, open(err, "w") as fe:
      procs.append(subprocess.Popen([sys.executable, *argv(i, port)], stdout=fo, stderr=fe,
                                    text=True, env=env))
  try:
    for p, (_, err) in zip(procs, logs):
      p.wait(timeout=420)
      assert p.returncode == 0, err.read_text()[-3000:]
  finally:
    for p in procs:
      p.kill()
  return [out.read_text() for out, _ in logs]


def test_two_processes_match_one(one_and_four_devices, tiny_config, tmp_path):
  """Two processes joined by jax.distributed on loopback (CPU collectives), each reading its own
  input files, give the losses of one device fed the same global batches."""
  stdouts = _run_two_processes(tmp_path, lambda i, port: [
      "tests/scripts/multiprocess_steps.py", tiny_config.data.dir, port, str(i)])
  outs = [json.loads(text.strip().splitlines()[-1]) for text in stdouts]
  assert [o["processes"] for o in outs] == [2, 2] and [o["devices"] for o in outs] == [2, 2]
  for out in outs:
    _assert_same_losses(out["losses"], one_and_four_devices["one"])


@pytest.fixture(scope="module")
def eval_one_and_four_devices(tiny_config, tmp_path_factory):
  """sharded_eval.py's output directory: the tiny model evaluated with 1 device (one/) and 4
  (CPU) devices (many/), and its export (workdir/)."""
  out = tmp_path_factory.mktemp("sharded_eval")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
  res = subprocess.run([sys.executable, "tests/scripts/sharded_eval.py", tiny_config.data.dir,
                        str(out)], capture_output=True, text=True, env=env)
  assert res.returncode == 0, res.stderr[-3000:]
  assert json.loads(res.stdout.strip().splitlines()[-1])["devices"] == 4
  return out


def _assert_same_records(path, reference_path, tol=1e-4):
  """The result records of two results.json files pair up one to one: each record with one of
  the same image and category whose score and box are within `tol` (the two runs round
  differently, so near-equal detections may come in another order)."""
  def groups(p):
    out = {}
    for r in json.loads(p.read_text()):
      out.setdefault((r["image_id"], r["category_id"]), []).append(
          np.asarray([r["score"], *r["bbox"]], np.float64))
    return out
  got, want = groups(path), groups(reference_path)
  assert set(got) == set(want)
  assert sum(map(len, want.values())) > 20  # the tiny model detects something on every image
  for key, rows in want.items():
    assert len(got[key]) == len(rows), key
    left = list(got[key])
    for row in rows:
      diff = [np.abs(row - other).max() for other in left]
      best = int(np.argmin(diff))
      assert diff[best] <= tol, (key, row, left[best])
      left.pop(best)


def test_evaluation_on_four_devices_matches_one(eval_one_and_four_devices):
  """The evaluation sharded over 4 devices writes the records and metrics of 1 device."""
  out = eval_one_and_four_devices
  _assert_same_records(out / "many" / "results.json", out / "one" / "results.json")
  many = json.loads((out / "many" / "metrics.json").read_text())
  one = json.loads((out / "one" / "metrics.json").read_text())
  assert many == one
  assert one["retrieval_gt_boxes"]["top20"] > 0  # retrieval was ranked from the embeddings


def test_eval_py_on_two_processes_matches_one_device(eval_one_and_four_devices, tiny_config,
                                                     tmp_path):
  """eval.py started as 2 processes joined on loopback (--coordinator_address ...), each
  reading half the split, writes (from process 0 only) the records and metrics of 1 device."""
  ref = eval_one_and_four_devices
  workdir = tmp_path / "workdir"
  shutil.copytree(ref / "workdir", workdir)
  stdouts = _run_two_processes(tmp_path, lambda i, port: [
      "eval.py", "--config", "configs/tiny.py", "--workdir", str(workdir),
      f"--config.data_dir={tiny_config.data.dir}", "--coordinator_address", f"127.0.0.1:{port}",
      "--num_processes", "2", "--process_id", str(i)])
  _assert_same_records(workdir / "eval" / "results.json", ref / "one" / "results.json")
  metrics = json.loads((workdir / "eval" / "metrics.json").read_text())
  assert metrics == json.loads((ref / "one" / "metrics.json").read_text())
  assert "bbox" in stdouts[0] and "bbox" not in stdouts[1]  # process 0 printed the tables
