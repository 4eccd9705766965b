"""A seconds-long run of the torchvision benchmark (the CI smoke test): R18-FPN at 128 x 128,
small heads and proposal counts. Its numbers say nothing about speed.

    python benchmarks/compare_torchvision.py --config configs/bench_tiny.py --json OUT.json
"""

from configs import bench_cpu


def get_config():
  config = bench_cpu.get_config()
  m = config.model
  m.backbone.depth = "18"
  m.rpn.pre_nms_top_k_train = m.rpn.post_nms_top_k_train = 100
  m.rpn.pre_nms_top_k_test = m.rpn.post_nms_top_k_test = 50
  m.sampling.rois_per_image = 64
  m.sampling.mask_rois_per_image = m.sampling.landmark_rois_per_image = 16
  m.detections.per_image = 8
  m.mask_head.channels, m.landmark_head.channels, m.landmark_head.num_convs = 32, 32, 2
  config.bench.image_size = 128
  config.bench.garments_per_image = 2
  config.bench.runs = 2
  return config
