import jax
import numpy as np
import pytest

from match_rcnn_jax.evaluation import retrieval
from match_rcnn_jax.models import matching

# ---------------------------------------------------------------------------- ranking


def test_rank_is_exactly_the_similarity_network_pair_by_pair():
  rng = np.random.default_rng(0)
  dim = 16
  queries = rng.normal(size=(37, dim)).astype(np.float32)
  gallery = rng.normal(size=(1500, dim)).astype(np.float32)  # > one 1024 padding block
  sim = matching.Similarity()
  params = sim.init(jax.random.PRNGKey(1), queries[:1], gallery[:1])["params"]
  # Scored one pair at a time by the module itself.
  logits = np.stack([np.asarray(sim.apply({"params": params}, np.repeat(q[None], len(gallery),
                                                                         0), gallery))
                     for q in queries])  # [Q, G, 2]
  d = logits[..., 1] - logits[..., 0]
  w, b = retrieval.similarity_vector(params)
  idx, val = retrieval.rank(queries, gallery, w, b, k=20, block=16)  # 3 blocks, last padded
  expect = np.argsort(-d, axis=1, kind="stable")[:, :20]
  np.testing.assert_array_equal(idx, expect)
  np.testing.assert_allclose(val, np.take_along_axis(d, expect, 1), rtol=1e-4, atol=1e-4)
  # sigmoid of the logit difference is the network's softmax match probability.
  p = np.exp(logits[..., 1]) / np.exp(logits).sum(-1)
  np.testing.assert_allclose(retrieval.sigmoid(val[:, 0]), p[np.arange(37), expect[:, 0]],
                             rtol=1e-4)


def test_rank_with_a_gallery_smaller_than_k():
  w, b = -np.ones(4, np.float32), 0.0
  g = np.array([[0, 0, 0, 0], [1, 1, 1, 1], [3, 3, 3, 3]], np.float32)
  idx, val = retrieval.rank(np.array([[1.1, 1, 1, 1]], np.float32), g, w, b, k=5)
  # w = -1: logit = -|q - g|^2 -> nearest first.
  np.testing.assert_array_equal(idx[0], [1, 0, 2, -1, -1])
  assert np.isneginf(val[0, 3:]).all()
  np.testing.assert_allclose(val[0, 0], -0.01, atol=1e-5)


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
  (rec,) = retrieval.make_records(queries, gallery, q, g, -np.ones(2, np.float32), 0.0)
  assert rec["gallery_image_id"] == [30] + [20] * 19
  assert len(rec["gallery_bbox"]) == 20 and rec["gallery_bbox"][0] == [20, 20, 80, 80]
  retrieval.validate([rec], {10, 20, 30}, "x")
  assert retrieval.make_records(queries, [], q, g[:0], np.ones(2), 0.0) == []
