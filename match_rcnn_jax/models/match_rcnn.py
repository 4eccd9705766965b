"""Match R-CNN: ResNet-FPN + RPN (FN), box / mask / landmark streams (PN), matching network (MN).

`MatchRCNN(config.model)` has one signature, `apply(variables, images, targets_or_None,
image_sizes=..., train=...)`, returning one flat dict of named arrays. With `targets=None` it is
the inference path: a fixed number of detections per image (boxes, scores, classes, a validity
mask), their masks (28 x 28 probabilities of the predicted class, in box coordinates), their
landmarks ([294, 3]: x, y, score in the predicted category's block) and 256-d match
embeddings. Every shape is static; the whole call jit-compiles once per input shape.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from match_rcnn_jax import backend, ops
from match_rcnn_jax.models import chunked, heads, layers, matching, postprocess, resnet, rpn
from match_rcnn_jax.models import fpn as fpn_lib
from match_rcnn_jax.models import targets as tgt

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class MatchRCNN(nn.Module):
  config: ml_collections.FrozenConfigDict  # config.model

  def setup(self):
    c = self.config
    dtype = DTYPES[c.dtype]
    impl = c.implementation  # explicit: `build` resolves "auto" for the backend
    if "auto" in (impl.conv, impl.roi_align, impl.train_heads) or None in (
        impl.roi_align_piece_mb, impl.infer_head_chunk):
      raise ValueError("config.model.implementation has 'auto' values: build the model with "
                       "models.match_rcnn.build, which resolves them for the backend")
    # In the heads' chunk loops the CPU's convs run as matmuls only (`_pure`).
    convs, self.loop_convs = layers.CONVS[impl.conv]
    self.backbone = resnet.ResNet(depth=c.backbone.depth, width=c.backbone.width,
                                  norm=c.backbone.norm, norm_eps=c.backbone.norm_eps,
                                  dtype=dtype, convs=convs)
    self.fpn = fpn_lib.FPN(channels=c.fpn_channels, dtype=dtype, convs=convs)
    self.rpn_head = rpn.RPNHead(num_anchors=len(c.anchors.aspect_ratios),
                                channels=c.fpn_channels, dtype=dtype, convs=convs)
    self.box_head = heads.BoxHead(num_classes=c.num_classes, hidden=c.box_head.hidden,
                                  dtype=dtype)
    self.mask_head = heads.MaskHead(num_classes=c.num_classes, channels=c.mask_head.channels,
                                    num_convs=c.mask_head.num_convs, dtype=dtype,
                                    convs=convs)
    self.landmark_head = heads.LandmarkHead(num_landmarks=c.landmark_head.num_landmarks,
                                            channels=c.landmark_head.channels,
                                            num_convs=c.landmark_head.num_convs, dtype=dtype,
                                            convs=convs)
    self.match_embedding = matching.MatchEmbedding(channels=c.match_head.channels,
                                                   dim=c.match_head.dim,
                                                   norm=c.match_head.get("norm", "batch"),
                                                   dtype=dtype, convs=convs)
    self.similarity = matching.Similarity(dim=c.match_head.dim)
    self.match_streams = matching.parse_features(c.match_head.get("features", "box"))
    self.crop_size = int(c.match_head.get("crop_size", 28))
    if "crop" in self.match_streams:
      self.crop_stream = matching.CropStream(
          channels=tuple(c.match_head.get("crop_channels", (32, 64, 64))),
          convs_per_size=int(c.match_head.get("crop_convs_per_size", 1)), dtype=dtype,
          convs=convs)
    for stream, size in (("landmark", c.landmark_head.roi_size),
                         ("mask", c.mask_head.roi_size)):
      if stream in self.match_streams and size % 7:
        raise ValueError(f"match_head.features uses the {stream} stream, whose RoI size "
                         f"({size}) must be a multiple of 7 (pooled to the MN's 7 x 7)")

  # -- building blocks, also used by the training forward and the tests ---------------------

  def features(self, images):
    """images [B, H, W, 3] -> FPN levels P2..P6."""
    return self.fpn(self.backbone(images))

  def anchors(self, image_shape, pyramid):
    c = self.config.anchors
    sizes = tuple((s,) for s in c.sizes)
    ratios = (c.aspect_ratios,) * len(pyramid)
    return ops.multilevel_anchors(image_shape, [p.shape[1:3] for p in pyramid], sizes, ratios)

  def pool(self, pyramid, boxes, size, forward_only: bool = False):
    """RoIAlign from P2..P5; `forward_only` (inference): the form with the fastest forward;
    else in pieces of `implementation.roi_align_piece_mb`."""
    r, k = self.config.roi_align, self.config.implementation
    return ops.multilevel_roi_align(pyramid[:4], boxes, size, min_level=2,
                                    sampling_ratio=r.sampling_ratio, aligned=r.aligned,
                                    backend=k.roi_align, forward_only=forward_only,
                                    piece_mb=k.roi_align_piece_mb)

  def proposals(self, pyramid, image_shape, image_sizes, train: bool):
    c = self.config.rpn
    logits, deltas = self.rpn_head(pyramid)
    props = rpn.generate_proposals(
        logits, deltas, self.anchors(image_shape, pyramid), image_sizes,
        c.pre_nms_top_k_train if train else c.pre_nms_top_k_test,
        c.post_nms_top_k_train if train else c.post_nms_top_k_test, c.nms_threshold, c.min_size)
    return logits, deltas, props

  def embed(self, features, train: bool = False, mask=None):
    """MN embeddings [..., D] of its input features [..., 7, 7, C] (`match_input`)."""
    return self.match_embedding(features, train=train, mask=mask)

  def match_logits(self, v1, v2):
    return self.similarity(v1, v2)

  def pool_image(self, images, boxes, forward_only: bool = False):
    """The RoIs [B, R, 7, 7, 3] of the (normalised) input images themselves: the MN's "image"
    stream."""
    return self.pool_pixels(images, boxes, 7, forward_only)

  def pool_pixels(self, images, boxes, size: int, forward_only: bool = False):
    """The RoIs [B, R, size, size, 3] of the (normalised) input images themselves."""
    r, k = self.config.roi_align, self.config.implementation
    return ops.roi_align(images, boxes, size, 1.0, r.sampling_ratio, r.aligned,
                         backend=k.roi_align, forward_only=forward_only,
                         piece_mb=k.roi_align_piece_mb)

  def crop_window(self, boxes):
    """The part of boxes [..., 4] (x1, y1, x2, y2) that the crop stream reads: each box scaled
    about its centre by `match_head.crop_box_scale` (1: the whole box)."""
    scale = float(self.config.match_head.get("crop_box_scale", 1.0))
    if scale == 1.0:
      return boxes
    centre = (boxes[..., :2] + boxes[..., 2:]) * 0.5
    half = (boxes[..., 2:] - boxes[..., :2]) * (0.5 * scale)
    return jnp.concatenate([centre - half, centre + half], -1)

  def crop_pixels(self, images, boxes, forward_only: bool = False):
    """The crop stream's input [B, R, crop_size, crop_size, 3]: the pixels of `crop_window`
    of boxes [B, R, 4] of images [B, H, W, 3]."""
    return self.pool_pixels(images, self.crop_window(boxes), self.crop_size, forward_only)

  def crop_features(self, pixels):
    """The "crop" stream [N, 7, 7, C] of the RoI pixels [N, crop_size, crop_size, 3] (None
    when the MN does not read it)."""
    return self.crop_stream(pixels) if "crop" in self.match_streams else None

  def match_input(self, pooled7, landmark_features=None, mask_features=None, pixels7=None,
                  crop7=None):
    """The MN's input [N, 7, 7, C] from the streams of `match_head.features`: the box stream's
    RoI features pooled7 [N, 7, 7, C], the landmark / mask streams' conv features
    [N, S, S, C'] (average-pooled to 7 x 7), the image's RoI pixels7 [N, 7, 7, 3], the crop
    stream's features crop7 [N, 7, 7, C''], concatenated along channels."""
    parts = []
    for stream in self.match_streams:
      x = {"box": pooled7, "landmark": landmark_features, "mask": mask_features,
           "image": pixels7, "crop": crop7}[stream]
      n, size = x.shape[0], x.shape[1]
      if size != 7:
        f = size // 7
        x = x.astype(jnp.float32).reshape(n, 7, f, 7, f, x.shape[-1]).mean((2, 4))
      parts.append(x.astype(DTYPES[self.config.dtype]))
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts, -1)

  def embed_boxes(self, images, pyramid, boxes, train: bool = False, mask=None,
                  forward_only: bool = False):
    """MN embeddings [B, R, D] of boxes [B, R, 4] (canvas pixels) of `images` (their FPN
    `pyramid`): pooled and run through the streams of `match_head.features`, then the MN."""
    c = self.config
    b, r = boxes.shape[:2]
    flat = lambda x: x.reshape(b * r, *x.shape[2:])  # noqa: E731
    pool = functools.partial(self.pool, pyramid, boxes, forward_only=forward_only)
    lm = mk = pixels = crop = None
    if "landmark" in self.match_streams:
      lm = self.landmark_head.features(flat(pool(c.landmark_head.roi_size)))
    if "mask" in self.match_streams:
      mk = self.mask_head.features(flat(pool(c.mask_head.roi_size)))
    if "image" in self.match_streams:
      pixels = flat(self.pool_image(images, boxes, forward_only))
    if "crop" in self.match_streams:
      crop = self.crop_features(flat(self.crop_pixels(images, boxes, forward_only)))
    pooled7 = flat(pool(7))
    scale = c.match_head.get("feature_grad_scale", 1.0)
    if train and scale != 1.0:  # the MN's gradient into the shared features, scaled
      shared = lambda x: None if x is None else (  # noqa: E731
          scale * x + (1.0 - scale) * jax.lax.stop_gradient(x))
      pooled7, lm, mk = shared(pooled7), shared(lm), shared(mk)
    x = self.match_input(pooled7, lm, mk, pixels, crop)
    emb = self.embed(x, train=train, mask=None if mask is None else mask.reshape(-1))
    return emb.reshape(b, r, -1)

  def crop_pair_pixels(self, rng, crop_pairs, crop_boxes):
    """The side batch's crops [K, 2, S, S, 3] (normalised) as the crop stream's input
    [2K, crop_size, crop_size, 3]: each pooled by the RoIAlign of inference in its garment's
    box (crop_boxes [K, 2, 4]) moved by up to `sampling.crop_pair_jitter` of its side, half
    mirrored."""
    k, size = crop_pairs.shape[0], crop_pairs.shape[2]
    t = self.config.sampling
    rng_box, rng_flip = jax.random.split(rng)
    boxes = tgt.crop_pair_boxes(rng_box, crop_boxes.reshape(2 * k, 4),
                                t.get("crop_pair_jitter", 0.1))
    x = self.crop_pixels(crop_pairs.reshape(2 * k, size, size, 3), boxes[:, None])[:, 0]
    flip = jax.random.bernoulli(rng_flip, 0.5, (2 * k, 1, 1, 1))
    return jnp.where(flip, x[:, :, ::-1], x)

  def embed_with_crop_pairs(self, images, boxes, valid, crop_pairs, crop_boxes, train: bool):
    """MN embeddings of boxes [B, R, 4] of `images` ([B, R, D]) and of the side batch's
    crop pairs [K, 2, S, S, 3] ([K, 2, D]; `data.crop_pairs`), in one call, so the MN's
    BatchNorm sees both (the crops prepared by `crop_pair_pixels`). The MN must read the crop
    stream only."""
    if self.match_streams != ("crop",):
      raise ValueError("data.crop_pairs > 0 needs model.match_head.features='crop' (the side "
                       "batch has pixels only, no FPN features), got "
                       f"{'+'.join(self.match_streams)!r}")
    b, r = boxes.shape[:2]
    k = crop_pairs.shape[0]
    c = self.crop_size
    roi_pixels = self.crop_pixels(images, boxes).reshape(b * r, c, c, 3)
    side = self.crop_pair_pixels(self.make_rng("sampling"), crop_pairs, crop_boxes)
    x = self.crop_features(jnp.concatenate([roi_pixels, side.astype(roi_pixels.dtype)], 0))
    mask = jnp.concatenate([valid.reshape(-1), jnp.ones((2 * k,), bool)])
    emb = self.embed(self.match_input(None, crop7=x), train=train, mask=mask)
    return emb[:b * r].reshape(b, r, -1), emb[b * r:].reshape(k, 2, -1)

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
    v = self.embed_boxes(images, pyramid, boxes)
    return self.match_logits(v, v)

  def detection_heads(self, pooled14, lm_pooled, pooled7, pixels7, pixels_crop, boxes,
                      classes):
    """Mask probabilities [N, 28, 28], landmarks [N, 294, 3] and match embeddings [N, D] of N
    detections from their pooled features (the MN reading the streams' features computed
    for the masks and landmarks)."""
    mask_features = self.mask_head.features(pooled14)
    masks = postprocess.select_class_masks(self.mask_head.logits(mask_features), classes)
    channels, in_block = postprocess.block_channels(classes)
    lm_features = self.landmark_head.features(lm_pooled)
    block = self.landmark_head.block_logits_of_features(lm_features, channels)
    block = jnp.where(in_block[:, None, None, :], block, -jnp.inf)
    landmarks = postprocess.decode_landmarks(block, boxes, classes)
    return masks, landmarks, self.embed(self.match_input(
        pooled7, lm_features, mask_features, pixels7, self.crop_features(pixels_crop)))

  def _pure(self, module, method=None, convs=None):
    """(`fn`, variables): `module`'s method as a pure function `fn(variables, *args)` of its
    bound variables, for use inside `jax.lax` control flow (bound Flax modules cannot be
    called there); `convs`: how its convs are computed there (the training chunks:
    `loop_convs`, on the CPU matmuls only, `layers.CPU_IN_LOOPS`: XLA:CPU's convolution
    gradient inside control flow is far slower than outside)."""
    fields = {} if convs is None else {"convs": convs}
    unbound = module.clone(parent=None, **fields)
    return (lambda variables, *args: unbound.apply(variables, *args, method=method),
            module.variables)

  def _foreground_chunks(self, module, method, inputs, fg, chunk: int, keep_rows: int = 0):
    """`module`'s `method` on the rows of `inputs` where `fg`, `chunk` rows at a time
    (`chunked.foreground_rows`; the activations of the first `keep_rows` rows kept for the
    backward pass): the forward and the backward pass cost what the batch's foreground holds,
    not the number of RoI slots. Background rows' outputs are zeros (their losses are masked).
    `chunk` 0, or a module being initialised: the method on every row at once."""
    if not chunk or fg.shape[0] <= chunk or self.is_initializing():
      return (getattr(module, method.__name__) if method else module)(*inputs)
    fn, variables = self._pure(module, method, self.loop_convs)
    return chunked.foreground_rows(fn, variables, tuple(inputs), fg, chunk, keep_rows // chunk)

  def valid_detection_heads(self, inputs, valid, chunk: int):
    """`detection_heads` on the valid detections only, `chunk` at a time in a while loop
    (`chunked.map_rows`: static shapes, data-dependent trip count): the heads cost what the
    images hold, not the number of detection slots. Outputs of invalid slots are zeros."""
    fn, variables = self._pure(self, MatchRCNN.detection_heads)
    return chunked.map_rows(fn, variables, tuple(inputs), valid, chunk)

  # -- the model ---------------------------------------------------------------------------

  def __call__(self, images, targets=None, *, image_sizes=None, train: bool = False,
               boxes=None):
    if targets is None:
      return self.infer(images, image_sizes, given_boxes=boxes)
    return self.train_forward(images, targets, image_sizes, train)

  def train_forward(self, images, targets, image_sizes=None, train: bool = True):
    """Outputs and targets of every loss (see `training.losses`) for a batch with ground truth.

    Args:
      images: [N, H, W, 3]. With `targets['pair_id']` the batch is made of (shop, user) image
        pairs stored as images 2p (shop) and 2p + 1 (user), and the outputs include the match
        logits of every shop RoI against every user RoI of the batch (`pair_logits` [A, B],
        the 'same product' logit difference d, with `pair_labels` and `pair_valid`).
      targets: dict of boxes [N, M, 4], classes [N, M], valid [N, M], mask_crops [N, M, S, S],
        landmarks [N, M, 294, 3], and for pair batches styles [N, M] and pair_id [N].
    """
    c = self.config
    t = c.sampling
    n, h, w, _ = images.shape
    if image_sizes is None:
      image_sizes = jnp.broadcast_to(jnp.array([h, w], jnp.float32), (n, 2))
    gt_boxes, gt_valid = targets["boxes"], targets["valid"]
    gt_classes = targets["classes"].astype(jnp.int32)
    pyramid = self.features(images)
    logits, deltas, (props, _, pvalid) = self.proposals(pyramid, (h, w), image_sizes, train=True)
    anchors = jnp.concatenate([jnp.asarray(a) for a in self.anchors((h, w), pyramid)], 0)
    rpn_logits = jnp.concatenate(logits, 1)
    rpn_deltas = jnp.concatenate(deltas, 1)
    rng_anchor, rng_roi = jax.random.split(self.make_rng("sampling"))
    rpn_labels, rpn_box_targets, rpn_sampled = tgt.rpn_batch(rng_anchor, anchors, gt_boxes,
                                                             gt_valid, t)
    rois = tgt.roi_batch(rng_roi, props, pvalid, gt_boxes, gt_classes, gt_valid, t,
                         c.box_weights)
    pooled7 = self.pool(pyramid, rois["rois"], 7)
    cls_logits, box_deltas, _ = self.box_head(pooled7)
    box_deltas = jnp.take_along_axis(box_deltas, rois["labels"][..., None, None], axis=2)[..., 0, :]
    out = {"rpn_logits": rpn_logits, "rpn_deltas": rpn_deltas, "rpn_labels": rpn_labels,
           "rpn_box_targets": rpn_box_targets, "rpn_sampled": rpn_sampled,
           "cls_logits": cls_logits, "box_deltas": box_deltas, "roi_labels": rois["labels"],
           "roi_valid": rois["valid"], "roi_is_fg": rois["is_fg"],
           "box_targets": rois["box_targets"]}

    # Mask and landmark streams on the first (foreground) RoIs.
    def first(k, key):
      return rois[key][:, :k]
    k = c.implementation
    chunk = k.train_head_chunk if k.train_heads == "chunked" else 0
    keep = k.train_head_keep_rows
    km, kl = t.mask_rois_per_image, t.landmark_rois_per_image
    m_rois, m_matched, m_fg = first(km, "rois"), first(km, "matched"), first(km, "is_fg")
    m_classes = first(km, "labels")
    shared = c.mask_head.roi_size == c.landmark_head.roi_size
    if shared:  # both streams take the first RoIs: pool the longer prefix once, for both
      pooled_ml = self.pool(pyramid, first(max(km, kl), "rois"), c.mask_head.roi_size)
      pooled_m = pooled_ml[:, :km]
    else:
      pooled_m = self.pool(pyramid, m_rois, c.mask_head.roi_size)
    mask_logits = self._foreground_chunks(
        self.mask_head, heads.MaskHead.class_logits,
        (pooled_m.reshape(n * km, *pooled_m.shape[2:]), m_classes.reshape(-1)),
        m_fg.reshape(-1), chunk, keep)
    out["mask_logits"] = mask_logits.reshape(n, km, *mask_logits.shape[1:])
    out["mask_targets"] = tgt.mask_batch(m_rois, m_matched, gt_boxes, targets["mask_crops"],
                                         mask_logits.shape[-1])
    out["mask_valid"] = m_fg

    l_rois, l_matched, l_fg = first(kl, "rois"), first(kl, "matched"), first(kl, "is_fg")
    l_classes = first(kl, "labels")
    flat_cls = l_classes.reshape(-1)
    channels, _ = postprocess.block_channels(flat_cls)
    pooled_l = (pooled_ml[:, :kl] if shared
                else self.pool(pyramid, l_rois, c.landmark_head.roi_size))
    block = self._foreground_chunks(
        self.landmark_head, heads.LandmarkHead.block_logits,
        (pooled_l.reshape(-1, *pooled_l.shape[2:]), channels), l_fg.reshape(-1), chunk,
        keep)
    block = block.reshape(block.shape[0], -1, block.shape[-1])  # [n, 4S * 4S, K]
    heatmap = 4 * c.landmark_head.roi_size  # 56
    out["landmark_logits"] = block.reshape(n, kl, -1, block.shape[-1])
    index, valid = tgt.landmark_batch(l_rois, l_matched, l_classes, targets["landmarks"],
                                      heatmap)
    out["landmark_targets"] = index
    out["landmark_valid"] = valid & l_fg[..., None]

    if "pair_id" in targets:  # the batch is (shop, user) image pairs: the matching network
      boxes, matched, valid = tgt.match_roi_batch(gt_boxes, gt_valid, rois, t)
      if "crop_pairs" in targets:  # the side batch of GT crop pairs (data.crop_pairs)
        emb, side = self.embed_with_crop_pairs(images, boxes, valid, targets["crop_pairs"],
                                               targets["crop_pair_boxes"], train)
      else:
        emb = self.embed_boxes(images, pyramid, boxes, train=train, mask=valid)  # [N, R, D]
      # Every shop RoI of the global batch against every user RoI: [P R, P R].
      shop_emb, user_emb = tgt.shop_rows(emb), tgt.user_rows(emb)
      keys = tgt.roi_keys(targets["pair_id"], targets["styles"], matched)
      shop_key, shop_valid = tgt.shop_rows(keys), tgt.shop_rows(valid)
      user_key, user_valid = tgt.user_rows(keys), tgt.user_rows(valid)
      if "crop_pairs" in targets:  # the crop pairs as more shop rows and user rows
        side_key = targets["crop_pair_key"].astype(jnp.int32)
        ones = jnp.ones((side.shape[0],), bool)
        shop_emb = jnp.concatenate([shop_emb, side[:, 0]], 0)
        user_emb = jnp.concatenate([user_emb, side[:, 1]], 0)
        shop_key = jnp.concatenate([shop_key, side_key], 0)
        user_key = jnp.concatenate([user_key, side_key], 0)
        shop_valid = jnp.concatenate([shop_valid, ones], 0)
        user_valid = jnp.concatenate([user_valid, ones], 0)
      out["pair_logits"] = self.similarity.pairwise(shop_emb, user_emb)
      out["pair_labels"], out["pair_valid"] = tgt.pair_targets(
          shop_key[:, 0], shop_key[:, 1], shop_valid, user_key[:, 0], user_key[:, 1], user_valid)
      out["match_shop_emb"] = shop_emb  # what a memory of shop embeddings keeps
      out["match_shop_key"], out["match_shop_valid"] = shop_key, shop_valid
      if "memory_emb" in targets:  # earlier steps' shop embeddings (training.step's memory)
        out["memory_logits"] = self.similarity.pairwise(targets["memory_emb"], user_emb)
        key = targets["memory_key"]
        out["memory_labels"], out["memory_valid"] = tgt.pair_targets(
            key[:, 0], key[:, 1], targets["memory_valid"], user_key[:, 0], user_key[:, 1],
            user_valid)
    return out

  def infer(self, images, image_sizes=None, given_boxes=None):
    """Detections with their masks, landmarks and match embeddings; with `given_boxes`
    ([B, K, 4], canvas pixels: e.g. the ground-truth garments) also `box_embeddings`
    [B, K, D], the MN's embeddings of those boxes (retrieval with ground-truth boxes)."""
    c = self.config
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"images must be [B, H, W, 3], got {images.shape}")
    b, h, w, _ = images.shape
    if image_sizes is None:
      image_sizes = jnp.broadcast_to(jnp.array([h, w], jnp.float32), (b, 2))
    pyramid = self.features(images)
    _, _, (props, _, pvalid) = self.proposals(pyramid, (h, w), image_sizes, train=False)
    cls_logits, box_deltas, _ = self.box_head(self.pool(pyramid, props, 7, forward_only=True))
    d = c.detections
    dets = postprocess.detect(props, pvalid, cls_logits, box_deltas, image_sizes,
                              box_weights=c.box_weights,
                              score_threshold=d.score_threshold, nms_threshold=d.nms_threshold,
                              max_detections=d.per_image, min_size=d.min_size)
    boxes, classes = dets["boxes"], dets["classes"]
    n = b * boxes.shape[1]
    pool = functools.partial(self.pool, pyramid, boxes, forward_only=True)
    pooled14 = pool(c.mask_head.roi_size)
    lm_pooled = (pooled14 if c.landmark_head.roi_size == c.mask_head.roi_size
                 else pool(c.landmark_head.roi_size))
    flat = lambda x: x.reshape(n, *x.shape[2:])  # noqa: E731
    pixels7 = flat(self.pool_image(images, boxes, forward_only=True))
    pixels_crop = (flat(self.crop_pixels(images, boxes, forward_only=True))
                   if "crop" in self.match_streams else pixels7)  # unused without the stream
    inputs = (flat(pooled14), flat(lm_pooled), flat(pool(7)), pixels7, pixels_crop,
              boxes.reshape(n, 4), classes.reshape(n))
    chunk = c.implementation.infer_head_chunk
    if chunk and n > chunk:
      masks, landmarks, embeddings = self.valid_detection_heads(inputs, dets["valid"].reshape(n),
                                                                chunk)
    else:
      masks, landmarks, embeddings = self.detection_heads(*inputs)
    masks = masks.reshape(b, -1, *masks.shape[1:])
    embeddings = embeddings.reshape(b, -1, embeddings.shape[-1])
    out = {
        **dets,
        "masks": masks,
        "landmarks": landmarks.reshape(b, -1, *landmarks.shape[1:]),
        "embeddings": embeddings,
        "proposals": props,
        "proposal_valid": pvalid,
    }
    if given_boxes is not None:
      if given_boxes.ndim != 3 or given_boxes.shape[0] != b or given_boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be [{b}, K, 4], got {given_boxes.shape}")
      out["box_embeddings"] = self.embed_boxes(images, pyramid, given_boxes, forward_only=True)
    return out


def build(model_cfg) -> MatchRCNN:
  """The model of `model_cfg` (config.model), how it is computed (`config.model.implementation`,
  "auto") resolved once for the running backend (`backend.resolve`)."""
  return MatchRCNN(ml_collections.FrozenConfigDict(backend.resolve(model_cfg)))


def init(model: MatchRCNN, rng, image_shape=(128, 128)):
  """Variables {'params', 'batch_stats'} for images of `image_shape`.

  The initialisers draw from an RBG key (XLA's RngBitGenerator) made from `rng`: with a
  threefry key every parameter's draw compiles as an unrolled hash, and the jitted init of the
  tiny test model took 15 s to compile instead of 5 s. Deterministic for a given `rng` on a
  given backend (RngBitGenerator's streams may differ between backends).
  """
  images = jnp.zeros((1, *image_shape, 3), jnp.float32)

  def fn(r, x):
    key = jax.random.wrap_key_data(jax.random.bits(r, (4,), jnp.uint32), impl="rbg")
    return model.init(key, x, method=MatchRCNN.initialize)

  return jax.jit(fn)(rng, images)


def variable_shapes(model: MatchRCNN, image_shape=(128, 128)):
  """The structure, shapes and dtypes of `init`'s variables (jax.ShapeDtypeStruct leaves),
  without computing them: the template that checkpoints and exports restore into."""
  return jax.eval_shape(lambda: init(model, jax.random.PRNGKey(0), image_shape))
