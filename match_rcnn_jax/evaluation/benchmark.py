"""DeepFashion2's four benchmarks for a model on a converted split: detection, segmentation and
landmark AP (with per-subset tables) and consumer-to-shop retrieval."""

from __future__ import annotations

import json
import os

import numpy as np

from match_rcnn_jax.data import schema
from match_rcnn_jax.evaluation import results, retrieval, scoring

DEFAULT_GALLERY_MIN_SCORE = 0.3  # configs without an `eval` section (older exports)


def retrieval_records(records: list[dict], embeddings: np.ndarray, sources: np.ndarray,
                      similarity_params, gallery_min_score: float = 0.0, progress=None,
                      within_category: bool = False):
  """Official retrieval result records, one at a time: every detection in a user image is a
  query, ranked against the detections in shop images scoring at least `gallery_min_score`
  (`within_category`: those of the query's predicted category first)."""
  def items(mask):
    sel = np.nonzero(mask)[0]
    out = []
    for i in sel:
      x, y, w, h = records[i]["bbox"]
      out.append({"image_id": records[i]["image_id"], "bbox": [x, y, x + w, y + h],
                  "category_id": records[i]["category_id"], "score": records[i]["score"]})
    return out, embeddings[sel]

  scores = np.asarray([r["score"] for r in records], np.float64)
  queries, q_emb = items(sources == int(schema.Source.USER))
  gallery, g_emb = items((sources == int(schema.Source.SHOP)) & (scores >= gallery_min_score))
  w, b = retrieval.similarity_vector(similarity_params)
  return retrieval.iter_records(queries, gallery, q_emb, g_emb, w, b, progress=progress,
                                within_category=within_category)


def _gt_of_source(predictions, source) -> tuple[list[dict], np.ndarray]:
  """The ground-truth garments of `source`'s images and their embeddings."""
  sel = [i for i, it in enumerate(predictions.gt_items) if it["source"] == int(source)]
  return [predictions.gt_items[i] for i in sel], predictions.gt_embeddings[sel]


def gt_retrieval_records(predictions, similarity_params, progress=None,
                         within_category: bool = False) -> list[dict]:
  """Retrieval records with ground-truth boxes (the paper's "GT box" column): every garment of
  a user image is a query (category and box of its ground truth, score 1), ranked against every
  garment of the shop images (style 0 included) by the match network on those boxes
  (`within_category`: those of the query's ground-truth category first)."""
  def entries(items):
    return [{"image_id": it["image_id"], "bbox": it["bbox"], "category_id": it["category_id"],
             "score": 1.0} for it in items]

  users, q_emb = _gt_of_source(predictions, schema.Source.USER)
  shops, g_emb = _gt_of_source(predictions, schema.Source.SHOP)
  w, b = retrieval.similarity_vector(similarity_params)
  return retrieval.make_records(entries(users), entries(shops), q_emb, g_emb, w, b,
                                progress=progress, within_category=within_category)


def pair_auc(predictions, similarity_params) -> float:
  """`retrieval.pair_auc_same_category` of the ground-truth garments (users x shops)."""
  users, u_emb = _gt_of_source(predictions, schema.Source.USER)
  shops, s_emb = _gt_of_source(predictions, schema.Source.SHOP)
  w, b = retrieval.similarity_vector(similarity_params)
  return retrieval.pair_auc_same_category(users, u_emb, shops, s_emb, w, b)


def evaluate_model(config, model, variables, split: str, out_dir: str, host=(0, 1),
                   progress=None, show_progress: bool = False) -> dict:
  """Runs inference over `split`, writes `out_dir/results.json` and
  `out_dir/retrieval_results.json` (the official result formats; the detection records are
  written as inference makes them, only what retrieval ranks is held),
  `out_dir/retrieval_results_gt_boxes.json` (the same format, ground-truth query and gallery
  boxes) and `out_dir/metrics.json`, and returns the metrics (shape in `scoring`)."""
  from match_rcnn_jax.evaluation import predictions  # TensorFlow: not for scoring files alone
  os.makedirs(out_dir, exist_ok=True)
  paths = {name: os.path.join(out_dir, name + ".json")
           for name in ("results", "retrieval_results", "retrieval_results_gt_boxes")}
  min_score = config.get("eval", {}).get("gallery_min_score", DEFAULT_GALLERY_MIN_SCORE)
  within = bool(config.get("eval", {}).get("rank_within_category", False))
  pred = predictions.predict_split(config, model, variables, split, host=host, progress=progress,
                                   with_embeddings=True, records_path=paths["results"],
                                   gallery_min_score=min_score)
  similarity = variables["params"]["similarity"]
  ret = retrieval_records(pred.records, pred.embeddings, pred.sources, similarity, min_score,
                          within_category=within)
  for name, data in (("retrieval_results", ret),
                     ("retrieval_results_gt_boxes",
                      gt_retrieval_records(pred, similarity, within_category=within))):
    with results.JsonArrayWriter(paths[name]) as writer:
      writer.extend(data)
  metrics = scoring.score_file(config.data.dir, split, paths["results"],
                               paths["retrieval_results"], paths["retrieval_results_gt_boxes"],
                               show_progress=show_progress)
  auc = pair_auc(pred, similarity)
  metrics["retrieval_diagnostics"]["pair_auc_same_category"] = (
      None if np.isnan(auc) else round(auc, 4))
  with open(os.path.join(out_dir, "metrics.json"), "w") as f:
    json.dump(metrics, f, indent=1)
  return metrics


def _fmt(v) -> str:
  return f"{v:8.3f}" if v is not None else f"{'-':>8}"


_RETRIEVAL = {"retrieval": "retrieval, detected boxes",
              "retrieval_gt_boxes": "retrieval, ground-truth boxes"}


def table(metrics: dict) -> str:
  """The printed tables: overall AP, per-subset AP, retrieval top-k (both box kinds, overall
  and by subset) and the retrieval diagnostics."""
  lines = [f"{'task':<20}{'AP':>8}{'AP50':>8}{'AP75':>8}"]
  for name, m in metrics.items():
    if name in ("subsets", "retrieval_diagnostics", "retrieval_reference", "retrieval_lift",
                *_RETRIEVAL):
      continue
    lines.append(f"{name:<20}{m['AP']:8.3f}{m['AP50']:8.3f}{m['AP75']:8.3f}")
  subsets = metrics.get("subsets", {})
  for task, attrs in subsets.items():
    if task in _RETRIEVAL or attrs is None:
      continue
    lines.append("")
    lines.append(f"{task} AP by subset")
    for attr, values in attrs.items():
      cells = "  ".join(f"{name} {m['AP']:.3f}" if m else f"{name} -"
                        for name, m in values.items())
      lines.append(f"  {attr:<10} {cells}")
  for key, title in _RETRIEVAL.items():
    if key not in metrics:
      continue
    lines.append("")
    lines.append(f"{title}: " + "  ".join(f"{k} {v:.3f}" for k, v in metrics[key].items()))
    if subsets.get(key):
      lines.append("  top-1 / top-20 by subset of the query item")
      for attr, values in subsets[key].items():
        cells = "  ".join(f"{name} {m['top1']:.3f}/{m['top20']:.3f}" if m else f"{name} -"
                          for name, m in values.items())
        lines.append(f"  {attr:<10} {cells}")
  reference = metrics.get("retrieval_reference")
  if reference:
    lines.append("")
    lines.append("retrieval, no-model reference rankers (ground-truth boxes):")
    for name, m in reference.items():
      lines.append(f"  {name:<26} " + "  ".join(f"{k} {v:.3f}" for k, v in m.items()))
    lift = metrics.get("retrieval_lift")
    if lift:
      lines.append("  lift of the model over the best reference: " + "  ".join(
          f"{k} {v:+.3f}" for k, v in lift.items()))
  diag = metrics.get("retrieval_diagnostics")
  if diag:
    lines.append("")
    lines.append("retrieval diagnostics: " + "  ".join(
        f"{k} {v:.3f}" if v is not None else f"{k} -" for k, v in diag.items()))
  return "\n".join(lines)
