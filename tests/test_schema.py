import numpy as np

from match_rcnn_jax.data import schema


def test_categories_and_layout():
  assert len(schema.CATEGORIES) == 13
  assert [c.id for c in schema.CATEGORIES] == list(range(1, 14))
  counts = [c.num_landmarks for c in schema.CATEGORIES]
  assert counts == [25, 33, 31, 39, 15, 15, 10, 14, 8, 29, 37, 19, 19]
  assert sum(counts) == schema.NUM_LANDMARKS == 294
  # "trousers = 169th-182th" (1-based) in the official evaluation notes.
  trousers = schema.CATEGORY_BY_ID[8]
  assert (trousers.offset + 1, trousers.offset + trousers.num_landmarks) == (169, 182)
  assert schema.CATEGORY_BY_ID[13].landmark_slice == slice(275, 294)
  assert schema.CATEGORY_BY_ID[1].coco_name == "short_sleeved_shirt"
  assert schema.CATEGORY_BY_ID[9].name == "skirt"


def test_sigmas():
  assert schema.OKS_SIGMAS.shape == (294,)
  assert schema.OKS_SIGMAS[0] == 0.012
  assert schema.OKS_SIGMAS[schema.CATEGORY_BY_ID[9].offset] == 0.0253  # skirt 1
  assert schema.OKS_SIGMAS[-1] == 0.0173  # sling dress 19
  assert np.all(schema.OKS_SIGMAS > 0)


def test_flip_pairs_table():
  pairs = [p for ps in schema.FLIP_PAIRS.values() for p in ps]
  assert len(pairs) == 131
  perm = schema.FLIP_PERMUTATION
  assert (perm == np.arange(294)).sum() == 294 - 2 * 131  # 32 self-symmetric points
  # Swaps stay inside one category's block.
  assert np.array_equal(schema.LANDMARK_CATEGORY[perm], schema.LANDMARK_CATEGORY)
  # Every pair has equal official sigmas except long-sleeve dress 15-29 (a known typo).
  unequal = []
  for cat_id, ps in schema.FLIP_PAIRS.items():
    off = schema.CATEGORY_BY_ID[cat_id].offset - 1
    for a, b in ps:
      assert 1 <= a <= schema.CATEGORY_BY_ID[cat_id].num_landmarks
      assert 1 <= b <= schema.CATEGORY_BY_ID[cat_id].num_landmarks
      if schema.OKS_SIGMAS[off + a] != schema.OKS_SIGMAS[off + b]:
        unequal.append((cat_id, a, b))
  assert unequal == [(11, 15, 29)]
  # Spot checks of the recommended table.
  assert (4, 26) in schema.FLIP_PAIRS[3] and (2, 6) in schema.FLIP_PAIRS[3]
  assert (9, 17) in schema.FLIP_PAIRS[12] and (9, 17) in schema.FLIP_PAIRS[13]
  assert (7, 25) in schema.FLIP_PAIRS[1] and (15, 17) in schema.FLIP_PAIRS[1]


def test_flip_twice_is_identity():
  perm = schema.FLIP_PERMUTATION
  assert np.array_equal(perm[perm], np.arange(294))
  lm = np.random.default_rng(0).random((294, 3))
  assert np.array_equal(lm[perm][perm], lm)


def test_local_to_global_and_enums():
  local = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
  g = schema.local_to_global(9, local)
  assert g.shape == (294, 3)
  assert np.array_equal(g[182:190], local)
  assert g[:182].sum() == 0 and g[190:].sum() == 0
  assert schema.Source.from_json("user") is schema.Source.USER
  assert schema.Visibility.VISIBLE == 2
  assert schema.scale_from_area_ratio(0.05) == schema.Scale.SMALL
  assert schema.scale_from_area_ratio(0.3) == schema.Scale.MODERATE
  assert schema.scale_from_area_ratio(0.5) == schema.Scale.LARGE
