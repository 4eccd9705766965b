"""The paper's setup at its real size: `configs/deepfashion2_r50_fpn.py` as it is (R50-FPN,
1024 x 1024 canvas, 2000 / 1000 proposals, 16 garments an image, 112 px mask crops, the
landmark+box matching network), its batch reduced to what one device holds here.

    python benchmarks/paper_setup.py [--config configs/deepfashion2_r50_fpn.py]
        [--workdir runs/paper_setup] [--image_size 800] [--steps 3] [--pairs 1] [--skip_bf16]
        [--synthetic_inputs] [--set KEY=VALUE ...] [--json OUT.json]

Makes (or reuses) DeepFashion2-shaped synthetic data in `W/data` (the generator at
`--image_size`: images of about 800 x 600 to 800 x 800, JPEG, converted with the converter)
and feeds the steps from the training pipeline; with `--synthetic_inputs` (a machine without
TensorFlow, e.g. a lent GPU) it feeds batches of the pipeline's shapes made in numpy instead
(800 x 600 images on the canvas, 2 garments an image). Then, with the config's batch reduced
to its per-device share (`--pairs` 1 (shop, user) pair = 2 images: the config's 8 pairs over 8
devices):
1. compiles the train step as the config resolves on this backend, times the compile and
   `--steps` steps (median), and reads the process's peak memory;
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
import statistics
import time

import jax
import numpy as np
from compare_torchvision import _peak_rss_mb, load_config  # benchmarks/: shared helpers

from match_rcnn_jax import backend
from match_rcnn_jax.data import schema
from match_rcnn_jax.inference import jitted
from match_rcnn_jax.models import match_rcnn
from match_rcnn_jax.training import optim
from match_rcnn_jax.training import step as step_lib

GIB = 2 ** 30


def _train_step(config, abstract: bool = False):
  """(jitted state-donating train step on one device, its state (shapes only with
  `abstract`), model) of `config`."""
  model = match_rcnn.build(config.model)
  canvas = tuple(config.data.canvas)
  if abstract:
    variables = match_rcnn.variable_shapes(model, canvas)
  else:
    variables = match_rcnn.init(model, jax.random.PRNGKey(0), canvas)
  tx = optim.make(config.optimizer, variables["params"], config.train.num_steps)
  create = lambda: step_lib.create(variables, tx, jax.random.PRNGKey(1),  # noqa: E731
                                   step_lib.memory_size(config))
  fn = jax.jit(step_lib.make_train_step(model, tx, config.loss_weights,
                                        match_rcnn.DTYPES[config.model.dtype],
                                        tuple(config.optimizer.freeze_backbone),
                                        int(config.model.match_head.get("memory_start", 0))),
               donate_argnums=(0,))
  return fn, jax.eval_shape(create) if abstract else create(), model


def _synthetic_images(config, n: int, rng) -> dict:
  """`n` images of the pipeline's shapes and dtypes: an 800 x 600 photo resized as the
  pipeline resizes it (short side `short_side`, long side at most `max_side`) on the canvas,
  2 garments each (the released data: 1.7 an image) among `max_instances` rows, with boxes,
  classes, styles, mask crops (ellipses) and the class's landmarks visible."""
  d = config.data
  (ch, cw), m, crop = tuple(d.canvas), int(d.max_instances), int(d.mask_crop_size)
  scale = min(d.short_side / 600, d.max_side / 800)
  h, w = round(600 * scale), round(800 * scale)
  image = np.zeros((n, ch, cw, 3), np.float32)
  image[:, :h, :w] = rng.normal(0, 1, (n, h, w, 3))
  boxes = np.zeros((n, m, 4), np.float32)
  classes = np.zeros((n, m), np.int32)
  landmarks = np.zeros((n, m, schema.NUM_LANDMARKS, 3), np.float32)
  for i in range(n):
    for j in range(2):
      bw, bh = rng.uniform(0.2, 0.7) * w, rng.uniform(0.2, 0.7) * h
      x1, y1 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
      boxes[i, j] = [x1, y1, x1 + bw, y1 + bh]
      classes[i, j] = rng.integers(1, schema.NUM_CATEGORIES + 1)
      cat = schema.CATEGORY_BY_ID[int(classes[i, j])]
      pts = rng.uniform([x1, y1], [x1 + bw, y1 + bh], (cat.num_landmarks, 2))
      landmarks[i, j, cat.landmark_slice] = np.concatenate(
          [pts, np.full((cat.num_landmarks, 1), 2.0)], 1)
  yy, xx = (np.mgrid[0:crop, 0:crop] + 0.5) / crop - 0.5
  ellipse = (xx ** 2 + yy ** 2 <= 0.25).astype(np.float32)
  valid = np.zeros((n, m), bool)
  valid[:, :2] = True
  info = np.tile(np.asarray([600, 800, scale, scale, h, w], np.float32), (n, 1))
  return {"image": image, "image_info": info, "boxes": boxes, "classes": classes,
          "valid": valid, "mask_crops": valid[..., None, None] * ellipse,
          "landmarks": landmarks, "styles": np.where(valid, np.arange(1, m + 1), 0).astype(
              np.int32)}


def _synthetic_pairs(config, pairs: int, rng) -> dict:
  """A pair batch [pairs, 2, ...] of `_synthetic_images`: each pair's two images one product
  (the same pair_id; their garments matched by style)."""
  flat = _synthetic_images(config, 2 * pairs, rng)
  batch = {k: v.reshape(pairs, 2, *v.shape[1:]) for k, v in flat.items()}
  batch["pair_id"] = np.repeat(np.arange(1, pairs + 1, dtype=np.int64)[:, None], 2, 1)
  return batch


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
  parser.add_argument("--synthetic_inputs", action="store_true",
                      help="batches of the pipeline's shapes made in numpy (no TensorFlow)")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="a config override, e.g. model.dtype=bfloat16 (repeatable)")
  args = parser.parse_args()
  backend.tune_host_allocator()
  config = load_config(args.config, args.set)
  config.pairs_per_batch, config.batch_size = args.pairs, 2 * args.pairs
  rng = np.random.default_rng(0)
  if args.synthetic_inputs:
    batches = iter(lambda: _synthetic_pairs(config, config.pairs_per_batch, rng), None)
    ev = _synthetic_images(config, 2, rng)
  else:
    from match_rcnn_jax.data import pipeline, prepare  # TensorFlow
    config.synthetic.image_size = args.image_size
    prepare.resolve_data_dir(config, args.workdir)
    batches = pipeline.as_numpy(pipeline.pair_dataset(config.data, config.data.train_split,
                                                      config.pairs_per_batch, host=(0, 1)))
    ev = next(pipeline.as_numpy(pipeline.image_dataset(
        config.data, config.data.eval_split, 2, train=False, with_masks=False, host=(0, 1))))
  result = {"device": f"{jax.devices()[0].device_kind} ({platform.machine()}, "
                      f"{os.cpu_count()} cores)", "config": args.config, "overrides": args.set,
            "inputs": "synthetic numpy" if args.synthetic_inputs else "training pipeline",
            "canvas": list(config.data.canvas), "images_per_step": 2 * config.pairs_per_batch,
            "dtype": config.model.dtype, "date": time.strftime("%Y-%m-%d")}

  # 1. the train step as this backend runs it
  fn, state, model = _train_step(config)
  batch = jax.device_put(next(batches))
  start = time.perf_counter()
  compiled = fn.lower(state, batch).compile()
  result["train_compile_s"] = round(time.perf_counter() - start, 1)
  result["train_memory_this_backend_gib"] = _memory(compiled)
  backend.release_free_heap()
  times = []
  for i in range(args.steps + 1):
    batch = jax.device_put(next(batches))
    start = time.perf_counter()
    state, metrics = compiled(state, batch)
    loss = float(metrics["loss"])
    if i:  # the first call is the warm-up
      times.append(time.perf_counter() - start)
    print(f"  step {i}: loss {loss:.3f} ({time.perf_counter() - start:.1f} s)", flush=True)
  result["train_step_s_median"] = round(statistics.median(times), 3)
  result["train_step_s_all"] = [round(t, 3) for t in times]
  result["train_images_per_s"] = round(2 * config.pairs_per_batch / statistics.median(times), 2)
  result["loss_finite"] = bool(np.isfinite(loss))
  result["peak_host_memory_gib_after_train"] = round(_peak_rss_mb() / 1024, 2)
  print(json.dumps(result, indent=1), flush=True)
  batch_shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), batch)
  del batches, batch, compiled  # the pipeline's buffers and the step's program
  backend.release_free_heap()

  # 3. inference on 2 evaluation images
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
  result["infer_s_median_2_images"] = round(statistics.median(times), 3)
  result["detections_per_image"] = int(np.asarray(out["valid"]).sum(1).max())
  del state, infer, out
  backend.release_free_heap()
  result["peak_host_memory_gib"] = round(_peak_rss_mb() / 1024, 2)

  # 2. the accelerator's program, compiled for its memory analysis only
  analysis = {}
  for dtype in ("float32",) + (() if args.skip_bf16 else ("bfloat16",)):
    c = load_config(args.config, args.set)
    c.pairs_per_batch, c.batch_size = config.pairs_per_batch, config.batch_size
    c.model.dtype = dtype
    c.model = backend.resolve(c.model, "gpu")  # what a GPU compiles
    fn, st, _ = _train_step(c, abstract=True)
    start = time.perf_counter()
    compiled = fn.lower(st, batch_shapes).compile()
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
