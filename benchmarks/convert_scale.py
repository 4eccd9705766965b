"""The converter's throughput at the training split's scale, by worker count.

    python benchmarks/convert_scale.py --images 20000 [--workers 1 2] [--image_size 640]
        [--json OUT.json] [--workdir D]

Generates a synthetic split in the released layout (`match_rcnn_jax.data.synthetic`) once (a
`--workdir` that holds one of `--images` images from an earlier run is reused), then
converts it with `python -m match_rcnn_jax.data.convert --workers W` in a child process for each
W, into its own output folder, and prints per W the wall time, images per second and the peak
RSS of the largest process (the child's or a worker's `ru_maxrss`), and whether every output
file (TFRecord shards, TFDS metadata, ground-truth JSON, report) is byte for byte the same as
the first W's. `--json` writes {"images", "image_size", "generate_s", "runs": [{"workers",
"wall_s", "images_per_s", "peak_rss_mb", "identical"}], "released_train_estimate_min"}: the
estimate is the released training split's 191,961 images at the best measured rate.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from match_rcnn_jax.data import synthetic

RELEASED_TRAIN_IMAGES = 191961


def digests(out_dir: str) -> dict[str, str]:
  """sha256 of every file under `out_dir`, by relative path."""
  out = {}
  for root, _, files in os.walk(out_dir):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, out_dir)] = hashlib.sha256(f.read()).hexdigest()
  return out


def convert(raw: str, out: str, workers: int) -> tuple[float, float]:
  """(wall s, peak RSS MB of the largest process) of one conversion in a child process."""
  cmd = [sys.executable, "-m", "match_rcnn_jax.data.convert", "--data_dir", raw, "--output_dir",
         out, "--split", "train", "--workers", str(workers), "--quiet"]
  with tempfile.TemporaryFile("w+") as log:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)  # this child's (and its workers') rusage alone
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
      log.seek(0)
      raise RuntimeError(f"conversion failed:\n{log.read()[-4000:]}")
  return wall, usage.ru_maxrss / 1024.0


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--images", type=int, default=20000)
  parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
  parser.add_argument("--image_size", type=int, default=640)
  parser.add_argument("--workdir", default="", help="where the split and the conversions go "
                      "(default: a temporary folder, removed at the end)")
  parser.add_argument("--json", default="")
  args = parser.parse_args(argv)
  with tempfile.TemporaryDirectory() as tmp:
    work = args.workdir or tmp
    raw = os.path.join(work, "raw", "train")
    start = time.perf_counter()
    annos = os.path.join(raw, "annos")
    if os.path.isdir(annos) and len(os.listdir(annos)) == args.images:
      print(f"{raw}: the {args.images} synthetic images of an earlier run")
    else:
      shutil.rmtree(raw, ignore_errors=True)
      synthetic.generate(raw, args.images, seed=0, image_size=args.image_size)
    generate_s = time.perf_counter() - start
    print(f"{args.images} synthetic images ({args.image_size} px) ready in {generate_s:.0f} s")
    runs, reference = [], None
    for workers in args.workers:
      out = os.path.join(work, f"converted_{workers}")
      wall, peak = convert(raw, out, workers)
      files = digests(out)
      reference = reference or files
      runs.append({"workers": workers, "wall_s": round(wall, 1),
                   "images_per_s": round(args.images / wall, 1), "peak_rss_mb": round(peak),
                   "identical": files == reference})
      r = runs[-1]
      print(f"workers {workers}: {r['wall_s']} s, {r['images_per_s']} images/s, peak RSS "
            f"{r['peak_rss_mb']} MB, {len(files)} files identical to workers "
            f"{args.workers[0]}'s: {r['identical']}")
  best = max(r["images_per_s"] for r in runs)
  estimate = RELEASED_TRAIN_IMAGES / best / 60
  print(f"the released training split ({RELEASED_TRAIN_IMAGES} images) at {best} images/s: "
        f"about {estimate:.0f} min")
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"images": args.images, "image_size": args.image_size,
                 "generate_s": round(generate_s, 1), "runs": runs,
                 "released_train_estimate_min": round(estimate, 1)}, f, indent=1)
  return 0 if all(r["identical"] for r in runs) else 1


if __name__ == "__main__":
  raise SystemExit(main())
