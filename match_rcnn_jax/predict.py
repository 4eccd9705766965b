"""Predictor: a trained model's detections (category, score, box, mask, landmarks) on images.

    python -m match_rcnn_jax.predict --workdir W --images a.jpg b.jpg --output_dir O
        [--score_threshold 0.5]

`W` is a training workdir (its `export/`: the variables and the config that rebuilds the model).
Writes, per image, `O/<stem>.json`, a list of detections:
    {"category_id", "category_name", "score", "bbox": [x, y, w, h],
     "segmentation": {"size", "counts"} (COCO RLE), "landmarks": [[x, y, score], ...]}
(the landmarks are those of the detected category, in its own order; pixels of the original
image), and `O/<stem>.png` with the boxes, category names and scores, masks and landmarks drawn.

API: `Predictor.from_workdir(W)`, `predictor(list of HxWx3 uint8 arrays)` -> per image a list of
detections (as above, plus the match embedding under "embedding"); `draw(image, detections)`.
"""

from __future__ import annotations

import argparse
import json
import os

import jax
import ml_collections
import numpy as np
from PIL import Image, ImageDraw

from match_rcnn_jax.data import schema

_PALETTE = np.array([(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
                     (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60),
                     (250, 190, 212), (0, 128, 128), (170, 110, 40), (128, 0, 0)], np.uint8)


def color(category_id: int) -> tuple[int, int, int]:
  return tuple(int(v) for v in _PALETTE[(category_id - 1) % len(_PALETTE)])


def load_export(workdir: str):
  """(config, model, variables) of `W/export` (written at the end of training)."""
  from match_rcnn_jax.models import match_rcnn
  from match_rcnn_jax.tools import import_torchvision
  export = os.path.join(workdir, "export")
  cfg_path = os.path.join(export, "config.json")
  if not os.path.exists(cfg_path):
    raise FileNotFoundError(f"{cfg_path}: no export; train first (train.py writes W/export)")
  with open(cfg_path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  model = match_rcnn.build(config.model)
  template = match_rcnn.variable_shapes(model, tuple(config.data.canvas))
  return config, model, import_torchvision.load_variables(export, template)


def preprocess(image: np.ndarray, data_cfg) -> tuple[np.ndarray, np.ndarray]:
  """uint8 [H, W, 3] -> (normalised canvas [h, w, 3] float32, image_info [6]) exactly as the
  evaluation pipeline does it."""
  import tensorflow as tf

  from match_rcnn_jax.data import transforms
  ex = {"image": tf.constant(image), "boxes": tf.zeros((0, 4)),
        "landmarks": tf.zeros((0, schema.NUM_LANDMARKS, 3))}
  ex = transforms.resize_and_pad(ex, data_cfg.short_side, data_cfg.max_side,
                                 tuple(data_cfg.canvas))
  ex = transforms.normalize(ex, tuple(data_cfg.pixel_mean), tuple(data_cfg.pixel_std))
  return ex["image"].numpy().astype(np.float32), ex["image_info"].numpy()


def read_image(path: str) -> np.ndarray:
  try:
    with Image.open(path) as im:
      return np.asarray(im.convert("RGB"))
  except (OSError, ValueError) as e:
    raise ValueError(f"{path}: cannot read the image: {e}") from e


class Predictor:
  """Batched, jitted inference (one compilation: the config's canvas and batch size)."""

  def __init__(self, config, model, variables, score_threshold: float = 0.5,
               batch_size: int | None = None):
    self.config, self.model, self.variables = config, model, variables
    self.score_threshold = score_threshold
    self.batch_size = batch_size or config.batch_size
    from match_rcnn_jax.evaluation import inference
    self._infer = inference.infer_fn(model)

  @classmethod
  def from_workdir(cls, workdir: str, **kwargs) -> Predictor:
    return cls(*load_export(workdir), **kwargs)

  def raw(self, images: list[np.ndarray]) -> list[tuple[dict, np.ndarray]]:
    """(numpy model outputs of one image, its image_info) per image."""
    out = []
    for start in range(0, len(images), self.batch_size):
      chunk = [preprocess(im, self.config.data) for im in images[start:start + self.batch_size]]
      n = len(chunk)
      chunk += [chunk[0]] * (self.batch_size - n)
      x = np.stack([c[0] for c in chunk])
      info = np.stack([c[1] for c in chunk])
      res = jax.device_get(self._infer(self.variables, x, info[:, 4:6]))
      out += [({k: v[b] for k, v in res.items()}, info[b]) for b in range(n)]
    return out

  def __call__(self, images: list[np.ndarray]) -> list[list[dict]]:
    from match_rcnn_jax.evaluation import results
    per_image = []
    for out, info in self.raw(images):
      h, w, sy, sx = (float(v) for v in info[:4])
      dets = []
      for k in np.nonzero(out["valid"] & (out["scores"] >= self.score_threshold))[0]:
        cat = schema.CATEGORY_BY_ID[int(out["classes"][k])]
        box = results.original_boxes(out["boxes"][k], info)
        lm = out["landmarks"][k, cat.offset:cat.offset + cat.num_landmarks]
        dets.append({
            "category_id": cat.id, "category_name": cat.name, "score": float(out["scores"][k]),
            "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]),
                     float(box[3] - box[1])],
            "segmentation": results.mask_rle(out["masks"][k], box, int(h), int(w)),
            "landmarks": [[float(x / sx), float(y / sy), float(s)] for x, y, s in lm],
            "embedding": np.asarray(out["embeddings"][k], np.float32),
        })
      per_image.append(dets)
    return per_image


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


def split_images(data_dir: str, split: str, count: int) -> list[tuple[int, np.ndarray]]:
  """The first `count` (image id, uint8 image) of a converted split, in file order."""
  from match_rcnn_jax.data import pipeline
  ds = pipeline.read_split(data_dir, split, shuffle=False, seed=0, host=(0, 1)).take(count)
  return [(int(ex["image_id"]), ex["image"]) for ex in ds.as_numpy_iterator()]


def save_split_predictions(config, model, variables, split: str, path: str, count: int = 8,
                           score_threshold: float = 0.5) -> list[list[dict]]:
  """Draws the predictions on the first `count` images of `split` into one PNG at `path`."""
  items = split_images(config.data.dir, split, count)
  images = [im for _, im in items]
  dets = Predictor(config, model, variables, score_threshold=score_threshold)(images)
  grid([draw(im, d) for im, d in zip(images, dets)]).save(path)
  return dets


def public(detection: dict) -> dict:
  """A detection without its embedding (the JSON form)."""
  return {k: v for k, v in detection.items() if k != "embedding"}


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True, help="training workdir holding export/")
  parser.add_argument("--images", nargs="+", required=True)
  parser.add_argument("--output_dir", required=True)
  parser.add_argument("--score_threshold", type=float, default=0.5)
  args = parser.parse_args(argv)
  try:
    images = [read_image(p) for p in args.images]
    predictor = Predictor.from_workdir(args.workdir, score_threshold=args.score_threshold)
  except (ValueError, FileNotFoundError) as e:
    parser.exit(1, f"error: {e}\n")
  os.makedirs(args.output_dir, exist_ok=True)
  for path, image, dets in zip(args.images, images, predictor(images)):
    stem = os.path.splitext(os.path.basename(path))[0]
    with open(os.path.join(args.output_dir, stem + ".json"), "w") as f:
      json.dump([public(d) for d in dets], f)
    draw(image, dets).save(os.path.join(args.output_dir, stem + ".png"))
    names = ", ".join(f"{d['category_name']} {d['score']:.2f}" for d in dets) or "nothing"
    print(f"{path}: {names}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
