"""Scoring at DeepFashion2's validation size: wall time and peak memory of `eval.py`'s scoring.

    python benchmarks/eval_scale.py --images N --detections K [--json OUT.json] [--workdir D]

Makes a validation-shaped split of its own in `--workdir` (a temporary folder by default) and
scores it with `python eval.py --gt_dir D --split validation --results R --retrieval_results Q`
in a child process. The split (`benchmarks/scale_fixture.py`, `make_split`): ground
truth in the converter's formats, a third user and two thirds shop images with 1.7 garments
each, as in the released validation split; K detection records per image in the official
format (box, RLE mask, 882 keypoint values) and a retrieval record per detection of a user
image, written as they are made.
Prints the sizes, the scoring's wall time and its peak RSS (the child's `ru_maxrss`); `--json`
writes {"images", "detections_per_image", "garments", "records", "retrieval_records",
"results_mb", "wall_s", "peak_rss_mb", "metrics"}.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from scale_fixture import make_split

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def score(out_dir: str) -> tuple[float, float, dict]:
  """(wall s, peak RSS MB, metrics) of eval.py's scoring mode in a child process."""
  cmd = [sys.executable, os.path.join(ROOT, "eval.py"), "--gt_dir", out_dir, "--split",
         "validation", "--results", os.path.join(out_dir, "results.json"),
         "--retrieval_results", os.path.join(out_dir, "retrieval_results.json"),
         "--output_dir", out_dir]
  start = time.perf_counter()
  res = subprocess.run(cmd, capture_output=True, text=True)
  wall = time.perf_counter() - start
  if res.returncode != 0:
    raise RuntimeError(f"eval.py failed:\n{res.stderr[-4000:]}")
  peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
  with open(os.path.join(out_dir, "metrics.json")) as f:
    return wall, peak, json.load(f)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--images", type=int, default=2000)
  parser.add_argument("--detections", type=int, default=20, help="detection records per image")
  parser.add_argument("--workdir", default="", help="where the split goes (default: a "
                      "temporary folder, removed at the end)")
  parser.add_argument("--json", default="")
  args = parser.parse_args(argv)
  if args.images < 3 or args.detections < 1:
    parser.error("--images must be >= 3 and --detections >= 1")
  with tempfile.TemporaryDirectory() as tmp:
    out_dir = args.workdir or tmp
    start = time.perf_counter()
    sizes = make_split(out_dir, args.images, args.detections)
    made_s = time.perf_counter() - start
    wall, peak, metrics = score(out_dir)
  result = {"images": args.images, "detections_per_image": args.detections, **sizes,
            "generate_s": round(made_s, 1), "wall_s": round(wall, 1),
            "peak_rss_mb": round(peak, 1), "metrics": metrics}
  print(f"{args.images} images, {sizes['garments']} garments, {sizes['records']} detection "
        f"records ({sizes['results_mb']} MB), {sizes['retrieval_records']} retrieval records "
        f"(made in {made_s:.0f} s)\n"
        f"eval.py scoring: {wall:.1f} s, peak RSS {peak:.0f} MB; box AP "
        f"{metrics.get('bbox', {}).get('AP')}, retrieval top-20 "
        f"{metrics.get('retrieval', {}).get('top20')}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=1)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
