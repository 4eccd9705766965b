"""Detection, segmentation and landmark AP of a model on a converted split."""

from __future__ import annotations

import json
import os

from match_rcnn_jax.evaluation import predict, scoring


def evaluate_model(config, model, variables, split: str, out_dir: str, host=(0, 1)) -> dict:
  """Runs inference over `split`, writes `out_dir/results.json` (official result records) and
  `out_dir/metrics.json`, and returns {task: {'AP', 'AP50', 'AP75'}}."""
  records = predict.predict_split(config, model, variables, split, host=host)
  metrics = scoring.score(os.path.join(config.data.dir, f"{split}_coco.json"), records)
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "results.json"), "w") as f:
    json.dump(records, f)
  with open(os.path.join(out_dir, "metrics.json"), "w") as f:
    json.dump(metrics, f, indent=1)
  return metrics


def table(metrics: dict) -> str:
  lines = [f"{'task':<20}{'AP':>8}{'AP50':>8}{'AP75':>8}"]
  for name, m in metrics.items():
    lines.append(f"{name:<20}{m['AP']:8.3f}{m['AP50']:8.3f}{m['AP75']:8.3f}")
  return "\n".join(lines)
