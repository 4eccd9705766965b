"""models.postprocess: detection post-processing against torchvision, landmark decoding and
category blocks by hand."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from match_rcnn_jax.data import schema
from match_rcnn_jax.models import postprocess


def test_detect_matches_torchvision_postprocess():
  torch = pytest.importorskip("torch")
  from torchvision.models.detection import roi_heads as tv_roi_heads
  from torchvision.models.detection._utils import BoxCoder
  rng = np.random.default_rng(0)
  r, k = 60, 5
  xy = rng.uniform(0, 80, (r, 2))
  props = np.concatenate([xy, xy + rng.uniform(5, 40, (r, 2))], 1).astype(np.float32)
  logits = rng.normal(scale=2, size=(r, k)).astype(np.float32)
  deltas = rng.normal(scale=0.3, size=(r, k * 4)).astype(np.float32)
  rh = tv_roi_heads.RoIHeads(None, None, None, 0.5, 0.5, 512, 0.25, (10.0, 10.0, 5.0, 5.0),
                             0.05, 0.5, 20)
  rh.box_coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
  boxes, scores, labels = rh.postprocess_detections(
      torch.from_numpy(logits), torch.from_numpy(deltas), [torch.from_numpy(props)], [(96, 100)])
  ours = jax.jit(functools.partial(postprocess.detect, max_detections=20))(
      jnp.asarray(props)[None], jnp.ones((1, r), bool), jnp.asarray(logits)[None],
      jnp.asarray(deltas).reshape(1, r, k, 4), jnp.array([[96.0, 100.0]]))
  n = int(ours["valid"].sum())
  assert n == len(scores[0])
  np.testing.assert_allclose(np.asarray(ours["scores"][0, :n]), scores[0].numpy(), rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(ours["classes"][0, :n]), labels[0].numpy())
  np.testing.assert_allclose(np.asarray(ours["boxes"][0, :n]), boxes[0].numpy(), atol=1e-3)


def test_decode_landmarks_hand_computed():
  heat = np.full((1, 4, 4, 39), -5.0, np.float32)
  heat[0, 1, 2, 0] = 3.0  # skirt landmark 1 at row 1, column 2
  heat[0, 3, 0, 7] = 2.0  # skirt landmark 8 at row 3, column 0
  box = jnp.array([[10.0, 20.0, 50.0, 60.0]])  # 40 x 40: 10 px per heatmap cell
  out = np.asarray(postprocess.decode_landmarks(jnp.asarray(heat), box, jnp.array([9])))
  off = schema.CATEGORY_BY_ID[9].offset
  np.testing.assert_allclose(out[0, off], [10 + 2.5 * 10, 20 + 1.5 * 10, 3.0])
  np.testing.assert_allclose(out[0, off + 7], [10 + 0.5 * 10, 20 + 3.5 * 10, 2.0])
  assert (out[0, :off] == 0).all() and (out[0, off + 8:] == 0).all()


def test_block_channels_and_mask_selection():
  idx, in_block = map(np.asarray, postprocess.block_channels(jnp.array([8, 0])))
  off = schema.CATEGORY_BY_ID[8].offset
  np.testing.assert_array_equal(idx[0, :14], np.arange(off, off + 14))
  assert in_block[0, :14].all() and not in_block[0, 14:].any()
  assert not in_block[1].any()  # class 0 (padding): an empty block
  logits = jnp.zeros((2, 3, 3, 14)).at[1, :, :, 5].set(10.0)
  probs = np.asarray(postprocess.select_class_masks(logits, jnp.array([5, 5])))
  np.testing.assert_allclose(probs[0], 0.5)
  assert (probs[1] > 0.99).all()
