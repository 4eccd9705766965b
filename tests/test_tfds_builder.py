import os

import tensorflow_datasets as tfds

from match_rcnn_jax.data import tfrecords
from match_rcnn_jax.data.deepfashion2 import deepfashion2_dataset_builder


def test_builder_prepares_and_loads(synthetic_dir, tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  os.symlink(synthetic_dir, manual / "validation")
  builder = deepfashion2_dataset_builder.Builder(data_dir=str(tmp_path / "tfds"))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  assert list(builder.info.splits) == ["validation"]
  assert builder.info.splits["validation"].num_examples == 24
  examples = list(builder.as_dataset(split="validation"))
  # Same example order as the converter: sorted by (pair_id, image_id).
  keys = [(int(e["pair_id"]), int(e["image_id"])) for e in examples]
  assert keys == sorted(keys)
  # The features are the converter's.
  assert builder.info.features.get_serialized_info() == (
      tfrecords.features().get_serialized_info())
  ex = examples[0]
  assert ex["objects"]["landmarks"].shape[1:] == (294, 3)
  assert ex["objects"]["mask"].shape[1:3] == ex["image"].shape[:2]
