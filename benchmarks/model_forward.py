"""Forward-pass time of the full Match R-CNN (inference: detections, masks, landmarks, match
embeddings) at a given size, with its compile time.

    python benchmarks/model_forward.py [--size 512] [--batch 1] [--depth 50] [--runs 5]
        [--head_chunk N] [--json OUT.json]

Prints the compile time of the jitted inference and the median of `--runs` timed calls.
"""

import argparse
import json
import os
import platform
import statistics
import time

import jax

from configs.model import model_config
from match_rcnn_jax.models import match_rcnn


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", type=int, default=512)
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--depth", default="50")
  parser.add_argument("--runs", type=int, default=5)
  parser.add_argument("--detections", type=int, default=100, help="detections per image")
  parser.add_argument("--head_chunk", type=int, default=None,
                      help="config.model.implementation.infer_head_chunk (0: heads on every "
                      "slot; default: the backend's choice)")
  parser.add_argument("--json", default="")
  args = parser.parse_args()
  cfg = model_config(depth=args.depth)
  cfg.detections.per_image = args.detections
  if args.head_chunk is not None:
    cfg.implementation.infer_head_chunk = args.head_chunk
  model = match_rcnn.build(cfg)
  chunk = model.config.implementation.infer_head_chunk  # resolved
  variables = match_rcnn.init(model, jax.random.PRNGKey(0), (64, 64))
  infer = jax.jit(lambda v, x: model.apply(v, x))
  images = jax.random.normal(jax.random.PRNGKey(1), (args.batch, args.size, args.size, 3))
  start = time.perf_counter()
  compiled = infer.lower(variables, images).compile()
  compile_s = time.perf_counter() - start
  jax.block_until_ready(compiled(variables, images))  # warm-up
  times = []
  for _ in range(args.runs):
    start = time.perf_counter()
    jax.block_until_ready(compiled(variables, images))
    times.append(time.perf_counter() - start)
  device = jax.devices()[0]
  result = {"device": f"{device.device_kind} ({platform.machine()}, {os.cpu_count()} cores)",
            "size": args.size, "batch": args.batch, "depth": args.depth,
            "detections": args.detections, "head_chunk": chunk,
            "compile_s": round(compile_s, 2),
            "forward_s_median": round(statistics.median(times), 3),
            "forward_s_all": [round(t, 3) for t in times]}
  print(f"R{args.depth}-FPN Match R-CNN inference, {args.batch} x {args.size}x{args.size}, "
        f"{result['device']}: compile {compile_s:.1f} s, forward median "
        f"{result['forward_s_median']:.3f} s over {args.runs} runs ({args.detections} detections)")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  from match_rcnn_jax import backend
  backend.tune_host_allocator()  # glibc malloc settings, on the CPU backend only
  main()
