"""Converts one DeepFashion2 split to TFRecords and the evaluation ground truth.

    python -m match_rcnn_jax.data.convert --data_dir D --output_dir O [--split validation]
        [--on_error fail|skip] [--examples_per_shard 1024] [--workers N]

`D` is the extracted split folder (holding `image/` and `annos/`) or its parent (holding
`<split>/image`, `<split>/annos`). Writes, replacing any previous conversion of the same split:

    O/tfrecords/<split>/      TFDS dataset directory (TFRecord shards + metadata)
    O/<split>_coco.json       COCO ground truth (official conversion + subset attributes)
    O/<split>_query.json      retrieval queries (user items)
    O/<split>_gallery.json    retrieval gallery (every shop item, style 0 included)
    O/<split>_report.json     counts, and every skipped file or item and warning with its reason

With `--on_error fail` (default) the first invalid file stops the run (exit code 1) before
anything is written; with `skip` invalid items / files are left out and listed in the report.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import multiprocessing
import os
import sys

from tqdm import tqdm

from match_rcnn_jax.data import coco, parsing, schema, tfrecords


class ConversionError(Exception):
  """Invalid input under --on_error fail."""


def _atomic_write(path: str, write) -> None:
  """What `write(f)` writes, in `path`, by a temporary file moved in."""
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    write(f)
  os.replace(tmp, path)


def _atomic_json(path: str, obj) -> None:
  _atomic_write(path, lambda f: json.dump(obj, f))


def resolve_split_dir(data_dir: str, split: str) -> str:
  for cand in (data_dir, os.path.join(data_dir, split)):
    if os.path.isdir(os.path.join(cand, "annos")):
      return cand
  raise ConversionError(f"{data_dir}: no annos/ folder here nor in {split}/ (expected the "
                        "DeepFashion2 layout <split>/image/NNNNNN.jpg, <split>/annos/NNNNNN.json)")


def count_pairs(records: list[parsing.ImageRecord]) -> dict:
  """Image pairs (user, shop image of a pair_id sharing a style > 0) and item pairs."""
  groups: dict[int, list[parsing.ImageRecord]] = {}
  for r in records:
    groups.setdefault(r.pair_id, []).append(r)
  image_pairs = item_pairs = 0
  for recs in groups.values():
    users = [r for r in recs if r.source == schema.Source.USER]
    shops = [r for r in recs if r.source == schema.Source.SHOP]
    for u in users:
      for s in shops:
        n = sum(1 for a in u.items for b in s.items if a.style > 0 and a.style == b.style)
        item_pairs += n
        image_pairs += n > 0
  return {"pair_ids": len(groups), "image_pairs": image_pairs, "item_pairs": item_pairs}


def parse_split(split_dir: str, on_error: str, show_progress: bool = True, pool=None):
  """Parses every annotation of a split (by the workers of `pool`, a `multiprocessing` pool,
  if given; the results are taken in file order either way). Returns (records, report
  entries)."""
  anno_files = sorted(glob.glob(os.path.join(split_dir, "annos", "*.json")))
  if not anno_files:
    raise ConversionError(f"{split_dir}/annos: no .json annotation file")
  records, skipped_files, skipped_items, warnings = [], [], [], []
  parsed = pool.imap(parsing.parse_example, anno_files, chunksize=16) if pool is not None \
      else map(parsing.parse_example, anno_files)
  for path, res in tqdm(zip(anno_files, parsed), total=len(anno_files), desc="parsing",
                        unit="img", disable=not show_progress):
    warnings += [str(w) for w in res.warnings]
    if res.errors and on_error == "fail":
      raise ConversionError("invalid annotation (use --on_error skip to leave such data out):\n"
                            + "\n".join(f"  {e}" for e in res.errors))
    file_errors = [e for e in res.errors if e.item == parsing.FILE_LEVEL]
    if res.record is None or file_errors:
      skipped_files.append({"file": path, "reasons": [str(e) for e in res.errors]})
      continue
    for key in res.skipped_items:
      skipped_items.append({"file": path, "item": key,
                            "reasons": [str(e) for e in res.errors if e.item == key]})
    if not res.record.items:
      reasons = [str(e) for e in res.errors]
      reasons.append(str(parsing.Problem(path, parsing.FILE_LEVEL, "items", "no valid item left")))
      skipped_files.append({"file": path, "reasons": reasons})
      continue
    records.append(res.record)
  return records, {"files_seen": len(anno_files), "skipped_files": skipped_files,
                   "skipped_items": skipped_items, "warnings": warnings}


def default_workers() -> int:
  """The cores this process may run on."""
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def convert(data_dir: str, output_dir: str, split: str = "train", on_error: str = "fail",
            examples_per_shard: int = 1024, show_progress: bool = True,
            workers: int = 1) -> dict:
  """Runs the conversion; returns the report. Raises ConversionError on invalid input.

  `workers` > 1 parses the annotations and encodes the examples in that many worker processes
  (started fresh, `spawn`: safe from a process that runs JAX or TensorFlow threads); the files
  written are the same whatever the count."""
  if on_error not in ("fail", "skip"):
    raise ValueError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
  if workers < 1:
    raise ValueError(f"workers must be >= 1, got {workers}")
  src = resolve_split_dir(data_dir, split)
  with (multiprocessing.get_context("spawn").Pool(workers) if workers > 1
        else contextlib.nullcontext()) as pool:
    records, report = parse_split(src, on_error, show_progress, pool)
    if not records:
      raise ConversionError(f"{src}: no valid image left to convert")
    os.makedirs(output_dir, exist_ok=True)
    with tqdm(total=len(records), desc="writing", unit="img",
              disable=not show_progress) as bar:
      shards = tfrecords.write_split(records, split, tfrecords.split_dir(output_dir, split),
                                     examples_per_shard, progress=bar.update, pool=pool)
  records = tfrecords.sort_records(records)
  query, gallery = coco.to_retrieval(records)
  _atomic_write(os.path.join(output_dir, f"{split}_coco.json"),
                lambda f: coco.write_coco(records, f))
  _atomic_json(os.path.join(output_dir, f"{split}_query.json"), query)
  _atomic_json(os.path.join(output_dir, f"{split}_gallery.json"), gallery)
  report = {
      "split": split,
      "data_dir": src,
      "on_error": on_error,
      "images": len(records),
      "items": sum(len(r.items) for r in records),
      "user_images": sum(r.source == schema.Source.USER for r in records),
      "shop_images": sum(r.source == schema.Source.SHOP for r in records),
      "query_items": len(query),
      "gallery_items": len(gallery),
      **count_pairs(records),
      "shards": shards,
      **report,
  }
  _atomic_json(os.path.join(output_dir, f"{split}_report.json"), report)
  return report


def summary(report: dict, output_dir: str) -> str:
  split = report["split"]
  lines = [
      f"DeepFashion2 '{split}' converted from {report['data_dir']}",
      f"  images      {report['images']} of {report['files_seen']} "
      f"({report['user_images']} user, {report['shop_images']} shop)",
      f"  items       {report['items']}  (queries {report['query_items']}, gallery "
      f"{report['gallery_items']})",
      f"  pair_ids    {report['pair_ids']}  image pairs {report['image_pairs']}  item pairs "
      f"{report['item_pairs']}",
      f"  shards      {len(report['shards'])}  -> {tfrecords.split_dir(output_dir, split)}",
      f"  skipped     {len(report['skipped_files'])} file(s), {len(report['skipped_items'])} "
      f"item(s); {len(report['warnings'])} warning(s)",
      f"  ground truth {output_dir}/{split}_coco.json, {split}_query.json, {split}_gallery.json",
      f"  report      {output_dir}/{split}_report.json",
  ]
  for entry in (report["skipped_files"] + report["skipped_items"])[:5]:
    lines.append(f"    skipped: {entry['reasons'][0]}")
  for w in report["warnings"][:5]:
    lines.append(f"    warning: {w}")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data_dir", required=True)
  parser.add_argument("--output_dir", required=True)
  parser.add_argument("--split", default="train")
  parser.add_argument("--on_error", choices=("fail", "skip"), default="fail")
  parser.add_argument("--examples_per_shard", type=int, default=1024)
  parser.add_argument("--workers", type=int, default=default_workers(),
                      help="processes that parse and encode (default: this machine's cores)")
  parser.add_argument("--quiet", action="store_true", help="no progress bars")
  args = parser.parse_args(argv)
  if args.workers < 1:
    parser.error("--workers must be >= 1")
  try:
    report = convert(args.data_dir, args.output_dir, args.split, args.on_error,
                     args.examples_per_shard, show_progress=not args.quiet,
                     workers=args.workers)
  except ConversionError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(summary(report, args.output_dir))
  return 0


if __name__ == "__main__":
  sys.exit(main())
