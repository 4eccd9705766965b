"""Evaluates a trained model, or scores result files, on DeepFashion2's COCO-style benchmarks.

    # a model: latest export (or --checkpoint N) of a training workdir, on the config's eval split
    python eval.py --config configs/demo.py --workdir runs/demo [--checkpoint N]
        [--jax_distributed | --coordinator_address H:P --num_processes N --process_id I]
    # existing result files (official format), no model
    python eval.py --gt_dir O --split validation --results R.json [--retrieval_results Q.json]
        [--retrieval_results_gt_boxes G.json] [--output_dir D]

Prints the box / mask / landmark (visible, visible + occluded) AP table, the per-subset tables
and retrieval top-k, and writes `metrics.json` (`W/eval/` for a model, beside the results file
or in `--output_dir` otherwise) shaped {"bbox": {"AP", "AP50", "AP75"}, "segm": ...,
"landmarks_vis": ..., "landmarks_vis_occ": ..., "subsets": {"bbox" | "segm" | "landmarks_vis":
{"scale" | "occlusion" | "zoom_in" | "viewpoint": {value: {"AP", "AP50", "AP75"}}}},
"retrieval" | "retrieval_gt_boxes": {"top1", "top5", "top10", "top15", "top20"},
"retrieval_reference": {ranker: {"top1", ...}}, "retrieval_lift": {"top1", "top5"}} (all the
fields: `match_rcnn_jax.evaluation.scoring`). Where retrieval is scored, the no-model reference
rankers (category chance, colour histogram, colour histogram inside the category) run on the
split's ground-truth items, the images read from the converter's TFRecords in the data
directory, and print beneath the model's rows. A model's official result files go to
`W/eval/results.json`, `W/eval/retrieval_results.json` and
`W/eval/retrieval_results_gt_boxes.json`.

A model is evaluated on every device of this host, and with the multi-host flags of train.py
(`--jax_distributed`, or `--coordinator_address` ...; started on every host) on every device of
every host: each host reads its own share of the split, and process 0 gathers the results,
scores them, writes the files and prints the tables.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from match_rcnn_jax import distributed  # noqa: E402  (--jax_distributed and the addresses)

_CONFIG = config_flags.DEFINE_config_file("config", None, "Python config file.",
                                          lock_config=False)
_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir holding the model.")
_CHECKPOINT = flags.DEFINE_integer("checkpoint", None, "Checkpoint step (default: the export, "
                                   "else the latest checkpoint).")
_GT_DIR = flags.DEFINE_string("gt_dir", None, "Converter output directory (scoring mode).")
_SPLIT = flags.DEFINE_string("split", "validation", "Split of --gt_dir.")
_RESULTS = flags.DEFINE_string("results", None, "Result file to score (scoring mode).")
_RETRIEVAL = flags.DEFINE_string("retrieval_results", None,
                                 "Retrieval result file to score (scoring mode).")
_RETRIEVAL_GT = flags.DEFINE_string(
    "retrieval_results_gt_boxes", None,
    "Retrieval result file whose queries and gallery are the ground-truth items (scoring mode).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where metrics.json goes (scoring mode).")


def _model_variables(config, workdir, step):
  import jax

  from match_rcnn_jax.models import export, match_rcnn
  from match_rcnn_jax.training import checkpoints, optim
  from match_rcnn_jax.training import step as step_lib
  model = match_rcnn.build(config.model)
  template = match_rcnn.variable_shapes(model, tuple(config.data.canvas))
  export_dir = os.path.join(workdir, "export")
  if step is None and os.path.exists(os.path.join(export_dir, "variables")):
    return model, export.load_variables(export_dir, template)
  tx = optim.make(config.optimizer, template["params"], config.train.num_steps)
  state = jax.eval_shape(lambda: step_lib.create(template, tx, jax.random.PRNGKey(0),
                                                 step_lib.memory_size(config)))
  mngr = checkpoints.manager(workdir, config.train.keep_checkpoints)
  step = step if step is not None else mngr.latest_step()
  if step is None:
    raise FileNotFoundError(f"{workdir}: no export and no checkpoint to evaluate")
  state = mngr.restore(step, args=checkpoints.ocp.args.StandardRestore(state))
  return model, {"params": state.params, "batch_stats": state.batch_stats}


def progress_bar(config):
  """A tqdm bar over the evaluation split's images; returns its update function."""
  from tqdm import tqdm

  from match_rcnn_jax.data import tfrecords
  split = config.data.eval_split
  total = tfrecords.load_builder(config.data.dir, split).info.splits[split].num_examples
  bar = tqdm(total=total, desc=f"inference on '{split}'", unit="img")
  return bar.update


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  from match_rcnn_jax.evaluation import evaluate, scoring, tables
  files = (_RESULTS.value, _RETRIEVAL.value, _RETRIEVAL_GT.value)
  if any(files):
    if not _GT_DIR.value:
      raise app.UsageError(
          "--results / --retrieval_results / --retrieval_results_gt_boxes need --gt_dir")
    try:
      metrics = scoring.score_file(_GT_DIR.value, _SPLIT.value, *files, show_progress=True)
    except scoring.ResultsError as e:
      print(f"error: {e}", file=sys.stderr)
      return 1
    out_dir = _OUTPUT_DIR.value or os.path.dirname(
        os.path.abspath(next(f for f in files if f)))
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
      json.dump(metrics, f, indent=1)
  else:
    if not (_CONFIG.value and _WORKDIR.value):
      raise app.UsageError("give --config and --workdir, or --gt_dir and --results")
    from match_rcnn_jax import backend
    backend.tune_host_allocator()  # glibc malloc settings for XLA:CPU, before a backend starts
    distributed.initialize()
    import jax

    from match_rcnn_jax.data import prepare
    config = _CONFIG.value
    prepare.resolve_data_dir(config, _WORKDIR.value)
    model, variables = _model_variables(config, _WORKDIR.value, _CHECKPOINT.value)
    main_process = jax.process_index() == 0
    metrics = evaluate.evaluate_model(config, model, variables, config.data.eval_split,
                                       os.path.join(_WORKDIR.value, "eval"),
                                       progress=progress_bar(config) if main_process else None,
                                       show_progress=main_process)
    if metrics is None:  # another process than 0: its results were scored there
      return 0
  print(tables.table(metrics))
  return 0


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
