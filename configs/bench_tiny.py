"""A seconds-long run of the torchvision benchmark (the CI smoke test): R18-FPN at 128 x 128,
small heads and proposal counts. Its numbers say nothing about speed.

    python benchmarks/compare_torchvision.py --config configs/bench_tiny.py --json OUT.json
"""

from configs import bench_cpu


def get_config():
  config = bench_cpu.get_config()
  config.depth = "18"
  config.image_size = 128
  config.garments_per_image = 2
  config.rpn_pre_nms_train = config.rpn_post_nms_train = 100
  config.rpn_pre_nms_test = config.rpn_post_nms_test = 50
  config.rois_per_image = 64
  config.detections = 8
  config.mask_channels, config.landmark_channels, config.landmark_convs = 32, 32, 2
  config.runs = 2
  return config
