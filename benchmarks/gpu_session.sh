#!/usr/bin/env bash
# One GPU session's measurements, in one call (a lent GPU's time is short):
#   bash benchmarks/gpu_session.sh OUT_DIR
# 1. compare_torchvision with configs/bench_gpu.py (both sides; ours with dense training heads);
# 2. ours again with the training heads in chunks of 32;
# 3. the train step's stage profile, if time is left (SKIP_PROFILE=1 skips it);
# 4. the paper's config at its real size (benchmarks/paper_setup.py, numpy inputs: no
#    TensorFlow on the GPU machine), in bfloat16: compile, step, inference, and the GPU's
#    memory analysis of its train step in float32 and bfloat16 (SKIP_PAPER=1 skips it).
# Each writes its JSON / log under OUT_DIR; the summary table comes last.
set -u
out=${1:?usage: gpu_session.sh OUT_DIR}
config=${BENCH_CONFIG:-configs/bench_gpu.py}  # configs/bench_tiny.py: a seconds-long trial
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import jax, flax, torch, torchvision; print('jax', jax.__version__, 'flax',
flax.__version__, 'torch', torch.__version__, 'torchvision', torchvision.__version__,
jax.devices())" | tee -a "$out/gpu.txt"
timeout "${COMPARE_TIMEOUT:-330}" python3 benchmarks/compare_torchvision.py \
    --config "$config" --json "$out/dense.json" > "$out/dense.log" 2>&1
echo "compare (dense): rc $?"; tail -n 20 "$out/dense.log"
timeout "${CHUNKED_TIMEOUT:-200}" python3 benchmarks/compare_torchvision.py \
    --config "$config" --set model.implementation.train_heads=chunked \
    --set model.implementation.train_head_chunk=32 --side ours \
    --side_out "$out/chunked.json" > "$out/chunked.log" 2>&1
echo "ours (chunks of 32): rc $?"; tail -n 5 "$out/chunked.log"
if [ -z "${SKIP_PROFILE:-}" ]; then
  timeout "${PROFILE_TIMEOUT:-120}" python3 benchmarks/profile_train_step.py \
      --config "$config" > "$out/profile.log" 2>&1
  echo "profile: rc $?"; tail -n 12 "$out/profile.log"
fi
if [ -z "${SKIP_PAPER:-}" ]; then
  timeout "${PAPER_TIMEOUT:-300}" python3 benchmarks/paper_setup.py --synthetic_inputs \
      --steps 10 --set model.dtype=bfloat16 --json "$out/paper_setup.json" \
      > "$out/paper_setup.log" 2>&1
  echo "paper setup: rc $?"; tail -n 40 "$out/paper_setup.log"
fi
python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
rows = []
for name in ("dense", "chunked"):
  path = os.path.join(out, name + ".json")
  if not os.path.exists(path):
    continue
  r = json.load(open(path))
  ours = r.get("ours", r)
  rows.append((name, ours))
  if "torchvision" in r:
    rows.append(("torchvision", r["torchvision"]))
keys = ("train_step_s", "infer_s", "train_images_per_s", "infer_images_per_s", "peak_device_mb",
        "compile_s", "infer_compile_s", "fg_rois_per_image", "detections_per_image")
print("run".ljust(12) + "".join(k[:18].rjust(20) for k in keys))
for name, r in rows:
  print(name.ljust(12) + "".join(str(r.get(k)).rjust(20) for k in keys))
PY
