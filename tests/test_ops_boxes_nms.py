import jax
import jax.numpy as jnp
import numpy as np
import pytest

from match_rcnn_jax import ops

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")


def _boxes(rng, n, size=100.0, max_wh=40.0):
  xy = rng.uniform(0, size, (n, 2))
  wh = rng.uniform(1, max_wh, (n, 2))
  return np.concatenate([xy, xy + wh], 1).astype(np.float32)


_nms = jax.jit(ops.nms, static_argnames=("iou_threshold", "max_output_size", "tile"))


@pytest.mark.parametrize("thr", [0.3, 0.5, 0.7, 0.05, 0.95])
@pytest.mark.parametrize("tile", [256, 7])
def test_nms_matches_torchvision(thr, tile):
  rng = np.random.default_rng(int(thr * 100))
  for trial in range(5):
    # Dense clusters too: long chains of suppression inside one tile.
    boxes = _boxes(rng, 300, size=100.0 if trial % 2 else 30.0)
    scores = rng.random(300).astype(np.float32)
    ref = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), thr).numpy()
    idx, valid = _nms(jnp.asarray(boxes), jnp.asarray(scores), thr, 400, tile=tile)
    idx, valid = np.asarray(idx), np.asarray(valid)
    assert valid.sum() == len(ref)
    np.testing.assert_array_equal(idx[: len(ref)], ref)
    assert not valid[len(ref):].any() and (idx[len(ref):] == 0).all()
    # Truncated output = the first k of the full greedy result (the cap falls mid-tile).
    idx, valid = _nms(jnp.asarray(boxes), jnp.asarray(scores), thr, 10, tile=tile)
    np.testing.assert_array_equal(np.asarray(idx), ref[:10])


def test_nms_ties_keep_lower_index_first():
  boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10.5], [50, 50, 60, 60], [50, 50, 60, 61]],
                   np.float32)
  scores = np.array([0.5, 0.5, 0.9, 0.9], np.float32)
  idx, valid = _nms(jnp.asarray(boxes), jnp.asarray(scores), 0.5, 4)
  assert list(np.asarray(idx)[np.asarray(valid)]) == [2, 0]
  # With quantised scores (many ties) the result equals greedy NMS over a stable sort.
  rng = np.random.default_rng(0)
  boxes = _boxes(rng, 200)
  scores = np.round(rng.random(200), 1).astype(np.float32)
  order = np.argsort(-scores, kind="stable")
  ious = np.asarray(ops.iou(jnp.asarray(boxes), jnp.asarray(boxes)))
  keep, suppressed = [], np.zeros(200, bool)
  for i in order:
    if not suppressed[i]:
      keep.append(i)
      suppressed |= ious[i] > 0.3
  for tile in (256, 16):
    idx, valid = _nms(jnp.asarray(boxes), jnp.asarray(scores), 0.3, 200, tile=tile)
    np.testing.assert_array_equal(np.asarray(idx)[np.asarray(valid)], keep)


def test_nms_validity_and_batching():
  rng = np.random.default_rng(2)
  boxes = _boxes(rng, 50)
  scores = rng.random(50).astype(np.float32)
  valid_in = rng.random(50) > 0.3
  idx, valid = ops.nms(jnp.asarray(boxes), jnp.asarray(scores), 0.5, 50, jnp.asarray(valid_in))
  kept = np.asarray(idx)[np.asarray(valid)]
  sub = np.nonzero(valid_in)[0]
  ref = torchvision.ops.nms(torch.from_numpy(boxes[sub]), torch.from_numpy(scores[sub]), 0.5)
  np.testing.assert_array_equal(kept, sub[ref.numpy()])
  bi, bv = ops.batched_nms(jnp.stack([boxes, boxes[::-1]]), jnp.stack([scores, scores[::-1]]),
                           0.5, 50)
  np.testing.assert_array_equal(np.asarray(bi[0])[np.asarray(bv[0])],
                                torchvision.ops.nms(torch.from_numpy(boxes),
                                                    torch.from_numpy(scores), 0.5).numpy())
  assert np.asarray(bv).sum(1)[0] == np.asarray(bv).sum(1)[1]


def test_iou_area_clip():
  a = jnp.array([[0.0, 0, 10, 10], [5, 5, 15, 15], [0, 0, 0, 0]])
  b = jnp.array([[0.0, 0, 10, 10], [10, 10, 20, 20]])
  np.testing.assert_allclose(ops.iou(a, b), [[1, 0], [25 / 175, 25 / 175], [0, 0]], rtol=1e-6)
  ref = torchvision.ops.box_iou(torch.tensor(np.asarray(a[:2])), torch.tensor(np.asarray(b)))
  np.testing.assert_allclose(ops.iou(a[:2], b), ref.numpy(), rtol=1e-6)
  np.testing.assert_allclose(ops.area(a), [100, 100, 0])
  np.testing.assert_allclose(ops.clip(jnp.array([[-5.0, 2, 30, 50]]), 40, 20), [[0, 2, 20, 40]])


def test_box_coder_matches_torchvision_and_round_trips():
  from torchvision.models.detection._utils import BoxCoder
  rng = np.random.default_rng(3)
  anchors = _boxes(rng, 64)
  boxes = _boxes(rng, 64)
  for weights in ((1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)):
    coder = BoxCoder(weights)
    ref = coder.encode_single(torch.from_numpy(boxes), torch.from_numpy(anchors)).numpy()
    deltas = ops.encode(jnp.asarray(boxes), jnp.asarray(anchors), weights)
    np.testing.assert_allclose(np.asarray(deltas), ref, rtol=1e-5, atol=1e-5)
    back = ops.decode(deltas, jnp.asarray(anchors), weights)
    np.testing.assert_allclose(np.asarray(back), boxes, rtol=1e-5, atol=1e-3)
    big = rng.normal(scale=3, size=(64, 4)).astype(np.float32)  # exercises the dw/dh clamp
    ref = coder.decode_single(torch.from_numpy(big), torch.from_numpy(anchors)).numpy()
    np.testing.assert_allclose(np.asarray(ops.decode(jnp.asarray(big), jnp.asarray(anchors),
                                                     weights)), ref, rtol=1e-5, atol=1e-3)


def test_anchors_match_torchvision():
  from torchvision.models.detection.anchor_utils import AnchorGenerator
  from torchvision.models.detection.image_list import ImageList
  sizes = ((32,), (64,), (128,), (256,), (512,))
  ratios = ((0.5, 1.0, 2.0),) * 5
  gen = AnchorGenerator(sizes, ratios)
  image = (96, 160)
  fsizes = [(image[0] // s, image[1] // s) for s in (4, 8, 16, 32)] + [(2, 3)]
  feats = [torch.zeros(1, 1, *fs) for fs in fsizes]
  ref = gen(ImageList(torch.zeros(1, 3, *image), [image]), feats)[0].numpy()
  ours = np.concatenate(ops.multilevel_anchors(image, fsizes, sizes, ratios))
  np.testing.assert_array_equal(ours, ref)
  np.testing.assert_array_equal(ops.base_anchors((32,), (0.5, 1.0, 2.0)),
                                [[-23, -11, 23, 11], [-16, -16, 16, 16], [-11, -23, 11, 23]])
