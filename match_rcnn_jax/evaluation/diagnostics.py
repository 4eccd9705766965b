"""Retrieval diagnostics: `hub_share` (does the ranking depend on its query) and
`pair_auc_same_category` (does the match logit separate a product from its look-alikes).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from match_rcnn_jax.data import schema
from match_rcnn_jax.evaluation.retrieval_records import gt_of_source
from match_rcnn_jax.inference.ranking import pairwise_logits, similarity_vector


def first_entry(record: dict) -> tuple:
  """A retrieval record's first gallery entry: (shop image id, box rounded to 0.01)."""
  return (record["gallery_image_id"][0],
          tuple(round(float(v), 2) for v in record["gallery_bbox"][0]))


def hub_share(records) -> float:
  """The share of `records` whose first gallery entry is the most frequent first entry (an
  entry = shop image id + box): near 1 / gallery size for a ranking that depends on its query,
  near 1 when one "hub" item tops every ranking."""
  return hub_share_of(Counter(first_entry(r) for r in records))


def hub_share_of(firsts: Counter) -> float:
  """`hub_share` from the count of each first entry (`first_entry`) over the records."""
  total = sum(firsts.values())
  return firsts.most_common(1)[0][1] / total if total else 0.0


def roc_auc(scores, labels) -> float:
  """Area under the ROC curve of `scores` for binary `labels` (ties count one half); NaN
  without both classes."""
  scores = np.asarray(scores, np.float64)
  labels = np.asarray(labels, bool)
  n_pos, n_neg = int(labels.sum()), int((~labels).sum())
  if not n_pos or not n_neg:
    return float("nan")
  _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
  ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]  # 1-based, ties averaged
  return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def pair_auc_same_category(query_items: list[dict], query_emb, gallery_items: list[dict],
                           gallery_emb, w, b) -> float:
  """ROC AUC of the match logit over every (query item with style > 0, gallery item of the same
  category) pair: positives share pair_id and style, negatives are other products of the
  category, the pairs that only colour and pattern tell apart. Items: {'category_id',
  'pair_id', 'style'}, row-aligned with the embeddings."""
  q = [i for i, it in enumerate(query_items) if it["style"] > 0]
  if not q or not gallery_items:
    return float("nan")
  logits = np.asarray(pairwise_logits(np.asarray(query_emb)[q], gallery_emb, w, b))
  cat = lambda items, idx: np.asarray([items[i]["category_id"] for i in idx])  # noqa: E731
  key = lambda items, idx: np.asarray([(items[i]["pair_id"], items[i]["style"])  # noqa: E731
                                       for i in idx])
  g = range(len(gallery_items))
  same_cat = cat(query_items, q)[:, None] == cat(gallery_items, g)[None, :]
  same = (key(query_items, q)[:, None, :] == key(gallery_items, g)[None, :, :]).all(-1)
  return roc_auc(logits[same_cat], same[same_cat])


def pair_auc(predictions, similarity_params) -> float:
  """`pair_auc_same_category` of the ground-truth garments (users x shops)."""
  users, u_emb = gt_of_source(predictions, schema.Source.USER)
  shops, s_emb = gt_of_source(predictions, schema.Source.SHOP)
  w, b = similarity_vector(similarity_params)
  return pair_auc_same_category(users, u_emb, shops, s_emb, w, b)
