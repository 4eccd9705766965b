"""models.resnet: stage shapes per depth, GroupNorm and bfloat16."""

import jax
import jax.numpy as jnp
import pytest

from match_rcnn_jax.models import resnet


@pytest.mark.parametrize("depth,stages", [(18, 64), (34, 64), (50, 256)])
def test_resnet_depths(depth, stages):
  net = resnet.ResNet(depth=depth, width=8 if depth != 50 else 64)
  x = jnp.zeros((1, 64, 96, 3))
  shapes = jax.eval_shape(lambda: net.init_with_output(jax.random.PRNGKey(0), x)[0])
  sizes = [s.shape for s in shapes]
  assert [s[1:3] for s in sizes] == [(16, 24), (8, 12), (4, 6), (2, 3)]
  if depth == 50:
    assert [s[-1] for s in sizes] == [256, 512, 1024, 2048]


def test_group_norm_backbone_and_bfloat16():
  net = resnet.ResNet(depth="tiny", width=32, norm="group_norm", dtype=jnp.bfloat16)
  x = jnp.ones((1, 32, 32, 3))
  v = jax.jit(net.init)(jax.random.PRNGKey(0), x)
  outs = jax.jit(net.apply)(v, x)
  assert outs[-1].dtype == jnp.bfloat16
  assert "batch_stats" not in v and all(jnp.isfinite(o.astype(jnp.float32)).all() for o in outs)
