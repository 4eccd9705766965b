"""Entry point of the main job.

    python train.py --config configs/demo.py --workdir runs/demo [--config.a.b=v ...]

Finds (or, with no `data_dir` in the config, generates and converts) the dataset, then runs the
training input pipelines (single images and shop/user pairs) for `config.num_steps` batches and
prints what they produce and how fast.
"""

import json
import os
import time

from absl import app, flags, logging
from ml_collections import config_flags

from match_rcnn_jax.data import pipeline, prepare

_CONFIG = config_flags.DEFINE_config_file("config", None, "Python config file.",
                                          lock_config=False)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for data, checkpoints and logs.")
flags.mark_flags_as_required(["config", "workdir"])


def _describe(batch: dict) -> str:
  return ", ".join(f"{k} {tuple(v.shape)} {v.dtype}" for k, v in sorted(batch.items()))


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  workdir = _WORKDIR.value
  os.makedirs(workdir, exist_ok=True)
  data_dir = prepare.resolve_data_dir(config, workdir)
  print(f"dataset: {data_dir}")
  stats = {}
  for name, ds in (
      ("images", pipeline.image_dataset(config.data, config.data.train_split,
                                        config.batch_size, train=True)),
      ("pairs", pipeline.pair_dataset(config.data, config.data.train_split,
                                      config.pairs_per_batch)),
  ):
    it = pipeline.as_numpy(ds)
    batch = next(it)  # the first batch pays for start-up
    print(f"{name} batch: {_describe(batch)}")
    start = time.perf_counter()
    images = 0
    for _ in range(config.num_steps):
      batch = next(it)
      images += batch["image_id"].size
    rate = images / (time.perf_counter() - start)
    stats[name] = {"images_per_s": round(rate, 1), "batches": config.num_steps}
    print(f"{name}: {config.num_steps} batches, {rate:.1f} images/s")
  with open(os.path.join(workdir, "input_pipeline.json"), "w") as f:
    json.dump(stats, f, indent=1)


if __name__ == "__main__":
  app.run(main)
