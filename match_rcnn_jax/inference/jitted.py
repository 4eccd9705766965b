"""The jitted inference of a Match R-CNN model.

The model is a static argument: equal models (the same config) share their compilations, so the
evaluation, the predictor and the demo's pictures compile once per model and input shape.
`data_parallel` is the same inference over a mesh of devices (every device of every host): the
batch split along a `data` axis, the variables replicated.
"""

from __future__ import annotations

import functools

import jax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


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


@functools.lru_cache(maxsize=8)
def data_parallel(model, mesh: Mesh, with_boxes: bool):
  """`infer` (`infer_with_boxes` with `with_boxes`) jitted over `mesh` (1-D, axis `data`):
  fn(variables, images, image_sizes[, boxes]) with the variables replicated and the batch and
  every output split along the batch axis (each host holds its own images' outputs)."""
  data, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
  if with_boxes:
    fn = lambda v, x, s, b: model.apply(v, x, image_sizes=s, boxes=b)  # noqa: E731
  else:
    fn = lambda v, x, s: model.apply(v, x, image_sizes=s)  # noqa: E731
  return jax.jit(fn, in_shardings=(replicated,) + (data,) * (3 if with_boxes else 2),
                 out_shardings=data)
