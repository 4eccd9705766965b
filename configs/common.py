"""Defaults shared by the configs: every static size lives here or in a config that overrides it.

A config file defines `get_config()` returning an `ml_collections.ConfigDict`; any field can be
overridden on the command line, e.g. `--config.data.canvas='(512, 512)'`.
"""

import ml_collections

from configs.model import model_config


def base_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  # Where the converted dataset lives. Empty: `<workdir>/<workdir_data>`, made from the
  # built-in synthetic data when absent.
  config.data_dir = ""
  config.workdir_data = "data"
  config.synthetic = ml_collections.ConfigDict({
      "num_train_images": 256,
      "num_eval_images": 64,
      "image_size": 320,
      "seed": 0,
      # what tells products apart (match_rcnn_jax.data.synthetic): "colour" (each product its
      # own colours) or "appearance" (families of one palette; the retrieval proxy)
      "mode": "colour",
  })
  config.data = ml_collections.ConfigDict({
      "dir": "",  # filled in from data_dir / workdir at run time
      "train_split": "train",
      "eval_split": "validation",
      "canvas": (512, 512),  # (H, W) of every image batch
      "short_side": 512,
      "max_side": 512,
      "scale_jitter": (0.8, 1.0),  # train-time factor on the resize scale
      "flip_prob": 0.5,
      "max_instances": 16,  # ground truth padded to this many items per image
      "mask_crop_size": 56,  # GT masks cropped to their box at this size on the host
      "shuffle_buffer": 256,
      # The (shop, user) pairs of a training batch show products of one category, so the match
      # loss sees same-category garments of different products (retrieval's confusion set).
      "pair_batches_by_category": True,
      # Or the pairs of a batch from one pair_id group (its products of other styles as the
      # negatives); takes precedence over pair_batches_by_category.
      "pair_batches_by_group": False,
      # > 0: a side batch of this many (shop, user) ground-truth crop pairs a step, one shop
      # and one user crop of a product each, crop_pairs_per_group products from one pair_id
      # group, cropped once at crop_pairs_size px (data.crop_pairs.CropBank): the MN's pair
      # loss ranks them beside the batch's RoIs. Needs model.match_head.features="crop".
      "crop_pairs": 0,
      "crop_pairs_per_group": 4,
      "crop_pairs_size": 40,
      "examples_per_shard": 1024,
      "seed": 0,
  })
  config.model = model_config(depth="50")
  # The pipeline normalises images with the model's pixel_mean / pixel_std (ImageNet's):
  # one value, overridable at either name.
  config.data.pixel_mean = config.model.get_ref("pixel_mean")
  config.data.pixel_std = config.model.get_ref("pixel_std")
  config.batch_size = 8  # global, over all devices and hosts
  config.pairs_per_batch = 4  # (shop, user) image pairs per global batch for the match head
  config.init_from = ""  # directory written by match_rcnn_jax.tools.import_torchvision
  config.train = ml_collections.ConfigDict({
      "num_steps": 1000,
      "log_every": 20,
      "checkpoint_every": 200,
      "keep_checkpoints": 3,
      "stop_at": 0,  # > 0: save and stop at this step (a later run resumes)
      "eval_at_end": True,  # box / mask / landmark AP on the eval split after training
  })
  config.optimizer = ml_collections.ConfigDict({
      "name": "sgd",  # or "adamw"
      "learning_rate": 0.02,  # for 16 images, the Detectron recipe
      "momentum": 0.9,
      "weight_decay": 1e-4,
      "warmup_steps": 500,
      "warmup_factor": 0.001,
      "decay_fractions": (8 / 12, 11 / 12),
      "decay_factor": 0.1,
      "grad_clip_norm": 0.0,  # 0: no clipping
      "freeze_backbone": (),  # e.g. ("conv1", "bn1", "layer1") with pretrained weights
  })
  config.eval = ml_collections.ConfigDict({
      # Retrieval gallery: the detections in shop images scoring at least this (queries: every
      # detection in a user image; the protocol keeps the best one per garment).
      "gallery_min_score": 0.3,
      # Rank the gallery items of the query's category (the detector's class; the ground
      # truth's with ground-truth boxes) before the others, each part by the match network.
      "rank_within_category": False,
  })
  # l1..l5 of the paper (never published; 1 as re-implementations use) and the RPN terms.
  config.loss_weights = ml_collections.ConfigDict({
      "rpn_cls": 1.0, "rpn_box": 1.0, "cls": 1.0, "box": 1.0, "landmark": 1.0, "mask": 1.0,
      "match": 1.0,
      # beyond the paper: the listwise match term (training.losses.listwise_match), 0 = off
      "match_list": 0.0,
  })
  return config
