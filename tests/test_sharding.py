import json
import os
import subprocess
import sys

import numpy as np


def test_four_devices_match_one(tiny_config):
  """Data parallelism over 4 (CPU) devices gives the losses and parameters of 1 device on the
  same global batches."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             PYTHONPATH=os.getcwd())
  res = subprocess.run([sys.executable, "tests/scripts/sharded_steps.py", tiny_config.data.dir],
                       capture_output=True, text=True, env=env)
  assert res.returncode == 0, res.stderr[-3000:]
  out = json.loads(res.stdout.strip().splitlines()[-1])
  assert out["devices"] == 4
  for a, b in zip(out["one"], out["many"]):
    for k in a:
      np.testing.assert_allclose(b[k], a[k], rtol=1e-4, atol=1e-5, err_msg=k)
  assert out["one"][1]["loss"] != out["one"][0]["loss"]  # the first step changed the model
  assert out["max_param_diff"] <= 1e-5 * max(1.0, out["max_param"])


def _free_port():
  import socket
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_match_one(tiny_config):
  """Two processes joined by jax.distributed on loopback (CPU collectives), each reading its own
  input files, give the losses of one process fed the same global batches."""
  script = "tests/scripts/multiprocess_steps.py"
  env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  env["PYTHONPATH"] = os.getcwd()
  port = str(_free_port())
  procs = [subprocess.Popen([sys.executable, script, tiny_config.data.dir, port, "2", str(i)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
           for i in range(2)]
  outs = []
  try:
    for p in procs:
      stdout, stderr = p.communicate(timeout=420)
      assert p.returncode == 0, stderr[-3000:]
      outs.append(json.loads(stdout.strip().splitlines()[-1]))
  finally:
    for p in procs:
      p.kill()
  single = subprocess.run(
      [sys.executable, script, tiny_config.data.dir, "single", "2"], capture_output=True,
      text=True, env=dict(env, XLA_FLAGS="--xla_force_host_platform_device_count=2"))
  assert single.returncode == 0, single.stderr[-3000:]
  ref = json.loads(single.stdout.strip().splitlines()[-1])
  assert [o["processes"] for o in outs] == [2, 2] and ref["processes"] == 1
  for out in outs:
    for a, b in zip(out["losses"], ref["losses"]):
      for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-5, err_msg=k)
