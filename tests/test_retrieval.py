import json
import os
from collections import Counter

import jax
import numpy as np
import pytest

from match_rcnn_jax.evaluation import diagnostics, retrieval, retrieval_records
from match_rcnn_jax.inference import ranking
from match_rcnn_jax.models import matching

# ---------------------------------------------------------------------------- ranking


def test_rank_is_exactly_the_similarity_network_pair_by_pair():
  rng = np.random.default_rng(0)
  dim = 16
  queries = rng.normal(size=(37, dim)).astype(np.float32)
  gallery = rng.normal(size=(1500, dim)).astype(np.float32)  # > one 1024 padding block
  sim = matching.Similarity(dim=16)
  params = sim.init(jax.random.PRNGKey(1), queries[:1], gallery[:1])["params"]
  params = {"weight": rng.normal(size=dim).astype(np.float32) * 2, "bias": np.float32(0.3)}
  # Scored one pair at a time by the module itself.
  logits = np.stack([np.asarray(sim.apply({"params": params}, np.repeat(q[None], len(gallery),
                                                                         0), gallery))
                     for q in queries])  # [Q, G, 2]
  d = logits[..., 1] - logits[..., 0]
  w, b = ranking.similarity_vector(params)
  idx, val = ranking.rank(queries, gallery, w, b, k=20, block=16)  # 3 blocks, last padded
  expect = np.argsort(-d, axis=1, kind="stable")[:, :20]
  np.testing.assert_array_equal(idx, expect)
  np.testing.assert_allclose(val, np.take_along_axis(d, expect, 1), rtol=1e-4, atol=1e-4)
  # sigmoid of the logit difference is the network's softmax match probability.
  p = np.exp(logits[..., 1]) / np.exp(logits).sum(-1)
  np.testing.assert_allclose(ranking.sigmoid(val[:, 0]), p[np.arange(37), expect[:, 0]],
                             rtol=1e-4)


def test_rank_with_a_gallery_smaller_than_k():
  w, b = -np.ones(4, np.float32), 0.0
  g = np.array([[0, 0, 0, 0], [1, 1, 1, 1], [3, 3, 3, 3]], np.float32)
  idx, val = ranking.rank(np.array([[1.1, 1, 1, 1]], np.float32), g, w, b, k=5)
  # w = -1: logit = -|q - g|^2 -> nearest first.
  np.testing.assert_array_equal(idx[0], [1, 0, 2, -1, -1])
  assert np.isneginf(val[0, 3:]).all()
  np.testing.assert_allclose(val[0, 0], -0.01, atol=1e-5)


def test_rank_within_category_puts_the_querys_category_first():
  w, b = -np.ones(2, np.float32), 0.0
  g = np.array([[0, 0], [1, 1], [2, 2], [5, 5]], np.float32)
  q = np.array([[0.9, 0.9], [4.0, 4.0]], np.float32)
  idx, _ = ranking.rank(q, g, w, b, k=4)
  np.testing.assert_array_equal(idx, [[1, 0, 2, 3], [3, 2, 1, 0]])
  # gallery categories 1, 2, 1, 2: each query's category first, each part nearest first
  idx, val = ranking.rank(q, g, w, b, k=4, query_classes=[1, 1],
                            gallery_classes=[1, 2, 1, 2])
  np.testing.assert_array_equal(idx, [[0, 2, 1, 3], [2, 0, 3, 1]])
  np.testing.assert_allclose(val[0, :2], [-1.62, -2.42], atol=1e-4)  # logits unchanged
  records = retrieval_records.make_records(
      [{"image_id": 1, "bbox": [0, 0, 1, 1], "category_id": 2, "score": 1.0}],
      [{"image_id": 10 + i, "bbox": [0, 0, 1, 1], "category_id": c, "score": 1.0}
       for i, c in enumerate([1, 2, 1, 2])], q[:1], g, w, b, within_category=True)
  assert records[0]["gallery_image_id"][:4] == [11, 13, 10, 12]


# ---------------------------------------------------------------------------- protocol
# Two user images (10, 11) and shop images 20 (pair 1), 21 (pair 1), 30 (pair 2).

QUERY_GT = [
    {"query_image_id": 10, "style": 1, "cls": 1, "pair_id": 1, "bbox": [0, 0, 50, 50]},
    {"query_image_id": 10, "style": 0, "cls": 7, "pair_id": 1, "bbox": [60, 60, 100, 100]},
    {"query_image_id": 10, "style": 2, "cls": 8, "pair_id": 1, "bbox": [0, 60, 40, 100]},
    {"query_image_id": 11, "style": 1, "cls": 3, "pair_id": 2, "bbox": [10, 10, 90, 90]},
]
GALLERY_GT = [
    {"gallery_image_id": 20, "style": 1, "pair_id": 1, "bbox": [0, 0, 100, 100]},
    {"gallery_image_id": 21, "style": 2, "pair_id": 1, "bbox": [50, 50, 100, 100]},
    {"gallery_image_id": 30, "style": 1, "pair_id": 2, "bbox": [20, 20, 80, 80]},
]
MISS = (30, [0, 0, 10, 10])


def _rec(image, box, cls, score, ranked):
  ranked = list(ranked) + [MISS] * (20 - len(ranked))
  return {"query_image_id": image, "query_bbox": box, "query_cls": cls, "query_score": score,
          "gallery_image_id": [g for g, _ in ranked], "gallery_bbox": [b for _, b in ranked]}


def _score(records):
  return retrieval.score(QUERY_GT, GALLERY_GT, records)


def test_top_k_counts_the_first_target_rank_over_style_items():
  # Item 0 found at rank 0, item 2 (style 2 -> image 21) at rank 6, item 3 at rank 12.
  recs = [_rec(10, [0, 0, 50, 50], 1, 0.9, [(20, [0, 0, 100, 100])]),
          _rec(10, [0, 60, 40, 100], 8, 0.9, [MISS] * 6 + [(21, [50, 50, 100, 100])]),
          _rec(11, [10, 10, 90, 90], 3, 0.9, [MISS] * 12 + [(30, [20, 20, 80, 80])])]
  # 3 style > 0 query items: the style-0 item is not in the denominator.
  assert _score(recs) == {"top1": 1 / 3, "top5": 1 / 3, "top10": 2 / 3, "top15": 1.0,
                          "top20": 1.0}


def test_hit_needs_target_image_same_style_and_iou_half():
  box = [0, 0, 50, 50]
  cases = [
      ((20, [0, 0, 100, 60]), 1.0),   # IoU 0.6 with the target box
      ((20, [0, 0, 100, 45]), 0.0),   # IoU 0.45
      ((21, [50, 50, 100, 100]), 0.0),  # same pair_id, other style
      ((30, [20, 20, 80, 80]), 0.0),  # other pair_id
  ]
  for entry, top1 in cases:
    assert _score([_rec(10, box, 1, 0.9, [entry])])["top1"] == pytest.approx(top1 / 3)


def test_wrong_category_is_a_miss_and_best_score_represents_the_item():
  good = [(20, [0, 0, 100, 100])]
  assert _score([_rec(10, [0, 0, 50, 50], 2, 0.9, good)])["top20"] == 0.0
  # Two detections of the right class on item 0: the higher score one (a miss) represents it.
  recs = [_rec(10, [0, 0, 50, 50], 1, 0.5, good), _rec(10, [0, 0, 48, 48], 1, 0.8, [MISS])]
  assert _score(recs)["top20"] == 0.0
  recs[0]["query_score"] = 0.9
  assert _score(recs)["top20"] == pytest.approx(1 / 3)


def test_assignment_has_no_iou_floor():
  # Overlaps nothing: assigned to the image's first item (a quirk of the official code), which
  # it then represents, and its hit counts.
  rec = _rec(10, [200, 200, 220, 220], 1, 0.9, [(20, [0, 0, 100, 100])])
  assert _score([rec])["top1"] == pytest.approx(1 / 3)
  # A detection is assigned to the item it overlaps most, even a style-0 item: not item 0.
  rec = _rec(10, [30, 30, 100, 100], 1, 0.9, [(20, [0, 0, 100, 100])])
  assert _score([rec])["top1"] == 0.0


def test_images_without_detections_and_empty_files_are_misses():
  assert _score([]) == {f"top{k}": 0.0 for k in retrieval.TOP_K}


def test_validation_names_the_record():
  ids = {10, 11, 20, 21, 30}
  good = _rec(10, [0, 0, 50, 50], 1, 0.9, [])
  retrieval.validate([good], ids, "r.json")
  cases = [({"gallery_image_id": good["gallery_image_id"][:19]},
            "record 0: gallery_image_id must list 20 image ids"),
           ({"query_image_id": 99}, "record 0: query_image_id 99 is not an image of the split"),
           ({"query_bbox": [1, 2, 3]}, "record 0: query_bbox must be 4 numbers"),
           ({"query_cls": 0}, "record 0: query_cls 0 is not in 1..13")]
  for change, message in cases:
    with pytest.raises(retrieval.RetrievalResultsError, match=message):
      retrieval.validate([{**good, **change}], ids, "r.json")
  bad = dict(good)
  del bad["query_score"]
  with pytest.raises(retrieval.RetrievalResultsError, match="missing key 'query_score'"):
    retrieval.validate([bad], ids, "r.json")


def test_make_records_pads_short_galleries_and_keeps_the_format():
  queries = [{"image_id": 10, "bbox": [0, 0, 50, 50], "category_id": 1, "score": 0.9}]
  gallery = [{"image_id": 20, "bbox": [0, 0, 100, 100], "category_id": 1, "score": 0.8},
             {"image_id": 30, "bbox": [20, 20, 80, 80], "category_id": 3, "score": 0.7}]
  q = np.array([[1.0, 0.0]], np.float32)
  g = np.array([[0.0, 0.0], [1.0, 0.1]], np.float32)
  (rec,) = retrieval_records.make_records(queries, gallery, q, g, -np.ones(2, np.float32), 0.0)
  assert rec["gallery_image_id"] == [30] + [20] * 19
  assert len(rec["gallery_bbox"]) == 20 and rec["gallery_bbox"][0] == [20, 20, 80, 80]
  retrieval.validate([rec], {10, 20, 30}, "x")
  assert retrieval_records.make_records(queries, [], q, g[:0], np.ones(2), 0.0) == []


# ---------------------------------------------------------------------------- GT boxes, subsets


def _gt_predictions(data_dir, perfect: bool):
  """`predictions.SplitPredictions` of the split's ground-truth garments with embeddings that
  are one-hot per product (perfect: equal for the same pair_id and style > 0, distinct
  otherwise) or random."""
  from match_rcnn_jax.data import schema
  from match_rcnn_jax.evaluation import predictions
  with open(os.path.join(data_dir, "validation_coco.json")) as f:
    coco = json.load(f)
  items, keys = [], {}
  for a in coco["annotations"]:
    x, y, w, h = a["bbox"]
    items.append({"image_id": a["image_id"], "bbox": [x, y, x + w, y + h],
                  "category_id": a["category_id"], "style": a["style"],
                  "pair_id": a["pair_id"], "source": int(schema.Source[a["source"].upper()]),
                  **{k: a[k] for k in schema.ATTRIBUTES}})
    key = (a["pair_id"], a["style"]) if a["style"] > 0 else ("item", a["id"])
    keys.setdefault(key, len(keys))
  emb = np.eye(len(keys), dtype=np.float32)[[
      keys[(it["pair_id"], it["style"]) if it["style"] > 0 else ("item", a["id"])]
      for it, a in zip(items, coco["annotations"])]] * 3.0
  if not perfect:
    emb = np.random.default_rng(0).normal(size=emb.shape).astype(np.float32)
  return predictions.SplitPredictions([], np.zeros((0, emb.shape[1]), np.float32),
                                    np.zeros((0,), np.int64), items, emb)


@pytest.mark.parametrize("perfect", [True, False])
def test_gt_box_retrieval_and_subsets_with_perfect_embeddings(tiny_config, tmp_path, perfect):
  """Ground-truth-box retrieval: perfect embeddings rank a garment's product first for every
  query, in every subset; the pair AUC is 1 and no item is a hub. Random ones do not."""
  from match_rcnn_jax.evaluation import scoring
  data_dir = tiny_config.data.dir
  pred = _gt_predictions(data_dir, perfect)
  dim = pred.gt_embeddings.shape[1]
  params = {"weight": np.full((dim,), np.log(np.expm1(1.0 / dim)), np.float32),
            "bias": np.float32(0.0)}
  records = retrieval_records.gt_retrieval_records(pred, params)
  with open(os.path.join(data_dir, "validation_query.json")) as f:
    query = json.load(f)
  assert len(records) == len(query)  # every user garment, style 0 included, is a query
  path = tmp_path / "gt.json"
  path.write_text(json.dumps(records))
  metrics = scoring.score_file(data_dir, "validation", None, None, str(path))
  top = metrics["retrieval_gt_boxes"]
  table = metrics["subsets"]["retrieval_gt_boxes"]
  assert set(table) == {"scale", "occlusion", "zoom_in", "viewpoint"}
  cells = [m for values in table.values() for m in values.values() if m is not None]
  assert len(cells) >= 4
  auc = diagnostics.pair_auc(pred, params)
  hub = metrics["retrieval_diagnostics"]["hub_share_gt_boxes"]
  if perfect:
    assert top == {f"top{k}": 1.0 for k in (1, 5, 10, 15, 20)}
    assert all(m["top1"] == 1.0 for m in cells)
    assert auc == 1.0
    # Every query's top-1 is the first shop item of its own product: the hub is the product
    # with the most queries.
    products = Counter((q["pair_id"], q["style"]) for q in query)
    assert hub == max(products.values()) / len(query)
  else:
    assert top["top1"] < 0.9 and 0.0 < auc < 1.0
    assert 0.0 < hub <= 1.0


def test_subsets_count_each_query_in_its_attribute_value():
  """score_subsets: top-k over the query items of each attribute value (hand-built)."""
  items = [{"query_image_id": i, "style": 1, "cls": 1, "pair_id": i, "bbox": [0, 0, 1, 1]}
           for i in range(3)]
  results = [retrieval.QueryResult(items[0], {"x": 1}, [True] + [False] * 19),
             retrieval.QueryResult(items[1], {"x": 1}, [False] * 5 + [True] + [False] * 14),
             retrieval.QueryResult(items[2], None, [])]
  attrs = {0: {"scale": 1, "zoom_in": 1}, 1: {"scale": 1, "zoom_in": 2}, 2: {"scale": 3}}
  table = retrieval.score_subsets(results, lambda it: attrs[it["query_image_id"]])
  assert table["scale"]["small"] == {"top1": 0.5, "top5": 0.5, "top10": 1.0, "top15": 1.0,
                                     "top20": 1.0}
  assert table["scale"]["moderate"] is None
  assert table["scale"]["large"]["top20"] == 0.0  # a miss
  assert table["zoom_in"]["no"]["top1"] == 1.0 and table["zoom_in"]["medium"]["top1"] == 0.0
  assert table["occlusion"] == {"slight": None, "medium": None, "heavy": None}
  assert diagnostics.roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
  assert diagnostics.roc_auc([1.0, 1.0], [0, 1]) == 0.5
