import json
import os

import numpy as np
import pytest
from PIL import Image

from match_rcnn_jax.data import parsing, schema


def _item(cat=9, box=(10, 20, 60, 90)):
  n = schema.CATEGORY_BY_ID[cat].num_landmarks
  lm = []
  for k in range(n):
    lm += [12 + k, 25 + k, 2 if k % 3 else 1]
  return {"segmentation": [[10, 20, 60, 20, 60, 90, 10, 90]], "scale": 2, "viewpoint": 2,
          "zoom_in": 1, "landmarks": lm, "style": 1, "bounding_box": list(box),
          "category_id": cat, "occlusion": 1, "category_name": schema.CATEGORY_BY_ID[cat].name}


def _write(tmp_path, anno, stem="000001", image=True, size=(100, 120)):
  os.makedirs(tmp_path / "annos", exist_ok=True)
  os.makedirs(tmp_path / "image", exist_ok=True)
  path = tmp_path / "annos" / f"{stem}.json"
  if isinstance(anno, (bytes, str)):
    path.write_bytes(anno if isinstance(anno, bytes) else anno.encode())
  else:
    path.write_text(json.dumps(anno))
  if image:
    Image.new("RGB", size, (200, 10, 10)).save(tmp_path / "image" / f"{stem}.jpg")
  return str(path)


def _valid():
  return {"source": "user", "pair_id": 7, "item1": _item(9), "item2": _item(1, (5, 5, 95, 110))}


def test_valid_annotation(tmp_path):
  res = parsing.parse_example(_write(tmp_path, _valid()))
  assert res.ok and not res.warnings and not res.skipped_items
  rec = res.record
  assert (rec.image_id, rec.pair_id, rec.source) == (1, 7, schema.Source.USER)
  assert (rec.width, rec.height) == (100, 120)
  assert [it.key for it in rec.items] == ["item1", "item2"]
  skirt = rec.items[0]
  assert skirt.bbox == (10.0, 20.0, 60.0, 90.0)
  assert skirt.landmarks.shape == (8, 3)
  g = skirt.global_landmarks
  assert np.array_equal(g[182], [12, 25, 1]) and g[:182].sum() == 0
  assert skirt.attributes == (2, 1, 1, 2)


def _errors(tmp_path, anno, **kw):
  res = parsing.parse_example(_write(tmp_path, anno, **kw))
  return res, [str(e) for e in res.errors]


def _one_error(res, errors, item, field, words):
  assert len(errors) == 1, errors
  file, it, fl, msg = errors[0].split(": ", 3)
  assert file.endswith("000001.json") and it == item and fl == field
  assert words in msg, msg


def test_truncated_json(tmp_path):
  res, errs = _errors(tmp_path, json.dumps(_valid())[:50])
  assert res.record is None
  _one_error(res, errs, "-", "json", "cannot read JSON")


def test_top_level_not_object(tmp_path):
  res, errs = _errors(tmp_path, "[1, 2]")
  _one_error(res, errs, "-", "json", "expected an object")


def test_missing_keys(tmp_path):
  anno = _valid()
  del anno["item1"]["category_id"]
  res, errs = _errors(tmp_path, anno)
  _one_error(res, errs, "item1", "category_id", "missing")
  assert res.skipped_items == ["item1"] and [i.key for i in res.record.items] == ["item2"]
  anno = _valid()
  del anno["source"]
  res, errs = _errors(tmp_path, anno)
  _one_error(res, errs, "-", "source", "missing")
  assert res.record is None


def test_wrong_types(tmp_path):
  anno = _valid()
  anno["item2"]["style"] = "1"
  res, errs = _errors(tmp_path, anno)
  _one_error(res, errs, "item2", "style", "expected an int >= 0")
  anno = _valid()
  anno["pair_id"] = 7.5
  res, errs = _errors(tmp_path, anno)
  _one_error(res, errs, "-", "pair_id", "expected an int")
  anno = _valid()
  anno["source"] = "consumer"
  _one_error(*_errors(tmp_path, anno), "-", "source", "expected 'shop' or 'user'")
  anno = _valid()
  anno["item1"]["bounding_box"] = "10 20 60 90"
  _one_error(*_errors(tmp_path, anno), "item1", "bounding_box", "expected a list of numbers")


def test_unknown_category(tmp_path):
  anno = _valid()
  anno["item1"]["category_id"] = 14
  _one_error(*_errors(tmp_path, anno), "item1", "category_id", "not a category id")


def test_wrong_landmark_count(tmp_path):
  anno = _valid()
  anno["item1"]["landmarks"] = anno["item1"]["landmarks"][:-3]
  _one_error(*_errors(tmp_path, anno), "item1", "landmarks", "expected 24 values")


def test_bad_visibility(tmp_path):
  anno = _valid()
  anno["item1"]["landmarks"][5] = 3
  _one_error(*_errors(tmp_path, anno), "item1", "landmarks", "visibility must be 0, 1 or 2")


def test_inverted_box(tmp_path):
  anno = _valid()
  anno["item1"]["bounding_box"] = [60, 20, 10, 90]
  _one_error(*_errors(tmp_path, anno), "item1", "bounding_box", "empty or inverted")


def test_box_outside_image(tmp_path):
  # Within the 1-pixel tolerance: accepted unchanged, no warning.
  anno = _valid()
  anno["item1"]["bounding_box"] = [-1, 0, 101, 121]
  res = parsing.parse_example(_write(tmp_path, anno))
  assert res.ok and not res.warnings
  assert res.record.items[0].bbox == (0.0, 0.0, 100.0, 120.0)
  # Beyond it: clipped, with a warning naming the field.
  anno["item1"]["bounding_box"] = [-5, 10, 130, 90]
  res = parsing.parse_example(_write(tmp_path, anno))
  assert res.ok and len(res.warnings) == 1
  assert str(res.warnings[0]).split(": ")[1:3] == ["item1", "bounding_box"]
  assert res.record.items[0].bbox == (0.0, 10.0, 100.0, 90.0)
  assert res.record.items[0].raw_bbox == [-5, 10, 130, 90]
  # Entirely outside: an error.
  anno["item1"]["bounding_box"] = [150, 10, 180, 90]
  _one_error(*_errors(tmp_path, anno), "item1", "bounding_box", "outside the 100x120 image")


def test_segmentation(tmp_path):
  anno = _valid()
  anno["item1"]["segmentation"] = []
  _one_error(*_errors(tmp_path, anno), "item1", "segmentation", "no polygon")
  anno["item1"]["segmentation"] = [[1, 2, 3, 4], [10, 20, 60, 20, 60, 90]]
  res = parsing.parse_example(_write(tmp_path, anno))
  assert res.ok and len(res.warnings) == 1 and "degenerate polygon" in str(res.warnings[0])
  assert res.record.items[0].segmentation == [[10, 20, 60, 20, 60, 90]]
  anno["item1"]["segmentation"] = [[1, 2, 3, 4]]
  res, errs = _errors(tmp_path, anno)
  _one_error(res, errs, "item1", "segmentation", "no polygon")
  assert len(res.warnings) == 1


def test_nan_values(tmp_path):
  anno = _valid()
  anno["item1"]["bounding_box"] = [10, float("nan"), 60, 90]
  _one_error(*_errors(tmp_path, anno), "item1", "bounding_box", "not a finite number")
  anno = _valid()
  anno["item2"]["landmarks"][0] = float("inf")
  _one_error(*_errors(tmp_path, anno), "item2", "landmarks", "not a finite number")


def test_corrupt_jpeg(tmp_path):
  path = _write(tmp_path, _valid())
  jpg = tmp_path / "image" / "000001.jpg"
  jpg.write_bytes(jpg.read_bytes()[:200])
  res = parsing.parse_example(path)
  assert res.record is None
  assert len(res.errors) == 1 and "cannot decode" in str(res.errors[0])
  jpg.write_bytes(b"not a jpeg at all")
  assert "cannot decode" in str(parsing.parse_example(path).errors[0])


def test_missing_image(tmp_path):
  res, errs = _errors(tmp_path, _valid(), image=False)
  _one_error(res, errs, "-", "image", "does not exist")


@pytest.mark.parametrize("attr,value", [("occlusion", 4), ("scale", 0), ("zoom_in", True),
                                        ("viewpoint", "1")])
def test_attribute_out_of_range(tmp_path, attr, value):
  anno = _valid()
  anno["item2"][attr] = value
  _one_error(*_errors(tmp_path, anno), "item2", attr, "expected an int in 1..3")


def test_no_items_and_unknown_keys(tmp_path):
  _one_error(*_errors(tmp_path, {"source": "shop", "pair_id": 1}), "-", "items", "no item")
  anno = _valid()
  anno["comment"] = "x"
  res, errs = _errors(tmp_path, anno)
  _one_error(res, errs, "comment", "-", "unexpected key")
  assert len(res.record.items) == 2


def test_category_name_mismatch_is_a_warning(tmp_path):
  anno = _valid()
  anno["item1"]["category_name"] = "trousers"
  res = parsing.parse_example(_write(tmp_path, anno))
  assert res.ok and "does not match category_id 9" in str(res.warnings[0])
