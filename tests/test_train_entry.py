import json
import subprocess
import sys

import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from match_rcnn_jax import predict, retrieve
from match_rcnn_jax.data import schema


def test_train_py_runs_and_resumes(tmp_path, capsys):  # and eval.py, predict, retrieve
  workdir = tmp_path / "run"
  cmd = [sys.executable, "train.py", "--config", "configs/tiny.py", "--workdir", str(workdir),
         "--config.train.num_steps=2", "--config.train.log_every=1",
         "--config.train.eval_at_end=False",
         # every detection slot filled, so the predictor below has something to draw
         "--config.model.detections.score_threshold=0.0"]
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
  assert set(metrics) == {"bbox", "segm", "landmarks_vis", "landmarks_vis_occ", "subsets",
                          "retrieval", "retrieval_gt_boxes", "retrieval_diagnostics",
                          "retrieval_reference", "retrieval_lift"}
  assert (workdir / "eval" / "results.json").exists() and "bbox" in res.stdout
  assert "no-model reference rankers" in res.stdout
  assert (workdir / "eval" / "retrieval_results.json").exists() and "top20" in res.stdout
  assert "inference on 'validation'" in res.stderr  # the progress bar

  # The predictor CLI on held-out images (original pixels, the detected category's landmarks).
  raw = workdir / "data" / "tiny" / "raw" / "validation" / "image"
  images = sorted(raw.glob("*.jpg"))
  # (In this process: `python -m match_rcnn_jax.predict ARGS` is `predict.main(ARGS)`.)
  out = tmp_path / "pred"
  assert predict.main(["--workdir", str(workdir), "--images", str(images[0]), str(images[1]),
                       "--output_dir", str(out), "--score_threshold", "0"]) == 0
  for path in images[:2]:
    dets = json.loads((out / (path.stem + ".json")).read_text())
    with Image.open(path) as im:
      size = im.size
    with Image.open(out / (path.stem + ".png")) as drawn:
      assert drawn.size == size
    assert len(dets) == 8  # tiny config: 8 detections per image, all kept at threshold 0
    for d in dets:
      cat = schema.CATEGORY_BY_ID[d["category_id"]]
      assert d["category_name"] == cat.name and len(d["landmarks"]) == cat.num_landmarks
      x, y, w, h = d["bbox"]
      assert 0 <= x <= x + w <= size[0] and 0 <= y <= y + h <= size[1]
      assert mask_utils.decode(d["segmentation"]).shape == (size[1], size[0])
  capsys.readouterr()
  with pytest.raises(SystemExit) as exit_info:
    predict.main(["--workdir", str(workdir), "--images", str(tmp_path / "missing.jpg"),
                  "--output_dir", str(out)])
  assert exit_info.value.code == 1
  assert "missing.jpg: cannot read the image" in capsys.readouterr().err

  # The retrieval CLI: index the held-out images, query with one of them.
  out = tmp_path / "ret"
  assert retrieve.main(["--workdir", str(workdir), "--gallery_dir", str(raw), "--queries",
                        str(images[0]), "--output_dir", str(out), "--top_k", "3",
                        "--score_threshold", "0"]) == 0
  stdout = capsys.readouterr().out
  assert f"indexed {8 * len(images)} garments in {len(images)} gallery images" in stdout
  found = json.loads((out / (images[0].stem + ".json")).read_text())
  assert len(found) == 8
  for r in found:
    probs = [m["match_probability"] for m in r["matches"]]
    assert len(probs) == 3 and probs == sorted(probs, reverse=True)
    assert all(0 <= p <= 1 for p in probs)
  assert (out / (images[0].stem + ".png")).exists()
