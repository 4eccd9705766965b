"""Throughput of the tf.data input pipelines (images per second on this host).

    python benchmarks/input_pipeline.py [--config configs/demo.py] [--workdir runs/bench_input]
        [--image_size PX] [--windows 5] [--batches 10] [--json OUT.json]

Prepares the config's dataset (synthetic when none is given, its images `--image_size` px on
the longer side when given: 800 makes DeepFashion2-sized JPEGs of about 800 x 600), then for
the training image pipeline, the training pair pipeline and the evaluation pipeline: one
warm-up window, then `--windows` timed windows of `--batches` batches; prints the median
images/s. Per CPU core: start it under `taskset -c 0`.
"""

import argparse
import json
import os
import platform
import statistics
import time

from match_rcnn_jax.data import pipeline, prepare


def _load_config(path):
  import importlib.util
  spec = importlib.util.spec_from_file_location("bench_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def measure(make_iter, batches, windows):
  it = make_iter()
  rates = []
  for w in range(windows + 1):
    start, images = time.perf_counter(), 0
    for _ in range(batches):
      images += next(it)["image_id"].size
    if w:  # window 0 is the warm-up
      rates.append(images / (time.perf_counter() - start))
  return statistics.median(rates), rates


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="configs/demo.py")
  parser.add_argument("--workdir", default="runs/bench_input")
  parser.add_argument("--image_size", type=int, default=None,
                      help="synthetic images' size (default: the config's)")
  parser.add_argument("--windows", type=int, default=5)
  parser.add_argument("--batches", type=int, default=10)
  parser.add_argument("--json", default="")
  args = parser.parse_args()
  config = _load_config(args.config)
  if args.image_size:
    config.synthetic.image_size = args.image_size
  prepare.resolve_data_dir(config, args.workdir)
  cfg, one = config.data, (0, 1)
  cases = {
      "train_images": lambda: pipeline.as_numpy(pipeline.image_dataset(
          cfg, cfg.train_split, config.batch_size, train=True, host=one)),
      "train_pairs": lambda: pipeline.as_numpy(pipeline.pair_dataset(
          cfg, cfg.train_split, config.pairs_per_batch, host=one)),
      "eval_images": lambda: pipeline.as_numpy(pipeline.image_dataset(
          cfg, cfg.eval_split, config.batch_size, train=False, with_masks=False, repeat=True,
          host=one)),
  }
  cores = len(os.sched_getaffinity(0))
  result = {"device": f"{platform.processor() or platform.machine()}, {cores} cores used",
            "config": {"file": args.config, "canvas": list(cfg.canvas),
                       "batch_size": config.batch_size,
                       "pairs_per_batch": config.pairs_per_batch},
            "images_per_s": {}, "images_per_s_per_core": {}}
  print(f"{cores} CPU core(s)\n{'pipeline':<14} {'median img/s':>12}   windows")
  for name, make in cases.items():
    median, rates = measure(make, args.batches, args.windows)
    result["images_per_s"][name] = round(median, 1)
    result["images_per_s_per_core"][name] = round(median / cores, 1)
    print(f"{name:<14} {median:12.1f}   " + " ".join(f"{r:.0f}" for r in rates))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  main()
