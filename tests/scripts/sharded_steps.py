"""Runs 2 train steps of the tiny model on the same global batches with 1 device and with every
device (start with XLA_FLAGS=--xla_force_host_platform_device_count=N); prints JSON with the
losses of both and the largest parameter difference."""

import json
import sys

import jax
import numpy as np

from configs import tiny
from match_rcnn_jax.data import pipeline
from match_rcnn_jax.models import match_rcnn
from match_rcnn_jax.training import loop, optim
from match_rcnn_jax.training import step as step_lib


def run(config, devices, batches):
  model = match_rcnn.build(config.model)
  variables = match_rcnn.init(model, jax.random.PRNGKey(0), tuple(config.data.canvas))
  tx = optim.make(config.optimizer, variables["params"], config.train.num_steps)
  state = step_lib.create(variables, tx, jax.random.PRNGKey(1))
  fn, data_sharding, replicated = loop.sharded_step(model, tx, config, devices)
  state = jax.device_put(state, replicated)
  losses = []
  for b in batches:
    state, metrics = fn(state, loop.global_batch(b, data_sharding))
    losses.append({k: float(v) for k, v in jax.device_get(metrics).items()})
  return losses, jax.device_get(state.params), jax.device_get(state.batch_stats)


def main():
  config = tiny.get_config()
  config.data_dir = sys.argv[1]
  config.data.dir = sys.argv[1]
  config.pairs_per_batch = 4
  it = pipeline.as_numpy(pipeline.pair_dataset(config.data, "train", 4, host=(0, 1)))
  batches = [next(it) for _ in range(2)]
  one = run(config, jax.devices()[:1], batches)
  many = run(config, jax.devices(), batches)
  diff = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(one[1:]),
                                                        jax.tree.leaves(many[1:])))
  scale = max(float(np.abs(a).max()) for a in jax.tree.leaves(one[1]))
  print(json.dumps({"devices": jax.device_count(), "one": one[0], "many": many[0],
                    "max_param_diff": diff, "max_param": scale}))


if __name__ == "__main__":
  main()
