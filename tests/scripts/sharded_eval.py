"""Evaluates the tiny model (initialised with PRNGKey(0)) on the tiny validation split with 1
device and with every device (start with XLA_FLAGS=--xla_force_host_platform_device_count=N):
args data_dir out_dir. Writes `out_dir/one/` and `out_dir/many/` (results.json, metrics.json,
...) and the model's export in `out_dir/workdir/export` (what the two-process eval.py run of
test_sharding.py evaluates); prints JSON with the device count."""

import json
import os
import sys

import jax

from configs import tiny
from match_rcnn_jax.evaluation import evaluate
from match_rcnn_jax.models import export, match_rcnn


def tiny_config(data_dir):
  config = tiny.get_config()
  config.data_dir = config.data.dir = data_dir
  return config


def main():
  data_dir, out = sys.argv[1], sys.argv[2]
  config = tiny_config(data_dir)
  model = match_rcnn.build(config.model)
  variables = jax.device_get(match_rcnn.init(model, jax.random.PRNGKey(0),
                                             tuple(config.data.canvas)))
  export.save_export(os.path.join(out, "workdir"), config, variables)
  for name, devices in (("one", jax.devices()[:1]), ("many", jax.devices())):
    evaluate.evaluate_model(config, model, variables, config.data.eval_split,
                            os.path.join(out, name), devices=devices)
  print(json.dumps({"devices": jax.device_count()}))


if __name__ == "__main__":
  main()
