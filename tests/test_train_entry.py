import json
import subprocess
import sys


def test_train_py_runs_and_resumes(tmp_path):
  workdir = tmp_path / "run"
  cmd = [sys.executable, "train.py", "--config", "configs/tiny.py", "--workdir", str(workdir),
         "--config.train.num_steps=2", "--config.train.log_every=1",
         "--config.train.eval_at_end=False"]
  res = subprocess.run(cmd, capture_output=True, text=True)
  assert res.returncode == 0, res.stderr[-3000:]
  assert "DeepFashion2 'train' converted" in res.stdout
  assert "step 2/2" in res.stdout and "final losses:" in res.stdout
  assert (workdir / "data" / "tiny" / "validation_coco.json").exists()
  assert (workdir / "export" / "config.json").exists()
  history = json.loads((workdir / "train_history.json").read_text())
  assert [h["step"] for h in history] == [1, 2]
  # A second run finds the data and the finished checkpoint: nothing left to do.
  res = subprocess.run(cmd, capture_output=True, text=True)
  assert res.returncode == 0 and "generating" not in res.stdout
  assert "resuming from step 2" in res.stdout
  # eval.py evaluates the trained model (its export) on the held-out split.
  res = subprocess.run([sys.executable, "eval.py", "--config", "configs/tiny.py", "--workdir",
                        str(workdir)], capture_output=True, text=True)
  assert res.returncode == 0, res.stderr[-3000:]
  metrics = json.loads((workdir / "eval" / "metrics.json").read_text())
  assert set(metrics) == {"bbox", "segm", "landmarks_vis", "landmarks_vis_occ"}
  assert (workdir / "eval" / "results.json").exists() and "bbox" in res.stdout
