import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from match_rcnn_jax.data import parsing, schema, synthetic


def _annos(d):
  return [json.load(open(p)) for p in sorted(glob.glob(os.path.join(d, "annos", "*.json")))]


def test_layout_and_validity(synthetic_dir):
  images = sorted(os.listdir(os.path.join(synthetic_dir, "image")))
  annos = sorted(os.listdir(os.path.join(synthetic_dir, "annos")))
  assert images == [f"{i:06d}.jpg" for i in range(1, 25)]
  assert annos == [f"{i:06d}.json" for i in range(1, 25)]
  for name in annos:
    res = parsing.parse_example(os.path.join(synthetic_dir, "annos", name))
    assert res.ok and not res.warnings, [str(p) for p in res.errors + res.warnings]
    assert res.record.items


def test_deterministic(tmp_path, synthetic_dir):
  again = tmp_path / "again"
  synthetic.generate(str(again), num_images=24, seed=3, image_size=128)
  assert _annos(again) == _annos(synthetic_dir)
  for name in ("000001.jpg", "000024.jpg"):
    assert (again / "image" / name).read_bytes() == open(
        os.path.join(synthetic_dir, "image", name), "rb").read()
  other = tmp_path / "other"
  synthetic.generate(str(other), num_images=24, seed=4, image_size=128)
  assert _annos(other) != _annos(synthetic_dir)


def test_landmarks_follow_the_category_template(synthetic_dir):
  """Local landmark k is the same place on every garment: an axis-aligned scale + shift of the
  category template, up to the integer rounding of the coordinates."""
  checked = 0
  for anno in _annos(synthetic_dir):
    for key, item in anno.items():
      if not key.startswith("item"):
        continue
      lm = np.asarray(item["landmarks"], float).reshape(-1, 3)
      labelled = lm[:, 2] > 0
      if labelled.sum() < 4:
        continue
      tpl = synthetic.landmark_template(item["category_id"])[labelled]
      for axis in (0, 1):
        a = np.stack([tpl[:, axis], np.ones(labelled.sum())], 1)
        coef, *_ = np.linalg.lstsq(a, lm[labelled, axis], rcond=None)
        assert coef[0] > 0
        assert np.abs(a @ coef - lm[labelled, axis]).max() <= 1.0
      checked += 1
  assert checked >= 20


def test_template_is_mirror_consistent():
  for cat_id in range(1, 14):
    tpl = synthetic.landmark_template(cat_id)
    perm = schema.FLIP_PERMUTATION[schema.CATEGORY_BY_ID[cat_id].landmark_slice]
    local_perm = perm - schema.CATEGORY_BY_ID[cat_id].offset
    mirrored = tpl.copy()
    mirrored[:, 0] = 1.0 - mirrored[:, 0]
    np.testing.assert_allclose(mirrored[local_perm], tpl, atol=1e-9)


def test_pairs_and_products(synthetic_dir):
  annos = _annos(synthetic_dir)
  pair_ids = [a["pair_id"] for a in annos]
  assert pair_ids == sorted(pair_ids)  # groups are stored consecutively
  products = {}
  shops, users = set(), set()
  for a in annos:
    (shops if a["source"] == "shop" else users).add(a["pair_id"])
    for key, item in a.items():
      if key.startswith("item") and item["style"] > 0:
        # The same (pair_id, style) is always the same garment category.
        cat = products.setdefault((a["pair_id"], item["style"]), item["category_id"])
        assert cat == item["category_id"]
  assert shops & users  # some groups have both shop and user images
  assert any(item["style"] == 0 for a in annos for k, item in a.items() if k.startswith("item"))


def test_cli(tmp_path):
  out = tmp_path / "cli"
  res = subprocess.run([sys.executable, "-m", "match_rcnn_jax.data.synthetic", "--output_dir",
                        str(out), "--num_images", "3", "--seed", "1", "--image_size", "64"],
                       capture_output=True, text=True, check=True)
  assert "wrote 3 images" in res.stdout
  assert len(os.listdir(out / "image")) == 3
  bad = subprocess.run([sys.executable, "-m", "match_rcnn_jax.data.synthetic", "--output_dir",
                        str(out), "--num_images", "0"], capture_output=True, text=True)
  assert bad.returncode == 2 and "--num_images must be >= 1" in bad.stderr


@pytest.mark.parametrize("num_images", [24, 61])
def test_every_query_item_has_a_shop_item_of_its_product(tmp_path, num_images):
  """What the released data guarantees (the official retrieval script asserts it): every
  style > 0 item of a user image has a shop item of the same pair_id and style in the split,
  wherever the split's last group is cut."""
  synthetic.generate(str(tmp_path), num_images=num_images, seed=11, image_size=64)
  annos = _annos(str(tmp_path))
  items = [(a["source"], a["pair_id"], item["style"]) for a in annos
           for k, item in a.items() if k.startswith("item")]
  shop = {(p, s) for src, p, s in items if src == "shop" and s > 0}
  queries = [(p, s) for src, p, s in items if src == "user" and s > 0]
  assert queries and all(q in shop for q in queries)


def test_appearance_proxy_properties_on_the_demos_held_out_split(tmp_path):
  """The demo's held-out split (configs/demo.py: its size, seed, image size and mode) is a
  retrieval proxy that no-model rankers cannot solve: >= 150 queries and >= 300 gallery
  garments, category chance top-1 <= 0.10, colour histogram <= 0.15, colour histogram inside
  the category <= 0.25 (the official hit rule, ground-truth boxes). That a learned model can
  tell its products apart is benchmarks/proxy_check.py's crop CNN."""
  from configs import demo
  from match_rcnn_jax.data import convert
  from match_rcnn_jax.evaluation import reference
  config = demo.get_config()
  syn = config.synthetic
  assert syn.mode == "appearance"
  raw = str(tmp_path / "raw")
  synthetic.generate(raw, syn.num_eval_images, seed=syn.seed + 1, image_size=syn.image_size,
                     mode=syn.mode)
  out = str(tmp_path / "out")
  convert.convert(raw, out, "validation", show_progress=False)
  query = json.load(open(os.path.join(out, "validation_query.json")))
  gallery = json.load(open(os.path.join(out, "validation_gallery.json")))
  assert sum(q["style"] > 0 for q in query) >= 150 and len(gallery) >= 300
  ref = reference.evaluate_split(out, "validation", query, gallery)
  assert ref["category_chance"]["top1"] <= 0.10
  assert ref["colour_histogram"]["top1"] <= 0.15
  assert ref["colour_histogram_category"]["top1"] <= 0.25
  # a third of the gallery's products are shown by no query
  queried = {(q["pair_id"], q["style"]) for q in query if q["style"] > 0}
  products = {(g["pair_id"], g["style"]) for g in gallery if g["style"] > 0}
  assert 0.2 <= len(products - queried) / len(products) <= 0.45


def test_appearance_families_share_palette_and_coverage():
  """Appearance mode: a family's products differ from its first in exactly one factor, share
  its two colours and the share of the second colour, and every motif paints that share."""
  rng = np.random.default_rng(0)
  for _ in range(20):
    looks = synthetic._family_looks(rng, 6)
    base = looks[0]
    assert len({tuple(sorted(look.items())) for look in looks}) == 6
    for look in looks[1:]:
      assert sum(look[f] != base[f] for f in synthetic._FACTORS) == 1
      assert (look["c1"], look["c2"], look["coverage"]) == (base["c1"], base["c2"],
                                                            base["coverage"])
  t = (np.arange(200) + 0.5) / 200 * 3  # three periods
  for motif in synthetic.MOTIFS:
    field = synthetic._motif_field(motif, t[None, :], t[:, None])
    share = (field < synthetic._motif_threshold(motif, 0.2)).mean()
    assert abs(share - 0.2) < 0.02, motif
