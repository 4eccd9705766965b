"""End-to-end training on the tiny config: checkpoints, resume, export, metrics."""

import json
import os

import jax
import numpy as np
import pytest
from flax import traverse_util

from configs import tiny
from match_rcnn_jax.models import export, match_rcnn
from match_rcnn_jax.training import loop, optim


def _config(data_dir):
  config = tiny.get_config()
  config.data_dir = data_dir
  return config


def _exported(workdir):
  config = tiny.get_config()
  model = match_rcnn.build(config.model)
  template = match_rcnn.variable_shapes(model, (128, 128))
  return jax.device_get(export.load_variables(os.path.join(workdir, "export"),
                                                          template))


@pytest.fixture(scope="module")
def uninterrupted(tiny_config, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("run_a"))
  final = loop.train(_config(tiny_config.data.dir), workdir)
  return workdir, final


def test_training_writes_everything(uninterrupted, tiny_config):
  workdir, final = uninterrupted
  assert np.isfinite(final["loss"]) and final["skipped"] == 0
  for name in ("loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box", "loss_mask",
               "loss_landmark", "loss_match", "loss_match_pos", "loss_match_neg"):
    assert name in final
  assert final["match_pairs_pos"] > 0 and final["match_pairs_neg"] > 0
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
  assert any(f.startswith("events.out.tfevents")
             for f in os.listdir(os.path.join(workdir, "tensorboard")))
  history = json.load(open(os.path.join(workdir, "train_history.json")))
  assert [h["step"] for h in history] == [2, 4]
  config = json.load(open(os.path.join(workdir, "export", "config.json")))
  assert config["model"]["backbone"]["depth"] == "tiny"
  # The held-out evaluation at the end of training.
  metrics = json.load(open(os.path.join(workdir, "eval", "metrics.json")))
  tasks = ("bbox", "segm", "landmarks_vis", "landmarks_vis_occ")
  assert set(metrics) == {*tasks, "subsets", "retrieval", "retrieval_gt_boxes",
                          "retrieval_diagnostics", "retrieval_reference", "retrieval_lift"}
  assert metrics["retrieval_lift"]["top1"] == round(
      metrics["retrieval_gt_boxes"]["top1"]
      - max(m["top1"] for m in metrics["retrieval_reference"].values()), 4)
  assert all(0.0 <= metrics[t]["AP50"] <= 1.0 for t in tasks)
  assert final["bbox_AP50"] == metrics["bbox"]["AP50"]
  assert final["retrieval_top20"] == metrics["retrieval"]["top20"]
  for kind in ("retrieval", "retrieval_gt_boxes"):
    assert 0.0 <= metrics[kind]["top1"] <= metrics[kind]["top20"] <= 1.0
    assert set(metrics["subsets"][kind]) == {"scale", "occlusion", "zoom_in", "viewpoint"}
  diag = metrics["retrieval_diagnostics"]
  assert set(diag) == {"hub_share", "hub_share_gt_boxes", "pair_auc_same_category"}
  assert 0.0 < diag["hub_share"] <= 1.0 and 0.0 < diag["hub_share_gt_boxes"] <= 1.0
  records = json.load(open(os.path.join(workdir, "eval", "results.json")))
  assert all(len(r["keypoints"]) == 882 for r in records)
  # Every detection in a user image is a query with 20 ranked shop detections.
  ret = json.load(open(os.path.join(workdir, "eval", "retrieval_results.json")))
  coco = json.load(open(os.path.join(tiny_config.data.dir, "validation_coco.json")))
  source = {a["image_id"]: a["source"] for a in coco["annotations"]}
  user_dets = [r for r in records if source.get(r["image_id"]) == "user"]
  assert len(ret) == len(user_dets)
  assert all(source.get(r["query_image_id"]) == "user" for r in ret)
  assert all(len(r["gallery_image_id"]) == len(r["gallery_bbox"]) == 20 for r in ret)
  assert all(source.get(g) == "shop" for r in ret for g in r["gallery_image_id"])
  # With ground-truth boxes every user garment is a query, against every shop garment.
  gt_ret = json.load(open(os.path.join(workdir, "eval", "retrieval_results_gt_boxes.json")))
  query = json.load(open(os.path.join(tiny_config.data.dir, "validation_query.json")))
  assert len(gt_ret) == len(query)
  assert all(source.get(g) == "shop" for r in gt_ret for g in r["gallery_image_id"])
  # The pictures of held-out predictions and of retrieval.
  from PIL import Image
  with Image.open(os.path.join(workdir, "eval", "predictions.png")) as im:
    assert im.size == (4 * 256, 2 * 256)
  with Image.open(os.path.join(workdir, "eval", "retrieval.png")) as im:
    assert im.size[1] % (96 + 20) == 0 and im.size[1] >= 96 + 20


def test_frozen_stages_are_not_trained(uninterrupted):
  """The tiny config freezes the stem and layer1 (`optimizer.freeze_backbone`): the step does
  not differentiate them (`step.split_frozen`), and after training they still hold their
  initial values while every other parameter moved."""
  workdir, _ = uninterrupted
  config = tiny.get_config()
  frozen = tuple(config.optimizer.freeze_backbone)
  assert frozen == ("conv1", "bn1", "layer1")
  model = match_rcnn.build(config.model)
  init_rng, _ = jax.random.split(jax.random.PRNGKey(config.seed))
  before = traverse_util.flatten_dict(jax.device_get(
      loop.init_variables(config, model, init_rng))["params"])
  after = traverse_util.flatten_dict(_exported(workdir)["params"])
  assert before.keys() == after.keys()
  kept = [k for k in before if optim.is_frozen(k, frozen)]
  assert len(kept) == 5  # the stem conv; layer1_0's conv1, conv2, conv3 and downsample_conv
  for k in kept:
    np.testing.assert_array_equal(np.asarray(after[k]), np.asarray(before[k]), err_msg=str(k))
  moved = [k for k in before if k not in kept
           and not np.array_equal(np.asarray(after[k]), np.asarray(before[k]))]
  assert len(moved) >= 0.9 * (len(before) - len(kept)), len(moved)


def test_resume_gives_the_same_parameters(uninterrupted, tiny_config, tmp_path):
  workdir_a, final_a = uninterrupted
  workdir_b = str(tmp_path / "run_b")
  config = _config(tiny_config.data.dir)
  config.train.stop_at = 2
  config.train.eval_at_end = False
  loop.train(config, workdir_b)
  assert sorted(os.listdir(os.path.join(workdir_b, "checkpoints"))) == ["2"]
  config = _config(tiny_config.data.dir)
  config.train.eval_at_end = False
  final_b = loop.train(config, workdir_b)
  np.testing.assert_allclose(final_b["loss"], final_a["loss"], rtol=1e-5)
  a, b = _exported(workdir_a), _exported(workdir_b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


def test_init_from_loads_an_export(uninterrupted):
  """`--config.init_from=W` starts from the variables in W (an import or an export)."""
  workdir, _ = uninterrupted
  config = tiny.get_config()
  config.init_from = os.path.join(workdir, "export")
  model = match_rcnn.build(config.model)
  loaded = loop.init_variables(config, model, jax.random.PRNGKey(7))
  for x, y in zip(jax.tree.leaves(loaded), jax.tree.leaves(_exported(workdir))):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_sigkill_during_checkpoint_write_then_resume(uninterrupted, tiny_config, tmp_path):
  """Killed (SIGKILL) while the step-4 checkpoint is being committed, the run resumes from
  step 2 and ends with exactly the parameters of an uninterrupted run."""
  import signal
  import subprocess
  import sys
  workdir_a, _ = uninterrupted
  workdir = str(tmp_path / "killed")
  cmd = [sys.executable, "tests/scripts/train_and_die.py", tiny_config.data.dir, workdir]
  res = subprocess.run(cmd + ["--kill_at_save", "4"], capture_output=True, text=True)
  assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
  entries = os.listdir(os.path.join(workdir, "checkpoints"))
  assert "2" in entries and "4" not in entries
  assert any(e.startswith("4") and e != "4" for e in entries)  # the unfinished write
  assert not os.path.exists(os.path.join(workdir, "export"))
  res = subprocess.run(cmd, capture_output=True, text=True)
  assert res.returncode == 0, res.stderr[-2000:]
  assert "resuming from step 2" in res.stdout
  a, b = _exported(workdir_a), _exported(workdir)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)

