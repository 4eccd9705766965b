"""Model outputs -> official DeepFashion2 result records (one per detection).

A record holds `image_id`, `category_id`, `score`, `bbox` [x, y, w, h], `segmentation` (RLE of
the mask pasted into the original image) and `keypoints` (882 values, v = 1), in the pixels of
the original image; one record serves the box, mask and landmark evaluations alike.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils


class ResultsError(ValueError):
  """A malformed result file (the message names the file and the record)."""


def is_number(v) -> bool:
  """A finite int or float (not a bool): what every numeric field of a result record must be."""
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def all_numbers(values: list) -> bool:
  """`is_number` of every element of a list of many numbers, at a few microseconds a hundred
  (what checking 882 keypoint values of each of a million records needs)."""
  if not {type(v) for v in values} <= {int, float}:  # bools and int / float subclasses too
    return False
  try:
    return bool(np.isfinite(np.asarray(values, np.float64)).all())
  except OverflowError:  # an int beyond float64
    return False


def iter_json_array(path: str, chunk_chars: int = 1 << 22, progress=None):
  """The elements of the JSON array in file `path`, one at a time, parsed as the file is read
  (one chunk of its text and one element held at a time, whatever the file's size). Raises
  ResultsError naming the file and the element where the text is not a JSON array.
  `progress(n)`, if given, is called with the number of characters of each chunk read."""
  decoder = json.JSONDecoder()
  try:
    f = open(path)
  except OSError as e:
    raise ResultsError(f"{path}: cannot read JSON: {e}") from e
  with f:
    buf, pos, eof, index = "", 0, False, 0

    def fill() -> bool:
      """The next chunk appended to the unread text; False at the end of the file."""
      nonlocal buf, pos, eof
      if eof:
        return False
      more = f.read(chunk_chars)
      eof = not more
      if progress is not None and more:
        progress(len(more))
      buf, pos = buf[pos:] + more, 0
      return True

    def skip_space():
      nonlocal pos
      while True:
        while pos < len(buf) and buf[pos].isspace():
          pos += 1
        if pos < len(buf) or not fill():
          return

    skip_space()
    if pos >= len(buf) or buf[pos] != "[":
      raise ResultsError(f"{path}: expected a JSON array (a list of records)")
    pos += 1
    skip_space()
    if pos < len(buf) and buf[pos] == "]":
      return
    while True:
      while True:  # one element; parsed only once text follows it (a number may go on)
        try:
          item, end = decoder.raw_decode(buf, pos)
          if end < len(buf) or eof:
            break
        except json.JSONDecodeError as e:
          if eof:
            raise ResultsError(f"{path}: record {index}: invalid JSON: {e}") from e
        fill()
      pos = end
      yield item
      index += 1
      skip_space()
      if pos >= len(buf):
        raise ResultsError(f"{path}: the array ends after record {index - 1} without ']'")
      if buf[pos] == "]":
        pos += 1
        skip_space()
        if pos < len(buf):
          raise ResultsError(f"{path}: text after the array's closing ']'")
        return
      if buf[pos] != ",":
        raise ResultsError(f"{path}: expected ',' or ']' after record {index - 1}")
      pos += 1
      skip_space()


class JsonArrayWriter:
  """A JSON array written to `path` one element at a time (a temporary file beside it, moved
  into place by `close`: an interrupted run leaves no half-written file). A context manager;
  leaving it by an exception removes the temporary file."""

  def __init__(self, path: str):
    self.path, self.count = path, 0
    self._tmp = f"{path}.tmp-{os.getpid()}"
    self._f = open(self._tmp, "w")

  def add(self, item) -> None:
    self._f.write(("[" if not self.count else ",\n") + json.dumps(item))
    self.count += 1

  def extend(self, items) -> None:
    for item in items:
      self.add(item)

  def close(self) -> None:
    self._f.write("]" if self.count else "[]")
    self._f.close()
    os.replace(self._tmp, self.path)

  def __enter__(self):
    return self

  def __exit__(self, exc_type, *exc):
    if exc_type is None:
      self.close()
    else:
      self._f.close()
      os.remove(self._tmp)


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
