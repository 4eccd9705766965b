"""Finds, or makes, the converted dataset a config asks for.

With `config.data_dir` set, that converter output directory is used as it is (both splits must
have been converted). Without it, the built-in synthetic DeepFashion2 is generated under
`<workdir>/<workdir_data>/raw/{train,validation}` and converted to `<workdir>/<workdir_data>`,
once: a later run finds it there. Writing goes through temporary folders, so an interrupted
preparation is redone rather than half-used.
"""

from __future__ import annotations

import json
import os
import shutil

from match_rcnn_jax.data import convert, synthetic, tfrecords


def _ready(out_dir: str, splits) -> bool:
  return all(os.path.exists(os.path.join(tfrecords.split_dir(out_dir, s), "dataset_info.json"))
             and os.path.exists(os.path.join(out_dir, f"{s}_coco.json")) for s in splits)


def _settings_path(out_dir: str, split: str) -> str:
  return os.path.join(out_dir, "raw", f"{split}_synthetic.json")


def _made_with(out_dir: str, split: str) -> dict | None:
  try:
    with open(_settings_path(out_dir, split)) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def prepare_synthetic(out_dir: str, syn, data_cfg, log=print) -> None:
  """Generates and converts the synthetic train / eval splits into `out_dir`. A split made
  earlier is reused only when it was made with the same generator settings (number of images,
  seed, image size, mode: `raw/<split>_synthetic.json`); otherwise it is made again."""
  mode = syn.get("mode", "colour")
  splits = {data_cfg.train_split: (syn.num_train_images, syn.seed),
            data_cfg.eval_split: (syn.num_eval_images, syn.seed + 1)}
  for split, (n, seed) in splits.items():
    settings = {"num_images": int(n), "seed": int(seed), "image_size": int(syn.image_size),
                "mode": str(mode)}
    if _ready(out_dir, [split]) and _made_with(out_dir, split) == settings:
      continue
    raw = os.path.join(out_dir, "raw", split)
    tmp = raw + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    log(f"generating {n} synthetic images ({mode} mode) for '{split}' in {raw}")
    synthetic.generate(tmp, n, seed=seed, image_size=syn.image_size, mode=mode)
    shutil.rmtree(raw, ignore_errors=True)
    os.replace(tmp, raw)
    report = convert.convert(raw, out_dir, split, on_error="fail",
                             examples_per_shard=data_cfg.examples_per_shard, show_progress=False)
    with open(_settings_path(out_dir, split), "w") as f:
      json.dump(settings, f)
    log(convert.summary(report, out_dir))


def resolve_data_dir(config, workdir: str, log=print) -> str:
  """Sets and returns `config.data.dir`, preparing synthetic data when no data_dir is given."""
  splits = [config.data.train_split, config.data.eval_split]
  if config.data_dir:
    out = config.data_dir
    if not _ready(out, splits):
      raise FileNotFoundError(
          f"{out}: converted splits {splits} not found; run `python -m "
          "match_rcnn_jax.data.convert --data_dir <DeepFashion2>/<split> --output_dir "
          f"{out} --split <split>` for each")
  else:
    out = config.workdir_data
    if not os.path.isabs(out):
      out = os.path.join(workdir, out)
    prepare_synthetic(out, config.synthetic, config.data, log)
  config.data.dir = out
  return out
