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

import jax
import jax.numpy as jnp

from match_rcnn_jax.ops import losses as L

NAMES = ("loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box", "loss_mask", "loss_landmark",
         "loss_match")  # the weighted terms of `loss`
MATCH_PARTS = ("loss_match_pos", "loss_match_neg")  # logged beside loss_match
LIST_PARTS = ("loss_match_list",)  # the listwise match term, weighted by match_list
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
    losses.update(pair_match(out))
    losses["loss_match_list"] = listwise_match(out)
  else:
    for name in ("loss_match", *MATCH_PARTS, *LIST_PARTS):
      losses[name] = jnp.zeros((), jnp.float32)
  total = (weights.rpn_cls * losses["loss_rpn_cls"] + weights.rpn_box * losses["loss_rpn_box"]
           + weights.cls * losses["loss_cls"] + weights.box * losses["loss_box"]
           + weights.landmark * losses["loss_landmark"] + weights.mask * losses["loss_mask"]
           + weights.match * losses["loss_match"]
           + weights.get("match_list", 0.0) * losses["loss_match_list"])
  return {**losses, "loss": total}


def pair_match(out: dict) -> dict:
  """The paper's pair cross-entropy of `pair_logits` / `pair_labels` / `pair_valid`, balanced:
  {"loss_match_pos", "loss_match_neg", "loss_match" (their mean)}."""
  # softmax([0, d]) cross-entropy = sigmoid cross-entropy of the logit difference d.
  ce = L.sigmoid_bce(out["pair_logits"], out["pair_labels"].astype(jnp.float32))
  positive = out["pair_labels"] > 0
  pos = L.masked_mean(ce, out["pair_valid"] & positive)
  neg = L.masked_mean(ce, out["pair_valid"] & ~positive)
  return {"loss_match_pos": pos, "loss_match_neg": neg, "loss_match": 0.5 * (pos + neg)}


def listwise_match(out: dict):
  """The ranking question as a loss: for each user RoI with a positive among its candidates
  (every shop RoI of the global batch, and the memory's earlier shop embeddings where
  `memory_logits` is given), -log of the softmax mass of its positives over all valid
  candidates, with the match logits d as the logits; the mean over those user RoIs."""
  logits, labels, valid = out["pair_logits"], out["pair_labels"] > 0, out["pair_valid"]
  if "memory_logits" in out:
    logits = jnp.concatenate([logits, out["memory_logits"]], 0)
    labels = jnp.concatenate([labels, out["memory_labels"] > 0], 0)
    valid = jnp.concatenate([valid, out["memory_valid"]], 0)
  logits = logits.astype(jnp.float32)
  positive = labels & valid
  has_positive = positive.any(0)
  low = jnp.finfo(jnp.float32).min
  lse_all = jax.nn.logsumexp(jnp.where(valid, logits, low), axis=0)
  lse_pos = jax.nn.logsumexp(jnp.where(positive, logits, low), axis=0)
  return L.masked_mean(jnp.where(has_positive, lse_all - lse_pos, 0.0), has_positive)


def pair_counts(out: dict) -> dict:
  """The numbers of positive and negative (shop RoI, user RoI) pairs the match loss saw."""
  if "pair_logits" not in out:
    return {}
  positive = out["pair_labels"] > 0
  return {"match_pairs_pos": (out["pair_valid"] & positive).sum(),
          "match_pairs_neg": (out["pair_valid"] & ~positive).sum()}
