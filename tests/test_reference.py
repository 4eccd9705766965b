"""The no-model reference rankers against hand-computed rankings on a tiny split, and the
expected top-k of category chance against an enumeration of every random order."""

import itertools

import numpy as np
import pytest

from match_rcnn_jax.evaluation import reference


def _query(image_id, cls, pair_id, style, box=(0, 0, 10, 10)):
  return {"query_image_id": image_id, "cls": cls, "pair_id": pair_id, "style": style,
          "bbox": list(box)}


def _gallery(image_id, pair_id, style, box=(0, 0, 10, 10)):
  return {"gallery_image_id": image_id, "pair_id": pair_id, "style": style, "bbox": list(box)}


def test_histogram_bins_by_hand():
  image = np.zeros((20, 30, 3), np.uint8)
  image[:, :] = (200, 100, 50)
  h = reference.histogram(image, [2, 3, 25, 18])
  assert h.shape == (reference.CHROMA_BINS ** 2 * reference.INTENSITY_BINS,)
  # r = 200 / 350 -> chroma bin 4, g = 100 / 350 -> 2, intensity 350 / 768 * 4 -> 1
  assert h[(4 * 8 + 2) * 4 + 1] == pytest.approx(1.0)
  # Half the box in another colour: the centre-weighted histogram splits evenly by symmetry,
  # and the same colours lit darker fall in other intensity bins only.
  image[:, 15:] = (50, 100, 200)
  h = reference.histogram(image, [0, 0, 30, 20])
  assert h[(4 * 8 + 2) * 4 + 1] == pytest.approx(0.5, abs=1e-6)
  assert h[(1 * 8 + 2) * 4 + 1] == pytest.approx(0.5, abs=1e-6)
  dark = reference.histogram((image * 0.4).astype(np.uint8), [0, 0, 30, 20])
  assert dark[(4 * 8 + 2) * 4 + 0] == pytest.approx(0.5, abs=1e-6)


def _enumerated_chance(query, gallery, classes, hits, k):
  """The mean over every order (the category's garments in every order, then the rest in
  every order) of a hit in the first k."""
  same = [j for j in range(len(gallery)) if classes[j] == query["cls"]]
  rest = [j for j in range(len(gallery)) if classes[j] != query["cls"]]
  total = count = 0
  for a in itertools.permutations(same):
    for b in itertools.permutations(rest):
      total += any(j in hits for j in (a + b)[:k])
      count += 1
  return total / count


def test_category_chance_is_exact():
  gallery = [_gallery(10, 1, 1), _gallery(11, 5, 1), _gallery(12, 6, 1), _gallery(13, 2, 1),
             _gallery(14, 7, 1), _gallery(15, 3, 1)]
  classes = [1, 1, 1, 2, 2, 2]
  queries = [_query(1, 1, 1, 1),  # its target is gallery 0, in its category of 3
             _query(2, 2, 2, 1),  # gallery 3, in its category of 3
             _query(3, 1, 3, 1),  # gallery 5: another category, found after the first 3
             _query(4, 1, 9, 1),  # no target at all
             _query(5, 2, 2, 0)]  # style 0: not a query item
  got = reference.category_chance(queries, gallery, classes)
  hits = {0: {0}, 1: {3}, 2: {5}, 3: set()}
  for k in (1, 5, 10, 15, 20):
    want = np.mean([_enumerated_chance(queries[i], gallery, classes, hits[i], k)
                    for i in range(4)])
    assert got[f"top{k}"] == pytest.approx(want, abs=1e-12)
  # By hand: top-1 = (1/3 + 1/3 + 0 + 0) / 4; top-5 = (1 + 1 + P(gallery 5 in the first 2 of
  # the other 3) = 2/3 + 0) / 4.
  assert got["top1"] == pytest.approx(1 / 6)
  assert got["top5"] == pytest.approx((2 + 2 / 3) / 4)


def test_histogram_rankers_by_hand():
  """One red query; the gallery: exact red of another product (category 2), blue (category 1),
  the query's product in a slightly different red (category 1), green (category 2). The
  histogram alone ranks the wrong red first; inside the category the product comes first."""
  def solid(rgb):
    image = np.zeros((10, 10, 3), np.uint8)
    image[:] = rgb
    return reference.histogram(image, [0, 0, 10, 10])

  queries = [_query(1, 1, 1, 1)]
  gallery = [_gallery(10, 5, 1), _gallery(11, 6, 1), _gallery(12, 1, 1), _gallery(13, 7, 1)]
  classes = [2, 1, 1, 2]
  q_hist = np.stack([solid((200, 40, 40))])
  g_hist = np.stack([solid((200, 40, 40)), solid((40, 40, 200)), solid((170, 50, 40)),
                     solid((40, 200, 40))])
  dist = reference.l1_distances(q_hist, g_hist)
  np.testing.assert_allclose(dist, np.abs(q_hist[:, None] - g_hist[None]).sum(-1), atol=1e-6)
  np.testing.assert_array_equal(reference.histogram_order(dist)[0][:1], [0])
  np.testing.assert_array_equal(reference.histogram_order(dist, [1], classes)[0][:2], [2, 1])
  out = reference.reference_top_k(queries, gallery, classes, q_hist, g_hist)
  assert set(out) == set(reference.RANKERS)
  assert out["colour_histogram"]["top1"] == 0.0 and out["colour_histogram"]["top5"] == 1.0
  assert out["colour_histogram_category"]["top1"] == 1.0
  assert out["category_chance"]["top1"] == 0.5
  lift = reference.lift({"top1": 0.75, "top5": 1.0, "top10": 1.0, "top15": 1.0, "top20": 1.0},
                        out)
  assert lift == {"top1": -0.25, "top5": 0.0}
