"""Shared fixtures. torch must be imported before tensorflow in one process (torchvision ops
crash otherwise), so it is imported here first when it is installed."""

import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

try:  # optional: the reference implementations of the model tests
  import torch  # noqa: F401
  import torchvision  # noqa: F401
except ImportError:
  pass

import jax  # noqa: E402
import pytest  # noqa: E402

# Identical programs compiled by several tests (and by the subprocesses they start) are
# compiled once per session.
_CACHE = os.path.join(tempfile.gettempdir(), "match_rcnn_jax_test_jit_cache")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)

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
