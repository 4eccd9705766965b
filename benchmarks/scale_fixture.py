"""A validation-shaped DeepFashion2 split with result files, made to measure and test scoring at
the released split's size (`benchmarks/eval_scale.py`, the scoring tests).

`make_split(out_dir, images, detections)` writes:
  * ground truth in the converter's formats: `images` images, a third consumer ("user") photos
    and two thirds shop photos, 1.7 garments per image (the released validation split: 32,153
    images, 10,844 user / 21,309 shop, 54,910 garments), each with a box, a polygon, its
    category's landmarks among the 294 (visible / occluded / unlabelled), `scale` /
    `occlusion` / `zoom_in` / `viewpoint`, `pair_id` and `style` (`validation_coco.json`,
    `validation_query.json`, `validation_gallery.json`);
  * results in the official formats (`results.json`, `retrieval_results.json`): `detections`
    records per image (box, RLE mask, 882 keypoint values): one jittered copy of each garment,
    the rest random boxes, scores in (0, 1); one retrieval record (20 gallery entries) per
    detection of a user image, whose product's shop garments are ranked at a random place
    for half of the true garments' detections and whose other entries are random shop images.
The records are written to disk as they are made (one image's at a time).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict

import numpy as np
from pycocotools import mask as mask_utils

from match_rcnn_jax.data import coco, schema
from match_rcnn_jax.evaluation.result_files import JsonArrayWriter

GARMENTS_PER_IMAGE = 54910 / 32153
USER_SHARE = 10844 / 32153
RANKED = 20


def _garment(rng, width: int, height: int):
  """(category, [x1, y1, x2, y2], 294 x 3 landmarks, attributes) of one garment."""
  cat = schema.CATEGORIES[int(rng.integers(len(schema.CATEGORIES)))]
  w, h = rng.uniform(0.15, 0.9) * width, rng.uniform(0.15, 0.9) * height
  x1, y1 = rng.uniform(0, width - w), rng.uniform(0, height - h)
  box = [round(x1, 2), round(y1, 2), round(x1 + w, 2), round(y1 + h, 2)]
  lm = np.zeros((schema.NUM_LANDMARKS, 3))
  n = cat.num_landmarks
  lm[cat.landmark_slice, 0] = np.round(rng.uniform(x1, x1 + w, n), 2)
  lm[cat.landmark_slice, 1] = np.round(rng.uniform(y1, y1 + h, n), 2)
  lm[cat.landmark_slice, 2] = rng.choice([0, 1, 2], n, p=[0.1, 0.3, 0.6])
  lm[lm[:, 2] == 0, :2] = 0
  area = w * h / (width * height)
  attrs = {"scale": 1 if area < 0.1 else 2 if area < 0.4 else 3,
           "occlusion": int(rng.integers(1, 4)), "zoom_in": int(rng.integers(1, 4)),
           "viewpoint": int(rng.integers(1, 4))}
  return cat, box, lm, attrs


def _polygon(box):
  x1, y1, x2, y2 = box
  cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
  return [[x1, cy, cx, y1, x2, cy, cx, y2, x1 + 1, cy + 1]]  # a diamond in the box


def _rle(box, width: int, height: int) -> dict:
  x1, y1, x2, y2 = box
  rle = mask_utils.frPyObjects(np.asarray([[x1, y1, x2 - x1, y2 - y1]], np.float64),
                               height, width)[0]
  return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


def make_split(out_dir: str, images: int, detections: int, seed: int = 0) -> dict:
  """Writes the ground truth and the result files; returns their sizes and paths."""
  rng = np.random.default_rng(seed)
  os.makedirs(out_dir, exist_ok=True)
  width, height = 640, 800
  image_list, annotations, query, gallery = [], [], [], []
  user = rng.uniform(size=images) < USER_SHARE
  garments = {}  # image id -> [(category, box, landmarks)], for the results
  for i in range(images):
    image_id = i + 1
    pair_id = i // 3 + 1  # a product per 3 images (a user photo and its shop photos)
    image_list.append({"coco_url": "", "date_captured": "", "file_name": f"{image_id:06d}.jpg",
                       "flickr_url": "", "id": image_id, "license": 0, "width": width,
                       "height": height})
    for style in range(1, 1 + max(1, int(rng.poisson(GARMENTS_PER_IMAGE - 1) + 1))):
      cat, box, lm, attrs = _garment(rng, width, height)
      bbox = [box[0], box[1], box[2] - box[0], box[3] - box[1]]
      annotations.append({
          "area": bbox[2] * bbox[3], "bbox": bbox, "category_id": cat.id,
          "id": len(annotations) + 1, "pair_id": pair_id, "image_id": image_id, "iscrowd": 0,
          "style": style, "num_keypoints": int((lm[:, 2] > 0).sum()),
          "keypoints": lm.reshape(-1).tolist(), "segmentation": _polygon(box),
          "source": "user" if user[i] else "shop", **attrs})
      if user[i]:
        query.append({"query_image_id": image_id, "style": style, "cls": cat.id,
                      "pair_id": pair_id, "bbox": box})
      else:
        gallery.append({"gallery_image_id": image_id, "style": style, "pair_id": pair_id,
                        "bbox": box})
      garments.setdefault(image_id, []).append((cat, box, lm))
  gt = {"info": {}, "licenses": [], "images": image_list, "annotations": annotations,
        "categories": coco.coco_categories()}
  for name, data in (("coco", gt), ("query", query), ("gallery", gallery)):
    with open(os.path.join(out_dir, f"validation_{name}.json"), "w") as f:
      json.dump(data, f)

  results = JsonArrayWriter(os.path.join(out_dir, "results.json"))
  retrieval = JsonArrayWriter(os.path.join(out_dir, "retrieval_results.json"))
  shop_ids = [im["id"] for im, u in zip(image_list, user) if not u] or [1]
  shop_items = defaultdict(list)  # (pair_id, style) -> [(shop image id, box)]
  for g in gallery:
    shop_items[g["pair_id"], g["style"]].append((g["gallery_image_id"], g["bbox"]))
  for i in range(images):
    image_id = i + 1
    dets = []  # (category, box, landmarks, score, (pair_id, style) of a true garment or None)
    for style, (cat, box, lm) in enumerate(garments[image_id][:detections], 1):
      jitter = rng.normal(0, 0.03, 4) * np.tile([box[2] - box[0], box[3] - box[1]], 2)
      det_lm = lm.copy()
      det_lm[cat.landmark_slice, :2] += rng.normal(0, 5, (cat.num_landmarks, 2))
      det_lm[:, 2] = 1
      dets.append((cat, list(np.asarray(box) + jitter), det_lm, rng.uniform(0.5, 1),
                   (i // 3 + 1, style)))
    while len(dets) < detections:
      cat, box, lm, _ = _garment(rng, width, height)
      lm[:, 2] = 1
      dets.append((cat, box, lm, rng.uniform(0, 0.6), None))
    for cat, box, lm, score, product in dets:
      x1, y1 = max(box[0], 0.0), max(box[1], 0.0)
      x2, y2 = min(box[2], width), min(box[3], height)
      box = [round(float(v), 2) for v in (x1, y1, max(x2, x1 + 1), max(y2, y1 + 1))]
      results.add({"image_id": image_id, "category_id": cat.id, "score": round(float(score), 4),
                   "bbox": [box[0], box[1], round(box[2] - box[0], 2),
                            round(box[3] - box[1], 2)],
                   "segmentation": _rle(box, width, height),
                   "keypoints": np.round(lm, 2).reshape(-1).tolist()})
      if user[i]:
        ranked = [(shop_ids[j], [10.0, 10.0, 300.0, 400.0])
                  for j in rng.choice(len(shop_ids), RANKED)]
        targets = shop_items.get(product, [])
        if targets and rng.uniform() < 0.5:  # the product's shop garment at a random place
          ranked[int(rng.integers(RANKED))] = targets[int(rng.integers(len(targets)))]
        retrieval.add({"query_image_id": image_id, "query_bbox": box, "query_cls": cat.id,
                       "query_score": round(float(score), 4),
                       "gallery_image_id": [gid for gid, _ in ranked],
                       "gallery_bbox": [list(b) for _, b in ranked]})
  results.close()
  retrieval.close()
  return {"images": images, "garments": len(annotations), "records": results.count,
          "retrieval_records": retrieval.count,
          "results_mb": round(os.path.getsize(results.path) / 2**20, 1)}


