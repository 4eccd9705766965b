"""The model over a converted split (`inference.jitted`, batch by batch), producing official
result records and, for retrieval, the match embeddings."""

from __future__ import annotations

import contextlib
import dataclasses

import jax
import numpy as np

from match_rcnn_jax.data import pipeline, schema
from match_rcnn_jax.evaluation import result_files
from match_rcnn_jax.inference import jitted
from match_rcnn_jax.inference import records as records_lib


@dataclasses.dataclass
class SplitPredictions:
  """What the model makes of a split: result records, and for retrieval the match embeddings
  of every detection (row-aligned with `records`, with the source of its image) and of every
  ground-truth garment (`gt_items`: image_id, bbox [x1, y1, x2, y2] in original pixels,
  category_id, style, pair_id, source, scale, occlusion, zoom_in, viewpoint)."""

  records: list
  embeddings: np.ndarray  # [N, D]
  sources: np.ndarray  # [N] schema.Source values
  gt_items: list
  gt_embeddings: np.ndarray  # [G, D]


def _gt_items(batch, b: int) -> tuple[list[dict], np.ndarray]:
  keep = np.nonzero(batch["valid"][b])[0]
  boxes = records_lib.original_boxes(batch["boxes"][b, keep], batch["image_info"][b])
  items = []
  for k, box in zip(keep, boxes):
    attrs = batch["attributes"][b, k]
    items.append({"image_id": int(batch["image_id"][b]), "bbox": [float(v) for v in box],
                  "category_id": int(batch["classes"][b, k]), "style": int(batch["styles"][b, k]),
                  "pair_id": int(batch["pair_id"][b]), "source": int(batch["source"][b]),
                  **{name: int(v) for name, v in zip(schema.ATTRIBUTES, attrs)}})
  return items, keep


def predict_split(config, model, variables, split: str, batch_size: int | None = None,
                  progress=None, host=None, with_embeddings: bool = False,
                  records_path: str | None = None, gallery_min_score: float = 0.0):
  """Runs the model on every image of `split` (this host's share) and returns its result
  records, or with `with_embeddings` a `SplitPredictions` (the ground-truth garments embedded
  in the same pass).

  With `records_path` the result records are written to that file (the official JSON array)
  as they are made, and only what retrieval ranks stays in memory: `records` then holds, for
  each detection of a user image and each detection of a shop image scoring at least
  `gallery_min_score`, its image_id, category_id, score and bbox (row-aligned with
  `embeddings`), so memory does not grow with the masks and keypoints of a whole split.

  The last batch is padded to the static batch size with copies of its first image; padded
  entries are dropped.
  """
  batch_size = batch_size or config.batch_size
  infer = jitted.infer_with_boxes if with_embeddings else jitted.infer
  ds = pipeline.image_dataset(config.data, split, batch_size, train=False, with_masks=False,
                              host=host)
  records, embeddings, sources, gt_items, gt_embeddings = [], [], [], [], []
  with (result_files.JsonArrayWriter(records_path) if records_path
        else contextlib.nullcontext()) as writer:
    for batch in pipeline.as_numpy(ds):
      n = batch["image"].shape[0]
      images, info, boxes = batch["image"], batch["image_info"], batch["boxes"]
      if n < batch_size:
        images, info, boxes = (np.concatenate([x, np.repeat(x[:1], batch_size - n, 0)])
                               for x in (images, info, boxes))
      args = (variables, images, info[:, 4:6]) + ((boxes,) if with_embeddings else ())
      out = jax.device_get(infer(model, *args))
      out = {k: v[:n] for k, v in out.items()}
      batch_records = records_lib.to_records(out, batch["image_id"], batch["image_info"])
      if writer is None:
        records += batch_records
      else:
        writer.extend(batch_records)
      if with_embeddings:  # the order of to_records: image by image, valid detections
        first = 0
        for b in range(n):
          keep = np.nonzero(out["valid"][b])[0]
          source = int(batch["source"][b])
          if writer is not None:  # kept: what retrieval ranks, without masks and keypoints
            light = [{k: r[k] for k in ("image_id", "category_id", "score", "bbox")}
                     for r in batch_records[first:first + len(keep)]]
            first += len(keep)
            ranked = np.asarray([source == int(schema.Source.USER)
                                 or r["score"] >= gallery_min_score for r in light], bool)
            records += [r for r, k in zip(light, ranked) if k]
            keep = keep[ranked]
          embeddings.append(out["embeddings"][b, keep])
          sources += [source] * len(keep)
          items, gt_keep = _gt_items(batch, b)
          gt_items += items
          gt_embeddings.append(out["box_embeddings"][b, gt_keep])
      if progress is not None:
        progress(n)
  if not with_embeddings:
    return records
  dim = config.model.match_head.dim
  stack = lambda xs: (np.concatenate(xs) if xs else np.zeros((0, dim))).astype(np.float32)  # noqa
  return SplitPredictions(records, stack(embeddings), np.asarray(sources, np.int64), gt_items,
                          stack(gt_embeddings))
