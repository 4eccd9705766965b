"""Tiny configuration for the tests: a few small synthetic images, small canvas, few instances.

    python train.py --config configs/tiny.py --workdir runs/tiny
"""

from configs import common


def get_config():
  config = common.base_config()
  config.workdir_data = "data/tiny"  # relative to --workdir unless absolute
  config.synthetic.num_train_images = 16
  config.synthetic.num_eval_images = 8
  config.synthetic.image_size = 96
  config.data.canvas = (128, 128)
  config.data.short_side = 128
  config.data.max_side = 128
  config.data.max_instances = 4
  config.data.mask_crop_size = 16
  config.data.shuffle_buffer = 16
  config.data.examples_per_shard = 8
  m = config.model
  m.backbone.depth = "tiny"
  m.backbone.width = 8
  m.fpn_channels = 16
  m.box_head.hidden = 32
  m.mask_head.channels = 16
  m.landmark_head.channels = 16
  m.landmark_head.num_convs = 2
  m.match_head.channels = (16, 16, 16, 32)
  m.match_head.dim = 16
  m.rpn.pre_nms_top_k_train = m.rpn.pre_nms_top_k_test = 64
  m.rpn.post_nms_top_k_train = m.rpn.post_nms_top_k_test = 32
  m.detections.per_image = 8
  m.sampling.rpn_batch_per_image = 64
  m.sampling.rois_per_image = 32
  m.sampling.mask_rois_per_image = 8
  m.sampling.landmark_rois_per_image = 8
  m.sampling.pair_rois_per_image = 4
  config.train.num_steps = 4
  config.train.log_every = 2
  config.train.checkpoint_every = 2
  config.eval.gallery_min_score = 0.0  # an untrained model: index every detection
  config.optimizer.learning_rate = 0.01
  config.optimizer.warmup_steps = 2
  config.optimizer.freeze_backbone = ("conv1", "bn1", "layer1")  # as with pretrained weights
  config.batch_size = 2
  config.pairs_per_batch = 2
  return config
