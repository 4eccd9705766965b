"""The evaluation's pictures of a held-out split: the predictions on its first images
(`save_split_predictions`) and the retrieval of its first query garments by the official
protocol (`save_split_retrieval`).
"""

from __future__ import annotations

import json
import os

import numpy as np

from match_rcnn_jax.evaluation import retrieval
from match_rcnn_jax.inference import predictor as predictor_lib
from match_rcnn_jax.inference.visualize import draw, grid, result_strip


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
  dets = predictor_lib.Predictor(config, model, variables, score_threshold=score_threshold)(images)
  grid([draw(im, d) for im, d in zip(images, dets)]).save(path)
  return dets


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
