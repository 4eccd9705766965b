import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from match_rcnn_jax.data import convert, tfrecords

# The 294-long layout of the official converter: category -> first global index.
_OFFSETS = {1: 0, 2: 25, 3: 58, 4: 89, 5: 128, 6: 143, 7: 158, 8: 168, 9: 182, 10: 190,
            11: 219, 12: 256, 13: 275}
_NAMES = ["short_sleeved_shirt", "long_sleeved_shirt", "short_sleeved_outwear",
          "long_sleeved_outwear", "vest", "sling", "shorts", "trousers", "skirt",
          "short_sleeved_dress", "long_sleeved_dress", "vest_dress", "sling_dress"]


def official_coco(split_dir):
  """The rules of the official evaluation/deepfashion2_to_coco.py (dataset reference §4),
  written independently as the test oracle."""
  out = {"info": {}, "licenses": [], "images": [], "annotations": [], "categories": []}
  for i, name in enumerate(_NAMES, start=1):
    out["categories"].append({"id": i, "name": name, "supercategory": "clothes",
                              "keypoints": [str(k) for k in range(1, 295)], "skeleton": []})
  ann_id = 0
  files = sorted(glob.glob(os.path.join(split_dir, "annos", "*.json")))
  for path in files:
    num = int(os.path.basename(path)[:-5])
    w, h = Image.open(os.path.join(split_dir, "image", f"{num:06d}.jpg")).size
    anno = json.load(open(path))
    out["images"].append({"coco_url": "", "date_captured": "", "file_name": f"{num:06d}.jpg",
                          "flickr_url": "", "id": num, "license": 0, "width": w, "height": h})
    for key, item in anno.items():
      if key in ("source", "pair_id"):
        continue
      ann_id += 1
      x1, y1, x2, y2 = item["bounding_box"]
      points = [0.0] * 882
      off = _OFFSETS[item["category_id"]]
      for n, v in enumerate(item["landmarks"]):
        points[3 * off + n] = float(v)
      out["annotations"].append({
          "area": (x2 - x1) * (y2 - y1), "bbox": [x1, y1, x2 - x1, y2 - y1],
          "category_id": item["category_id"], "id": ann_id, "pair_id": anno["pair_id"],
          "image_id": num, "iscrowd": 0, "style": item["style"],
          "num_keypoints": sum(1 for v in item["landmarks"][2::3] if v > 0),
          "keypoints": points, "segmentation": item["segmentation"]})
  return out


@pytest.fixture(scope="module")
def converted(synthetic_dir, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("converted"))
  report = convert.convert(synthetic_dir, out, "validation", examples_per_shard=8,
                           show_progress=False)
  return out, report


def test_coco_matches_official_conversion(converted, synthetic_dir):
  out, _ = converted
  ours = json.load(open(os.path.join(out, "validation_coco.json")))
  ref = official_coco(synthetic_dir)
  assert ours["categories"] == ref["categories"]
  assert ours["info"] == ref["info"] and ours["licenses"] == ref["licenses"]
  assert ours["images"] == ref["images"]
  assert len(ours["annotations"]) == len(ref["annotations"]) > 24
  for a, b in zip(ours["annotations"], ref["annotations"]):
    for field, value in b.items():
      assert a[field] == value, (a["id"], field)
    # The subset attributes that the official converter drops are kept.
    assert a["source"] in ("shop", "user")
    for attr in ("scale", "occlusion", "zoom_in", "viewpoint"):
      assert a[attr] in (1, 2, 3)


def test_coco_file_loads_in_pycocotools(converted):
  from pycocotools.coco import COCO
  out, _ = converted
  gt = COCO(os.path.join(out, "validation_coco.json"))
  ann = gt.loadAnns(gt.getAnnIds())[0]
  assert gt.annToMask(ann).sum() > 0


def test_retrieval_ground_truth(converted, synthetic_dir):
  out, report = converted
  query = json.load(open(os.path.join(out, "validation_query.json")))
  gallery = json.load(open(os.path.join(out, "validation_gallery.json")))
  exp_q, exp_g = [], []
  for path in sorted(glob.glob(os.path.join(synthetic_dir, "annos", "*.json"))):
    anno, num = json.load(open(path)), int(os.path.basename(path)[:-5])
    for key, item in anno.items():
      if not key.startswith("item"):
        continue
      if anno["source"] == "user":
        exp_q.append({"query_image_id": num, "style": item["style"], "cls": item["category_id"],
                      "pair_id": anno["pair_id"], "bbox": item["bounding_box"]})
      else:
        exp_g.append({"gallery_image_id": num, "style": item["style"],
                      "pair_id": anno["pair_id"], "bbox": item["bounding_box"]})
  key = lambda d: json.dumps(d, sort_keys=True)  # noqa: E731
  assert sorted(map(key, query)) == sorted(map(key, exp_q))
  assert sorted(map(key, gallery)) == sorted(map(key, exp_g))
  # Every shop item is in the gallery, the style-0 ones (distractors) included.
  assert any(g["style"] == 0 for g in gallery) and any(g["style"] > 0 for g in gallery)
  assert report["query_items"] == len(exp_q) and report["gallery_items"] == len(exp_g)


def test_report_and_tfrecords(converted):
  out, report = converted
  on_disk = json.load(open(os.path.join(out, "validation_report.json")))
  assert on_disk == json.loads(json.dumps(report))
  assert report["images"] == report["files_seen"] == 24
  assert report["user_images"] + report["shop_images"] == 24
  assert not report["skipped_files"] and not report["skipped_items"] and not report["warnings"]
  assert report["image_pairs"] > 0 and report["item_pairs"] >= report["image_pairs"]
  assert sum(report["shards"]) == 24 and len(report["shards"]) >= 2
  builder = tfrecords.load_builder(out, "validation")
  assert builder.info.splits["validation"].num_examples == 24
  ids = sorted(int(ex["image_id"]) for ex in builder.as_dataset(split="validation"))
  assert ids == list(range(1, 25))


def test_shards_hold_whole_groups(converted):
  out, _ = converted
  builder = tfrecords.load_builder(out, "validation")
  files = builder.info.splits["validation"].filepaths
  import tensorflow as tf
  seen = {}
  for i, f in enumerate(files):
    for raw in tf.data.TFRecordDataset(str(f)):
      ex = builder.info.features.deserialize_example(raw)
      seen.setdefault(int(ex["pair_id"]), set()).add(i)
  assert all(len(s) == 1 for s in seen.values())


def _corrupt(d):
  """Applies one kind of damage per file; returns {file stem: expected words}."""
  def edit(stem, fn):
    p = os.path.join(d, "annos", f"{stem}.json")
    anno = json.load(open(p))
    fn(anno)
    json.dump(anno, open(p, "w"))
  item = lambda a: a["item1"]  # noqa: E731
  damage = {
      "000001": ("item1", "category_id", lambda a: item(a).update(category_id=14)),
      "000002": ("item1", "landmarks", lambda a: item(a).update(landmarks=[1, 2, 2])),
      "000003": ("item1", "bounding_box", lambda a: item(a).update(bounding_box=[50, 5, 10, 9])),
      "000004": ("item1", "style", lambda a: item(a).update(style="2")),
      "000005": ("item1", "segmentation", lambda a: item(a).update(segmentation=[])),
      "000006": ("item1", "occlusion", lambda a: item(a).update(occlusion=5)),
      "000007": ("item1", "bounding_box", lambda a: item(a).update(
          bounding_box=[float("nan"), 1, 5, 9])),
      "000008": ("item1", "scale", lambda a: item(a).pop("scale")),
  }
  for stem, (_, _, fn) in damage.items():
    edit(stem, fn)
  expected = {stem: (it, field) for stem, (it, field, _) in damage.items()}
  open(os.path.join(d, "annos", "000009.json"), "w").write('{"source": "user", "pai')
  expected["000009"] = ("-", "json")
  jpg = os.path.join(d, "image", "000010.jpg")
  open(jpg, "wb").write(open(jpg, "rb").read()[:100])
  expected["000010"] = ("-", "image")
  os.remove(os.path.join(d, "image", "000011.jpg"))
  expected["000011"] = ("-", "image")
  edit("000012", lambda a: a.update(source="shopper"))
  expected["000012"] = ("-", "source")
  return expected


@pytest.fixture()
def damaged(synthetic_dir, tmp_path):
  d = str(tmp_path / "damaged")
  shutil.copytree(synthetic_dir, d)
  return d, _corrupt(d)


def test_fail_stops_before_writing(damaged, tmp_path):
  d, _ = damaged
  out = str(tmp_path / "out")
  with pytest.raises(convert.ConversionError, match=r"000001\.json: item1: category_id"):
    convert.convert(d, out, "train", on_error="fail", show_progress=False)
  assert not os.path.exists(out)


def test_skip_reports_every_problem(damaged, tmp_path):
  d, expected = damaged
  out = str(tmp_path / "out")
  report = convert.convert(d, out, "train", on_error="skip", show_progress=False)
  problems = {}
  for entry in report["skipped_files"] + report["skipped_items"]:
    stem = os.path.basename(entry["file"])[:-5]
    for reason in entry["reasons"]:
      _, item, field, _ = reason.split(": ", 3)
      problems.setdefault(stem, set()).add((item, field))
  assert set(problems) == set(expected)
  for stem, (item, field) in expected.items():
    assert (item, field) in problems[stem], (stem, problems[stem])
  # Only whole-file problems and images left without items remove images.
  dropped = {os.path.basename(e["file"])[:-5] for e in report["skipped_files"]}
  assert {"000009", "000010", "000011", "000012"} <= dropped
  coco = json.load(open(os.path.join(out, "train_coco.json")))
  assert report["images"] == len(coco["images"]) == 24 - len(dropped)
  assert report["items"] == len(coco["annotations"])
  assert not {int(s) for s in dropped} & {im["id"] for im in coco["images"]}


def test_rerun_replaces_the_split(synthetic_dir, tmp_path):
  out = str(tmp_path / "out")
  first = convert.convert(synthetic_dir, out, "train", examples_per_shard=4, show_progress=False)
  assert len(first["shards"]) >= 4
  second = convert.convert(synthetic_dir, out, "train", examples_per_shard=100,
                           show_progress=False)
  assert second["shards"] == [24]
  files = sorted(os.listdir(os.path.join(out, "tfrecords", "train")))
  assert [f for f in files if "tfrecord" in f] == ["deepfashion2-train.tfrecord-00000-of-00001"]
  assert sorted(os.listdir(os.path.join(out, "tfrecords"))) == ["train"]  # no temporary left
  assert tfrecords.load_builder(out, "train").info.splits["train"].num_examples == 24


def test_workers_write_the_same_files(synthetic_dir, tmp_path):
  """Parsing and encoding in 2 worker processes writes every file byte for byte as 1 does
  (examples in the same order, feature maps serialised in sorted key order)."""
  import hashlib
  digests = {}
  for workers in (1, 2):
    out = tmp_path / f"workers_{workers}"
    convert.convert(synthetic_dir, str(out), "train", examples_per_shard=8, show_progress=False,
                    workers=workers)
    digests[workers] = {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
                        for p in out.rglob("*") if p.is_file()}
  assert digests[1] == digests[2]
  assert sum("tfrecord-" in name for name in digests[1]) == 3  # 24 images, shards of ~8
  with pytest.raises(ValueError, match="workers must be >= 1"):
    convert.convert(synthetic_dir, str(tmp_path / "none"), "train", workers=0)


def test_cli(damaged, tmp_path):
  d, _ = damaged
  out = str(tmp_path / "cli")
  args = [sys.executable, "-m", "match_rcnn_jax.data.convert", "--data_dir", d, "--output_dir",
          out, "--split", "validation", "--quiet"]
  res = subprocess.run(args, capture_output=True, text=True)
  assert res.returncode == 1
  assert "error: invalid annotation" in res.stderr and "Traceback" not in res.stderr
  res = subprocess.run(args + ["--on_error", "skip"], capture_output=True, text=True)
  assert res.returncode == 0, res.stderr
  assert "DeepFashion2 'validation' converted" in res.stdout
  report = json.load(open(os.path.join(out, "validation_report.json")))
  assert f"skipped     {len(report['skipped_files'])} file(s)" in res.stdout
  assert len(report["skipped_files"]) >= 4
  res = subprocess.run([sys.executable, "-m", "match_rcnn_jax.data.convert", "--data_dir",
                        str(tmp_path / "nowhere"), "--output_dir", out], capture_output=True,
                       text=True)
  assert res.returncode == 1 and "no annos/ folder" in res.stderr


def test_masks_in_tfrecords_match_polygons(converted, synthetic_dir):
  out, _ = converted
  builder = tfrecords.load_builder(out, "validation")
  coco = json.load(open(os.path.join(out, "validation_coco.json")))
  from pycocotools.coco import COCO
  gt = COCO(os.path.join(out, "validation_coco.json"))
  for ex in builder.as_dataset(split="validation").take(6):
    ex = {k: v for k, v in ex.items()}
    image_id = int(ex["image_id"])
    anns = [a for a in coco["annotations"] if a["image_id"] == image_id]
    masks = ex["objects"]["mask"].numpy()[..., 0]
    assert masks.shape[0] == len(anns)
    for m, a in zip(masks, anns):
      np.testing.assert_array_equal(m, gt.annToMask(a))
