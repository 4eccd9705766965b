"""The model over a converted split, producing official result records and, for retrieval, the
match embeddings: inference over every device of every host (`inference.jitted.data_parallel`),
each host reading its own share of the split, the results gathered on the first process."""

from __future__ import annotations

import contextlib
import dataclasses
import pickle

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

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


def _any_host(flag: bool, hosts: int) -> bool:
  """Whether `flag` is set on any of the `hosts` processes (every one must call this)."""
  if hosts == 1:
    return flag
  return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))


def _gather_to_first(part, hosts: int) -> list:
  """Every process's `part` (any picklable value), in process order, on the first process;
  [] on the others (every one must call this). One process: [part]."""
  if hosts == 1:
    return [part]
  blob = np.frombuffer(pickle.dumps(part), np.uint8)
  sizes = multihost_utils.process_allgather(np.asarray(blob.size, np.int64))
  padded = np.zeros(int(sizes.max()), np.uint8)
  padded[:blob.size] = blob
  blobs = multihost_utils.process_allgather(padded)
  if jax.process_index() != 0:
    return []
  return [pickle.loads(blobs[i, :int(sizes[i])].tobytes()) for i in range(hosts)]


def _local_rows(array, n: int) -> np.ndarray:
  """The first `n` rows of this process's part of a batch-sharded global array."""
  shards = sorted(array.addressable_shards, key=lambda s: s.index[0].start or 0)
  return np.concatenate([np.asarray(s.data) for s in shards])[:n]


def _inputs(batch, n: int, local_batch: int, config, with_boxes: bool) -> list[np.ndarray]:
  """(images, image sizes[, boxes]) of this host's `batch` padded to `local_batch` rows; the
  padding rows (the whole batch, on a host whose share of the split has run out) are blank
  canvases, dropped after inference."""
  h, w = tuple(config.data.canvas)
  pad = local_batch - n
  images = np.zeros((pad, h, w, 3), np.float32)
  sizes = np.tile(np.asarray([[h, w]], np.float32), (pad, 1))
  boxes = np.zeros((pad, int(config.data.max_instances), 4), np.float32)
  if n:
    images = np.concatenate([batch["image"], images.astype(batch["image"].dtype)])
    sizes = np.concatenate([batch["image_info"][:, 4:6], sizes.astype(batch["image_info"].dtype)])
    boxes = np.concatenate([batch["boxes"], boxes.astype(batch["boxes"].dtype)])
  return [images, sizes, boxes] if with_boxes else [images, sizes]


def _batch_part(out: dict, batch, n: int, with_embeddings: bool, light: bool,
                gallery_min_score: float) -> dict:
  """One host's results of one batch: its result records ("records") and, with
  `with_embeddings`, what retrieval ranks ("ranked": the records of the embedded detections,
  only image_id, category_id, score and bbox when `light`), their "embeddings" and "sources",
  and the ground-truth garments ("gt_items", "gt_embeddings")."""
  part = {"n": n, "records": [], "ranked": [], "embeddings": [], "sources": [], "gt_items": [],
          "gt_embeddings": []}
  if not n:
    return part
  records = records_lib.to_records(out, batch["image_id"], batch["image_info"])
  part["records"] = records
  if not with_embeddings:
    return part
  first = 0  # the order of to_records: image by image, valid detections
  for b in range(n):
    keep = np.nonzero(out["valid"][b])[0]
    source = int(batch["source"][b])
    image_records = records[first:first + len(keep)]
    first += len(keep)
    if light:  # kept: what retrieval ranks, without masks and keypoints
      image_records = [{k: r[k] for k in ("image_id", "category_id", "score", "bbox")}
                       for r in image_records]
      ranked = np.asarray([source == int(schema.Source.USER) or r["score"] >= gallery_min_score
                           for r in image_records], bool)
      image_records = [r for r, k in zip(image_records, ranked) if k]
      keep = keep[ranked]
    part["ranked"] += image_records
    part["embeddings"].append(out["embeddings"][b, keep])
    part["sources"] += [source] * len(keep)
    items, gt_keep = _gt_items(batch, b)
    part["gt_items"] += items
    part["gt_embeddings"].append(out["box_embeddings"][b, gt_keep])
  return part


def predict_split(config, model, variables, split: str, batch_size: int | None = None,
                  progress=None, host=None, with_embeddings: bool = False,
                  records_path: str | None = None, gallery_min_score: float = 0.0,
                  devices=None):
  """Runs the model on every image of `split` over `devices` (default: every device of every
  host; the global batch is `batch_size`, default `config.batch_size`, rounded up to a multiple
  of their count), each host reading its own share of the split (`host`: (index, count),
  default this process's) and sharding its batches over its local devices. The results are
  gathered on the first process, which returns its result records, or with
  `with_embeddings` a `SplitPredictions` (the ground-truth garments embedded in the same pass);
  the other processes return None. Every process must call it.

  With `records_path` the result records are written to that file (the official JSON array)
  by the first process as they are made, and only what retrieval ranks stays in memory:
  `records` then holds, for each detection of a user image and each detection of a shop image
  scoring at least `gallery_min_score`, its image_id, category_id, score and bbox (row-aligned
  with `embeddings`), so memory does not grow with the masks and keypoints of a whole split.

  Batches are padded to the static batch size; padded entries are dropped.
  """
  devices = list(devices) if devices is not None else jax.devices()
  hosts = len({d.process_index for d in devices})
  host = host if host is not None else (jax.process_index(), jax.process_count())
  size = batch_size or config.batch_size
  global_batch = -(-size // len(devices)) * len(devices)
  local_batch = global_batch // hosts
  mesh = Mesh(np.asarray(devices), ("data",))
  data = NamedSharding(mesh, P("data"))
  infer = jitted.data_parallel(model, mesh, with_embeddings)
  variables = jax.device_put(variables, NamedSharding(mesh, P()))
  ds = pipeline.image_dataset(config.data, split, local_batch, train=False, with_masks=False,
                              host=host)
  batches = pipeline.as_numpy(ds)
  first = jax.process_index() == min(d.process_index for d in devices)
  records, embeddings, sources, gt_items, gt_embeddings = [], [], [], [], []
  with (result_files.JsonArrayWriter(records_path) if records_path and first
        else contextlib.nullcontext()) as writer:
    while True:
      batch = next(batches, None)
      if not _any_host(batch is not None, hosts):
        break
      n = 0 if batch is None else batch["image"].shape[0]
      inputs = _inputs(batch, n, local_batch, config, with_embeddings)
      out = infer(variables, *(jax.make_array_from_process_local_data(data, x) for x in inputs))
      out = {k: _local_rows(v, n) for k, v in out.items()}
      part = _batch_part(out, batch, n, with_embeddings, records_path is not None,
                         gallery_min_score)
      for p in _gather_to_first(part, hosts):
        if writer is None:
          records += p["ranked"] if with_embeddings else p["records"]
        else:
          writer.extend(p["records"])
          records += p["ranked"]
        embeddings += p["embeddings"]
        sources += p["sources"]
        gt_items += p["gt_items"]
        gt_embeddings += p["gt_embeddings"]
        if progress is not None:
          progress(p["n"])
  if not first:
    return None
  if not with_embeddings:
    return records
  dim = config.model.match_head.dim
  stack = lambda xs: (np.concatenate(xs) if xs else np.zeros((0, dim))).astype(np.float32)  # noqa
  return SplitPredictions(records, stack(embeddings), np.asarray(sources, np.int64), gt_items,
                          stack(gt_embeddings))
