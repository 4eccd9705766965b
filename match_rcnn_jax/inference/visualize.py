"""Detections and retrievals drawn: per-image pictures, grids and retrieval strips (the
evaluation's pictures of a split: `evaluation.figures`)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from match_rcnn_jax.inference import predictor as predictor_lib

_PALETTE = np.array([(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
                     (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60),
                     (250, 190, 212), (0, 128, 128), (170, 110, 40), (128, 0, 0)], np.uint8)


def color(category_id: int) -> tuple[int, int, int]:
  return tuple(int(v) for v in _PALETTE[(category_id - 1) % len(_PALETTE)])


def draw(image: np.ndarray, detections: list[dict], alpha: float = 0.45) -> Image.Image:
  """The image with each detection's mask (tinted), box, "name score" label and landmarks."""
  from pycocotools import mask as mask_utils
  canvas = image.astype(np.float32).copy()
  for d in detections:
    m = mask_utils.decode(d["segmentation"]).astype(bool)
    canvas[m] = (1 - alpha) * canvas[m] + alpha * np.asarray(color(d["category_id"]))
  im = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
  pen = ImageDraw.Draw(im)
  for d in detections:
    c = color(d["category_id"])
    x, y, w, h = d["bbox"]
    pen.rectangle([x, y, x + w, y + h], outline=c, width=2)
    label = f"{d['category_name']} {d['score']:.2f}"
    tw = pen.textlength(label)
    pen.rectangle([x, max(y - 11, 0), x + tw + 4, max(y - 11, 0) + 11], fill=c)
    pen.text((x + 2, max(y - 11, 0)), label, fill=(0, 0, 0))
    for lx, ly, _ in d["landmarks"]:
      pen.ellipse([lx - 2, ly - 2, lx + 2, ly + 2], fill=(255, 255, 255), outline=(0, 0, 0))
  return im


def grid(pictures: list[Image.Image], columns: int = 4, cell: int = 256) -> Image.Image:
  """Pictures scaled to fit `cell` x `cell` tiles, `columns` per row, on white."""
  rows = -(-len(pictures) // columns)
  sheet = Image.new("RGB", (columns * cell, max(rows, 1) * cell), (255, 255, 255))
  for i, pic in enumerate(pictures):
    scale = cell / max(pic.size)
    pic = pic.resize((max(1, round(pic.width * scale)), max(1, round(pic.height * scale))),
                     Image.BILINEAR)
    sheet.paste(pic, ((i % columns) * cell, (i // columns) * cell))
  return sheet


def crop(image: np.ndarray, bbox, height: int) -> Image.Image:
  x, y, w, h = bbox
  x1, y1 = int(max(x, 0)), int(max(y, 0))
  x2, y2 = int(min(x + w, image.shape[1])), int(min(y + h, image.shape[0]))
  crop = Image.fromarray(image[y1:max(y2, y1 + 1), x1:max(x2, x1 + 1)])
  return crop.resize((max(1, round(crop.width * height / crop.height)), height), Image.BILINEAR)


def strip(query_image: np.ndarray, results: list[dict], height: int = 128) -> Image.Image:
  """One row per query garment: its crop (outlined), then its matches with probabilities."""
  cache: dict[str, np.ndarray] = {}
  rows = []
  for r in results:
    tiles = [(crop(query_image, r["bbox"], height), f"query: {r['category_name']}",
              _QUERY_FRAME)]
    for m in r["matches"]:
      if m["image"] not in cache:
        cache[m["image"]] = predictor_lib.read_image(m["image"])
      tiles.append((crop(cache[m["image"]], m["bbox"], height),
                    f"p={m['match_probability']:.2f}", None))
    rows.append(tiles)
  return _sheet(rows, height)


_QUERY_FRAME = (230, 25, 75)


def _sheet(rows: list, height: int) -> Image.Image:
  """Rows of (tile, caption, frame colour or None) laid out left to right, captions above."""
  width = max([sum(t.width + 8 for t, _, _ in row) for row in rows] + [height])
  sheet = Image.new("RGB", (width, max(len(rows), 1) * (height + 20)), (255, 255, 255))
  pen = ImageDraw.Draw(sheet)
  for i, row in enumerate(rows):
    x, y = 0, i * (height + 20)
    for tile, caption, frame in row:
      sheet.paste(tile, (x, y + 16))
      pen.text((x + 2, y + 2), caption, fill=(0, 0, 0))
      if frame is not None:
        pen.rectangle([x, y + 16, x + tile.width - 1, y + 16 + height - 1], outline=frame,
                      width=3)
      x += tile.width + 8
  return sheet


def _xywh(box):
  x1, y1, x2, y2 = box
  return [x1, y1, x2 - x1, y2 - y1]


def result_strip(results: list, images: dict, top: int = 5, height: int = 96) -> Image.Image:
  """Rows of a retrieval evaluation (`evaluation.retrieval.QueryResult`s): the query garment's
  crop, then its first `top` gallery entries, each framed green when it is one of the query's
  targets (the same product), grey otherwise. `images`: image id -> uint8 image."""
  rows = []
  for r in results:
    q = r.record
    tiles = [(crop(images[q["query_image_id"]], _xywh(q["query_bbox"]), height),
              f"query {q['query_image_id']}", _QUERY_FRAME)]
    for t, (gid, box) in enumerate(zip(q["gallery_image_id"][:top], q["gallery_bbox"][:top])):
      tiles.append((crop(images[gid], _xywh(box), height), f"{t + 1}: {gid}",
                    (60, 180, 75) if r.hits[t] else (170, 170, 170)))
    rows.append(tiles)
  return _sheet(rows, height)


