import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs.model import model_config
from match_rcnn_jax.models import export, match_rcnn
from match_rcnn_jax.tools import import_torchvision

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")


def test_import_coco_style_maskrcnn(tmp_path):
  """A 91-class Mask R-CNN: everything but the class-dependent predictor layers is loaded."""
  torch.manual_seed(0)
  tv = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None,
                                                          num_classes=91)
  pth = tmp_path / "maskrcnn.pth"
  torch.save({"model": tv.state_dict()}, pth)
  out = tmp_path / "imported"
  res = subprocess.run([sys.executable, "-m", "match_rcnn_jax.tools.import_torchvision",
                        "--input", str(pth), "--output_dir", str(out)],
                       capture_output=True, text=True)
  assert res.returncode == 0, res.stderr[-2000:]
  assert "skipped roi_heads.box_predictor.cls_score.weight: [1024, 91]" in res.stdout
  report = json.loads((out / "import_report.json").read_text())
  skipped = {k for k, _, _ in report["skipped_shape"]}
  assert skipped == {"roi_heads.box_predictor.cls_score.weight",
                     "roi_heads.box_predictor.cls_score.bias",
                     "roi_heads.box_predictor.bbox_pred.weight",
                     "roi_heads.box_predictor.bbox_pred.bias",
                     "roi_heads.mask_predictor.mask_fcn_logits.weight",
                     "roi_heads.mask_predictor.mask_fcn_logits.bias"}
  model = match_rcnn.build(model_config())
  template = jax.device_get(match_rcnn.init(model, jax.random.PRNGKey(1), (64, 64)))
  restored = export.load_variables(str(out), template)
  np.testing.assert_array_equal(
      restored["params"]["backbone"]["conv1"]["kernel"],
      tv.state_dict()["backbone.body.conv1.weight"].numpy().transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(
      restored["batch_stats"]["backbone"]["layer2_0"]["bn2"]["var"],
      tv.state_dict()["backbone.body.layer2.0.bn2.running_var"].numpy())
  np.testing.assert_array_equal(
      restored["params"]["mask_head"]["mask_fcn2"]["bias"],
      tv.state_dict()["roi_heads.mask_head.1.0.bias"].numpy())


def test_import_imagenet_resnet(tmp_path):
  torch.manual_seed(1)
  net = torchvision.models.resnet50(weights=None)
  state = {k: v.numpy() for k, v in net.state_dict().items()}
  pth = tmp_path / "r50.pth"
  torch.save(net.state_dict(), pth)
  report = import_torchvision.run(str(pth), str(tmp_path / "r50"))
  assert report["loaded"] == 53 * 4 + 53  # 53 convs + 53 BatchNorms of 4 vectors each
  assert {"fc.weight", "fc.bias"} <= set(report["unused"])
  assert all(p.split("/")[1] != "backbone" for p in report["not_loaded"])
  model = match_rcnn.build(model_config())
  template = jax.device_get(match_rcnn.init(model, jax.random.PRNGKey(1), (64, 64)))
  restored = export.load_variables(str(tmp_path / "r50"), template)
  np.testing.assert_array_equal(restored["params"]["backbone"]["layer4_2"]["conv3"]["kernel"],
                                state["layer4.2.conv3.weight"].transpose(2, 3, 1, 0))


def test_import_rejects_unrelated_files(tmp_path):
  pth = tmp_path / "other.pth"
  torch.save({"linear.weight": torch.zeros(2, 2)}, pth)
  res = subprocess.run([sys.executable, "-m", "match_rcnn_jax.tools.import_torchvision",
                        "--input", str(pth), "--output_dir", str(tmp_path / "o")],
                       capture_output=True, text=True)
  assert res.returncode == 1 and "no tensor matched" in res.stderr
