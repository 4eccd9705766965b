"""The training loop, readable top to bottom.

Data parallelism: one mesh axis `data` over every device of every host; parameters and
optimizer state replicated; the global batch of (shop, user) pairs split along the pair axis.
Each host reads its own share of the input files and contributes `pairs_per_batch /
process_count` pairs. The step is one jitted function with the state donated. The evaluation
at the end (`train.eval_at_end`) runs on every device of every host as well, scored and
written once by process 0 (`evaluation.evaluate`).
"""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from match_rcnn_jax.data import crop_pairs, pipeline, prepare
from match_rcnn_jax.models import export, match_rcnn
from match_rcnn_jax.training import checkpoints, optim
from match_rcnn_jax.training import step as step_lib


def mesh(devices=None) -> Mesh:
  return Mesh(np.asarray(devices if devices is not None else jax.devices()), ("data",))


def sharded_step(model, tx, config, devices=None):
  """(jitted train step, batch sharding, replicated sharding) over a 1-D `data` mesh."""
  m = mesh(devices)
  replicated = NamedSharding(m, P())
  data_sharding = NamedSharding(m, P("data"))
  fn = jax.jit(step_lib.make_train_step(model, tx, config.loss_weights,
                                        match_rcnn.DTYPES[config.model.dtype],
                                        tuple(config.optimizer.freeze_backbone),
                                        int(config.model.match_head.get("memory_start", 0))),
               in_shardings=(replicated, data_sharding), out_shardings=(replicated, replicated),
               donate_argnums=(0,))
  return fn, data_sharding, replicated


def global_batch(local: dict, sharding: NamedSharding) -> dict:
  """Assembles each host's numpy batch into global arrays sharded on the leading axis."""
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}


def _batches(config, host, start_step: int):
  ds = pipeline.pair_dataset(config.data, config.data.train_split,
                             config.pairs_per_batch // host[1], host=host)
  if start_step:
    ds = ds.skip(start_step)  # the data position of a resumed run
  return pipeline.as_numpy(ds)


def _crop_pair_sampler(config, host):
  """None, or step -> this host's share of the step's side batch of GT crop pairs
  (`data.crop_pairs`, `data.crop_pairs.CropBank`), the same for a step whether resumed or not."""
  pairs = int(config.data.get("crop_pairs", 0))
  if pairs <= 0:
    return None
  if pairs % jax.device_count():
    raise ValueError(f"data.crop_pairs ({pairs}) must be a multiple of the device count "
                     f"({jax.device_count()})")
  bank = crop_pairs.CropBank.from_split(config.data, config.data.train_split,
                                        int(config.data.crop_pairs_size), host=host)
  print(f"crop pairs: {len(bank.crops)} garment crops of {len(bank.products)} products with "
        f"shop and user crops in {len(bank.groups)} pair_id groups, {pairs} pairs a step",
        flush=True)
  local, per_group = pairs // host[1], int(config.data.crop_pairs_per_group)
  return lambda step: bank.sample(np.random.default_rng((config.seed, host[0], step)), local,
                                  per_group)


def init_variables(config, model, rng):
  variables = match_rcnn.init(model, rng, tuple(config.data.canvas))
  if config.init_from:
    variables = export.load_variables(config.init_from, jax.device_get(variables))
  return variables


class _Logger:
  """Console progress line + TensorBoard event files in the workdir (process 0 only)."""

  def __init__(self, workdir: str, total: int, images_per_step: int):
    self.total, self.images_per_step = total, images_per_step
    self.main = jax.process_index() == 0
    self.writer = self.tf = None
    if self.main:
      import tensorflow as tf
      self.tf = tf
      self.writer = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))
    self.last_time, self.last_step = time.time(), None
    self.history = []

  def log(self, step: int, metrics: dict, lr: float):
    if not self.main:
      return
    now = time.time()
    rate = 0.0
    if self.last_step is not None:
      rate = (step - self.last_step) * self.images_per_step / max(now - self.last_time, 1e-9)
    self.last_time, self.last_step = now, step
    eta = (self.total - step) * self.images_per_step / rate if rate > 0 else float("nan")
    m = {k: float(v) for k, v in metrics.items()}
    self.history.append({"step": step, "lr": lr, **m})
    losses = " ".join(f"{k[5:]} {v:.3f}" for k, v in m.items() if k.startswith("loss_"))
    print(f"step {step}/{self.total}  {rate:.1f} img/s  loss {m['loss']:.3f} ({losses})  "
          f"lr {lr:.5f}  eta {eta / 60:.1f} min", flush=True)
    summary = self.tf.summary
    with self.writer.as_default():
      for k, v in m.items():
        summary.scalar(k, v, step=step)
      summary.scalar("lr", lr, step=step)
      summary.scalar("images_per_s", rate, step=step)
    self.writer.flush()


def train(config, workdir: str, after_compile=None) -> dict:
  """Trains (resuming from `workdir` when it holds a checkpoint); returns the final metrics.
  `after_compile()`, when given, runs once between compiling the train step and its first
  call (train.py gives the host's memory back there, `backend.release_free_heap`)."""
  os.makedirs(workdir, exist_ok=True)
  host = (jax.process_index(), jax.process_count())
  if config.pairs_per_batch % jax.device_count():
    raise ValueError(f"pairs_per_batch ({config.pairs_per_batch}) must be a multiple of the "
                     f"device count ({jax.device_count()})")
  prepare.resolve_data_dir(config, workdir)
  model = match_rcnn.build(config.model)
  rng = jax.random.PRNGKey(config.seed)
  init_rng, state_rng = jax.random.split(rng)
  variables = init_variables(config, model, init_rng)
  total = config.train.num_steps
  tx = optim.make(config.optimizer, variables["params"], total)
  state = step_lib.create(variables, tx, state_rng, step_lib.memory_size(config))
  mngr = checkpoints.manager(workdir, config.train.keep_checkpoints)
  restored, start = checkpoints.restore_latest(mngr, state)
  if restored is not None:
    state = restored
    print(f"resuming from step {start}", flush=True)

  train_step, data_sharding, replicated = sharded_step(model, tx, config)
  state = jax.device_put(state, replicated)
  lr_fn = optim.schedule(config.optimizer, total)
  logger = _Logger(workdir, total, 2 * config.pairs_per_batch)
  batches = _batches(config, host, start)
  side = _crop_pair_sampler(config, host)
  metrics = {}
  stop = min(total, config.train.stop_at) if config.train.stop_at else total
  compiled = None
  for step in range(start, stop):
    local = next(batches)
    if side is not None:
      local = {**local, **side(step)}
    batch = global_batch(local, data_sharding)
    if compiled is None:  # compiled ahead of the first step: every step has these shapes
      compiled = train_step.lower(state, batch).compile()
      if after_compile is not None:
        after_compile()
    state, metrics = compiled(state, batch)
    done = step + 1
    if done % config.train.log_every == 0 or done == total:
      logger.log(done, jax.device_get(metrics), float(lr_fn(step)))
    if done % config.train.checkpoint_every == 0 or done in (total, stop):
      checkpoints.save(mngr, done, state)
  mngr.close()
  final = {k: float(v) for k, v in jax.device_get(metrics).items()}
  if stop < total:
    print(f"stopped at step {stop} of {total} (train.stop_at); run again to resume", flush=True)
    return final
  main = jax.process_index() == 0
  if main:
    export.save_export(workdir, config, {"params": state.params,
                                              "batch_stats": state.batch_stats})
    with open(os.path.join(workdir, "train_history.json"), "w") as f:
      json.dump(logger.history, f)
  if config.train.eval_at_end:  # on every device of every host, scored on process 0
    from match_rcnn_jax.evaluation import evaluate, figures, tables
    variables = {"params": jax.device_get(state.params),
                 "batch_stats": jax.device_get(state.batch_stats)}
    metrics_eval = evaluate.evaluate_model(config, model, variables, config.data.eval_split,
                                           os.path.join(workdir, "eval"))
    if main:
      print(f"held-out '{config.data.eval_split}' split:\n" + tables.table(metrics_eval),
            flush=True)
      png = os.path.join(workdir, "eval", "predictions.png")
      figures.save_split_predictions(config, model, variables, config.data.eval_split, png)
      print(f"predictions on held-out images drawn in {png}", flush=True)
      png = os.path.join(workdir, "eval", "retrieval.png")
      with open(os.path.join(workdir, "eval", "retrieval_results.json")) as f:
        figures.save_split_retrieval(config.data.dir, config.data.eval_split, json.load(f), png)
      print(f"retrieval of held-out garments drawn in {png}", flush=True)
      final.update({f"{task}_{k}": v for task, m in metrics_eval.items() if task != "subsets"
                    for k, v in m.items() if isinstance(v, (int, float))})
  return final
