"""Two train steps of the tiny model as process `i` of 2 joined by jax.distributed on loopback
(args: data_dir port i), each process reading its own input files. Prints JSON with the losses;
their reference is the 1-device run of sharded_steps.py on the same global batches."""

import json
import sys

import jax


def main():
  data_dir, port, index = sys.argv[1], sys.argv[2], int(sys.argv[3])
  # A persistent-cache hit in one process and a fresh compile in the other can leave the two
  # processes waiting on each other: compile in every process.
  jax.config.update("jax_enable_compilation_cache", False)
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  from sharded_steps import HOSTS, host_batches, tiny_config  # this script's folder
  jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=HOSTS, process_id=index)
  from match_rcnn_jax.models import match_rcnn
  from match_rcnn_jax.training import loop, optim
  from match_rcnn_jax.training import step as step_lib

  config = tiny_config(data_dir)
  batches = host_batches(config, jax.process_index())
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
