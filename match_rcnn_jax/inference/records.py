"""Model outputs -> official DeepFashion2 result records (one per detection).

A record holds `image_id`, `category_id`, `score`, `bbox` [x, y, w, h], `segmentation` (RLE of
the mask pasted into the original image) and `keypoints` (882 values, v = 1), in the pixels of
the original image; one record serves the box, mask and landmark evaluations alike.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils


def paste_mask(prob: np.ndarray, box, height: int, width: int) -> np.ndarray:
  """A box-relative probability map [S, S] -> binary mask [height, width] (>= 0.5)."""
  x1, y1, x2, y2 = box
  out = np.zeros((height, width), np.uint8)
  ix1, iy1 = int(np.floor(x1)), int(np.floor(y1))
  ix2, iy2 = int(np.ceil(x2)), int(np.ceil(y2))
  w, h = max(ix2 - ix1, 1), max(iy2 - iy1, 1)
  resized = np.asarray(Image.fromarray(prob.astype(np.float32), mode="F").resize(
      (w, h), Image.BILINEAR)) >= 0.5
  cx1, cy1 = max(ix1, 0), max(iy1, 0)
  cx2, cy2 = min(ix1 + w, width), min(iy1 + h, height)
  if cx2 > cx1 and cy2 > cy1:
    out[cy1:cy2, cx1:cx2] = resized[cy1 - iy1:cy2 - iy1, cx1 - ix1:cx2 - ix1]
  return out


def mask_rle(prob: np.ndarray, box, height: int, width: int) -> dict:
  """`paste_mask` as a JSON-ready COCO RLE {'size': [h, w], 'counts': str}."""
  rle = mask_utils.encode(np.asfortranarray(paste_mask(prob, box, height, width)))
  return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def original_boxes(boxes: np.ndarray, info) -> np.ndarray:
  """Canvas boxes [..., 4] -> boxes in the original image's pixels (clipped to it), given the
  image's `image_info` (original h, w, y scale, x scale, ...)."""
  h, w, sy, sx = (float(v) for v in info[:4])
  return np.clip(boxes / np.array([sx, sy, sx, sy], np.float32), 0, [w, h, w, h])


def to_records(outputs: dict, image_ids, image_info, with_masks: bool = True,
               with_landmarks: bool = True) -> list[dict]:
  """Result records of a batch.

  Args:
    outputs: numpy model outputs of a batch (boxes, scores, classes, valid, masks, landmarks).
    image_ids: [B]; image_info: [B, 6] (original h, w, y scale, x scale, ...) from the pipeline.
  """
  records = []
  for b, image_id in enumerate(image_ids):
    h, w, sy, sx = (float(v) for v in image_info[b, :4])
    for k in np.nonzero(outputs["valid"][b])[0]:
      box = original_boxes(outputs["boxes"][b, k], image_info[b])
      rec = {"image_id": int(image_id), "category_id": int(outputs["classes"][b, k]),
             "score": float(outputs["scores"][b, k]),
             "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]),
                      float(box[3] - box[1])]}
      if with_masks:
        rec["segmentation"] = mask_rle(outputs["masks"][b, k], box, int(h), int(w))
      if with_landmarks:
        lm = outputs["landmarks"][b, k].astype(np.float64).copy()
        lm[:, 0] /= sx
        lm[:, 1] /= sy
        lm[:, 2] = 1.0
        rec["keypoints"] = lm.reshape(-1).tolist()
      records.append(rec)
  return records
