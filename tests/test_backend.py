"""match_rcnn_jax.backend: the model's `auto` kernels resolved for the backend, and the
in-process glibc allocator settings."""

import platform
import sys

import jax
import ml_collections
import pytest

from configs.model import model_config
from match_rcnn_jax import backend
from match_rcnn_jax.models import match_rcnn


def test_resolve_picks_the_backends_kernels_and_keeps_explicit_ones():
  cfg = model_config()
  assert cfg.kernels.conv == "auto"
  resolved = backend.resolve(cfg)
  assert resolved.kernels.conv == ("cpu" if jax.default_backend() == "cpu" else "xla")
  assert cfg.kernels.conv == "auto"  # the input is not changed
  cfg.kernels.conv = "xla"
  assert backend.resolve(cfg).kernels.conv == "xla"
  old = model_config()
  del old.kernels  # a config saved before the field existed
  assert backend.resolve(old).kernels.conv in ("cpu", "xla")
  cfg.kernels.conv = "winograd"
  with pytest.raises(ValueError, match="kernels.conv"):
    backend.resolve(cfg)


def test_build_resolves_and_the_model_refuses_auto():
  model = match_rcnn.build(model_config())
  assert model.config.kernels.conv in ("cpu", "xla")
  unresolved = match_rcnn.MatchRCNN(ml_collections.FrozenConfigDict(model_config()))
  with pytest.raises(ValueError, match="match_rcnn.build"):
    match_rcnn.init(unresolved, jax.random.PRNGKey(0), (64, 64))


@pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc"
                    or jax.default_backend() != "cpu", reason="glibc on the CPU backend only")
def test_tune_host_allocator_applies_mallopt_unless_opted_out():
  assert backend.tune_host_allocator({backend.OPT_OUT: "0"}) == {}
  applied = backend.tune_host_allocator({})
  assert applied == {k: v for k, (_, v) in backend.MALLOPT.items()}
