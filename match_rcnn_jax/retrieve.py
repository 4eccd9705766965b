"""Consumer-to-shop retrieval for users: index a folder of shop images, find each garment of the
query images in it.

    python -m match_rcnn_jax.retrieve --workdir W --gallery_dir SHOP/ --queries q1.jpg q2.jpg
        --output_dir O [--top_k 5] [--score_threshold 0.5]

Every garment detected in the gallery images (score >= threshold) is indexed by its match
embedding; every garment detected in a query image is ranked against the whole index by the
match network's exact probability (one matrix product, see `evaluation.retrieval`). Writes per
query image `O/<stem>.json`:
    [{"bbox": [x, y, w, h], "category_name", "score",
      "matches": [{"image", "bbox", "category_name", "match_probability"}, ...]}, ...]
and `O/<stem>.png`: one row per query garment, its crop then the top-k gallery crops, each
captioned with the match probability.
"""

from __future__ import annotations

import argparse
import json
import os

from match_rcnn_jax.inference import index as index_lib
from match_rcnn_jax.inference import predictor as predictor_lib
from match_rcnn_jax.inference import visualize

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def gallery_paths(folder: str) -> list[str]:
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"{folder}: not a folder of gallery images")
  paths = sorted(os.path.join(folder, f) for f in os.listdir(folder)
                 if f.lower().endswith(IMAGE_EXTENSIONS))
  if not paths:
    raise FileNotFoundError(f"{folder}: no {'/'.join(IMAGE_EXTENSIONS)} images")
  return paths


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True, help="training workdir holding export/")
  parser.add_argument("--gallery_dir", required=True, help="folder of shop images to index")
  parser.add_argument("--queries", nargs="+", required=True, help="query (consumer) images")
  parser.add_argument("--output_dir", required=True)
  parser.add_argument("--top_k", type=int, default=5)
  parser.add_argument("--score_threshold", type=float, default=0.5,
                      help="detections below this score are neither indexed nor queried")
  args = parser.parse_args(argv)
  if args.top_k < 1:
    parser.error("--top_k must be >= 1")
  try:
    paths = gallery_paths(args.gallery_dir)
    queries = [predictor_lib.read_image(p) for p in args.queries]
    predictor = predictor_lib.Predictor.from_workdir(
        args.workdir, score_threshold=args.score_threshold)
  except (ValueError, FileNotFoundError) as e:
    parser.exit(1, f"error: {e}\n")
  index = index_lib.Index(predictor, paths)
  print(f"indexed {len(index.items)} garments in {len(paths)} gallery images")
  os.makedirs(args.output_dir, exist_ok=True)
  similarity = predictor.variables["params"]["similarity"]
  for path, image, dets in zip(args.queries, queries, predictor(queries)):
    results = index_lib.search(index, dets, similarity, args.top_k)
    stem = os.path.splitext(os.path.basename(path))[0]
    with open(os.path.join(args.output_dir, stem + ".json"), "w") as f:
      json.dump(results, f, indent=1)
    visualize.strip(image, results).save(os.path.join(args.output_dir, stem + ".png"))
    for r in results:
      best = r["matches"][0] if r["matches"] else None
      found = (f"{os.path.basename(best['image'])} p={best['match_probability']:.2f}"
               if best else "no match")
      print(f"{path}: {r['category_name']} {r['score']:.2f} -> {found}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
