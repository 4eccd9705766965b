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
