"""Match R-CNN (ours, JAX) against torchvision's Mask R-CNN + 294-keypoint head, side by side.

    python benchmarks/compare_torchvision.py [--config configs/bench_cpu.py] [--json OUT.json]
        [--set KEY=VALUE ...] [--side ours|torchvision --side_out F [--weights W]]

One run, one machine, the same synthetic inputs (images, garments with boxes, masks and
landmarks) on both sides, at the same image size, batch, proposal and RoI counts:
  * ours: the full jitted train step (forward, the five losses + the RPN losses, backward, SGD
    update) and jitted inference (detections, masks, landmarks, match embeddings);
  * torchvision: `MaskRCNN` R50-FPN (FrozenBatchNorm, 3 trainable backbone stages, as with
    pretrained weights; the same freezing on our side) with a 294-keypoint head added to its
    RoIHeads, train step = forward + backward + SGD step, and `eval()` inference.
Both start from the same weights: the torchvision side writes its initial state_dict and ours
imports every tensor the models share, so the RPNs propose alike and both sides' heads run on
about as many foreground RoIs.
Each side runs in its own process (so its peak memory is its own); each timing is the median
of `bench.runs` calls after a warm-up. Reported: seconds per step / per image, the ratios
torchvision / ours (> 1: ours is faster), our compile times, the peak RSS of each process, and
our FLOPs per image from XLA's cost analysis with the FLOP/s they imply.

JSON (`--json`): {"device", "config", "ours": {"train_step_s", "infer_s", "compile_s",
"infer_compile_s", "peak_rss_mb", "compiled_peak_rss_mb" (before the first step),
"train_peak_rss_mb" (before inference), "train_temp_mb" /
"infer_temp_mb" (XLA's temporary buffers), "train_minor_faults_per_step", "train_sys_s_per_step",
"flops_per_image", "train_flops_per_image", "infer_flop_per_s", ...}, "torchvision":
{"train_step_s", "infer_s", "peak_rss_mb"}, "speedup": {"train", "infer"}}; `infer_s` is per
image, `train_step_s` per step of `train_images` images.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
NUM_CLASSES = 14
NUM_LANDMARKS = 294
# Backbone stages kept fixed on both sides (torchvision's default with pretrained weights).
FROZEN = ("conv1", "bn1", "layer1")


def load_config(path: str, overrides=()):
  """The config file's `get_config()` ({"model": config.model, "bench": ...}), with
  `KEY=VALUE` overrides, KEY a dotted path (VALUE a Python literal, or a plain string):
  `--set model.implementation.train_heads=dense` measures the same config with dense heads."""
  spec = importlib.util.spec_from_file_location("bench_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  for item in overrides:
    key, sep, value = item.partition("=")
    *parents, leaf = key.split(".")
    node = config
    for name in parents:
      node = node.get(name) if hasattr(node, "get") else None
    if not sep or not hasattr(node, "keys") or leaf not in node:
      raise SystemExit(f"--set {item!r}: expected KEY=VALUE with KEY a field of the config, "
                       f"e.g. bench.runs or model.implementation.train_head_chunk "
                       f"(config {path})")
    try:
      value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      pass  # a plain string, e.g. --set model.dtype=bfloat16
    node[leaf] = value
  return config


def synthetic_inputs(cfg, n: int, seed: int = 0) -> dict:
  """`n` images [n, S, S, 3] in [0, 1] with `garments_per_image` garments each: boxes [n, G, 4]
  (x1, y1, x2, y2), classes [n, G] (1..13), full-image masks [n, G, S, S] (ellipses), landmarks
  [n, G, 294, 3] (the class's block visible, inside the box) and styles [n, G] (1..G)."""
  from match_rcnn_jax.data import schema
  rng = np.random.default_rng(seed)
  s, g = cfg.bench.image_size, cfg.bench.garments_per_image
  images = rng.uniform(0.0, 1.0, (n, s, s, 3)).astype(np.float32) * 0.3
  boxes = np.zeros((n, g, 4), np.float32)
  classes = rng.integers(1, NUM_CLASSES, (n, g)).astype(np.int32)
  masks = np.zeros((n, g, s, s), np.uint8)
  landmarks = np.zeros((n, g, NUM_LANDMARKS, 3), np.float32)
  yy, xx = np.mgrid[0:s, 0:s] + 0.5
  for i in range(n):
    for j in range(g):
      w, h = rng.uniform(0.2, 0.5, 2) * s
      x1, y1 = rng.uniform(0, s - w), rng.uniform(0, s - h)
      boxes[i, j] = [x1, y1, x1 + w, y1 + h]
      inside = ((xx - x1 - w / 2) / (w / 2)) ** 2 + ((yy - y1 - h / 2) / (h / 2)) ** 2 <= 1
      masks[i, j] = inside
      images[i][inside] = rng.uniform(0.2, 1.0, 3)
      cat = schema.CATEGORY_BY_ID[int(classes[i, j])]
      pts = rng.uniform([x1 + 1, y1 + 1], [x1 + w - 1, y1 + h - 1], (cat.num_landmarks, 2))
      landmarks[i, j, cat.offset:cat.offset + cat.num_landmarks] = np.concatenate(
          [pts, np.full((cat.num_landmarks, 1), 2.0)], 1)
  styles = np.tile(np.arange(1, g + 1, dtype=np.int32), (n, 1))
  return {"images": images, "boxes": boxes, "classes": classes, "masks": masks,
          "landmarks": landmarks, "styles": styles}


def _median(fn, runs: int) -> tuple[float, list[float]]:
  fn()  # warm-up
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times), times


def _peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---------------------------------------------------------------------------- ours


def _mask_crops(masks, boxes, size):
  """Full masks [G, S, S] -> [G, size, size] crops at the boxes' bin centres (nearest)."""
  out = np.zeros((len(masks), size, size), np.float32)
  for j, (m, (x1, y1, x2, y2)) in enumerate(zip(masks, boxes)):
    xs = np.clip((x1 + (np.arange(size) + 0.5) * (x2 - x1) / size).astype(int), 0,
                 m.shape[1] - 1)
    ys = np.clip((y1 + (np.arange(size) + 0.5) * (y2 - y1) / size).astype(int), 0,
                 m.shape[0] - 1)
    out[j] = m[np.ix_(ys, xs)]
  return out


def our_train_setup(cfg, weights: str = ""):
  """Our model, a fresh train state, the jitted (state-donating) train step and a
  device-resident batch of `train_images` images as (shop, user) pairs, for `cfg`. With
  `weights` (a torchvision state_dict saved by the torchvision side, `.npz`) every weight the
  two models share starts from torchvision's (`tools.torchvision_convert`); the rest (the
  matching network) keeps its initialisation."""
  import jax
  import ml_collections

  from match_rcnn_jax.models import match_rcnn
  from match_rcnn_jax.training import optim
  from match_rcnn_jax.training import step as step_lib

  model = match_rcnn.build(cfg.model)
  s = cfg.bench.image_size
  variables = match_rcnn.init(model, jax.random.PRNGKey(0), (s, s))
  loaded = 0
  if weights:
    from match_rcnn_jax.tools import torchvision_convert
    with np.load(weights) as state:
      variables, report = torchvision_convert.convert(dict(state), jax.device_get(variables))
    variables = jax.device_put(variables)  # device arrays, as init gives: the step donates them
    loaded = report["loaded"]
  opt = ml_collections.ConfigDict({
      "name": "sgd", "learning_rate": cfg.bench.learning_rate, "momentum": 0.9,
      "weight_decay": 1e-4,
      "warmup_steps": 0, "warmup_factor": 0.001, "decay_fractions": (), "decay_factor": 0.1,
      "grad_clip_norm": 0.0, "freeze_backbone": FROZEN})
  tx = optim.make(opt, variables["params"], 1000)
  state = step_lib.create(variables, tx, jax.random.PRNGKey(1))
  weights = ml_collections.ConfigDict({k: 1.0 for k in (
      "rpn_cls", "rpn_box", "cls", "box", "landmark", "mask", "match")})
  train_step = jax.jit(step_lib.make_train_step(model, tx, weights,
                                                match_rcnn.DTYPES[cfg.model.dtype],
                                                tuple(opt.freeze_backbone)),
                       donate_argnums=(0,))

  n = cfg.bench.train_images
  data = synthetic_inputs(cfg, n)
  crop = 28
  info = np.tile(np.array([s, s, 1, 1, s, s], np.float32), (n, 1))
  flat = {
      "image": (data["images"] - MEAN) / STD, "image_info": info, "boxes": data["boxes"],
      "classes": data["classes"], "valid": np.ones(data["classes"].shape, bool),
      "mask_crops": np.stack([_mask_crops(m, b, crop)
                              for m, b in zip(data["masks"], data["boxes"])]),
      "landmarks": data["landmarks"], "styles": data["styles"]}
  batch = {k: v.reshape(n // 2, 2, *v.shape[1:]) for k, v in flat.items()}
  # Pair p's shop and user image show product p: same pair_id, garments matched by style.
  batch["pair_id"] = np.repeat(np.arange(n // 2, dtype=np.int32)[:, None], 2, axis=1)
  batch = jax.device_put(batch)  # device-resident: the step times exclude host transfers
  return model, state, train_step, batch, data, loaded


def run_ours(cfg, weights: str = "") -> dict:
  import jax

  model, state, train_step, batch, data, loaded = our_train_setup(cfg, weights)
  n, s = cfg.bench.train_images, cfg.bench.image_size
  start = time.perf_counter()
  lowered = train_step.lower(state, batch)
  compiled = lowered.compile()
  compile_s = time.perf_counter() - start
  train_flops = _flops(compiled)
  train_temp_mb = _temp_mb(compiled)
  compiled_peak_rss_mb = _peak_rss_mb()  # set up and compiled, no step run yet
  from match_rcnn_jax import backend
  backend.release_free_heap()  # as train.py does after compiling

  holder = {"state": state}
  fg = []

  def one_step():
    holder["state"], metrics = compiled(holder["state"], batch)
    # The whole step, as torchvision's. (That the next step does not allocate its ~3 GB of XLA
    # temporaries before this one has freed its own is `backend.tune_host_allocator`'s
    # synchronous dispatch.)
    jax.block_until_ready((holder["state"], metrics))
    fg.append(float(metrics["fg_rois"]))

  before = resource.getrusage(resource.RUSAGE_SELF)
  train_s, train_all = _median(one_step, cfg.bench.runs)
  after = resource.getrusage(resource.RUSAGE_SELF)
  steps = cfg.bench.runs + 1  # the warm-up and the timed steps
  train_peak_rss_mb = _peak_rss_mb()

  infer_n = cfg.bench.infer_images
  images = jax.device_put(((data["images"][:infer_n] - MEAN) / STD).astype(np.float32))
  sizes = jax.device_put(np.tile(np.array([s, s], np.float32), (infer_n, 1)))
  variables = {"params": holder["state"].params, "batch_stats": holder["state"].batch_stats}
  infer = jax.jit(lambda v, x, z: model.apply(v, x, image_sizes=z))
  start = time.perf_counter()
  infer_compiled = infer.lower(variables, images, sizes).compile()
  infer_compile_s = time.perf_counter() - start
  infer_flops = _flops(infer_compiled)
  infer_s, infer_all = _median(
      lambda: jax.block_until_ready(infer_compiled(variables, images, sizes)), cfg.bench.runs)
  dets = float(np.mean(np.asarray(infer_compiled(variables, images, sizes)["valid"]).sum(-1)))
  per_image = infer_s / infer_n
  device = jax.devices()[0]
  try:
    peak_device = (device.memory_stats() or {}).get("peak_bytes_in_use")
  except Exception:  # noqa: BLE001 - the CPU backend has no memory stats
    peak_device = None
  return {
      "device": f"{device.device_kind} ({platform.machine()}, {os.cpu_count()} cores)",
      "train_step_s": round(train_s, 4), "train_step_s_all": [round(t, 4) for t in train_all],
      "train_images_per_s": round(n / train_s, 2),
      # the allocator's cost: fresh pages touched and kernel time, per train step
      "train_minor_faults_per_step": round((after.ru_minflt - before.ru_minflt) / steps),
      "train_sys_s_per_step": round((after.ru_stime - before.ru_stime) / steps, 3),
      "fg_rois_per_image": round(float(np.mean(fg[1:])), 1),  # over the timed steps
      "weights_from_torchvision": loaded,  # tensors loaded from torchvision's initial weights
      "infer_s": round(per_image, 4), "infer_s_all": [round(t / infer_n, 4) for t in infer_all],
      "infer_images_per_s": round(infer_n / infer_s, 2),
      "compile_s": round(compile_s, 2), "infer_compile_s": round(infer_compile_s, 2),
      "peak_rss_mb": round(_peak_rss_mb(), 1),
      "compiled_peak_rss_mb": round(compiled_peak_rss_mb, 1),  # before the first step
      "train_peak_rss_mb": round(train_peak_rss_mb, 1),  # before inference ran
      # XLA's temporary buffers of one execution (memory_analysis; None where not reported)
      "train_temp_mb": train_temp_mb, "infer_temp_mb": _temp_mb(infer_compiled),
      "peak_device_mb": peak_device and round(peak_device / 2**20, 1),
      "detections_per_image": round(dets, 1),  # valid ones
      "flops_per_image": infer_flops and round(infer_flops / infer_n),
      "train_flops_per_image": train_flops and round(train_flops / n),
      "infer_flop_per_s": infer_flops and round(infer_flops / infer_s),
      "train_flop_per_s": train_flops and round(train_flops / train_s),
  }


def _temp_mb(compiled) -> float | None:
  try:
    return round(compiled.memory_analysis().temp_size_in_bytes / 2**20, 1)
  except Exception:  # noqa: BLE001 - not every backend reports it
    return None


def _flops(compiled) -> float | None:
  try:
    cost = compiled.cost_analysis()
  except Exception:  # noqa: BLE001 - not every backend implements it
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  flops = (cost or {}).get("flops")
  return float(flops) if flops and flops > 0 else None


# ---------------------------------------------------------------------------- torchvision


def build_torchvision(cfg):
  """MaskRCNN (FrozenBatchNorm ResNet-FPN, 3 trainable stages) + a 294-keypoint head."""
  import torchvision
  from torchvision.models.detection import MaskRCNN
  from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
  from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
  from torchvision.models.detection.keypoint_rcnn import KeypointRCNNHeads, KeypointRCNNPredictor
  from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
  from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign

  m = cfg.model
  if m.box_head.hidden != 1024:
    raise SystemExit("torchvision's box head has 1024 hidden units: model.box_head.hidden "
                     f"must be 1024, got {m.box_head.hidden}")
  resnet = getattr(torchvision.models, f"resnet{m.backbone.depth}")(
      weights=None, norm_layer=FrozenBatchNorm2d)
  backbone = _resnet_fpn_extractor(resnet, trainable_layers=3)
  s = cfg.bench.image_size
  mc = m.mask_head.channels
  model = MaskRCNN(
      backbone, num_classes=None, min_size=s, max_size=s,
      box_predictor=FastRCNNPredictor(1024, NUM_CLASSES),
      rpn_pre_nms_top_n_train=m.rpn.pre_nms_top_k_train,
      rpn_post_nms_top_n_train=m.rpn.post_nms_top_k_train,
      rpn_pre_nms_top_n_test=m.rpn.pre_nms_top_k_test,
      rpn_post_nms_top_n_test=m.rpn.post_nms_top_k_test,
      box_batch_size_per_image=m.sampling.rois_per_image,
      box_detections_per_img=m.detections.per_image,
      box_score_thresh=m.detections.score_threshold,
      mask_head=MaskRCNNHeads(backbone.out_channels, (mc,) * m.mask_head.num_convs, 1),
      mask_predictor=MaskRCNNPredictor(mc, mc, NUM_CLASSES))
  heads = model.roi_heads
  heads.keypoint_roi_pool = MultiScaleRoIAlign(["0", "1", "2", "3"], 14, 2)
  lm = m.landmark_head
  heads.keypoint_head = KeypointRCNNHeads(backbone.out_channels, (lm.channels,) * lm.num_convs)
  heads.keypoint_predictor = KeypointRCNNPredictor(lm.channels, NUM_LANDMARKS)
  return model


def initial_torchvision(cfg, weights_out: str = ""):
  """The torchvision model with its initial weights (seed 0), also saved to `weights_out`
  (`.npz`, for our side to start from) when given."""
  import torch
  torch.manual_seed(0)
  model = build_torchvision(cfg)
  if weights_out:
    np.savez(weights_out, **{k: v.numpy() for k, v in model.state_dict().items()})
  return model


def run_torchvision(cfg, weights_out: str = "") -> dict:
  import contextlib

  import torch
  if cfg.bench.threads:
    torch.set_num_threads(cfg.bench.threads)
  dev = "cuda" if torch.cuda.is_available() else "cpu"
  model = initial_torchvision(cfg, weights_out).to(dev)
  data = synthetic_inputs(cfg, cfg.bench.train_images)
  images = [torch.from_numpy(im).permute(2, 0, 1).contiguous().to(dev) for im in data["images"]]
  targets = [{"boxes": torch.from_numpy(data["boxes"][i]).to(dev),
              "labels": torch.from_numpy(data["classes"][i]).long().to(dev),
              "masks": torch.from_numpy(data["masks"][i]).to(dev),
              "keypoints": torch.from_numpy(data["landmarks"][i]).to(dev)}
             for i in range(cfg.bench.train_images)]
  params = [p for p in model.parameters() if p.requires_grad]
  opt = torch.optim.SGD(params, lr=cfg.bench.learning_rate, momentum=0.9, weight_decay=1e-4)
  model.train()
  amp = cfg.bench.amp
  # Foreground RoIs per image of each step (what the mask and keypoint heads run on), read
  # after the timing so that no device sync is added to it.
  fg = []
  sample = model.roi_heads.select_training_samples

  def counted_sample(*args, **kwargs):
    result = sample(*args, **kwargs)
    fg.append(sum((labels > 0).sum() for labels in result[2]))
    return result

  model.roi_heads.select_training_samples = counted_sample

  def autocast():
    if not amp:
      return contextlib.nullcontext()
    return torch.autocast(dev, dtype=torch.bfloat16)

  def sync():
    if dev == "cuda":
      torch.cuda.synchronize()

  def one_step():
    with autocast():
      losses = model(images, targets)
      loss = sum(losses.values())
    opt.zero_grad()
    loss.backward()
    opt.step()
    sync()

  train_s, train_all = _median(one_step, cfg.bench.runs)
  fg_per_image = float(np.mean([int(f) for f in fg[1:]])) / cfg.bench.train_images
  model.eval()
  infer_n = cfg.bench.infer_images
  infer_images = images[:infer_n]

  found = []

  def infer():
    with torch.no_grad(), autocast():
      found[:] = [len(o["boxes"]) for o in model(infer_images)]
    sync()

  infer_s, infer_all = _median(infer, cfg.bench.runs)
  return {"train_step_s": round(train_s, 4), "train_step_s_all": [round(t, 4) for t in train_all],
          "train_images_per_s": round(cfg.bench.train_images / train_s, 2),
          "fg_rois_per_image": round(fg_per_image, 1),
          "infer_s": round(infer_s / infer_n, 4),
          "infer_s_all": [round(t / infer_n, 4) for t in infer_all],
          "infer_images_per_s": round(infer_n / infer_s, 2),
          "peak_rss_mb": round(_peak_rss_mb(), 1),
          "peak_device_mb": (round(torch.cuda.max_memory_allocated() / 2**20, 1)
                             if dev == "cuda" else None),
          "threads": torch.get_num_threads(), "amp": bool(amp), "device": dev,
          "detections_per_image": round(float(np.mean(found)), 1),
          "torch": torch.__version__}


# ---------------------------------------------------------------------------- driver


def _tune_host_allocator(side: str) -> None:
  """glibc's malloc settings for the CPU (`backend.tune_host_allocator`), before either side
  starts its threads; torchvision's side takes the same settings (without loading JAX to
  decide: on a GPU host its host allocator hardly matters)."""
  from match_rcnn_jax import backend
  if side == "ours":
    backend.tune_host_allocator()
  elif os.environ.get(backend.OPT_OUT, "1") != "0":
    backend.apply_mallopt()


def _side(name: str, config_path: str, overrides, weights: str = "") -> dict:
  """Runs one side in a fresh process and returns its JSON; `weights`: where the torchvision
  side writes its initial weights and our side reads them."""
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "side.json")
    cmd = [sys.executable, os.path.abspath(__file__), "--config", config_path, "--side", name,
           "--side_out", out, "--weights", weights] + [f"--set={item}" for item in overrides]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if res.returncode != 0:
      raise RuntimeError(f"the {name} side failed:\n{res.stderr[-4000:]}")
    with open(out) as f:
      return json.load(f)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default=os.path.join(ROOT, "configs", "bench_cpu.py"))
  parser.add_argument("--json", default="")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override one of the config's fields (repeatable)")
  parser.add_argument("--side", choices=("ours", "torchvision"),
                      help="run one side only, in this process (its JSON to --side_out)")
  parser.add_argument("--side_out", default="", help="where --side writes its JSON")
  parser.add_argument("--weights", default="", help="with --side: the .npz of initial weights "
                      "the torchvision side writes and our side starts from")
  parser.add_argument("--save_init", default="", metavar="INIT.npz",
                      help="write the torchvision side's initial weights (the ones both sides "
                      "start from) to this .npz and exit, e.g. for profile_train_step.py")
  args = parser.parse_args(argv)
  if args.side and not args.side_out:
    parser.error("--side needs --side_out")
  cfg = load_config(args.config, args.set)
  if cfg.bench.train_images % 2:
    parser.error("bench.train_images must be even: our train step takes (shop, user) pairs")
  if args.save_init:
    initial_torchvision(cfg, args.save_init)
    return 0
  if args.side:
    _tune_host_allocator(args.side)
    result = run_ours(cfg, args.weights) if args.side == "ours" else run_torchvision(
        cfg, args.weights)
    with open(args.side_out, "w") as f:
      json.dump(result, f)
    return 0

  with tempfile.TemporaryDirectory() as tmp:
    weights = os.path.join(tmp, "torchvision_init.npz")
    torchvision_result = _side("torchvision", args.config, args.set, weights)
    if args.json:  # a partial result first: the torchvision side alone
      with open(args.json, "w") as f:
        json.dump({"config": cfg.to_dict(), "torchvision": torchvision_result}, f, indent=1)
    ours = _side("ours", args.config, args.set, weights)
  result = {
      "device": ours.pop("device"),
      "config": cfg.to_dict(),
      "ours": ours,
      "torchvision": torchvision_result,
      "speedup": {"train": round(torchvision_result["train_step_s"] / ours["train_step_s"], 3),
                  "infer": round(torchvision_result["infer_s"] / ours["infer_s"], 3)},
  }
  s = cfg.bench.image_size
  gf = lambda v: f"{v / 1e9:.1f}" if v else "n/a"  # noqa: E731
  print(f"R{cfg.model.backbone.depth}-FPN Match R-CNN vs torchvision Mask R-CNN + 294-keypoint "
        f"head, "
        f"{s}x{s}, on {result['device']}\n"
        f"{'':<26}{'ours':>12}{'torchvision':>14}{'speedup':>10}\n"
        f"{'train step (s, ' + str(cfg.bench.train_images) + ' img)':<26}"
        f"{ours['train_step_s']:>12.3f}{torchvision_result['train_step_s']:>14.3f}"
        f"{result['speedup']['train']:>9.2f}x\n"
        f"{'inference (s / img)':<26}{ours['infer_s']:>12.3f}"
        f"{torchvision_result['infer_s']:>14.3f}{result['speedup']['infer']:>9.2f}x\n"
        f"{'train images / s':<26}{ours['train_images_per_s']:>12.2f}"
        f"{torchvision_result['train_images_per_s']:>14.2f}\n"
        f"{'inference images / s':<26}{ours['infer_images_per_s']:>12.2f}"
        f"{torchvision_result['infer_images_per_s']:>14.2f}\n"
        f"{'peak RSS (MB)':<26}{ours['peak_rss_mb']:>12.0f}"
        f"{torchvision_result['peak_rss_mb']:>14.0f}\n"
        f"{'peak device memory (MB)':<26}{ours['peak_device_mb'] or 0:>12.0f}"
        f"{torchvision_result['peak_device_mb'] or 0:>14.0f}\n"
        f"{'foreground RoIs / image':<26}{ours['fg_rois_per_image']:>12.1f}"
        f"{torchvision_result['fg_rois_per_image']:>14.1f}\n"
        f"{'detections / image':<26}{ours['detections_per_image']:>12.1f}"
        f"{torchvision_result['detections_per_image']:>14.1f}\n"
        f"ours, per train step: {ours['train_minor_faults_per_step']} minor page faults, "
        f"{ours['train_sys_s_per_step']:.2f} s system time; peak RSS after compiling "
        f"{ours['compiled_peak_rss_mb']:.0f} MB, after training "
        f"{ours['train_peak_rss_mb']:.0f} MB; XLA temporaries: train step "
        f"{ours['train_temp_mb'] or 0:.0f} MB, inference {ours['infer_temp_mb'] or 0:.0f} MB\n"
        f"ours: compile train step {ours['compile_s']:.1f} s, inference "
        f"{ours['infer_compile_s']:.1f} s; GFLOPs / image: inference "
        f"{gf(ours['flops_per_image'])}, train {gf(ours['train_flops_per_image'])}; achieved "
        f"GFLOP/s: inference {gf(ours['infer_flop_per_s'])}, train "
        f"{gf(ours['train_flop_per_s'])}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=1)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
