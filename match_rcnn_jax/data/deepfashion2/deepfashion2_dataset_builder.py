"""TensorFlow Datasets builder for DeepFashion2 (manual download).

    tfds build match_rcnn_jax/data/deepfashion2 --manual_dir <DeepFashion2> [--data_dir D]

`<DeepFashion2>` holds the extracted `train/` and `validation/` folders (`image/`, `annos/`);
the splits present there are built. The features, the validation rules and the example order
are those of `python -m match_rcnn_jax.data.convert`, which writes the same records one split
at a time together with the evaluation ground truth; prefer it for this project. Invalid
files and items are left out and logged (the converter also lists them in a report).
"""

from __future__ import annotations

import os

import tensorflow_datasets as tfds
from absl import logging

from match_rcnn_jax.data import convert, tfrecords

SPLITS = ("train", "validation")


class Builder(tfds.core.GeneratorBasedBuilder):
  """DeepFashion2: detection, landmarks, masks and consumer-to-shop pairs."""

  VERSION = tfds.core.Version(tfrecords.VERSION)
  RELEASE_NOTES = {tfrecords.VERSION: "First release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Download DeepFashion2 (password from the dataset's form) and extract train.zip and "
      "validation.zip into manual_dir, giving manual_dir/train/{image,annos} and "
      "manual_dir/validation/{image,annos}.")

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfrecords.features(), homepage=tfrecords.HOMEPAGE, disable_shuffling=True,
        description=tfrecords.DESCRIPTION)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = os.fspath(dl_manager.manual_dir)
    found = {s: self._generate_examples(os.path.join(root, s)) for s in SPLITS
             if os.path.isdir(os.path.join(root, s, "annos"))}
    if not found:
      raise FileNotFoundError(f"{root}: no train/annos or validation/annos folder")
    return found

  def _generate_examples(self, split_dir: str):
    records, report = convert.parse_split(split_dir, on_error="skip", show_progress=False)
    problems = report["skipped_files"] + report["skipped_items"]
    if problems:
      logging.warning("%s: %d file(s) and %d item(s) left out, e.g. %s", split_dir,
                      len(report["skipped_files"]), len(report["skipped_items"]),
                      problems[0]["reasons"][0])
    records = tfrecords.sort_records(records)
    sizes = tfrecords.group_sizes(records)
    for rec in records:
      yield rec.image_id, tfrecords.record_to_example(rec, sizes[rec.pair_id])
