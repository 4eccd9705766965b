"""The predictor's CLI: a trained model's detections (category, score, box, mask, landmarks)
on images.

    python -m match_rcnn_jax.predict --workdir W --images a.jpg b.jpg --output_dir O
        [--score_threshold 0.5]

`W` is a training workdir (its `export/`: the variables and the config that rebuilds the model).
Writes, per image, `O/<stem>.json`, a list of detections:
    {"category_id", "category_name", "score", "bbox": [x, y, w, h],
     "segmentation": {"size", "counts"} (COCO RLE), "landmarks": [[x, y, score], ...]}
(the landmarks are those of the detected category, in its own order; pixels of the original
image), and `O/<stem>.png` with the boxes, category names and scores, masks and landmarks drawn.

The API is `match_rcnn_jax.inference` (`predictor.Predictor`, `visualize.draw`).
"""

from __future__ import annotations

import argparse
import json
import os

from match_rcnn_jax.inference import predictor as predictor_lib
from match_rcnn_jax.inference import visualize


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True, help="training workdir holding export/")
  parser.add_argument("--images", nargs="+", required=True)
  parser.add_argument("--output_dir", required=True)
  parser.add_argument("--score_threshold", type=float, default=0.5)
  args = parser.parse_args(argv)
  try:
    images = [predictor_lib.read_image(p) for p in args.images]
    predictor = predictor_lib.Predictor.from_workdir(args.workdir,
                                                     score_threshold=args.score_threshold)
  except (ValueError, FileNotFoundError) as e:
    parser.exit(1, f"error: {e}\n")
  os.makedirs(args.output_dir, exist_ok=True)
  for path, image, dets in zip(args.images, images, predictor(images)):
    stem = os.path.splitext(os.path.basename(path))[0]
    with open(os.path.join(args.output_dir, stem + ".json"), "w") as f:
      json.dump([predictor_lib.public(d) for d in dets], f)
    visualize.draw(image, dets).save(os.path.join(args.output_dir, stem + ".png"))
    names = ", ".join(f"{d['category_name']} {d['score']:.2f}" for d in dets) or "nothing"
    print(f"{path}: {names}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
