"""Side-by-side benchmark against torchvision on one GPU: R50-FPN at 1024 x 1024, batch 8, bf16.

    python benchmarks/compare_torchvision.py --config configs/bench_gpu.py --json OUT.json
    # the training heads in chunks instead (ours only; torchvision is unchanged):
    python benchmarks/compare_torchvision.py --config configs/bench_gpu.py \
        --set model.implementation.train_heads=chunked \
        --set model.implementation.train_head_chunk=32 --side ours --side_out OURS_CHUNKED.json

Needs only jax, flax, optax, numpy, ml_collections and torch / torchvision (no TensorFlow): the
inputs are synthetic and device-resident. Ours computes in bfloat16 (parameters and the losses in
float32); torchvision runs under `torch.autocast(bfloat16)` (AMP). Training takes 4 (shop, user)
pairs = 8 images a step; inference 8 images a call.
"""

from configs import bench_cpu


def get_config():
  config = bench_cpu.get_config()
  config.model.dtype = "bfloat16"
  # The accelerator's choices (what `auto` resolves to off the CPU): the heads on every
  # slot at once, one large batch.
  config.model.implementation.train_heads = "dense"
  config.model.implementation.infer_head_chunk = 0
  config.bench.update({"image_size": 1024, "train_images": 8, "infer_images": 8,
                       "amp": True, "runs": 10})
  return config
