"""Model variables on disk (orbax): variables alone (`save_variables` / `load_variables`:
imported weights, `init_from`) and the inference export of a training run (`save_export` /
`load_export`: `W/export/variables` and `W/export/config.json`, enough to rebuild the model).
"""

from __future__ import annotations

import json
import os

import jax
import ml_collections
import orbax.checkpoint as ocp


def save_variables(directory: str, variables) -> str:
  """Writes `variables` ({'params', 'batch_stats'}) to `directory/variables`; returns the path."""
  path = os.path.join(os.path.abspath(directory), "variables")
  ckpt = ocp.StandardCheckpointer()
  ckpt.save(path, jax.device_get(variables), force=True)
  ckpt.wait_until_finished()
  return path


def load_variables(directory: str, template):
  """Restores `directory/variables` into the structure of `template` (e.g. a freshly initialised
  model, or `models.match_rcnn.variable_shapes`)."""
  path = os.path.join(os.path.abspath(directory), "variables")
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{path}: no saved variables")
  return ocp.StandardCheckpointer().restore(path, template)


def save_export(workdir: str, config, variables) -> str:
  """The inference export of a run: `W/export/variables` (params + batch_stats) and
  `W/export/config.json` (the whole config); returns `W/export`."""
  out = os.path.join(workdir, "export")
  os.makedirs(out, exist_ok=True)
  save_variables(out, {"params": variables["params"], "batch_stats": variables["batch_stats"]})
  with open(os.path.join(out, "config.json"), "w") as f:
    f.write(config.to_json(indent=1))
  return out


def load_export(workdir: str):
  """(config, model, variables) of `W/export`: the model rebuilt from its config
  (`models.match_rcnn.build`, so its `auto` choices resolve for the running backend)."""
  from match_rcnn_jax.models import match_rcnn
  export = os.path.join(workdir, "export")
  cfg_path = os.path.join(export, "config.json")
  if not os.path.exists(cfg_path):
    raise FileNotFoundError(f"{cfg_path}: no export; train first (train.py writes W/export)")
  with open(cfg_path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  model = match_rcnn.build(config.model)
  template = match_rcnn.variable_shapes(model, tuple(config.data.canvas))
  return config, model, load_variables(export, template)
