"""Jitted inference over a converted split, producing official result records."""

from __future__ import annotations

import jax
import numpy as np

from match_rcnn_jax.data import pipeline
from match_rcnn_jax.evaluation import results


def predict_split(config, model, variables, split: str, batch_size: int | None = None,
                  progress=None, host=None) -> list[dict]:
  """Runs the model on every image of `split` (this host's share) and returns result records.

  The last batch is padded to the static batch size with copies of its first image; padded
  entries are dropped.
  """
  batch_size = batch_size or config.batch_size
  infer = jax.jit(lambda v, x, s: model.apply(v, x, image_sizes=s))
  ds = pipeline.image_dataset(config.data, split, batch_size, train=False, with_masks=False,
                              host=host)
  records = []
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
    if progress is not None:
      progress(n)
  return records
