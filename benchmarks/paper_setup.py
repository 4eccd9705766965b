"""The paper's setup at its real size: `configs/deepfashion2_r50_fpn.py` as it is (R50-FPN,
1024 x 1024 canvas, 2000 / 1000 proposals, 16 garments an image, 112 px mask crops, the
landmark+box matching network), its batch reduced to what one device holds here.

    python benchmarks/paper_setup.py [--config configs/deepfashion2_r50_fpn.py]
        [--workdir runs/paper_setup] [--image_size 800] [--steps 3] [--pairs 1] [--skip_bf16]
        [--json OUT.json]

Makes (or reuses) DeepFashion2-shaped synthetic data in `W/data` (the generator at
`--image_size`: images of about 800 x 600 to 800 x 800, JPEG, converted with the converter),
then with the config's batch reduced to its per-device share (`--pairs` 1 (shop, user) pair =
2 images: the config's 8 pairs over 8 devices):
1. compiles the train step as the config resolves on this backend, times the compile and
   `--steps` steps (median) fed by the training pipeline, and reads the process's peak memory;
2. compiles (without running) the train step as an accelerator runs it (the implementation
   fields a GPU resolves: XLA convolutions, dense training heads, no piece-wise RoIAlign) in
   float32 and bfloat16, and prints XLA's compiled memory analysis of each: arguments
   (parameters, optimizer state, batch), outputs, the outputs aliased to donated arguments,
   temporaries, and their total, which says which accelerator sizes hold 2 images per device;
3. compiles and times the jitted inference on 2 evaluation images.
The weights are random (no pretrained file is read): the shapes and the work are the config's.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import time

import jax
import numpy as np
from input_pipeline import _load_config  # benchmarks/: a config file -> its ConfigDict

from match_rcnn_jax import backend
from match_rcnn_jax.data import pipeline, prepare
from match_rcnn_jax.inference import jitted
from match_rcnn_jax.models import match_rcnn
from match_rcnn_jax.training import loop, optim
from match_rcnn_jax.training import step as step_lib

GIB = 2 ** 30


def _peak_rss_gib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB  # KiB on Linux


def _train_step(config, abstract: bool = False):
  """(jitted train step on one device, its state (shapes only with `abstract`), batch
  sharding, model) of `config`."""
  model = match_rcnn.build(config.model)
  canvas = tuple(config.data.canvas)
  if abstract:
    variables = match_rcnn.variable_shapes(model, canvas)
  else:
    variables = match_rcnn.init(model, jax.random.PRNGKey(0), canvas)
  tx = optim.make(config.optimizer, variables["params"], config.train.num_steps)
  create = lambda: step_lib.create(variables, tx, jax.random.PRNGKey(1),  # noqa: E731
                                   step_lib.memory_size(config))
  fn, data_sharding, replicated = loop.sharded_step(model, tx, config, jax.devices()[:1])
  state = jax.eval_shape(create) if abstract else jax.device_put(create(), replicated)
  return fn, state, data_sharding, model


def _memory(compiled) -> dict:
  """XLA's compiled memory analysis in GiB, and the total a device holds while it runs."""
  m = compiled.memory_analysis()
  out = {k: round(getattr(m, f"{k}_size_in_bytes") / GIB, 3)
         for k in ("argument", "output", "alias", "temp", "generated_code")}
  out["total"] = round(out["argument"] + out["output"] - out["alias"] + out["temp"], 3)
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="configs/deepfashion2_r50_fpn.py")
  parser.add_argument("--workdir", default="runs/paper_setup")
  parser.add_argument("--image_size", type=int, default=800,
                      help="the synthetic images' longer side (made when W/data is absent)")
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--pairs", type=int, default=1,
                      help="(shop, user) pairs a step: the config's per-device share (its 8 "
                      "pairs over 8 devices: 1)")
  parser.add_argument("--skip_bf16", action="store_true")
  parser.add_argument("--json", default="")
  args = parser.parse_args()
  backend.tune_host_allocator()
  config = _load_config(args.config)
  config.synthetic.image_size = args.image_size
  prepare.resolve_data_dir(config, args.workdir)
  config.pairs_per_batch, config.batch_size = args.pairs, 2 * args.pairs
  result = {"device": f"{jax.devices()[0].device_kind} ({platform.machine()}, "
                      f"{os.cpu_count()} cores)", "config": args.config,
            "canvas": list(config.data.canvas), "images_per_step": 2 * config.pairs_per_batch,
            "date": time.strftime("%Y-%m-%d")}

  # 1. the train step as this backend runs it
  fn, state, data_sharding, model = _train_step(config)
  batches = pipeline.as_numpy(pipeline.pair_dataset(config.data, config.data.train_split,
                                                    config.pairs_per_batch, host=(0, 1)))
  batch = loop.global_batch(next(batches), data_sharding)
  start = time.perf_counter()
  compiled = fn.lower(state, batch).compile()
  result["train_compile_s"] = round(time.perf_counter() - start, 1)
  result["train_memory_this_backend_gib"] = _memory(compiled)
  backend.release_free_heap()
  times = []
  for i in range(args.steps + 1):
    batch = loop.global_batch(next(batches), data_sharding)
    start = time.perf_counter()
    state, metrics = compiled(state, batch)
    loss = float(metrics["loss"])
    if i:  # the first call is the warm-up
      times.append(time.perf_counter() - start)
    print(f"  step {i}: loss {loss:.3f} ({time.perf_counter() - start:.1f} s)", flush=True)
  result["train_step_s_median"] = round(statistics.median(times), 2)
  result["train_step_s_all"] = [round(t, 2) for t in times]
  result["loss_finite"] = bool(np.isfinite(loss))
  result["peak_host_memory_gib_after_train"] = round(_peak_rss_gib(), 2)
  print(json.dumps({k: v for k, v in result.items()}, indent=1), flush=True)

  # 3. inference on 2 evaluation images
  ds = pipeline.image_dataset(config.data, config.data.eval_split, 2, train=False,
                              with_masks=False, host=(0, 1))
  ev = next(pipeline.as_numpy(ds))
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  start = time.perf_counter()
  infer = jitted.infer.lower(model, variables, ev["image"], ev["image_info"][:, 4:6]).compile()
  result["infer_compile_s"] = round(time.perf_counter() - start, 1)
  times = []
  for i in range(3):
    start = time.perf_counter()
    out = jax.block_until_ready(infer(variables, ev["image"], ev["image_info"][:, 4:6]))
    if i:
      times.append(time.perf_counter() - start)
  result["infer_s_median_2_images"] = round(statistics.median(times), 2)
  result["detections_per_image"] = int(np.asarray(out["valid"]).sum(1).max())
  del state, compiled, infer, out
  result["peak_host_memory_gib"] = round(_peak_rss_gib(), 2)

  # 2. the accelerator's program, compiled for its memory analysis only
  analysis = {}
  for dtype in ("float32",) + (() if args.skip_bf16 else ("bfloat16",)):
    c = _load_config(args.config)
    c.data.dir = config.data.dir
    c.pairs_per_batch, c.batch_size = config.pairs_per_batch, config.batch_size
    c.model.dtype = dtype
    c.model = backend.resolve(c.model, "gpu")  # what a GPU compiles
    fn, st, _, _ = _train_step(c, abstract=True)
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), batch)
    start = time.perf_counter()
    compiled = fn.lower(st, shapes).compile()
    analysis[dtype] = {"compile_s": round(time.perf_counter() - start, 1), **_memory(compiled)}
    print(f"accelerator program, {dtype}: {analysis[dtype]}", flush=True)
    del compiled
  result["train_memory_accelerator_program_gib"] = analysis
  print(json.dumps(result, indent=1))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  main()
