"""Match R-CNN: ResNet-FPN + RPN (FN), box / mask / landmark streams (PN), matching network (MN).

`MatchRCNN(config.model)` has one signature, `apply(variables, images, targets_or_None,
image_sizes=..., train=...)`, returning one flat dict of named arrays. With `targets=None` it is
the inference path: a fixed number of detections per image (boxes, scores, classes, a validity
mask), their masks (28 x 28 probabilities of the predicted class, in box coordinates), their
landmarks ([294, 3]: x, y, score in the predicted category's block) and 256-d match
embeddings. Every shape is static; the whole call jit-compiles once per input shape.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from match_rcnn_jax import ops
from match_rcnn_jax.models import fpn as fpn_lib
from match_rcnn_jax.models import heads, matching, postprocess, resnet, rpn

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _static(value):
  """Config values as hashable tuples (ConfigDict gives lists for tuples set on the CLI)."""
  if isinstance(value, (list, tuple)):
    return tuple(_static(v) for v in value)
  return value


class MatchRCNN(nn.Module):
  config: ml_collections.FrozenConfigDict  # config.model

  def setup(self):
    c = self.config
    dtype = DTYPES[c.dtype]
    self.backbone = resnet.ResNet(depth=c.backbone.depth, width=c.backbone.width,
                                  norm=c.backbone.norm, norm_eps=c.backbone.norm_eps,
                                  dtype=dtype)
    self.fpn = fpn_lib.FPN(channels=c.fpn_channels, dtype=dtype)
    self.rpn_head = rpn.RPNHead(num_anchors=len(c.anchors.aspect_ratios),
                                channels=c.fpn_channels, dtype=dtype)
    self.box_head = heads.BoxHead(num_classes=c.num_classes, hidden=c.box_head.hidden,
                                  dtype=dtype)
    self.mask_head = heads.MaskHead(num_classes=c.num_classes, channels=c.mask_head.channels,
                                    num_convs=c.mask_head.num_convs, dtype=dtype)
    self.landmark_head = heads.LandmarkHead(num_landmarks=c.landmark_head.num_landmarks,
                                            channels=c.landmark_head.channels,
                                            num_convs=c.landmark_head.num_convs, dtype=dtype)
    self.match_embedding = matching.MatchEmbedding(channels=_static(c.match_head.channels),
                                                   dim=c.match_head.dim, dtype=dtype)
    self.similarity = matching.Similarity()

  # -- building blocks, also used by the training forward and the tests ---------------------

  def features(self, images):
    """images [B, H, W, 3] -> FPN levels P2..P6."""
    return self.fpn(self.backbone(images))

  def anchors(self, image_shape, pyramid):
    c = self.config.anchors
    sizes = tuple((s,) for s in _static(c.sizes))
    ratios = (_static(c.aspect_ratios),) * len(pyramid)
    return ops.multilevel_anchors(image_shape, [p.shape[1:3] for p in pyramid], sizes, ratios)

  def pool(self, pyramid, boxes, size):
    r = self.config.roi_align
    return ops.multilevel_roi_align(pyramid[:4], boxes, size, min_level=2,
                                    sampling_ratio=r.sampling_ratio, aligned=r.aligned,
                                    backend=r.backend)

  def proposals(self, pyramid, image_shape, image_sizes, train: bool):
    c = self.config.rpn
    logits, deltas = self.rpn_head(pyramid)
    props = rpn.generate_proposals(
        logits, deltas, self.anchors(image_shape, pyramid), image_sizes,
        c.pre_nms_top_k_train if train else c.pre_nms_top_k_test,
        c.post_nms_top_k_train if train else c.post_nms_top_k_test, c.nms_threshold, c.min_size)
    return logits, deltas, props

  def embed(self, pooled7, train: bool = False):
    return self.match_embedding(pooled7, train=train)

  def match_logits(self, v1, v2):
    return self.similarity(v1, v2)

  def initialize(self, images):
    """Touches every submodule once without the (slow to compile) proposal and NMS code, so
    `init` is quick; returns nothing useful."""
    c = self.config
    pyramid = self.features(images)
    self.rpn_head(pyramid)
    b = images.shape[0]
    boxes = jnp.tile(jnp.array([[[0.0, 0.0, 32.0, 32.0]]]), (b, 1, 1))
    self.box_head(self.pool(pyramid, boxes, 7))
    pooled = self.pool(pyramid, boxes, c.mask_head.roi_size)
    self.mask_head(pooled)
    self.landmark_head(self.pool(pyramid, boxes, c.landmark_head.roi_size))
    v = self.embed(self.pool(pyramid, boxes, 7))
    return self.match_logits(v, v)

  # -- the model ---------------------------------------------------------------------------

  def __call__(self, images, targets=None, *, image_sizes=None, train: bool = False):
    if targets is not None:
      raise ValueError("MatchRCNN: the training forward (targets given) is not part of this "
                       "model version; call with targets=None for inference")
    return self.infer(images, image_sizes)

  def infer(self, images, image_sizes=None):
    c = self.config
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"images must be [B, H, W, 3], got {images.shape}")
    b, h, w, _ = images.shape
    if image_sizes is None:
      image_sizes = jnp.broadcast_to(jnp.array([h, w], jnp.float32), (b, 2))
    pyramid = self.features(images)
    _, _, (props, _, pvalid) = self.proposals(pyramid, (h, w), image_sizes, train=False)
    cls_logits, box_deltas, _ = self.box_head(self.pool(pyramid, props, 7))
    d = c.detections
    dets = postprocess.detect(props, pvalid, cls_logits, box_deltas, image_sizes,
                              box_weights=_static(c.box_weights),
                              score_threshold=d.score_threshold, nms_threshold=d.nms_threshold,
                              max_detections=d.per_image, min_size=d.min_size)
    boxes, classes = dets["boxes"], dets["classes"]
    pooled14 = self.pool(pyramid, boxes, c.mask_head.roi_size)
    masks = postprocess.select_class_masks(self.mask_head(pooled14), classes)
    lm_pooled = pooled14 if c.landmark_head.roi_size == c.mask_head.roi_size else self.pool(
        pyramid, boxes, c.landmark_head.roi_size)
    lowres = self.landmark_head.kps_score_lowres(self.landmark_head.features(lm_pooled))
    n = b * boxes.shape[1]
    block = postprocess.category_block(lowres.astype(jnp.float32), classes.reshape(n))
    hh, ww = block.shape[1:3]
    block = jax.image.resize(jnp.where(jnp.isfinite(block), block, -1e9),
                             (n, 2 * hh, 2 * ww, block.shape[-1]), "bilinear")
    landmarks = postprocess.decode_landmarks(block, boxes.reshape(n, 4), classes.reshape(n))
    embeddings = self.embed(self.pool(pyramid, boxes, 7))
    return {
        **dets,
        "masks": masks,
        "landmarks": landmarks.reshape(b, -1, *landmarks.shape[1:]),
        "embeddings": embeddings,
        "proposals": props,
        "proposal_valid": pvalid,
    }


def model_config(depth: str = "50") -> ml_collections.ConfigDict:
  """Default `config.model`: torchvision Mask / Keypoint R-CNN R50-FPN sizes, 13 categories."""
  return ml_collections.ConfigDict({
      "dtype": "float32",
      "num_classes": 14,  # 13 categories + background
      "backbone": {"depth": str(depth), "width": 64, "norm": "frozen_bn", "norm_eps": 1e-5},
      "fpn_channels": 256,
      "anchors": {"sizes": (32, 64, 128, 256, 512), "aspect_ratios": (0.5, 1.0, 2.0)},
      "rpn": {"pre_nms_top_k_train": 2000, "pre_nms_top_k_test": 1000,
              "post_nms_top_k_train": 2000, "post_nms_top_k_test": 1000,
              "nms_threshold": 0.7, "min_size": 1e-3},
      "roi_align": {"sampling_ratio": 2, "aligned": False, "backend": "gather"},
      "box_weights": (10.0, 10.0, 5.0, 5.0),
      "box_head": {"hidden": 1024},
      "mask_head": {"channels": 256, "num_convs": 4, "roi_size": 14},
      "landmark_head": {"channels": 512, "num_convs": 8, "roi_size": 14, "num_landmarks": 294},
      "match_head": {"channels": (256, 256, 256, 1024), "dim": 256},
      "detections": {"score_threshold": 0.05, "nms_threshold": 0.5, "per_image": 100,
                     "min_size": 1e-2},
  })


def build(model_cfg) -> MatchRCNN:
  return MatchRCNN(ml_collections.FrozenConfigDict(model_cfg))


def init(model: MatchRCNN, rng, image_shape=(128, 128)):
  """Variables {'params', 'batch_stats'} for images of `image_shape`."""
  images = jnp.zeros((1, *image_shape, 3), jnp.float32)
  return jax.jit(lambda r, x: model.init(r, x, method=MatchRCNN.initialize))(rng, images)
