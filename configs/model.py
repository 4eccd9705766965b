"""The model's defaults: `config.model` of every config (`configs/common.py`), built by
`match_rcnn_jax.models.match_rcnn.build(config.model)`.

torchvision's Mask / Keypoint R-CNN R50-FPN sizes, 13 categories, and the Match R-CNN heads.
"""

import ml_collections
from ml_collections.config_dict import placeholder


def model_config(depth: str = "50") -> ml_collections.ConfigDict:
  """Default `config.model`: torchvision Mask / Keypoint R-CNN R50-FPN sizes, 13 categories."""
  return ml_collections.ConfigDict({
      "dtype": "float32",
      # How the model is computed on the hardware it runs on: the same numbers and
      # parameters whichever is chosen. Resolved once when the model is built
      # (match_rcnn_jax.backend.resolve: "auto" / None pick by backend there).
      #   conv: "cpu" (XLA:CPU's convolutions of ops/cpu_conv.py: 1 x 1 convs as matmuls,
      #     large 3 x 3 convs as Winograd matmuls, the heads' convs inside loops as matmuls) or
      #     "xla" (XLA's own convolutions); auto: "cpu" on the CPU, "xla" elsewhere.
      #   roi_align: "gather" or "einsum" (no gather / scatter); auto: "einsum" on TPUs.
      #   roi_align_piece_mb: ("gather", training) the RoIs pooled in pieces whose gathered
      #     neighbours take at most this many MB, one piece after the other (0: all at once);
      #     None (auto): 128 on the CPU (less memory at the same speed), 0 elsewhere.
      #   train_heads: "chunked": in training the mask and landmark heads run on the
      #     foreground RoIs only, train_head_chunk at a time (models/chunked.py), the
      #     activations of the first train_head_keep_rows foreground RoIs kept for the
      #     backward pass, the later ones' forward run again there; "dense": on every
      #     mask_rois_per_image / landmark_rois_per_image slot, as TF's TPU Mask R-CNN does.
      #     auto: "chunked" on the CPU, "dense" elsewhere (a while loop with a data-dependent
      #     trip count costs a device-host round trip per chunk on GPUs).
      #   infer_head_chunk: at inference the mask / landmark / match heads run on the valid
      #     detections only, that many at a time (0: on every detection slot at once, one
      #     large batch); None (auto): 10 on the CPU, 0 elsewhere.
      "implementation": {"conv": "auto", "roi_align": "auto",
                         "roi_align_piece_mb": placeholder(int), "train_heads": "auto",
                         "train_head_chunk": 16, "train_head_keep_rows": 32,
                         "infer_head_chunk": placeholder(int)},
      # The input images' normalisation (the data pipeline's, config.data refers to these).
      "pixel_mean": (0.485, 0.456, 0.406),
      "pixel_std": (0.229, 0.224, 0.225),
      "num_classes": 14,  # 13 categories + background
      "backbone": {"depth": str(depth), "width": 64, "norm": "frozen_bn", "norm_eps": 1e-5},
      "fpn_channels": 256,
      "anchors": {"sizes": (32, 64, 128, 256, 512), "aspect_ratios": (0.5, 1.0, 2.0)},
      "rpn": {"pre_nms_top_k_train": 2000, "pre_nms_top_k_test": 1000,
              "post_nms_top_k_train": 2000, "post_nms_top_k_test": 1000,
              "nms_threshold": 0.7, "min_size": 1e-3},
      "roi_align": {"sampling_ratio": 2, "aligned": False},
      "box_weights": (10.0, 10.0, 5.0, 5.0),
      "box_head": {"hidden": 1024},
      "mask_head": {"channels": 256, "num_convs": 4, "roi_size": 14},
      "landmark_head": {"channels": 512, "num_convs": 8, "roi_size": 14, "num_landmarks": 294},
      # The matching network. features: the streams it reads, joined by '+'
      # (matching.FEATURE_STREAMS: box = the paper's "class", landmark = "pose", mask = "mask";
      # beyond the paper "image", the RoI's 7 x 7 pixels, and "crop", the RoI's pixels at
      # crop_size through the stream's own convs, crop_channels: one width per size from
      # crop_size down to 7, crop_convs_per_size: 1 (a stride-2 conv per halving) or 2 (two
      # convs per size, max-pools between), crop_box_scale: the crop stream reads the central
      # part of each box, its sides scaled by this factor about the centre (< 1: less of what a
      # too-large detected box adds around its garment)).
      # The default is the paper's best, "pose+class", trained end to end
      # as the paper does: feature_grad_scale is the share of the MN's gradient that reaches
      # the features it reads (the backbone, FPN and PN convs; 1 = end to end, 0 = the MN on
      # fixed features).
      "match_head": {"channels": (256, 256, 256, 1024), "dim": 256,
                     "features": "landmark+box", "norm": "batch",
                     "crop_size": 28, "crop_channels": (32, 64, 64), "crop_convs_per_size": 1,
                     "crop_box_scale": 1.0,
                     "feature_grad_scale": 1.0,
                     # memory_size > 0: the train state keeps the shop embeddings of recent
                     # steps (training.step), the listwise match term's extra negatives from
                     # step memory_start on (config.loss_weights.match_list weighs that term)
                     "memory_size": 0, "memory_start": 0},
      "detections": {"score_threshold": 0.05, "nms_threshold": 0.5, "per_image": 100,
                     "min_size": 1e-2},
      # Target assignment and sampling in training (torchvision / Detectron defaults).
      "sampling": {"rpn_fg_iou": 0.7, "rpn_bg_iou": 0.3, "rpn_batch_per_image": 256,
                   "rpn_positive_fraction": 0.5, "rois_per_image": 512,
                   "roi_positive_fraction": 0.25, "roi_fg_iou": 0.5,
                   "mask_rois_per_image": 128, "landmark_rois_per_image": 64,
                   # The matching network's RoIs: each image's GT boxes, plus this many
                   # sampled RoIs that overlap their GT with IoU >= match_fg_iou.
                   "pair_rois_per_image": 8, "match_fg_iou": 0.7,
                   # the side batch's crop pairs (config.data.crop_pairs): each crop's box
                   # sides moved by up to this share of its size
                   "crop_pair_jitter": 0.1},
  })


def upgrade(model_cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A `config.model` written before the current layout (an older run's export), in it: its
  `kernels` block is now `implementation`, its `detections.head_chunk` is
  `implementation.infer_head_chunk`; an older `train` block is now `sampling`, its
  `train.head_chunk` / `head_keep_rows` and `roi_align.backend` are `implementation` fields.
  Returns a new ConfigDict."""
  d = model_cfg.to_dict() if hasattr(model_cfg, "to_dict") else dict(model_cfg)
  impl = {**dict(d.pop("kernels", {})), **dict(d.get("implementation", {}))}
  if "train" in d and "sampling" not in d:
    sampling = dict(d.pop("train"))
    chunk = sampling.pop("head_chunk", None)
    if chunk is not None:
      impl.setdefault("train_heads", "chunked" if chunk else "dense")
      if chunk:
        impl.setdefault("train_head_chunk", chunk)
    if "head_keep_rows" in sampling:
      impl.setdefault("train_head_keep_rows", sampling.pop("head_keep_rows"))
    d["sampling"] = sampling
  roi_align = dict(d.get("roi_align", {}))
  if "backend" in roi_align:
    impl.setdefault("roi_align", roi_align.pop("backend"))
    d["roi_align"] = roi_align
  detections = dict(d.get("detections", {}))
  if "head_chunk" in detections:
    impl.setdefault("infer_head_chunk", detections.pop("head_chunk"))
    d["detections"] = detections
  defaults = model_config().implementation.to_dict()
  d["implementation"] = {**defaults, **impl}
  return ml_collections.ConfigDict(d)
