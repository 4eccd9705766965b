"""`Predictor`: a trained model's detections (category, score, box, mask, landmarks, match
embedding) on images, in the original images' pixels.

    predictor = Predictor.from_workdir(W)   # W/export, written at the end of training
    detections = predictor([uint8 HxWx3 image, ...])   # per image a list of dicts

Each detection: {"category_id", "category_name", "score", "bbox": [x, y, w, h],
"segmentation": COCO RLE, "landmarks": [[x, y, score], ...] (the detected category's, in its
own order), "embedding": float32 [D]}; `public(d)` drops the embedding (the JSON form).
"""

from __future__ import annotations

import jax
import numpy as np
from PIL import Image

from match_rcnn_jax.data import schema
from match_rcnn_jax.inference import jitted


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

  @classmethod
  def from_workdir(cls, workdir: str, **kwargs) -> Predictor:
    """The model of `W/export` (`models.export.load_export`)."""
    from match_rcnn_jax.models import export
    return cls(*export.load_export(workdir), **kwargs)

  def raw(self, images: list[np.ndarray]) -> list[tuple[dict, np.ndarray]]:
    """(numpy model outputs of one image, its image_info) per image."""
    out = []
    for start in range(0, len(images), self.batch_size):
      chunk = [preprocess(im, self.config.data) for im in images[start:start + self.batch_size]]
      n = len(chunk)
      chunk += [chunk[0]] * (self.batch_size - n)
      x = np.stack([c[0] for c in chunk])
      info = np.stack([c[1] for c in chunk])
      res = jax.device_get(jitted.infer(self.model, self.variables, x, info[:, 4:6]))
      out += [({k: v[b] for k, v in res.items()}, info[b]) for b in range(n)]
    return out

  def __call__(self, images: list[np.ndarray]) -> list[list[dict]]:
    from match_rcnn_jax.inference import records
    per_image = []
    for out, info in self.raw(images):
      h, w, sy, sx = (float(v) for v in info[:4])
      dets = []
      for k in np.nonzero(out["valid"] & (out["scores"] >= self.score_threshold))[0]:
        cat = schema.CATEGORY_BY_ID[int(out["classes"][k])]
        box = records.original_boxes(out["boxes"][k], info)
        lm = out["landmarks"][k, cat.offset:cat.offset + cat.num_landmarks]
        dets.append({
            "category_id": cat.id, "category_name": cat.name, "score": float(out["scores"][k]),
            "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]),
                     float(box[3] - box[1])],
            "segmentation": records.mask_rle(out["masks"][k], box, int(h), int(w)),
            "landmarks": [[float(x / sx), float(y / sy), float(s)] for x, y, s in lm],
            "embedding": np.asarray(out["embeddings"][k], np.float32),
        })
      per_image.append(dets)
    return per_image


def public(detection: dict) -> dict:
  """A detection without its embedding (the JSON form)."""
  return {k: v for k, v in detection.items() if k != "embedding"}
