"""Imports torchvision weights into an orbax checkpoint that training can start from.

    python -m match_rcnn_jax.tools.import_torchvision --input model.pth --output_dir W
        [--config configs/deepfashion2_r50_fpn.py]

`model.pth` is a torchvision state_dict (or a dict holding one under `model` / `state_dict`):
an ImageNet ResNet (`torchvision.models.resnet50().state_dict()`, backbone only) or a Mask /
Keypoint / Faster R-CNN R50-FPN (backbone, FPN, RPN and every head whose shape fits: a COCO
predictor with 91 classes is skipped and keeps its initialisation). Writes `W/variables` (orbax,
the `params` and `batch_stats` of the config's model), `W/import_report.json` (what was loaded,
skipped and left as initialised) and `W/model_config.json`. Start training from it with
`--config.init_from=W` (`models.export.load_variables(W, template)` restores it).
torch is needed only for this command.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys

import numpy as np


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  import torch  # only this command needs torch
  obj = torch.load(path, map_location="cpu", weights_only=True)
  for key in ("model", "state_dict"):
    if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
      obj = obj[key]
  if not isinstance(obj, dict) or not obj:
    raise ValueError(f"{path}: expected a state_dict (a dict of tensors)")
  return {k: v.detach().cpu().numpy() for k, v in obj.items() if hasattr(v, "detach")}


def model_config_from(config_path: str | None):
  if config_path is None:
    from configs.model import model_config
    return model_config()
  spec = importlib.util.spec_from_file_location("import_config", config_path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config().model


def run(input_path: str, output_dir: str, config_path: str | None = None) -> dict:
  import jax

  from match_rcnn_jax.models import export, match_rcnn
  from match_rcnn_jax.tools import torchvision_convert
  state = load_state_dict(input_path)
  cfg = model_config_from(config_path)
  model = match_rcnn.build(cfg)
  template = match_rcnn.init(model, jax.random.PRNGKey(0), (64, 64))
  variables, report = torchvision_convert.convert(state, jax.device_get(template))
  if report["loaded"] == 0:
    raise ValueError(f"{input_path}: no tensor matched a Match R-CNN weight (keys such as "
                     f"{list(state)[:3]})")
  os.makedirs(output_dir, exist_ok=True)
  export.save_variables(output_dir, variables)
  report = {"input": input_path, **report}
  with open(os.path.join(output_dir, "import_report.json"), "w") as f:
    json.dump(report, f, indent=1)
  with open(os.path.join(output_dir, "model_config.json"), "w") as f:
    f.write(cfg.to_json(indent=1))
  return report


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--input", required=True, help="torchvision .pth state_dict")
  parser.add_argument("--output_dir", required=True)
  parser.add_argument("--config", default=None,
                      help="config whose `model` receives the weights (default: R50-FPN)")
  args = parser.parse_args(argv)
  if not os.path.exists(args.input):
    print(f"error: {args.input} does not exist", file=sys.stderr)
    return 1
  try:
    report = run(args.input, args.output_dir, args.config)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"loaded {report['loaded']} tensors into {args.output_dir}/variables; "
        f"{len(report['skipped_shape'])} skipped (shape), {len(report['unused'])} unused, "
        f"{len(report['not_loaded'])} of ours left as initialised (see import_report.json)")
  for key, theirs, ours in report["skipped_shape"][:10]:
    print(f"  skipped {key}: {theirs} != ours {ours}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
