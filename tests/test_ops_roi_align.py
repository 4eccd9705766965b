import jax
import jax.numpy as jnp
import numpy as np
import pytest

from match_rcnn_jax import ops

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")


def _torch_roi_align(features, boxes, output_size, scale, ratio, aligned):
  f = torch.from_numpy(np.asarray(features)).permute(0, 3, 1, 2).contiguous()
  rois = [torch.from_numpy(np.asarray(b)) for b in boxes]
  out = torchvision.ops.roi_align(f, rois, output_size, scale, ratio, aligned)
  b, r = boxes.shape[:2]
  return out.permute(0, 2, 3, 1).reshape(b, r, *out.shape[2:], -1).numpy()


def _random_boxes(rng, b, r, h, w, scale):
  """Boxes in input pixels, some crossing or beyond the borders, some tiny."""
  hi = np.array([w, h, w, h]) / scale
  x = rng.uniform(-0.3, 1.2, (b, r, 2)) * hi[0]
  y = rng.uniform(-0.3, 1.2, (b, r, 2)) * hi[1]
  boxes = np.stack([x.min(-1), y.min(-1), x.max(-1), y.max(-1)], -1)
  boxes[:, :3, 2:] = boxes[:, :3, :2] + rng.uniform(0, 0.5, (b, 3, 2))  # sub-pixel boxes
  return boxes.astype(np.float32)


_roi = jax.jit(ops.roi_align, static_argnames=("output_size", "spatial_scale", "sampling_ratio",
                                               "aligned", "backend"))


def test_hand_computed_ramp():
  """Dataset notes: 8x8 ramp, box (1, 1, 5, 5), 2x2 output, sampling ratio 2."""
  f = jnp.arange(64, dtype=jnp.float32).reshape(1, 8, 8, 1)
  box = jnp.array([[[1.0, 1.0, 5.0, 5.0]]])
  for aligned, expect in ((False, [18, 20, 34, 36]), (True, [13.5, 15.5, 29.5, 31.5])):
    for backend in ops.roi_align.__globals__["BACKENDS"]:
      out = _roi(f, box, (2, 2), 1.0, 2, aligned, backend)
      np.testing.assert_allclose(out.reshape(-1), expect, rtol=1e-6)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("ratio", [1, 2, 3])
@pytest.mark.parametrize("backend", ["gather", "einsum"])
def test_matches_torchvision(aligned, ratio, backend):
  rng = np.random.default_rng(ratio + 10 * aligned)
  features = rng.normal(size=(2, 13, 17, 5)).astype(np.float32)
  scale = 0.25
  boxes = _random_boxes(rng, 2, 24, 13, 17, scale)
  ours = _roi(jnp.asarray(features), jnp.asarray(boxes), (7, 5), scale, ratio, aligned, backend)
  ref = _torch_roi_align(features, boxes, (7, 5), scale, ratio, aligned)
  np.testing.assert_allclose(np.asarray(ours), ref, rtol=1e-5, atol=1e-5)
  if backend == "gather":  # the inference form, term by term
    fast = ops.roi_align(jnp.asarray(features), jnp.asarray(boxes), (7, 5), scale, ratio,
                         aligned, forward_only=True)
    np.testing.assert_allclose(np.asarray(fast), ref, rtol=1e-5, atol=1e-5)


def test_multilevel_matches_torchvision_pooler():
  from collections import OrderedDict
  rng = np.random.default_rng(0)
  image = (96, 128)
  feats = [rng.normal(size=(2, image[0] >> lv, image[1] >> lv, 4)).astype(np.float32)
           for lv in range(2, 6)]
  boxes = np.concatenate([_random_boxes(rng, 2, 20, *image, 1.0) * 0.6,
                          _random_boxes(rng, 2, 20, *image, 1.0) * 3.0], axis=1)
  boxes[..., 2:] = np.maximum(boxes[..., 2:], boxes[..., :2] + 0.5)
  pooler = torchvision.ops.MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
  tfeats = OrderedDict((str(i), torch.from_numpy(f).permute(0, 3, 1, 2)) for i, f in
                       enumerate(feats))
  ref = pooler(tfeats, [torch.from_numpy(b) for b in boxes], [image] * 2)
  ref = ref.permute(0, 2, 3, 1).reshape(2, 40, 7, 7, 4).numpy()
  levels = np.asarray(ops.assign_levels(jnp.asarray(boxes)))
  assert len(np.unique(levels)) >= 3
  # piece_mb 0.01: pieces of 3 RoIs (3.1 KB of gathered values each), 80 RoIs not a multiple
  for backend, forward_only, piece_mb in (("gather", False, 0), ("gather", True, 0),
                                          ("gather", False, 0.01), ("einsum", False, 0)):
    fn = jax.jit(lambda f, b, backend=backend, fo=forward_only, mb=piece_mb:
                 ops.multilevel_roi_align(f, b, 7, min_level=2, sampling_ratio=2,
                                          aligned=False, backend=backend, forward_only=fo,
                                          piece_mb=mb))
    ours = fn([jnp.asarray(f) for f in feats], jnp.asarray(boxes))
    np.testing.assert_allclose(np.asarray(ours), ref, rtol=1e-5, atol=1e-5)


def test_backends_agree_and_gradients():
  rng = np.random.default_rng(1)
  f = jnp.asarray(rng.normal(size=(1, 10, 12, 3)).astype(np.float32))
  boxes = jnp.asarray(_random_boxes(rng, 1, 8, 10, 12, 0.5))
  loss = lambda f, backend: _roi(f, boxes, (4, 4), 0.5, 2, True, backend).sum()  # noqa: E731
  ga = jax.grad(loss)(f, "gather")
  gb = jax.grad(loss)(f, "einsum")
  np.testing.assert_allclose(np.asarray(ga), np.asarray(gb), rtol=1e-5, atol=1e-5)
  assert float(jnp.abs(ga).sum()) > 0


def test_pieces_give_the_same_values_and_gradients():
  """RoIs pooled in pieces (`piece_mb`, a `lax.map`; the last piece shorter) against all at
  once and against the dense einsum form: the same outputs and feature gradients, from every
  FPN level and for both images of the batch."""
  rng = np.random.default_rng(2)
  image = (64, 96)
  feats = [jnp.asarray(rng.normal(size=(2, image[0] >> lv, image[1] >> lv, 8)), jnp.float32)
           for lv in range(2, 6)]
  boxes = np.concatenate([_random_boxes(rng, 2, 9, *image, 1.0) * 0.5,
                          _random_boxes(rng, 2, 8, *image, 1.0) * 5.0], axis=1)
  boxes[..., 2:] = np.maximum(boxes[..., 2:], boxes[..., :2] + 0.5)
  boxes = jnp.asarray(boxes)
  levels = np.unique(np.asarray(ops.assign_levels(boxes))) - 2
  assert len(levels) >= 3
  cot = jnp.asarray(rng.normal(size=(2, 17, 5, 5, 8)), jnp.float32)

  def loss(feats, backend, piece_mb):
    out = ops.multilevel_roi_align(feats, boxes, 5, min_level=2, sampling_ratio=2,
                                   backend=backend, piece_mb=piece_mb)
    return jnp.sum(out * cot), out
  grad = jax.jit(jax.grad(loss, has_aux=True), static_argnums=(1, 2))
  ref_grads, ref_out = grad(feats, "gather", 0)
  per_roi_mb = 5 * 5 * 16 * 8 * 4 / 2**20
  for backend, piece_mb in (("gather", 4 * per_roi_mb), ("gather", 1e-9), ("einsum", 0)):
    grads, out = grad(feats, backend, piece_mb)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref_out), rtol=1e-5, atol=1e-5)
    for g, r in zip(grads, ref_grads):
      np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-5, atol=1e-5)
  assert all(float(jnp.abs(ref_grads[lv]).sum()) > 0 for lv in levels)


def test_rank_errors():
  with pytest.raises(ValueError, match="features must be"):
    ops.roi_align(jnp.zeros((4, 4, 3)), jnp.zeros((1, 2, 4)), 2)
  with pytest.raises(ValueError, match="boxes must be"):
    ops.roi_align(jnp.zeros((1, 4, 4, 3)), jnp.zeros((2, 4)), 2)
  with pytest.raises(ValueError, match="sampling_ratio"):
    ops.roi_align(jnp.zeros((1, 4, 4, 3)), jnp.zeros((1, 2, 4)), 2, sampling_ratio=0)
