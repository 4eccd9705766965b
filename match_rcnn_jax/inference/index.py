"""A retrieval index of detected shop garments, ranked exactly by the match network.

    index = Index(predictor, shop_image_paths)
    results = search(index, predictor([query_image])[0], variables["params"]["similarity"], 5)

Every garment detected in the gallery images is indexed by its match embedding; every query
detection is ranked against the whole index by the match network's exact probability (one
matrix product, `inference.ranking.rank`).
"""

from __future__ import annotations

import numpy as np

from match_rcnn_jax.inference import predictor as predictor_lib
from match_rcnn_jax.inference import ranking


class Index:
  """Detected gallery garments: their images, detections and embeddings [N, D]."""

  def __init__(self, predictor: predictor_lib.Predictor, paths: list[str]):
    self.paths, self.items, embs = paths, [], []
    for start in range(0, len(paths), 64):  # bounded memory for large folders
      chunk = paths[start:start + 64]
      for path, dets in zip(chunk, predictor([predictor_lib.read_image(p) for p in chunk])):
        for d in dets:
          self.items.append({"image": path, **predictor_lib.public(d)})
          embs.append(d["embedding"])
    dim = predictor.config.model.match_head.dim
    self.embeddings = np.stack(embs) if embs else np.zeros((0, dim), np.float32)


def search(index: Index, detections: list[dict], similarity_params, top_k: int) -> list[dict]:
  """Each query detection with its `top_k` gallery matches, best first."""
  if not detections or not index.items:
    return [{**predictor_lib.public(d), "matches": []} for d in detections]
  w, b = ranking.similarity_vector(similarity_params)
  idx, logits = ranking.rank(np.stack([d["embedding"] for d in detections]),
                               index.embeddings, w, b, k=top_k)
  out = []
  for d, row, vals in zip(detections, idx, logits):
    matches = [{"image": index.items[i]["image"], "bbox": index.items[i]["bbox"],
                "category_name": index.items[i]["category_name"],
                "match_probability": float(ranking.sigmoid(v))}
               for i, v in zip(row, vals) if i >= 0]
    out.append({**predictor_lib.public(d), "matches": matches})
  return out

