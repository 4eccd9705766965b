"""Side-by-side benchmark against torchvision on a CPU: R50-FPN at 512 x 512.

    python benchmarks/compare_torchvision.py --config configs/bench_cpu.py --json OUT.json

`config.model` is the model's own config (`configs/model.py`, the schema `train.py` reads);
torchvision's model is built to the same sizes from it (depth, proposal and RoI counts,
detections, head widths). `config.bench` holds what only the benchmark needs. Training steps
take one (shop, user) pair (2 images: the match loss needs a pair), inference one image.
Proposal and RoI counts are torchvision's defaults, on both sides.
"""

import ml_collections

from configs.model import model_config


def get_config():
  model = model_config(depth="50")
  # Both sides keep every detection (up to detections.per_image) whatever its score, so that
  # inference runs the mask / landmark / match heads on the same number of boxes on both
  # sides (with fresh weights, which side's scores pass 0.05 is a coin toss).
  model.detections.score_threshold = 0.0
  # The mask and landmark heads' RoI slots in training: a quarter of the RoIs, at most 128.
  model.sampling.mask_rois_per_image = model.sampling.landmark_rois_per_image = 128
  # Ours: in training the mask / landmark heads on the foreground RoIs, 8 at a time, the
  # activations of the first 32 kept for the backward pass; at inference the heads on the
  # valid detections, 10 at a time (what `auto` resolves to on the CPU, made explicit).
  model.implementation.train_head_chunk = 8
  model.implementation.train_head_keep_rows = 32
  model.implementation.infer_head_chunk = 10
  return ml_collections.ConfigDict({
      "model": model,
      "bench": {
          "image_size": 512,
          "train_images": 2,
          "infer_images": 1,
          "garments_per_image": 3,
          # SGD, both sides. Small enough that neither RPN diverges during the benchmark's
          # steps (at 0.02 torchvision's RPN kept no proposal after its first step on these
          # inputs, and its heads then ran on the ground-truth boxes alone).
          "learning_rate": 1e-4,
          "amp": False,  # torchvision under torch.autocast (on a GPU: bfloat16)
          "runs": 5,  # timed runs after one warm-up
          "threads": 0,  # torch intra-op threads (0: torch's default)
      },
  })
