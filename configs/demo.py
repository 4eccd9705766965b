"""The demo: a small Match R-CNN trained from scratch on the built-in synthetic DeepFashion2
on a 2-core CPU.

    python train.py --config configs/demo.py --workdir runs/demo

Makes the synthetic dataset in `runs/demo/data` when absent (train and a held-out validation
split), converts it, and trains a ResNet-18 (half width) FPN Match R-CNN at 256 x 256 with
(shop, user) pair batches, printing a progress line with every loss.
"""

from configs import common


def get_config():
  config = common.base_config()
  config.synthetic.num_train_images = 256
  config.synthetic.num_eval_images = 64
  config.synthetic.image_size = 256
  config.data.canvas = (256, 256)
  config.data.short_side = 256
  config.data.max_side = 256
  config.data.max_instances = 8
  config.data.mask_crop_size = 28
  config.data.examples_per_shard = 64

  m = config.model
  m.backbone.depth = "18"
  m.backbone.width = 32
  m.backbone.norm = "group_norm"  # trained from scratch: no frozen statistics
  m.fpn_channels = 64
  m.rpn.pre_nms_top_k_train, m.rpn.post_nms_top_k_train = 600, 300
  m.rpn.pre_nms_top_k_test, m.rpn.post_nms_top_k_test = 300, 100
  m.box_head.hidden = 256
  m.mask_head.channels = 64
  m.landmark_head.channels = 64
  m.landmark_head.num_convs = 4
  m.match_head.channels = (64, 64, 64, 128)
  m.match_head.dim = 64
  m.detections.per_image = 20
  m.train.rpn_batch_per_image = 128
  m.train.rois_per_image = 128
  m.train.mask_rois_per_image = 16
  m.train.landmark_rois_per_image = 16
  m.train.pair_rois_per_image = 4

  config.pairs_per_batch = 4  # 8 images per step
  config.batch_size = 8
  config.train.num_steps = 300
  config.train.log_every = 25
  config.train.checkpoint_every = 100
  config.optimizer.learning_rate = 0.02
  config.optimizer.warmup_steps = 50
  config.optimizer.grad_clip_norm = 10.0
  return config
