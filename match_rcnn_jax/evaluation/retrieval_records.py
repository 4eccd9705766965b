"""Retrieval result records in the official format from the match network's embeddings: the
detections of a split (`retrieval_records`: every detection in a user image a query, the
gallery-worthy shop detections its gallery) and its ground-truth garments
(`gt_retrieval_records`, the paper's "GT box" column).
"""

from __future__ import annotations

import numpy as np

from match_rcnn_jax.data import schema
from match_rcnn_jax.inference.ranking import NUM_RANKED, rank, similarity_vector


def make_records(queries: list[dict], gallery: list[dict], query_emb: np.ndarray,
                 gallery_emb: np.ndarray, w, b, progress=None,
                 within_category: bool = False) -> list[dict]:
  """Retrieval result records: for every query detection, its NUM_RANKED best gallery
  detections by match logit.

  queries / gallery: detections {'image_id', 'bbox' [x1, y1, x2, y2], 'category_id',
  'score'}; the embeddings are row-aligned with them. A gallery of fewer than NUM_RANKED
  items is padded by repeating its last ranked entry (the official format needs 20; a repeat
  can never turn a miss into a hit). Empty when either side is empty. `within_category`: the
  gallery items of the query's category (its `category_id`) ranked first (`rank`).
  """
  return list(iter_records(queries, gallery, query_emb, gallery_emb, w, b, progress,
                           within_category))


def iter_records(queries: list[dict], gallery: list[dict], query_emb: np.ndarray,
                 gallery_emb: np.ndarray, w, b, progress=None, within_category: bool = False):
  """`make_records`, one record at a time (the ranking is done first, then each record is
  made as it is taken: a million queries' records need not be held at once)."""
  if not queries or not gallery:
    return
  classes = {}
  if within_category:
    classes = {"query_classes": [q["category_id"] for q in queries],
               "gallery_classes": [g["category_id"] for g in gallery]}
  idx, _ = rank(query_emb, gallery_emb, w, b, NUM_RANKED, progress=progress, **classes)
  for q, row in zip(queries, idx):
    row = [int(i) for i in row if i >= 0]
    row += [row[-1]] * (NUM_RANKED - len(row))
    yield {"query_image_id": int(q["image_id"]),
           "query_bbox": [float(v) for v in q["bbox"]],
           "query_cls": int(q["category_id"]), "query_score": float(q["score"]),
           "gallery_image_id": [int(gallery[i]["image_id"]) for i in row],
           "gallery_bbox": [[float(v) for v in gallery[i]["bbox"]] for i in row]}


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
  w, b = similarity_vector(similarity_params)
  return iter_records(queries, gallery, q_emb, g_emb, w, b, progress=progress,
                                within_category=within_category)


def gt_of_source(predictions, source) -> tuple[list[dict], np.ndarray]:
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

  users, q_emb = gt_of_source(predictions, schema.Source.USER)
  shops, g_emb = gt_of_source(predictions, schema.Source.SHOP)
  w, b = similarity_vector(similarity_params)
  return make_records(entries(users), entries(shops), q_emb, g_emb, w, b,
                                progress=progress, within_category=within_category)
