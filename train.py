"""Trains Match R-CNN: the main job.

    python train.py --config configs/demo.py --workdir runs/demo [--config.a.b=v ...]

Prepares the data (the built-in synthetic DeepFashion2 when the config names no `data_dir`),
then trains with data parallelism over every local device, resuming from the latest checkpoint
in the workdir. Multi-host (TPU pods, SLURM / GPU clusters): add `--jax_distributed` on every
host (addresses from the environment), or give `--coordinator_address`, `--num_processes` and
`--process_id` explicitly.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from match_rcnn_jax import distributed  # noqa: E402  (--jax_distributed and the addresses)

_CONFIG = config_flags.DEFINE_config_file("config", None, "Python config file.",
                                          lock_config=False)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for data, checkpoints and logs.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  from match_rcnn_jax import backend
  backend.tune_host_allocator()  # glibc malloc settings for XLA:CPU, before a backend starts
  distributed.initialize()
  import jax

  from match_rcnn_jax.training import loop
  # The memory the compiler freed goes back before the step's temporaries are allocated (on
  # the CPU backend the host heap would keep it beneath them).
  final = loop.train(_CONFIG.value, _WORKDIR.value, after_compile=backend.release_free_heap)
  if jax.process_index() == 0:
    print("final losses: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(final.items())))


if __name__ == "__main__":
  app.run(main)
