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


def test_paper_config_builds_the_papers_matching_network():
  """configs/deepfashion2_r50_fpn.py: the MN reads the paper's pose + class streams (the
  landmark stream's 512-channel conv features and the box stream's 256-channel RoI features),
  trained end to end, and nothing hand-made."""
  import jax

  from configs import deepfashion2_r50_fpn
  from match_rcnn_jax.models import matching
  model_cfg = deepfashion2_r50_fpn.get_config().model
  assert matching.parse_features(model_cfg.match_head.features) == ("landmark", "box")
  assert "+".join(matching.FEATURE_STREAMS[s] for s in matching.parse_features(
      model_cfg.match_head.features)) == "pose+class"
  assert model_cfg.match_head.feature_grad_scale == 1.0
  model = match_rcnn.build(model_cfg)
  shapes = jax.eval_shape(lambda: match_rcnn.init(model, jax.random.PRNGKey(0), (64, 64)))
  mn = shapes["params"]["match_embedding"]
  assert mn["conv1"]["kernel"].shape == (3, 3, 512 + 256, 256)
  assert "crop_stream" not in shapes["params"]
