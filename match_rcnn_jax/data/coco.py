"""Ground-truth files for the evaluations, built from parsed records.

* `to_coco(records)`: the COCO json of the official `evaluation/deepfashion2_to_coco.py` (images
  with id = file stem, 13 categories with 294 keypoint names, annotations with xywh bbox,
  area = box w*h, 882-long keypoints, num_keypoints counting v > 0, iscrowd 0, pair_id, style,
  polygons), plus `source`, `scale`, `occlusion`, `zoom_in` and `viewpoint` on every annotation,
  which the per-subset evaluation needs and the official converter drops.
  `write_coco(records, f)` writes the same text one annotation at a time.
* `to_retrieval(records)`: the consumer-to-shop ground truth in the format of the official
  `val_query.json` / `val_gallery.json`.
"""

from __future__ import annotations

import json

import numpy as np

from match_rcnn_jax.data import parsing, schema


def coco_categories() -> list[dict]:
  names = [str(i) for i in range(1, schema.NUM_LANDMARKS + 1)]
  return [{"id": c.id, "name": c.coco_name, "supercategory": "clothes", "keypoints": names,
           "skeleton": []} for c in schema.CATEGORIES]


def _xywh(raw_bbox: list) -> list:
  x1, y1, x2, y2 = raw_bbox
  return [x1, y1, x2 - x1, y2 - y1]


def to_coco(records: list[parsing.ImageRecord]) -> dict:
  """COCO ground truth for `records` (in the given order; annotation ids run from 1).

  The box is the one written in the annotation file (as in the official conversion, so scores
  match the official ground truth); the polygons are those the parser kept (degenerate ones,
  which make pycocotools fail, are dropped and reported by the converter).
  """
  return {"info": {}, "licenses": [], "images": [_image(rec) for rec in records],
          "annotations": list(iter_annotations(records)), "categories": coco_categories()}


def write_coco(records: list[parsing.ImageRecord], f) -> None:
  """`json.dump(to_coco(records), f)`, the same text, written one annotation at a time (an
  annotation's 882 keypoints as Python floats take about 28 KB: a training split's would take
  gigabytes held at once)."""
  f.write('{"info": {}, "licenses": [], "images": ')
  json.dump([_image(rec) for rec in records], f)
  f.write(', "annotations": [')
  for i, ann in enumerate(iter_annotations(records)):
    f.write((", " if i else "") + json.dumps(ann))
  f.write('], "categories": ')
  json.dump(coco_categories(), f)
  f.write("}")


def _image(rec: parsing.ImageRecord) -> dict:
  return {"coco_url": "", "date_captured": "", "file_name": f"{rec.image_id:06d}.jpg",
          "flickr_url": "", "id": rec.image_id, "license": 0, "width": rec.width,
          "height": rec.height}


def iter_annotations(records: list[parsing.ImageRecord]):
  """The COCO annotations of `records`, one at a time (ids from 1, in record order)."""
  ann_id = 0
  for rec in records:
    for item in rec.items:
      bbox = _xywh(item.raw_bbox)
      keypoints = item.global_landmarks.astype(np.float64).reshape(-1)
      ann_id += 1
      yield {
          "area": bbox[2] * bbox[3],
          "bbox": bbox,
          "category_id": item.category_id,
          "id": ann_id,
          "pair_id": rec.pair_id,
          "image_id": rec.image_id,
          "iscrowd": 0,
          "style": item.style,
          "num_keypoints": int((item.landmarks[:, 2] > 0).sum()),
          "keypoints": keypoints.tolist(),
          "segmentation": item.segmentation,
          "source": rec.source.json_name,
          "scale": item.scale,
          "occlusion": item.occlusion,
          "zoom_in": item.zoom_in,
          "viewpoint": item.viewpoint,
      }


def to_retrieval(records: list[parsing.ImageRecord]) -> tuple[list[dict], list[dict]]:
  """(query, gallery) ground truth lists.

  Query: every item of every user image (style-0 items included: the official protocol assigns
  detections to them too). Gallery: every item of every shop image, style-0 items included
  (they are never a target, but a retrieval with ground-truth boxes ranks them as distractors,
  as the detected shop garments are in the official protocol). Boxes are [x1, y1, x2, y2] as
  written in the annotation file.
  """
  query, gallery = [], []
  for rec in records:
    for item in rec.items:
      if rec.source == schema.Source.USER:
        query.append({"query_image_id": rec.image_id, "style": item.style,
                      "cls": item.category_id, "pair_id": rec.pair_id,
                      "bbox": list(item.raw_bbox)})
      else:
        gallery.append({"gallery_image_id": rec.image_id, "style": item.style,
                        "pair_id": rec.pair_id, "bbox": list(item.raw_bbox)})
  return query, gallery
