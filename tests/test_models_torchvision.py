"""Numerical equivalence with torchvision's Mask / Keypoint R-CNN modules (randomly initialised,
weights converted into our parameters), float32 on CPU."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.model import model_config
from match_rcnn_jax.models import match_rcnn
from match_rcnn_jax.tools import torchvision_convert

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
from torchvision.models.detection import keypoint_rcnn, mask_rcnn  # noqa: E402


def _close(ours, ref, tol=1e-4):
  ours, ref = np.asarray(ours), np.asarray(ref)
  assert ours.shape == ref.shape, (ours.shape, ref.shape)
  err = np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-6)
  assert err < tol, err


def _nchw(x):
  return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def _nhwc(t):
  return t.detach().permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="module")
def models():
  torch.manual_seed(0)
  tv = mask_rcnn.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=14)
  kp_head = keypoint_rcnn.KeypointRCNNHeads(256, [512] * 8)
  kp_pred = keypoint_rcnn.KeypointRCNNPredictor(512, 294)
  with torch.no_grad():  # non-trivial BatchNorm statistics and affine terms
    for m in tv.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.uniform_(-0.2, 0.2)
        m.running_var.uniform_(0.5, 2.0)
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-0.2, 0.2)
  for m in (tv, kp_head, kp_pred):
    m.eval()
  state = {k: v.numpy() for k, v in tv.state_dict().items()}
  state.update({f"roi_heads.keypoint_head.{k}": v.numpy()
                for k, v in kp_head.state_dict().items()})
  state.update({f"roi_heads.keypoint_predictor.{k}": v.numpy()
                for k, v in kp_pred.state_dict().items()})
  model = match_rcnn.build(model_config(depth="50"))
  template = match_rcnn.init(model, jax.random.PRNGKey(0), (64, 64))
  variables, report = torchvision_convert.convert(state, template)
  return tv, kp_head, kp_pred, model, variables, report


def test_every_weight_is_converted(models):
  *_, report = models
  assert not report["skipped_shape"], report["skipped_shape"]
  # Everything but the matching network (which torchvision does not have) is loaded.
  assert all(p.split("/")[1] in ("match_embedding", "similarity") for p in report["not_loaded"])
  assert all(k.endswith("num_batches_tracked") for k in report["unused"])
  assert report["loaded"] > 300


def test_backbone_fpn_and_rpn_head(models):
  tv, _, _, model, variables, _ = models
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 128, 160, 3)).astype(np.float32)
  ours = jax.jit(lambda v, x: model.apply(v, x, method=match_rcnn.MatchRCNN.features))(
      variables, jnp.asarray(x))
  with torch.no_grad():
    ref = tv.backbone(_nchw(x))
    obj, box = tv.rpn.head(list(ref.values()))
  for o, r in zip(ours, ref.values()):
    _close(o, _nhwc(r))
  logits, deltas = model.apply(variables, ours, method=lambda m, p: m.rpn_head(p))
  for lo, de, ro, rb in zip(logits, deltas, obj, box):
    b, a, h, w = ro.shape
    _close(lo, ro.permute(0, 2, 3, 1).reshape(b, -1).numpy())
    _close(de, rb.view(b, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, 4).numpy())


def test_box_mask_and_landmark_heads(models):
  tv, kp_head, kp_pred, model, variables, _ = models
  rng = np.random.default_rng(1)
  x7 = rng.normal(size=(6, 7, 7, 256)).astype(np.float32)
  x14 = rng.normal(size=(3, 14, 14, 256)).astype(np.float32)
  logits, deltas, _ = model.apply(variables, jnp.asarray(x7), method=lambda m, x: m.box_head(x))
  masks = model.apply(variables, jnp.asarray(x14), method=lambda m, x: m.mask_head(x))
  heat = model.apply(variables, jnp.asarray(x14), method=lambda m, x: m.landmark_head(x))
  with torch.no_grad():
    r_logits, r_deltas = tv.roi_heads.box_predictor(tv.roi_heads.box_head(_nchw(x7)))
    r_masks = tv.roi_heads.mask_predictor(tv.roi_heads.mask_head(_nchw(x14)))
    r_heat = kp_pred(kp_head(_nchw(x14)))
  _close(logits, r_logits.numpy())
  _close(deltas, r_deltas.numpy().reshape(6, 14, 4))
  assert masks.shape == (3, 28, 28, 14)
  _close(masks, _nhwc(r_masks))
  assert heat.shape == (3, 56, 56, 294)
  _close(heat, _nhwc(r_heat))


def test_proposals_match_torchvision_rpn(models):
  """Static-shape proposals equal torchvision's RPN (eval mode) on the same features."""
  from torchvision.models.detection.image_list import ImageList
  tv, _, _, model, variables, _ = models
  rng = np.random.default_rng(2)
  x = rng.normal(size=(1, 128, 160, 3)).astype(np.float32)
  tv.rpn._pre_nms_top_n = {"training": 2000, "testing": 300}
  tv.rpn._post_nms_top_n = {"training": 2000, "testing": 200}
  with torch.no_grad():
    feats = tv.backbone(_nchw(x))
    ref, _ = tv.rpn(ImageList(_nchw(x), [(128, 160)]), feats)
  ref = ref[0].numpy()
  c = model_config(depth=50)
  c.rpn.pre_nms_top_k_test, c.rpn.post_nms_top_k_test = 300, 200
  m2 = match_rcnn.build(c)

  def run(v, x):
    pyramid = m2.apply(v, x, method=match_rcnn.MatchRCNN.features)
    return m2.apply(v, pyramid, (128, 160), jnp.array([[128.0, 160.0]]), False,
                    method=match_rcnn.MatchRCNN.proposals)[2]

  boxes, scores, valid = jax.jit(run)(variables, jnp.asarray(x))
  boxes = np.asarray(boxes)[0][np.asarray(valid)[0]]
  assert len(boxes) == len(ref)
  np.testing.assert_allclose(boxes, ref, rtol=1e-4, atol=1e-2)
