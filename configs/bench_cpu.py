"""Side-by-side benchmark against torchvision on a CPU: R50-FPN at 512 x 512.

    python benchmarks/compare_torchvision.py --config configs/bench_cpu.py --json OUT.json

Training steps take one (shop, user) pair (2 images: the match loss needs a pair), inference
one image. Proposal and RoI counts are torchvision's defaults, on both sides.
"""

import ml_collections


def get_config():
  return ml_collections.ConfigDict({
      "depth": "50",  # ResNet depth, both sides ("18" or "50")
      "image_size": 512,
      "train_images": 2,
      "infer_images": 1,
      "garments_per_image": 3,
      "rpn_pre_nms_train": 2000, "rpn_post_nms_train": 2000,
      "rpn_pre_nms_test": 1000, "rpn_post_nms_test": 1000,
      "rois_per_image": 512,
      "detections": 100,
      # Both sides keep every detection (up to `detections`) whatever its score, so that
      # inference runs the mask / landmark / match heads on the same number of boxes on both
      # sides (with fresh weights, which side's scores pass 0.05 is a coin toss).
      "score_threshold": 0.0,
      # SGD, both sides. Small enough that neither RPN diverges during the benchmark's steps:
      # at 0.02, torchvision's RPN kept no proposal after its first step on these inputs, and
      # its heads then ran on the 3 ground-truth boxes per image instead of 512 RoIs.
      "learning_rate": 1e-4,
      "head_chunk": 10,  # ours: heads on the valid detections, 10 at a time (0: every slot)
      # ours, training: mask / landmark heads on the foreground RoIs, 8 at a time (0: on all
      # mask_rois / landmark_rois slots, as fixed-shape implementations do)
      "train_head_chunk": 8,
      # ours, training: the activations of the first 32 foreground RoIs kept for the backward
      # pass (the later chunks' forward runs again there)
      "train_head_keep_rows": 32,
      # ours, training: RoIAlign in pieces of at most this many MB of gathered values
      # (-1: the default, config.model.kernels.roi_align_piece_mb: 128 MB on the CPU; 0: all
      # RoIs at once)
      "roi_align_piece_mb": -1,
      "mask_channels": 256, "landmark_channels": 512, "landmark_convs": 8,
      "dtype": "float32",  # ours; torchvision runs float32 on the CPU
      "amp": False,  # torchvision under torch.autocast (on a GPU: bfloat16)
      "runs": 5,  # timed runs after one warm-up
      "threads": 0,  # torch intra-op threads (0: torch's default)
  })
