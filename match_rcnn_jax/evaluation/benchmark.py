"""DeepFashion2's four benchmarks for a model on a converted split: detection, segmentation and
landmark AP (with per-subset tables) and consumer-to-shop retrieval."""

from __future__ import annotations

import json
import os

import numpy as np

from match_rcnn_jax.data import schema
from match_rcnn_jax.evaluation import retrieval, scoring

DEFAULT_GALLERY_MIN_SCORE = 0.3  # configs without an `eval` section (older exports)


def retrieval_records(records: list[dict], embeddings: np.ndarray, sources: np.ndarray,
                      similarity_params, gallery_min_score: float = 0.0,
                      progress=None) -> list[dict]:
  """Official retrieval result records: every detection in a user image is a query, ranked
  against the detections in shop images scoring at least `gallery_min_score`."""
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
  return retrieval.make_records(queries, gallery, q_emb, g_emb, w, b, progress=progress)


def evaluate_model(config, model, variables, split: str, out_dir: str, host=(0, 1),
                   progress=None) -> dict:
  """Runs inference over `split`, writes `out_dir/results.json` and
  `out_dir/retrieval_results.json` (the official result formats) and `out_dir/metrics.json`,
  and returns the metrics (shape in `scoring`)."""
  from match_rcnn_jax.evaluation import inference  # TensorFlow: not for scoring files alone
  records, embeddings, sources = inference.predict_split(
      config, model, variables, split, host=host, progress=progress, with_embeddings=True)
  min_score = config.get("eval", {}).get("gallery_min_score", DEFAULT_GALLERY_MIN_SCORE)
  ret = retrieval_records(records, embeddings, sources, variables["params"]["similarity"],
                          min_score)
  os.makedirs(out_dir, exist_ok=True)
  results_path = os.path.join(out_dir, "results.json")
  retrieval_path = os.path.join(out_dir, "retrieval_results.json")
  with open(results_path, "w") as f:
    json.dump(records, f)
  with open(retrieval_path, "w") as f:
    json.dump(ret, f)
  metrics = scoring.score_file(config.data.dir, split, results_path, retrieval_path)
  with open(os.path.join(out_dir, "metrics.json"), "w") as f:
    json.dump(metrics, f, indent=1)
  return metrics


def _fmt(v) -> str:
  return f"{v:8.3f}" if v is not None else f"{'-':>8}"


def table(metrics: dict) -> str:
  """The printed tables: overall AP, per-subset AP50 / AP, retrieval top-k."""
  lines = [f"{'task':<20}{'AP':>8}{'AP50':>8}{'AP75':>8}"]
  for name, m in metrics.items():
    if name in ("subsets", "retrieval"):
      continue
    lines.append(f"{name:<20}{m['AP']:8.3f}{m['AP50']:8.3f}{m['AP75']:8.3f}")
  for task, attrs in metrics.get("subsets", {}).items():
    lines.append("")
    lines.append(f"{task} AP by subset")
    for attr, values in attrs.items():
      cells = "  ".join(f"{name} {m['AP']:.3f}" if m else f"{name} -"
                        for name, m in values.items())
      lines.append(f"  {attr:<10} {cells}")
  if "retrieval" in metrics:
    r = metrics["retrieval"]
    lines.append("")
    lines.append("retrieval " + "  ".join(f"{k} {v:.3f}" for k, v in r.items()))
  return "\n".join(lines)
