"""Data parallelism: 4 devices of one process, and 2 processes joined by jax.distributed, give
the losses of 1 device on the same global batches."""

import json
import os
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


def test_two_processes_match_one(one_and_four_devices, tiny_config, tmp_path):
  """Two processes joined by jax.distributed on loopback (CPU collectives), each reading its own
  input files, give the losses of one device fed the same global batches."""
  script = "tests/scripts/multiprocess_steps.py"
  env = {k: v for k, v in os.environ.items() if k not in ("JAX_COMPILATION_CACHE_DIR",
                                                            "XLA_FLAGS")}
  port = str(_free_port())
  # Output to files, not pipes: a process blocked on a full pipe would stall the other one in
  # a collective while this test waits on the first.
  logs = [(tmp_path / f"out{i}", tmp_path / f"err{i}") for i in range(2)]
  procs = []
  for i, (out, err) in enumerate(logs):
    with open(out, "w") as fo, open(err, "w") as fe:
      procs.append(subprocess.Popen([sys.executable, script, tiny_config.data.dir, port, str(i)],
                                    stdout=fo, stderr=fe, text=True, env=env))
  outs = []
  try:
    for p, (out, err) in zip(procs, logs):
      p.wait(timeout=420)
      assert p.returncode == 0, err.read_text()[-3000:]
      outs.append(json.loads(out.read_text().strip().splitlines()[-1]))
  finally:
    for p in procs:
      p.kill()
  assert [o["processes"] for o in outs] == [2, 2] and [o["devices"] for o in outs] == [2, 2]
  for out in outs:
    _assert_same_losses(out["losses"], one_and_four_devices["one"])
