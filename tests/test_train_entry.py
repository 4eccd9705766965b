import json
import subprocess
import sys


def test_main_job_prepares_data_and_runs_the_pipelines(tmp_path):
  workdir = tmp_path / "run"
  res = subprocess.run(
      [sys.executable, "train.py", "--config", "configs/tiny.py", "--workdir", str(workdir),
       "--config.num_steps=2"], capture_output=True, text=True)
  assert res.returncode == 0, res.stderr[-3000:]
  assert "DeepFashion2 'train' converted" in res.stdout
  assert "pairs batch:" in res.stdout and "pair_match (2, 4, 4) bool" in res.stdout
  stats = json.loads((workdir / "input_pipeline.json").read_text())
  assert stats["images"]["images_per_s"] > 0 and stats["pairs"]["images_per_s"] > 0
  assert (workdir / "data" / "tiny" / "validation_coco.json").exists()
  # A second run finds the converted data instead of making it again.
  res = subprocess.run(
      [sys.executable, "train.py", "--config", "configs/tiny.py", "--workdir", str(workdir),
       "--config.num_steps=1"], capture_output=True, text=True)
  assert res.returncode == 0 and "generating" not in res.stdout
