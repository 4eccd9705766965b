import importlib

import pytest

from match_rcnn_jax.models import match_rcnn


@pytest.mark.parametrize("name", ["tiny", "demo", "deepfashion2_r50_fpn"])
def test_configs_build(name):
  config = importlib.import_module(f"configs.{name}").get_config()
  assert config.pairs_per_batch > 0 and config.train.num_steps > 0
  assert config.data.canvas[0] % 32 == 0 and config.data.canvas[1] % 32 == 0
  assert config.data.max_side <= max(config.data.canvas)
  match_rcnn.build(config.model)  # every model field is understood
  for key in ("rpn_cls", "rpn_box", "cls", "box", "landmark", "mask", "match"):
    assert key in config.loss_weights
