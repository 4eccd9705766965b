"""The demo: a small Match R-CNN trained from scratch on the built-in synthetic DeepFashion2
on a 2-core CPU.

    python train.py --config configs/demo.py --workdir runs/demo

Makes the synthetic dataset in `runs/demo/data` when absent (2048 training and 448 held-out
images at 160 px, the `appearance` mode: products told apart by motif, scale, placement and
outline, not by colour), converts it, trains a ResNet-18 (half width, GroupNorm) FPN Match
R-CNN at 160 x 160 from scratch with (shop, user) pair batches and a side batch of
ground-truth crop pairs for the matching network, printing a progress line with every loss,
then evaluates it on the held-out split (box / mask / landmark AP, per-subset tables, retrieval
top-k beside the no-model reference rankers) and draws its predictions and retrievals on
held-out images in `runs/demo/eval/`.
"""

from configs import common


def get_config():
  config = common.base_config()
  config.synthetic.num_train_images = 2048
  config.synthetic.num_eval_images = 448
  config.synthetic.image_size = 160
  # products told apart by motif, scale, placement and outline, not by colour: the retrieval
  # proxy whose no-model references stay low (benchmarks/proxy_check.py)
  config.synthetic.mode = "appearance"
  config.data.canvas = (160, 160)
  config.data.short_side = 160
  config.data.max_side = 160
  config.data.max_instances = 8
  config.data.mask_crop_size = 28
  config.data.examples_per_shard = 256

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
  # The MN reads the RoI's pixels at 28 x 28 through its own convs (the motif's shape and
  # scale), not the detector's features, so its loss leaves the detector alone; besides the
  # batch's RoIs it ranks a side batch of 48 (shop, user) ground-truth crop pairs a step,
  # 4 products of a pair_id group (a proxy family) at a time (data.crop_pairs): the 2 image
  # pairs of a step hold about a dozen positive RoI pairs, too few to learn from.
  m.match_head.features = "crop"
  m.match_head.crop_size = 28
  # two GroupNorm convs per size with max-pools between (28, 14, 7 px), as the proxy's crop CNN
  m.match_head.crop_channels = (16, 32, 64)
  m.match_head.crop_convs_per_size = 2
  # the central half of each box (its sides times 0.5): a detected box larger than its garment
  # adds clutter and neighbouring garments around it (benchmarks/RESULTS.md, "Demo")
  m.match_head.crop_box_scale = 0.5
  config.data.crop_pairs = 48
  config.data.crop_pairs_per_group = 4
  # The listwise match term over the global batch's shop RoIs and crop pairs, beside the pair
  # cross-entropy. No memory of earlier steps' shop embeddings (match_head.memory_size): with
  # a memory of 1024 (about 18 steps) from step 100 the same run ranked far worse
  # (benchmarks/RESULTS.md, "Demo").
  m.match_head.memory_size = 0
  config.loss_weights.match_list = 1.0
  # Pairs from any products: a proxy family is one category, and batches of one category cost
  # the detector its class head (it never sees two categories side by side).
  config.data.pair_batches_by_category = False
  # The gallery garments of the query's category first (the detector's class).
  config.eval.rank_within_category = True
  m.detections.per_image = 20
  m.sampling.rpn_batch_per_image = 128
  m.sampling.rois_per_image = 64
  m.sampling.mask_rois_per_image = 8
  m.sampling.landmark_rois_per_image = 4
  m.sampling.pair_rois_per_image = 4

  # Many small steps: 2 (shop, user) pairs = 4 images per step.
  config.pairs_per_batch = 2
  config.batch_size = 4
  config.train.num_steps = 1200
  config.train.log_every = 50
  config.train.checkpoint_every = 500
  # From scratch in minutes: AdamW, decay late.
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.warmup_steps = 100
  config.optimizer.decay_fractions = (0.75, 0.92)
  config.optimizer.grad_clip_norm = 10.0
  return config
