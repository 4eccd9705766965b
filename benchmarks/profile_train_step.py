"""Where our train step's time goes, stage by stage, at a benchmark config's sizes.

    python benchmarks/profile_train_step.py [--config configs/bench_cpu.py] [--warm 6]
        [--weights INIT.npz] [--ablate] [--ops N] [--json OUT.json]

Builds the model, state and batch of `compare_torchvision.py` for the config, trains `--warm`
steps (so that the proposals and the foreground count are those of the benchmark's timed
steps; `--weights`: from the torchvision side's initial weights, as the benchmark's runs
start, saved by `compare_torchvision.py --config C --save_init INIT.npz`), then times, each
jitted on its own with the median of the config's `runs`:
  features           backbone + FPN, forward;
  features_grad      backbone + FPN, forward + backward (the stages not frozen);
  proposals          backbone + FPN + RPN head + proposal decoding and per-level NMS;
  train_forward      the whole training forward (targets, sampling, every head);
  train_step         forward + every loss + backward + SGD update (the benchmark's step).
With --ablate, also the gradient of partial losses (XLA drops the heads whose outputs no loss
uses): grad_rpn_box (RPN + box losses only), then + mask, + landmark, + match alone, and
grad_all; each head's forward + backward cost is its row minus grad_rpn_box (gradients, as in
the train step, of the parameters that are not frozen).
With --ops N, also traces one train step with `jax.profiler` and prints the N largest sums of
op time by source: every XLA op (fusion, matmul, convolution, gather, ...) is attributed to the
model code that emitted it (its `op_name`, e.g. `MatchRCNN.features/backbone` or
`MatchRCNN._foreground_chunks/while`), forward or backward. On the CPU each op of the step is
its own event; ops that overlap in time on different threads count in full, so the sum can
exceed the step's wall time.
Differences between consecutive rows give each part's cost (e.g. train_forward - proposals:
target assignment, RoIAlign and the heads' forward). Prints a table; --json writes it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import compare_torchvision as bench  # this script's folder: run as `python benchmarks/...`

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _time(fn, runs: int) -> tuple[float, float]:
  """(compile + first call seconds, median seconds of `runs` calls)."""
  import jax
  start = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - start
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return first, statistics.median(times)


def _source(op_name: str, depth: int) -> str:
  """'jit(train_step)/transpose(jvp(MatchRCNN))/MatchRCNN.train_forward/box_head/fc6/dot' ->
  'backward  MatchRCNN/MatchRCNN.train_forward/box_head' (depth 3): the transformation
  wrappers unwrapped, the outer jit dropped."""
  import re
  parts = op_name.split("/")[1:] if op_name.startswith("jit(") else op_name.split("/")
  names = []
  for part in parts:
    while (m := re.fullmatch(r"\w+\((.*)\)", part)) is not None:
      part = m.group(1)
    if part:
      names.append(part)
  if not names:  # XLA keeps no op_name on some ops (here, mostly convolution kernel gradients)
    return "(no op_name)"
  where = "/".join(names[:depth])
  return ("backward  " if "transpose(" in op_name else "forward   ") + where


def op_time_by_source(fn, hlo_text: str, top: int, depth: int = 4) -> dict:
  """Traces one call of `fn` (a compiled step) and sums its ops' durations by source."""
  import collections
  import glob
  import re
  import tempfile

  import jax

  op_names = {m.group(1): m.group(2) for m in re.finditer(
      r'^\s*(?:ROOT )?%?([\w.\-]+) = [^\n]*?op_name="([^"]*)"', hlo_text, re.M)}
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir)
    jax.block_until_ready(fn())
    jax.profiler.stop_trace()
    paths = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
    data = jax.profiler.ProfileData.from_file(paths[0])
  planes = list(data.planes)
  device_planes = [p for p in planes if p.name.startswith("/device:")]
  by_source = collections.Counter()
  for plane in device_planes or [p for p in planes if p.name == "/host:CPU"]:
    for line in plane.lines:
      for event in line.events:
        op = dict(event.stats).get("hlo_op")
        if not op or op.startswith(("while", "cond", "call")):  # containers: bodies count
          continue
        by_source[_source(op_names.get(op, ""), depth)] += event.duration_ns / 1e9
  total = sum(by_source.values())
  return {"total_s": round(total, 4), "sources": [
      {"source": k, "s": round(v, 4), "share": round(v / total, 4)}
      for k, v in by_source.most_common(top)]}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default=os.path.join(ROOT, "configs", "bench_cpu.py"))
  parser.add_argument("--warm", type=int, default=6, help="train steps before the timings")
  parser.add_argument("--ablate", action="store_true",
                      help="also time the gradient of partial losses, head by head")
  parser.add_argument("--ops", type=int, default=0,
                      help="trace one train step and print the N largest op-time sources")
  parser.add_argument("--weights", default="",
                      help="a torchvision state_dict (.npz) to start from")
  parser.add_argument("--json", default="")
  args = parser.parse_args(argv)
  if args.ops:  # per-op events in XLA:CPU traces (read when the backend starts)
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_cpu_enable_xprof_traceme=true").strip()
  import jax

  from match_rcnn_jax.models import match_rcnn
  from match_rcnn_jax.training import step as step_lib

  cfg = bench.load_config(args.config)
  model, state, train_step, batch, _, _ = bench.our_train_setup(cfg, args.weights)
  fg = []
  for _ in range(args.warm):
    state, metrics = train_step(state, batch)
    fg.append(float(metrics["fg_rois"]))
  dtype = match_rcnn.DTYPES[cfg.model.dtype]
  images, targets, sizes = step_lib.flatten_pairs(batch)
  images = images.astype(dtype)
  h, w = images.shape[1:3]
  params, stats = state.params, state.batch_stats
  variables = {"params": params, "batch_stats": stats}

  def features(v, x):
    return model.apply(v, x, method=lambda m, x: m.features(x))

  trainable, frozen = step_lib.split_frozen(params, bench.FROZEN)
  merged = lambda t: step_lib.merge_frozen(t, frozen)  # noqa: E731

  def features_grad(t, x):
    # The pyramid itself as the cotangent: a constant one would be folded away by XLA.
    pyramid, vjp = jax.vjp(lambda t: features({"params": merged(t), "batch_stats": stats}, x), t)
    return vjp(pyramid)

  def proposals(v, x, z):
    return model.apply(v, x, method=lambda m, x: m.proposals(m.features(x), (h, w), z,
                                                             train=True)[2])

  def train_forward(v, x, t, z, r):
    out, _ = model.apply(v, x, t, image_sizes=z, train=True, rngs={"sampling": r},
                         mutable=["batch_stats"])
    return out

  rng = jax.random.PRNGKey(0)
  jitted = {
      "features": (jax.jit(features), (variables, images)),
      "features_grad": (jax.jit(features_grad), (trainable, images)),
      "proposals": (jax.jit(proposals), (variables, images, sizes)),
      "train_forward": (jax.jit(train_forward), (variables, images, targets, sizes, rng)),
  }
  if args.ablate:
    import ml_collections

    from match_rcnn_jax.training import losses as losses_lib
    base = ("loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box")
    weights = ml_collections.ConfigDict({k: 1.0 for k in (
        "rpn_cls", "rpn_box", "cls", "box", "landmark", "mask", "match")})
    for name, extra in (("grad_rpn_box", ()), ("grad_rpn_box_mask", ("loss_mask",)),
                        ("grad_rpn_box_landmark", ("loss_landmark",)),
                        ("grad_rpn_box_match", ("loss_match",)), ("grad_all", None)):
      def partial_loss(trainable, x, t, z, r, extra=extra):
        out = train_forward({"params": merged(trainable), "batch_stats": stats}, x, t, z, r)
        losses = losses_lib.compute(out, weights)
        if extra is None:
          return losses["loss"]
        return sum(losses[k] for k in base + extra)
      jitted[name] = (jax.jit(jax.grad(partial_loss)),
                      (trainable, images, targets, sizes, rng))
  rows = {}
  for name, (fn, fn_args) in jitted.items():
    first, median = _time(lambda fn=fn, fn_args=fn_args: fn(*fn_args), cfg.bench.runs)
    rows[name] = {"median_s": round(median, 4), "compile_and_first_s": round(first, 2)}
    print(f"  {name}: {median:.4f} s", flush=True)
  holder = {"state": state}

  def step():  # the whole output, waited for as compare_torchvision.py waits for its steps
    holder["state"], metrics = train_step(holder["state"], batch)
    return holder["state"], metrics
  first, median = _time(step, cfg.bench.runs)
  rows["train_step"] = {"median_s": round(median, 4), "compile_and_first_s": round(first, 2)}
  ops = None
  if args.ops:
    hlo = train_step.lower(holder["state"], batch).compile().as_text()
    ops = op_time_by_source(step, hlo, args.ops)
  device = jax.devices()[0]
  result = {"device": device.device_kind, "config": cfg.to_dict(), "warm_steps": args.warm,
            "fg_rois_per_image": round(statistics.mean(fg[-3:]), 1), "stages": rows}
  if ops is not None:
    result["ops"] = ops
  width = max(len(k) for k in rows) + 2
  print(f"our train step by stage, {cfg.bench.train_images} x {cfg.bench.image_size}^2, "
        f"R{cfg.model.backbone.depth}, {cfg.model.dtype}, on {device.device_kind} "
        f"({result['fg_rois_per_image']} foreground "
        f"RoIs / image)\n{'stage':<{width}}{'median s':>10}{'compile+1st s':>15}")
  for name, row in rows.items():
    print(f"{name:<{width}}{row['median_s']:>10.4f}{row['compile_and_first_s']:>15.1f}")
  if ops is not None:
    print(f"\nop time by source, one traced step ({ops['total_s']:.2f} s of op time)")
    for row in ops["sources"]:
      print(f"{row['s']:>8.3f} s  {row['share']:>5.1%}  {row['source']}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=1)
  return 0


if __name__ == "__main__":
  from match_rcnn_jax import backend
  backend.tune_host_allocator()  # glibc malloc settings, on the CPU backend only
  raise SystemExit(main())
