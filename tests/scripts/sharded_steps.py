"""Runs 2 train steps of the tiny model on the same global batches with 1 device and with every
device (start with XLA_FLAGS=--xla_force_host_platform_device_count=N); prints JSON with the
losses of both and the largest parameter difference. The global batches are those that two
input hosts make together, so the 1-device losses are also the reference of the two-process run
(multiprocess_steps.py)."""

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


HOSTS = 2  # the global batches are those of 2 hosts (multiprocess_steps.py), 2 pairs each
STEPS = 2


def host_batches(config, host: int) -> list[dict]:
  """The first STEPS local batches of input host `host` of HOSTS."""
  local = config.pairs_per_batch // HOSTS
  it = pipeline.as_numpy(pipeline.pair_dataset(config.data, "train", local,
                                               host=(host, HOSTS)))
  return [next(it) for _ in range(STEPS)]


def tiny_config(data_dir):
  config = tiny.get_config()
  config.data_dir = config.data.dir = data_dir
  config.pairs_per_batch = 2 * HOSTS
  return config


def main():
  config = tiny_config(sys.argv[1])
  per_host = [host_batches(config, h) for h in range(HOSTS)]  # in process order
  batches = [{k: np.concatenate([p[s][k] for p in per_host]) for k in per_host[0][s]}
             for s in range(STEPS)]
  one = run(config, jax.devices()[:1], batches)
  many = run(config, jax.devices(), batches)
  diff = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(one[1:]),
                                                        jax.tree.leaves(many[1:])))
  scale = max(float(np.abs(a).max()) for a in jax.tree.leaves(one[1]))
  print(json.dumps({"devices": jax.device_count(), "one": one[0], "many": many[0],
                    "max_param_diff": diff, "max_param": scale}))


if __name__ == "__main__":
  main()
