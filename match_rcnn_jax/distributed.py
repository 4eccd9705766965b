"""Multi-host start-up, shared by train.py and eval.py: their command-line flags and
`jax.distributed.initialize` from them.

    --jax_distributed                          # addresses from the cluster's environment
    --coordinator_address H:P --num_processes N --process_id I

Processes on CPU hosts reach each other through gloo (the CPU backend's collectives); on GPU
and TPU hosts that setting changes nothing.
"""

from absl import flags

DISTRIBUTED = flags.DEFINE_bool("jax_distributed", False,
                                "Call jax.distributed.initialize() (auto-detected cluster).")
COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
PROCESS_ID = flags.DEFINE_integer("process_id", None, "Index of this process.")


def initialize() -> None:
  """Joins the processes named by the flags (nothing without --jax_distributed or
  --coordinator_address); call before any other JAX work."""
  if not (COORDINATOR.value or DISTRIBUTED.value):
    return
  import jax
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if COORDINATOR.value:
    jax.distributed.initialize(COORDINATOR.value, NUM_PROCESSES.value, PROCESS_ID.value)
  else:
    jax.distributed.initialize()
