"""Shared fixtures. torch must be imported before tensorflow in one process (torchvision ops
crash otherwise), so it is imported here first when it is installed."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

try:  # optional: the reference implementations of the model tests
  import torch  # noqa: F401
  import torchvision  # noqa: F401
except ImportError:
  pass

import pytest  # noqa: E402

from configs import tiny  # noqa: E402
from match_rcnn_jax.data import prepare, synthetic  # noqa: E402


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory):
  """A small synthetic DeepFashion2 split in the released layout."""
  d = tmp_path_factory.mktemp("synthetic") / "train"
  synthetic.generate(str(d), num_images=24, seed=3, image_size=128)
  return str(d)


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory):
  """The tiny config with its synthetic train/validation splits converted."""
  config = tiny.get_config()
  workdir = tmp_path_factory.mktemp("tiny")
  prepare.resolve_data_dir(config, str(workdir), log=lambda *_: None)
  return config
