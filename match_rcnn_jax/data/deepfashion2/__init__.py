"""TFDS dataset folder: `tfds build match_rcnn_jax/data/deepfashion2 --manual_dir D`."""
