"""Consumer-to-shop retrieval for users: index a folder of shop images, find each garment of the
query images in it.

    python -m match_rcnn_jax.retrieve --workdir W --gallery_dir SHOP/ --queries q1.jpg q2.jpg
        --output_dir O [--top_k 5] [--score_threshold 0.5]

Every garment detected in the gallery images (score >= threshold) is indexed by its match
embedding; every garment detected in a query image is ranked against the whole index by the
match network's exact probability (one matrix product, see `evaluation.retrieval`). Writes per
query image `O/<stem>.json`:
    [{"bbox": [x, y, w, h], "category_name", "score",
      "matches": [{"image", "bbox", "category_name", "match_probability"}, ...]}, ...]
and `O/<stem>.png`: one row per query garment, its crop then the top-k gallery crops, each
captioned with the match probability.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
from PIL import Image, ImageDraw

from match_rcnn_jax import predict
from match_rcnn_jax.evaluation import retrieval

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


class Index:
  """Detected gallery garments: their images, detections and embeddings [N, D]."""

  def __init__(self, predictor: predict.Predictor, paths: list[str]):
    self.paths, self.items, embs = paths, [], []
    for start in range(0, len(paths), 64):  # bounded memory for large folders
      chunk = paths[start:start + 64]
      for path, dets in zip(chunk, predictor([predict.read_image(p) for p in chunk])):
        for d in dets:
          self.items.append({"image": path, **predict.public(d)})
          embs.append(d["embedding"])
    dim = predictor.config.model.match_head.dim
    self.embeddings = np.stack(embs) if embs else np.zeros((0, dim), np.float32)


def search(index: Index, detections: list[dict], similarity_params, top_k: int) -> list[dict]:
  """Each query detection with its `top_k` gallery matches, best first."""
  if not detections or not index.items:
    return [{**predict.public(d), "matches": []} for d in detections]
  w, b = retrieval.similarity_vector(similarity_params)
  idx, logits = retrieval.rank(np.stack([d["embedding"] for d in detections]),
                               index.embeddings, w, b, k=top_k)
  out = []
  for d, row, vals in zip(detections, idx, logits):
    matches = [{"image": index.items[i]["image"], "bbox": index.items[i]["bbox"],
                "category_name": index.items[i]["category_name"],
                "match_probability": float(retrieval.sigmoid(v))}
               for i, v in zip(row, vals) if i >= 0]
    out.append({**predict.public(d), "matches": matches})
  return out


def _crop(image: np.ndarray, bbox, height: int) -> Image.Image:
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
    tiles = [(_crop(query_image, r["bbox"], height), f"query: {r['category_name']}",
              _QUERY_FRAME)]
    for m in r["matches"]:
      if m["image"] not in cache:
        cache[m["image"]] = predict.read_image(m["image"])
      tiles.append((_crop(cache[m["image"]], m["bbox"], height),
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
    tiles = [(_crop(images[q["query_image_id"]], _xywh(q["query_bbox"]), height),
              f"query {q['query_image_id']}", _QUERY_FRAME)]
    for t, (gid, box) in enumerate(zip(q["gallery_image_id"][:top], q["gallery_bbox"][:top])):
      tiles.append((_crop(images[gid], _xywh(box), height), f"{t + 1}: {gid}",
                    (60, 180, 75) if r.hits[t] else (170, 170, 170)))
    rows.append(tiles)
  return _sheet(rows, height)


def save_split_retrieval(data_dir: str, split: str, records: list[dict], path: str,
                         count: int = 8, top: int = 5) -> list:
  """Draws the first `count` represented query garments of `split` (by the official protocol,
  from retrieval result `records`) with their top `top` shop garments, hits framed, into one
  PNG at `path`; returns those `QueryResult`s."""
  from match_rcnn_jax.data import pipeline
  with open(os.path.join(data_dir, f"{split}_query.json")) as f:
    query_gt = json.load(f)
  with open(os.path.join(data_dir, f"{split}_gallery.json")) as f:
    gallery_gt = json.load(f)
  results = [r for r in retrieval.query_results(query_gt, gallery_gt, records)
             if r.record is not None]
  results = sorted(results, key=lambda r: r.item["query_image_id"])[:count]
  ids = {r.record["query_image_id"] for r in results}
  ids |= {g for r in results for g in r.record["gallery_image_id"][:top]}
  images = pipeline.split_images(data_dir, split, ids)
  result_strip(results, images, top).save(path)
  return results


def gallery_paths(folder: str) -> list[str]:
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"{folder}: not a folder of gallery images")
  paths = sorted(os.path.join(folder, f) for f in os.listdir(folder)
                 if f.lower().endswith(IMAGE_EXTENSIONS))
  if not paths:
    raise FileNotFoundError(f"{folder}: no {'/'.join(IMAGE_EXTENSIONS)} images")
  return paths


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True, help="training workdir holding export/")
  parser.add_argument("--gallery_dir", required=True, help="folder of shop images to index")
  parser.add_argument("--queries", nargs="+", required=True, help="query (consumer) images")
  parser.add_argument("--output_dir", required=True)
  parser.add_argument("--top_k", type=int, default=5)
  parser.add_argument("--score_threshold", type=float, default=0.5,
                      help="detections below this score are neither indexed nor queried")
  args = parser.parse_args(argv)
  if args.top_k < 1:
    parser.error("--top_k must be >= 1")
  try:
    paths = gallery_paths(args.gallery_dir)
    queries = [predict.read_image(p) for p in args.queries]
    predictor = predict.Predictor.from_workdir(args.workdir,
                                               score_threshold=args.score_threshold)
  except (ValueError, FileNotFoundError) as e:
    parser.exit(1, f"error: {e}\n")
  index = Index(predictor, paths)
  print(f"indexed {len(index.items)} garments in {len(paths)} gallery images")
  os.makedirs(args.output_dir, exist_ok=True)
  similarity = predictor.variables["params"]["similarity"]
  for path, image, dets in zip(args.queries, queries, predictor(queries)):
    results = search(index, dets, similarity, args.top_k)
    stem = os.path.splitext(os.path.basename(path))[0]
    with open(os.path.join(args.output_dir, stem + ".json"), "w") as f:
      json.dump(results, f, indent=1)
    strip(image, results).save(os.path.join(args.output_dir, stem + ".png"))
    for r in results:
      best = r["matches"][0] if r["matches"] else None
      found = (f"{os.path.basename(best['image'])} p={best['match_probability']:.2f}"
               if best else "no match")
      print(f"{path}: {r['category_name']} {r['score']:.2f} -> {found}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
