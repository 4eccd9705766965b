"""A model evaluated on a converted split: inference over it, the official result files, and
DeepFashion2's four benchmarks scored from them (detection, segmentation and landmark AP with
per-subset tables, consumer-to-shop retrieval) into `metrics.json`."""

from __future__ import annotations

import json
import os

import numpy as np

from match_rcnn_jax.evaluation import diagnostics, result_files, scoring
from match_rcnn_jax.evaluation.retrieval_records import gt_retrieval_records, retrieval_records

DEFAULT_GALLERY_MIN_SCORE = 0.3  # configs without an `eval` section (older exports)


def evaluate_model(config, model, variables, split: str, out_dir: str, host=None,
                   progress=None, show_progress: bool = False, devices=None) -> dict | None:
  """Runs inference over `split` on every device of every host (`devices`, default all; each
  host reads its own share of the split: `host`, default this process's, see
  `predictions.predict_split`), gathers the results on the first process, and there writes
  `out_dir/results.json` and `out_dir/retrieval_results.json` (the official result formats;
  the detection records are written as inference makes them, only what retrieval ranks is
  held), `out_dir/retrieval_results_gt_boxes.json` (the same format, ground-truth query and
  gallery boxes) and `out_dir/metrics.json`, and returns the metrics (shape in `scoring`).
  Every process must call it; the others write nothing and return None."""
  from match_rcnn_jax.evaluation import predictions  # TensorFlow: not for scoring files alone
  paths = {name: os.path.join(out_dir, name + ".json")
           for name in ("results", "retrieval_results", "retrieval_results_gt_boxes")}
  min_score = config.get("eval", {}).get("gallery_min_score", DEFAULT_GALLERY_MIN_SCORE)
  within = bool(config.get("eval", {}).get("rank_within_category", False))
  os.makedirs(out_dir, exist_ok=True)
  pred = predictions.predict_split(config, model, variables, split, host=host, progress=progress,
                                   with_embeddings=True, records_path=paths["results"],
                                   gallery_min_score=min_score, devices=devices)
  if pred is None:  # not the first process: its results went there
    return None
  similarity = variables["params"]["similarity"]
  ret = retrieval_records(pred.records, pred.embeddings, pred.sources, similarity, min_score,
                          within_category=within)
  for name, data in (("retrieval_results", ret),
                     ("retrieval_results_gt_boxes",
                      gt_retrieval_records(pred, similarity, within_category=within))):
    with result_files.JsonArrayWriter(paths[name]) as writer:
      writer.extend(data)
  metrics = scoring.score_file(config.data.dir, split, paths["results"],
                               paths["retrieval_results"], paths["retrieval_results_gt_boxes"],
                               show_progress=show_progress)
  auc = diagnostics.pair_auc(pred, similarity)
  metrics["retrieval_diagnostics"]["pair_auc_same_category"] = (
      None if np.isnan(auc) else round(auc, 4))
  with open(os.path.join(out_dir, "metrics.json"), "w") as f:
    json.dump(metrics, f, indent=1)
  return metrics


