"""torchvision state_dict -> Match R-CNN variables (pure numpy; torch is not imported here).

Accepted checkpoints: a torchvision ResNet (ImageNet classification: `conv1.weight`,
`layer1.0...`, `fc.*`), or a Mask / Keypoint / Faster R-CNN with an FPN backbone
(`backbone.body.*`, `backbone.fpn.*`, `rpn.head.*`, `roi_heads.*`). Layout rules: conv OIHW ->
HWIO; transposed conv (in, out, kh, kw) -> (kh, kw, out, in) with `transpose_kernel`; dense
W -> W.T, except fc6 whose input is re-ordered from torchvision's (C, 7, 7) flattening to our
NHWC (7, 7, C); BatchNorm (weight, bias, running_mean, running_var) -> FrozenBatchNorm
(scale, bias, mean, var). Tensors whose shape differs from the target model (e.g. a COCO
predictor with 91 classes, a 17-keypoint predictor) are skipped and reported.
"""

from __future__ import annotations

import re

import numpy as np
from flax import traverse_util

_BN = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}


def _backbone_key(rest: str):
  """ResNet body key (without prefix) -> (collection, path, kind) or None."""
  m = re.fullmatch(r"conv1\.weight", rest)
  if m:
    return "params", ("backbone", "conv1", "kernel"), "conv"
  m = re.fullmatch(r"bn1\.(weight|bias|running_mean|running_var)", rest)
  if m:
    return "batch_stats", ("backbone", "bn1", _BN[m[1]]), "vec"
  m = re.fullmatch(r"layer(\d)\.(\d+)\.(conv\d|bn\d|downsample\.[01])\.(\w+)", rest)
  if not m:
    return None
  block = f"layer{m[1]}_{m[2]}"
  part, leaf = m[3], m[4]
  if part == "downsample.0":
    part = "downsample_conv"
  elif part == "downsample.1":
    part = "downsample_bn"
  if part.startswith("conv") or part == "downsample_conv":
    return ("params", ("backbone", block, part, "kernel"), "conv") if leaf == "weight" else None
  if leaf in _BN:
    return "batch_stats", ("backbone", block, part, _BN[leaf]), "vec"
  return None  # num_batches_tracked


def _leaf(kind_w: str, leaf: str):
  if leaf == "weight":
    return "kernel", kind_w
  if leaf == "bias":
    return "bias", "vec"
  return None


def map_key(key: str):
  """torchvision key -> (collection, path tuple, kind) in our variables, or None if unused."""
  if key.startswith("backbone.body."):
    return _backbone_key(key[len("backbone.body."):])
  if re.match(r"(conv1|bn1|layer\d)\.", key):
    return _backbone_key(key)
  rules = [
      (r"backbone\.fpn\.inner_blocks\.(\d)(?:\.0)?\.(weight|bias)",
       lambda m: (("fpn", f"inner_{m[1]}"), "conv", m[2])),
      (r"backbone\.fpn\.layer_blocks\.(\d)(?:\.0)?\.(weight|bias)",
       lambda m: (("fpn", f"layer_{m[1]}"), "conv", m[2])),
      (r"rpn\.head\.conv(?:\.0\.0)?\.(weight|bias)", lambda m: (("rpn_head", "conv"), "conv",
                                                                 m[1])),
      (r"rpn\.head\.(cls_logits|bbox_pred)\.(weight|bias)",
       lambda m: (("rpn_head", m[1]), "conv", m[2])),
      (r"roi_heads\.box_head\.fc6\.(weight|bias)", lambda m: (("box_head", "fc6"), "fc6", m[1])),
      (r"roi_heads\.box_head\.fc7\.(weight|bias)", lambda m: (("box_head", "fc7"), "dense",
                                                              m[1])),
      (r"roi_heads\.box_predictor\.(cls_score|bbox_pred)\.(weight|bias)",
       lambda m: (("box_head", m[1]), "dense", m[2])),
      (r"roi_heads\.mask_head\.(\d)\.0\.(weight|bias)",
       lambda m: (("mask_head", f"mask_fcn{int(m[1]) + 1}"), "conv", m[2])),
      (r"roi_heads\.mask_head\.mask_fcn(\d)\.(weight|bias)",
       lambda m: (("mask_head", f"mask_fcn{m[1]}"), "conv", m[2])),
      (r"roi_heads\.mask_predictor\.conv5_mask\.(weight|bias)",
       lambda m: (("mask_head", "conv5_mask"), "deconv", m[1])),
      (r"roi_heads\.mask_predictor\.mask_fcn_logits\.(weight|bias)",
       lambda m: (("mask_head", "mask_fcn_logits"), "conv", m[1])),
      (r"roi_heads\.keypoint_head\.(\d+)\.(weight|bias)",
       lambda m: (("landmark_head", f"kp_fcn{int(m[1]) // 2 + 1}"), "conv", m[2])),
      (r"roi_heads\.keypoint_predictor\.kps_score_lowres\.(weight|bias)",
       lambda m: (("landmark_head", "kps_score_lowres"), "deconv", m[1])),
  ]
  for pattern, fn in rules:
    m = re.fullmatch(pattern, key)
    if m:
      path, kind, leaf = fn(m)
      name, kind = _leaf(kind, leaf)
      return "params", (*path, name), kind
  return None


def convert_tensor(value: np.ndarray, kind: str) -> np.ndarray:
  value = np.asarray(value, np.float32)
  if kind == "conv":
    return value.transpose(2, 3, 1, 0)
  if kind == "deconv":
    return value.transpose(2, 3, 1, 0)
  if kind == "dense":
    return value.T
  if kind == "fc6":
    out, fan_in = value.shape
    side = int(round((fan_in / 256) ** 0.5))
    c = fan_in // (side * side)
    return value.reshape(out, c, side, side).transpose(2, 3, 1, 0).reshape(fan_in, out)
  return value


def convert(state_dict: dict, variables: dict) -> tuple[dict, dict]:
  """Fills `variables` (our model's, as a template) from a torchvision `state_dict`.

  Returns:
    (new variables, report) where report has `loaded`, `skipped_shape` (key, theirs, ours),
    `unused` (keys with no counterpart) and `not_loaded` (our paths left as initialised).
  """
  flat = {col: traverse_util.flatten_dict(v) for col, v in variables.items()}
  filled = {col: dict(v) for col, v in flat.items()}
  loaded, skipped, unused = [], [], []
  for key, value in state_dict.items():
    target = map_key(key)
    if target is None:
      unused.append(key)
      continue
    col, path, kind = target
    if col not in flat or path not in flat[col]:
      unused.append(key)
      continue
    arr = convert_tensor(np.asarray(value), kind)
    ours = flat[col][path]
    if arr.shape != tuple(ours.shape):
      skipped.append((key, list(arr.shape), list(ours.shape)))
      continue
    filled[col][path] = arr.astype(np.asarray(ours).dtype)
    loaded.append((col, path))
  done = set(loaded)
  not_loaded = ["/".join((col, *p)) for col, v in flat.items() for p in v
                if (col, p) not in done]
  out = {col: traverse_util.unflatten_dict(v) for col, v in filled.items()}
  return out, {"loaded": len(loaded), "skipped_shape": skipped, "unused": unused,
               "not_loaded": not_loaded}
