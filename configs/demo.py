"""The demo: the built-in synthetic DeepFashion2 on a 2-core CPU.

    python train.py --config configs/demo.py --workdir runs/demo

Makes the synthetic dataset in `runs/demo/data` when absent (train and a held-out validation
split), converts it to TFRecords + COCO / retrieval ground truth, and runs the input pipeline.
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
  config.data.mask_crop_size = 56
  config.data.examples_per_shard = 64
  config.batch_size = 8
  config.pairs_per_batch = 4
  config.num_steps = 20  # batches drawn from each input pipeline
  return config
