"""Match R-CNN R50-FPN on the real DeepFashion2, the paper's setup, for accelerators.

    # 1. convert the released data (train/ and validation/ extracted under $DF2)
    python -m match_rcnn_jax.data.convert --data_dir $DF2/train --output_dir $DATA --split train
    python -m match_rcnn_jax.data.convert --data_dir $DF2/validation --output_dir $DATA \
        --split validation
    # 2. ImageNet weights from a torchvision ResNet-50 state_dict file
    python -m match_rcnn_jax.tools.import_torchvision --input resnet50.pth --output_dir $INIT
    # 3. train (each host of a pod: add --jax_distributed)
    python train.py --config configs/deepfashion2_r50_fpn.py --workdir $W \
        --config.data_dir=$DATA --config.init_from=$INIT

8 (shop, user) image pairs per batch (16 images, as the paper's 8 GPUs x 2 images), 12 epochs
of the released training set with lr 0.02, x0.1 at 8/12 and 11/12, frozen BatchNorm, the stem
and layer1 frozen (torchvision's choice with pretrained weights), 1024 x 1024 canvas and the
proposal counts of the TF TPU Mask R-CNN (2000 per level before NMS / 1000 after in training,
1000 / 1000 at test). Expected on validation (the released-data baseline of the dataset
authors, trained on the same half of the training set): box AP 0.638 (AP50 0.789, AP75
0.745), mask AP 0.640, landmark AP 0.605 (visible) / 0.529 (visible + occluded), retrieval
top-1 0.192 / top-20 0.524 with class + landmark features.
"""

from configs import common

TRAIN_IMAGES = 191_961  # released training set


def get_config():
  config = common.base_config()
  config.data.canvas = (1024, 1024)
  config.data.short_side = 800
  config.data.max_side = 1024
  config.data.scale_jitter = (0.8, 1.0)
  config.data.max_instances = 16
  config.data.mask_crop_size = 112
  # The training pipeline shuffles decoded, padded (shop, user) pairs, about 27 MB each at
  # this canvas (two 1024 x 1024 float32 images, 16 mask crops of 112 px): 128 of them hold
  # 3.4 GB of host memory (2048 would hold 55 GB). The input files are shuffled and
  # interleaved before them.
  config.data.shuffle_buffer = 128

  m = config.model
  m.backbone.depth = "50"
  m.backbone.norm = "frozen_bn"
  m.rpn.pre_nms_top_k_train, m.rpn.post_nms_top_k_train = 2000, 1000
  m.rpn.pre_nms_top_k_test, m.rpn.post_nms_top_k_test = 1000, 1000
  m.detections.per_image = 100
  # The paper's matching network: its best variant, "pose+class" (the landmark stream's and
  # the box stream's RoI features), trained end to end with the detector.
  m.match_head.features = "landmark+box"
  m.match_head.feature_grad_scale = 1.0

  config.pairs_per_batch = 8
  config.batch_size = 16
  images_per_step = 2 * config.pairs_per_batch
  config.train.num_steps = 12 * TRAIN_IMAGES // images_per_step
  config.train.log_every = 100
  config.train.checkpoint_every = 5000
  config.optimizer.learning_rate = 0.02
  config.optimizer.warmup_steps = 1000
  config.optimizer.freeze_backbone = ("conv1", "bn1", "layer1")
  return config
