"""Jitted inference over a converted split, producing official result records."""

from __future__ import annotations

import jax
import numpy as np

from match_rcnn_jax.data import pipeline
from match_rcnn_jax.evaluation import results

_INFER: dict[int, tuple] = {}


def infer_fn(model):
  """The jitted inference `fn(variables, images, image_sizes)` of `model`, one per model, so the
  evaluation, the predictor and the picture of the demo share its compilations."""
  key = id(model)
  if key not in _INFER or _INFER[key][0] is not model:
    _INFER[key] = (model, jax.jit(lambda v, x, s: model.apply(v, x, image_sizes=s)))
  return _INFER[key][1]


def predict_split(config, model, variables, split: str, batch_size: int | None = None,
                  progress=None, host=None, with_embeddings: bool = False):
  """Runs the model on every image of `split` (this host's share) and returns result records,
  or with `with_embeddings` (records, match embeddings [N, D] row-aligned with the records,
  image sources [N] (schema.Source values)).

  The last batch is padded to the static batch size with copies of its first image; padded
  entries are dropped.
  """
  batch_size = batch_size or config.batch_size
  infer = infer_fn(model)
  ds = pipeline.image_dataset(config.data, split, batch_size, train=False, with_masks=False,
                              host=host)
  records, embeddings, sources = [], [], []
  for batch in pipeline.as_numpy(ds):
    n = batch["image"].shape[0]
    images, info = batch["image"], batch["image_info"]
    if n < batch_size:
      pad = batch_size - n
      images = np.concatenate([images, np.repeat(images[:1], pad, 0)])
      info = np.concatenate([info, np.repeat(info[:1], pad, 0)])
    out = jax.device_get(infer(variables, images, info[:, 4:6]))
    out = {k: v[:n] for k, v in out.items()}
    records += results.to_records(out, batch["image_id"], batch["image_info"])
    if with_embeddings:  # the order of to_records: image by image, valid detections
      for b in range(n):
        keep = np.nonzero(out["valid"][b])[0]
        embeddings.append(out["embeddings"][b, keep])
        sources += [int(batch["source"][b])] * len(keep)
    if progress is not None:
      progress(n)
  if not with_embeddings:
    return records
  dim = config.model.match_head.dim
  emb = np.concatenate(embeddings) if embeddings else np.zeros((0, dim), np.float32)
  return records, emb.astype(np.float32), np.asarray(sources, np.int64)
