"""The jitted inference of a Match R-CNN model.

The model is a static argument: equal models (the same config) share their compilations, so the
evaluation, the predictor and the demo's pictures compile once per model and input shape.
"""

from __future__ import annotations

import functools

import jax


@functools.partial(jax.jit, static_argnames=("model",))
def infer(model, variables, images, image_sizes):
  """Detections of `images` [B, H, W, 3] (normalised canvases; `image_sizes` [B, 2] the
  resized images' (h, w) on them): `model.apply`'s inference outputs."""
  return model.apply(variables, images, image_sizes=image_sizes)


@functools.partial(jax.jit, static_argnames=("model",))
def infer_with_boxes(model, variables, images, image_sizes, boxes):
  """`infer` plus `box_embeddings` [B, K, D]: the match embeddings of given boxes [B, K, 4]
  (canvas pixels; e.g. the ground-truth garments)."""
  return model.apply(variables, images, image_sizes=image_sizes, boxes=boxes)
