"""The named losses of Match R-CNN from the model's training outputs.

loss = l1 L_cls + l2 L_box + l3 L_landmark + l4 L_mask + l5 L_match + L_rpn_cls + L_rpn_box,
each normalised as torchvision does (RPN and box regression: summed over foreground, divided by
the number of sampled anchors / RoIs; classification: mean over sampled RoIs; mask: mean per
pixel over foreground RoIs; landmarks: cross-entropy over the 56 x 56 positions, mean over
valid landmarks; match: the 2-way cross-entropy of every (shop RoI, user RoI) pair of the
global batch, balanced: the mean over the positive pairs and the mean over the negative pairs,
weighted equally, `loss_match_pos` and `loss_match_neg` logged beside it). Masked means give 0
for a batch without the relevant items, never NaN.
"""

from __future__ import annotations

import jax.numpy as jnp

from match_rcnn_jax.ops import losses as L

NAMES = ("loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box", "loss_mask", "loss_landmark",
         "loss_match")  # the weighted terms of `loss`
MATCH_PARTS = ("loss_match_pos", "loss_match_neg")  # logged beside loss_match
_EPS = 1e-6


def compute(out: dict, weights) -> dict:
  """Returns {name: scalar} for every loss in NAMES and MATCH_PARTS, plus `loss` (the weighted
  total of NAMES)."""
  sampled = out["rpn_sampled"]
  fg_anchor = sampled & (out["rpn_labels"] == 1)
  n_sampled = sampled.sum() + _EPS
  losses = {
      "loss_rpn_cls": L.masked_mean(
          L.sigmoid_bce(out["rpn_logits"], (out["rpn_labels"] == 1).astype(jnp.float32)),
          sampled),
      "loss_rpn_box": (L.smooth_l1(out["rpn_deltas"], out["rpn_box_targets"], 1.0 / 9)
                       * fg_anchor).sum() / n_sampled,
      "loss_cls": L.masked_mean(L.softmax_ce(out["cls_logits"], out["roi_labels"]),
                                out["roi_valid"]),
      "loss_box": (L.smooth_l1(out["box_deltas"], out["box_targets"], 1.0 / 9)
                   * out["roi_is_fg"]).sum() / (out["roi_valid"].sum() + _EPS),
      "loss_mask": L.masked_mean(
          L.sigmoid_bce(out["mask_logits"], out["mask_targets"]).mean((-1, -2)),
          out["mask_valid"]),
      "loss_landmark": L.masked_mean(
          L.softmax_ce(jnp.swapaxes(out["landmark_logits"], -1, -2), out["landmark_targets"]),
          out["landmark_valid"]),
  }
  if "pair_logits" in out:
    # softmax([0, d]) cross-entropy = sigmoid cross-entropy of the logit difference d.
    ce = L.sigmoid_bce(out["pair_logits"], out["pair_labels"].astype(jnp.float32))
    positive = out["pair_labels"] > 0
    losses["loss_match_pos"] = L.masked_mean(ce, out["pair_valid"] & positive)
    losses["loss_match_neg"] = L.masked_mean(ce, out["pair_valid"] & ~positive)
    losses["loss_match"] = 0.5 * (losses["loss_match_pos"] + losses["loss_match_neg"])
  else:
    for name in ("loss_match", *MATCH_PARTS):
      losses[name] = jnp.zeros((), jnp.float32)
  total = (weights.rpn_cls * losses["loss_rpn_cls"] + weights.rpn_box * losses["loss_rpn_box"]
           + weights.cls * losses["loss_cls"] + weights.box * losses["loss_box"]
           + weights.landmark * losses["loss_landmark"] + weights.mask * losses["loss_mask"]
           + weights.match * losses["loss_match"])
  return {**losses, "loss": total}


def pair_counts(out: dict) -> dict:
  """The numbers of positive and negative (shop RoI, user RoI) pairs the match loss saw."""
  if "pair_logits" not in out:
    return {}
  positive = out["pair_labels"] > 0
  return {"match_pairs_pos": (out["pair_valid"] & positive).sum(),
          "match_pairs_neg": (out["pair_valid"] & ~positive).sum()}
