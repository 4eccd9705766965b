"""Two train steps of the tiny model, either as process `i` of `n` joined by jax.distributed on
loopback (args: data_dir port n i) or as one process emulating the same global batches
(args: data_dir single n). Prints JSON with the losses."""

import json
import sys

import jax
import numpy as np


def main():
  data_dir, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
  # A persistent-cache hit in one process and a fresh compile in the other can leave the two
  # processes waiting on each other: compile in every process.
  jax.config.update("jax_enable_compilation_cache", False)
  if mode != "single":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{mode}", num_processes=n, process_id=int(sys.argv[4]))
  from configs import tiny
  from match_rcnn_jax.data import pipeline
  from match_rcnn_jax.models import match_rcnn
  from match_rcnn_jax.training import loop, optim
  from match_rcnn_jax.training import step as step_lib

  config = tiny.get_config()
  config.data.dir = data_dir
  config.pairs_per_batch = 2 * n
  local = config.pairs_per_batch // n

  def host_batches(h):
    it = pipeline.as_numpy(pipeline.pair_dataset(config.data, "train", local, host=(h, n)))
    return [next(it) for _ in range(2)]

  if mode == "single":  # the global batch = every host's local batch, in process order
    per_host = [host_batches(h) for h in range(n)]
    batches = [{k: np.concatenate([p[s][k] for p in per_host]) for k in per_host[0][s]}
               for s in range(2)]
  else:
    batches = host_batches(jax.process_index())
  model = match_rcnn.build(config.model)
  variables = match_rcnn.init(model, jax.random.PRNGKey(0), tuple(config.data.canvas))
  tx = optim.make(config.optimizer, variables["params"], config.train.num_steps)
  state = step_lib.create(variables, tx, jax.random.PRNGKey(1))
  fn, data_sharding, replicated = loop.sharded_step(model, tx, config)
  state = jax.device_put(state, replicated)
  losses = []
  for b in batches:
    state, metrics = fn(state, loop.global_batch(b, data_sharding))
    losses.append({k: float(v) for k, v in jax.device_get(metrics).items()})
  print(json.dumps({"process": jax.process_index(), "processes": jax.process_count(),
                    "devices": jax.device_count(), "losses": losses}), flush=True)


if __name__ == "__main__":
  main()
