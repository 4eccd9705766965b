"""The printed evaluation tables of a `metrics.json` (`eval.py` and the end of training)."""

from __future__ import annotations


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
