"""The DeepFashion2 TFRecord format: TFDS features, example encoding, split writing and loading.

One example per image. A split is a TFDS dataset directory (`dataset_info.json`,
`features.json`, `deepfashion2-<split>.tfrecord-XXXXX-of-YYYYY`) that
`tfds.builder_from_directory` reads without this package's code. Examples are written sorted by
(pair_id, image_id) and shards are cut only between pair_id groups, so every image of a pair_id
group sits in one shard, next to each other (the pair pipeline relies on it to bound memory).
"""

from __future__ import annotations

import functools
import math
import os
import shutil
from collections.abc import Iterable, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from match_rcnn_jax.data import parsing, schema

DATASET_NAME = "deepfashion2"
VERSION = "1.0.0"
DESCRIPTION = ("DeepFashion2 (clothes detection, landmarks, segmentation, consumer-to-shop "
               "retrieval) converted by match_rcnn_jax.")
HOMEPAGE = "https://github.com/switchablenorms/DeepFashion2"


def features():
  """The TFDS FeaturesDict of one image. Boxes are (x1, y1, x2, y2) in pixels."""
  import tensorflow as tf
  import tensorflow_datasets as tfds
  f = tfds.features
  return f.FeaturesDict({
      "image": f.Image(shape=(None, None, 3), encoding_format="jpeg"),
      "image_id": tf.int64,
      "source": f.ClassLabel(names=[s.json_name for s in schema.Source]),
      "pair_id": tf.int64,
      # Number of images of this pair_id in the split: lets the pair pipeline close a group.
      "group_size": tf.int64,
      "objects": f.Sequence({
          "item": tf.int64,  # N of the annotation's `itemN`
          "bbox": f.Tensor(shape=(4,), dtype=tf.float32),
          "category_id": tf.int64,  # 1..13
          "style": tf.int64,
          "landmarks": f.Tensor(shape=(schema.NUM_LANDMARKS, 3), dtype=tf.float32),
          "mask": f.Image(shape=(None, None, 1), encoding_format="png"),
          "scale": tf.int64,
          "occlusion": tf.int64,
          "zoom_in": tf.int64,
          "viewpoint": tf.int64,
      }),
  })


def rasterize(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
  """Union of polygons as a uint8 {0, 1} mask [height, width] (pycocotools' rasteriser)."""
  rles = mask_utils.frPyObjects([list(map(float, p)) for p in polygons], height, width)
  return mask_utils.decode(mask_utils.merge(rles)).astype(np.uint8)


def record_to_example(rec: parsing.ImageRecord, group_size: int) -> dict:
  """The feature dict of one record (the image's JPEG bytes are stored unchanged)."""
  with open(rec.image_path, "rb") as fh:
    image_bytes = fh.read()
  n = len(rec.items)
  items = rec.items
  return {
      "image": image_bytes,
      "image_id": rec.image_id,
      "source": int(rec.source),
      "pair_id": rec.pair_id,
      "group_size": group_size,
      "objects": {
          "item": np.asarray([int(it.key[4:]) for it in items], np.int64),
          "bbox": np.asarray([it.bbox for it in items], np.float32).reshape(n, 4),
          "category_id": np.asarray([it.category_id for it in items], np.int64),
          "style": np.asarray([it.style for it in items], np.int64),
          "landmarks": np.asarray([it.global_landmarks for it in items], np.float32).reshape(
              n, schema.NUM_LANDMARKS, 3),
          "mask": [rasterize(it.segmentation, rec.height, rec.width)[..., None] for it in items],
          "scale": np.asarray([it.scale for it in items], np.int64),
          "occlusion": np.asarray([it.occlusion for it in items], np.int64),
          "zoom_in": np.asarray([it.zoom_in for it in items], np.int64),
          "viewpoint": np.asarray([it.viewpoint for it in items], np.int64),
      },
  }


@functools.cache
def _encoder():
  """This process's FeaturesDict and tf.train.Example serializer (built once per worker)."""
  from tensorflow_datasets.core import example_serializer
  feats = features()
  return feats, example_serializer.ExampleSerializer(feats.get_serialized_info())


def serialize(item: tuple[parsing.ImageRecord, int]) -> bytes:
  """The serialized example of (record, its pair_id group's size): what a worker returns.
  The proto's feature map is written in sorted key order (`deterministic`): the same bytes in
  every process (the default order follows each process's hash seed)."""
  rec, group_size = item
  feats, serializer = _encoder()
  example = serializer.get_tf_example(feats.encode_example(record_to_example(rec, group_size)))
  return example.SerializeToString(deterministic=True)


def sort_records(records: Iterable[parsing.ImageRecord]) -> list[parsing.ImageRecord]:
  return sorted(records, key=lambda r: (r.pair_id, r.image_id))


def group_sizes(records: Sequence[parsing.ImageRecord]) -> dict[int, int]:
  sizes: dict[int, int] = {}
  for r in records:
    sizes[r.pair_id] = sizes.get(r.pair_id, 0) + 1
  return sizes


def plan_shards(records: Sequence[parsing.ImageRecord], examples_per_shard: int) -> list[int]:
  """Shard lengths for sorted `records`: about `examples_per_shard` each, cut between groups."""
  if not records:
    return []
  target = max(1, math.ceil(len(records) / max(1, math.ceil(len(records) / examples_per_shard))))
  lengths, current = [], 0
  for i, rec in enumerate(records):
    current += 1
    last = i + 1 == len(records)
    if last or (current >= target and records[i + 1].pair_id != rec.pair_id):
      lengths.append(current)
      current = 0
  return lengths


def write_split(records: Sequence[parsing.ImageRecord], split: str, split_dir: str,
                examples_per_shard: int = 1024, progress=None, pool=None) -> list[int]:
  """Writes `records` as the TFDS dataset directory `split_dir`, replacing it atomically.

  Everything is written to a temporary sibling directory first and swapped in at the end, so an
  interrupted run leaves the previous version intact and a finished run never mixes shards of
  two conversions. With a `multiprocessing` pool the examples are encoded by its workers
  (`serialize`) and written here in the same order: the same files whatever the worker count.
  Returns the shard lengths.
  """
  import tensorflow as tf
  import tensorflow_datasets as tfds
  from etils import epath

  records = sort_records(records)
  sizes = group_sizes(records)
  lengths = plan_shards(records, examples_per_shard)
  parent = os.path.dirname(os.path.abspath(split_dir))
  os.makedirs(parent, exist_ok=True)
  tmp_dir = os.path.join(parent, f".{os.path.basename(split_dir)}.tmp-{os.getpid()}")
  shutil.rmtree(tmp_dir, ignore_errors=True)
  os.makedirs(tmp_dir)
  feats = features()
  template = tfds.core.ShardedFileTemplate(
      data_dir=epath.Path(tmp_dir), template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
      dataset_name=DATASET_NAME, split=split, filetype_suffix="tfrecord")
  items = ((rec, sizes[rec.pair_id]) for rec in records)
  examples = pool.imap(serialize, items, chunksize=8) if pool is not None else map(
      serialize, items)
  num_bytes = 0
  for shard, length in enumerate(lengths):
    path = template.sharded_filepath(shard_index=shard, num_shards=len(lengths))
    with tf.io.TFRecordWriter(os.fspath(path)) as writer:
      for _ in range(length):
        data = next(examples)
        writer.write(data)
        num_bytes += len(data)
        if progress is not None:
          progress(1)
  split_info = tfds.core.SplitInfo(name=split, shard_lengths=lengths, num_bytes=num_bytes,
                                   filename_template=template)
  tfds.folder_dataset.write_metadata(
      data_dir=tmp_dir, features=feats, split_infos=[split_info], filename_template=template,
      version=VERSION, description=DESCRIPTION, homepage=HOMEPAGE, check_data=bool(lengths))
  old = split_dir + f".old-{os.getpid()}"
  if os.path.exists(split_dir):
    os.replace(split_dir, old)
  os.replace(tmp_dir, split_dir)
  shutil.rmtree(old, ignore_errors=True)
  return lengths


def split_dir(output_dir: str, split: str) -> str:
  """Where `convert` puts the TFRecords of `split` inside its output directory."""
  return os.path.join(output_dir, "tfrecords", split)


def load_builder(output_dir: str, split: str):
  """The TFDS read-only builder of a converted split."""
  import tensorflow_datasets as tfds
  path = split_dir(output_dir, split)
  if not os.path.exists(os.path.join(path, "dataset_info.json")):
    raise FileNotFoundError(
        f"{path}: no converted '{split}' split here; run `python -m match_rcnn_jax.data.convert "
        f"--data_dir <DeepFashion2>/{split} --output_dir {output_dir} --split {split}` first")
  return tfds.builder_from_directory(path)
