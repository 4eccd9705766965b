"""No-model reference rankers for retrieval with ground-truth boxes.

A retrieval top-k says what a network adds only beside what a ranker without a model reaches on
the same queries, gallery and hit rule (the official protocol of `retrieval`). Three are
computed on a split's ground-truth items:

- `category_chance`: the query's category first, in random order, then the other garments in
  random order; its expected top-k is exact: with n gallery garments of the category, m of them
  hits, 1 - C(n - m, k) / C(n, k) for k <= n (past n, the rest of the gallery in the same way).
- `colour_histogram`: the gallery by the L1 distance of the box's colour histogram (`histogram`:
  chromaticity x intensity, weighted towards the box's centre) to the query's.
- `colour_histogram_category`: the same inside the query's category first, then the rest.

`retrieval_lift` is the MN's ground-truth-box top-k minus the best reference's at the same k.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from match_rcnn_jax.evaluation import retrieval
from match_rcnn_jax.inference.ranking import NUM_RANKED

RANKERS = ("category_chance", "colour_histogram", "colour_histogram_category")
LIFT_K = (1, 5)
CHROMA_BINS = 8  # per chromaticity coordinate (r / (r + g + b), g / (r + g + b))
INTENSITY_BINS = 4
GRID = 32  # the box is sampled on GRID x GRID points


def centre_weights(size: int, sigma: float = 0.25) -> np.ndarray:
  """[size, size] Gaussian weights over a box's sample grid, std `sigma` of the box side,
  summing to 1: where the garment is, away from the background at the box's corners."""
  t = (np.arange(size) + 0.5) / size - 0.5
  w = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2.0 * sigma ** 2))
  return (w / w.sum()).astype(np.float64)


def histogram(image: np.ndarray, box) -> np.ndarray:
  """The colour histogram [CHROMA_BINS^2 * INTENSITY_BINS] of `box` ([x1, y1, x2, y2], pixels)
  in `image` (uint8 [H, W, 3]): the box sampled on a GRID x GRID grid (nearest pixel), each
  sample's chromaticity (r, g over r + g + b) and intensity binned jointly, weighted by
  `centre_weights`; sums to 1."""
  h, w = image.shape[:2]
  x1, y1, x2, y2 = (float(v) for v in box)
  t = (np.arange(GRID) + 0.5) / GRID
  xs = np.clip(np.floor(x1 + t * max(x2 - x1, 1e-3)).astype(np.int64), 0, w - 1)
  ys = np.clip(np.floor(y1 + t * max(y2 - y1, 1e-3)).astype(np.int64), 0, h - 1)
  rgb = image[ys[:, None], xs[None, :]].astype(np.float64).reshape(-1, 3)
  total = rgb.sum(-1) + 1e-6
  chroma = np.minimum((rgb[:, :2] / total[:, None] * CHROMA_BINS).astype(np.int64),
                      CHROMA_BINS - 1)
  level = np.minimum((total / (3 * 256.0) * INTENSITY_BINS).astype(np.int64),
                     INTENSITY_BINS - 1)
  index = (chroma[:, 0] * CHROMA_BINS + chroma[:, 1]) * INTENSITY_BINS + level
  out = np.bincount(index, weights=centre_weights(GRID).reshape(-1),
                    minlength=CHROMA_BINS ** 2 * INTENSITY_BINS)
  return (out / out.sum()).astype(np.float32)


@jax.jit
def _l1_block(q, g):
  return jnp.sum(jnp.abs(q[:, None, :] - g[None, :, :]), -1)


def l1_distances(queries: np.ndarray, gallery: np.ndarray, block_mb: float = 256) -> np.ndarray:
  """[Q, G] L1 distances between histograms, in blocks of queries whose differences take at most
  `block_mb` MB (one compiled shape: the last block is padded)."""
  queries = np.asarray(queries, np.float32)
  gallery = np.asarray(gallery, np.float32)
  out = np.zeros((len(queries), len(gallery)), np.float32)
  if not len(queries) or not len(gallery):
    return out
  block = int(max(1, min(len(queries), block_mb * 2**20 // (4 * gallery.size))))
  for start in range(0, len(queries), block):
    chunk = queries[start:start + block]
    n = len(chunk)
    if n < block:
      chunk = np.concatenate([chunk, np.zeros((block - n, chunk.shape[1]), np.float32)])
    out[start:start + n] = np.asarray(_l1_block(chunk, gallery))[:n]
  return out


def hit_lists(query_gt: list[dict], gallery_gt: list[dict]) -> list[np.ndarray]:
  """Per query item, the gallery indices that count as hits under the protocol's rule (an entry
  in a target image whose box has IoU >= 0.5 with a target box of that image); empty for
  style 0."""
  targets = retrieval.target_boxes(gallery_gt)
  by_image = {}
  for j, g in enumerate(gallery_gt):
    by_image.setdefault(g["gallery_image_id"], []).append(j)
  out = []
  for q in query_gt:
    hits = []
    if q["style"] > 0:
      for image_id, boxes in targets.get((q["pair_id"], q["style"]), {}).items():
        rows = by_image[image_id]
        iou = retrieval.iou_matrix([gallery_gt[j]["bbox"] for j in rows], boxes)
        hits += [j for j, best in zip(rows, iou.max(1)) if best >= retrieval.HIT_IOU]
    out.append(np.asarray(sorted(hits), np.int64))
  return out


def _chance_hit(n: int, m: int, k: int) -> float:
  """P(a hit among the first k of n in random order, m of them hits)."""
  if k <= 0 or n <= 0 or m <= 0:
    return 0.0
  if k >= n or n - m < k:
    return 1.0
  return 1.0 - math.comb(n - m, k) / math.comb(n, k)


def category_chance(query_gt: list[dict], gallery_gt: list[dict],
                    gallery_classes) -> dict:
  """The exact expected {'top1', ..., 'top20'} of ranking the gallery by the query's category
  (in random order inside it, then the rest in random order), over the query items with
  style > 0 (the protocol's denominator)."""
  gallery_classes = np.asarray(gallery_classes)
  hits = hit_lists(query_gt, gallery_gt)
  rows = [i for i, q in enumerate(query_gt) if q["style"] > 0]
  per_class = {c: int(n) for c, n in zip(*np.unique(gallery_classes, return_counts=True))}
  out = {}
  for k in retrieval.TOP_K:
    total = 0.0
    for i in rows:
      n = per_class.get(query_gt[i]["cls"], 0)
      m = int((gallery_classes[hits[i]] == query_gt[i]["cls"]).sum())
      p_in = _chance_hit(n, m, k)
      rest = _chance_hit(len(gallery_gt) - n, len(hits[i]) - m, k - n)
      total += p_in + (1.0 - p_in) * rest
    out[f"top{k}"] = total / len(rows) if rows else 0.0
  return out


def ranked_records(query_gt: list[dict], gallery_gt: list[dict], order: np.ndarray) -> list:
  """Official retrieval records of ground-truth queries (box, category, score 1) whose gallery
  entries are `order` [Q, >= 20] (gallery indices, best first)."""
  out = []
  for q, row in zip(query_gt, order):
    row = [int(j) for j in row[:NUM_RANKED]]
    row += [row[-1]] * (NUM_RANKED - len(row))
    out.append({"query_image_id": q["query_image_id"], "query_bbox": list(q["bbox"]),
                "query_cls": q["cls"], "query_score": 1.0,
                "gallery_image_id": [gallery_gt[j]["gallery_image_id"] for j in row],
                "gallery_bbox": [list(gallery_gt[j]["bbox"]) for j in row]})
  return out


def histogram_order(distances: np.ndarray, query_classes=None,
                    gallery_classes=None) -> np.ndarray:
  """[Q, min(G, 20)] gallery indices by increasing distance (ties: lower index first); with
  classes, the query's category first."""
  d = np.asarray(distances, np.float64)
  if query_classes is not None:
    other = np.asarray(query_classes)[:, None] != np.asarray(gallery_classes)[None, :]
    d = d + other * (d.max() + 1.0 if d.size else 1.0)
  return np.argsort(d, axis=1, kind="stable")[:, :NUM_RANKED]


def reference_top_k(query_gt: list[dict], gallery_gt: list[dict], gallery_classes,
                    query_hist: np.ndarray, gallery_hist: np.ndarray) -> dict:
  """{ranker: {'top1', ..., 'top20'}} of the three rankers (module docstring) on the
  ground-truth items; the histograms are row-aligned with them."""
  if not query_gt or not gallery_gt:
    return {}
  out = {"category_chance": category_chance(query_gt, gallery_gt, gallery_classes)}
  dist = l1_distances(query_hist, gallery_hist)
  q_cls = [q["cls"] for q in query_gt]
  for name, order in (("colour_histogram", histogram_order(dist)),
                      ("colour_histogram_category",
                       histogram_order(dist, q_cls, gallery_classes))):
    records = ranked_records(query_gt, gallery_gt, order)
    out[name] = retrieval.top_k(retrieval.query_results(query_gt, gallery_gt, records))
  return {name: {k: round(v, 4) for k, v in m.items()} for name, m in out.items()}


def lift(model_top_k: dict, reference: dict) -> dict:
  """{'top1', 'top5'}: the model's top-k minus the best reference ranker's at that k."""
  return {f"top{k}": round(model_top_k[f"top{k}"] - max(r[f"top{k}"] for r in reference.values()),
                           4) for k in LIFT_K}


def _key(image_id, box) -> tuple:
  return (int(image_id), *(round(float(v), 2) for v in box))


def split_histograms(data_dir: str, split: str, boxes_by_image: dict, show_progress=False):
  """({(image id, box rounded to 0.01): histogram}, {(image id, box): category id}) of the
  given boxes (`boxes_by_image`: image id -> [x1, y1, x2, y2] boxes) and of every ground-truth
  object of the converted split's TFRecords, reading one image at a time."""
  import tensorflow as tf
  import tensorflow_datasets as tfds
  from tqdm import tqdm

  from match_rcnn_jax.data import tfrecords
  builder = tfrecords.load_builder(data_dir, split)
  ds = builder.as_dataset(split=split, shuffle_files=False,
                          decoders={"image": tfds.decode.SkipDecoding(),
                                    "objects": {"mask": tfds.decode.SkipDecoding()}})
  wanted = tf.constant(sorted(boxes_by_image) or [-1], tf.int64)
  ds = ds.filter(lambda ex: tf.reduce_any(tf.equal(tf.cast(ex["image_id"], tf.int64), wanted)))
  ds = ds.map(lambda ex: (ex["image_id"], tf.io.decode_image(ex["image"], channels=3,
                                                             expand_animations=False),
                          ex["objects"]["bbox"], ex["objects"]["category_id"]),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  hists, classes = {}, {}
  for image_id, image, obj_boxes, obj_classes in tqdm(
      tfds.as_numpy(ds), total=len(boxes_by_image), desc="colour histograms", unit="img",
      disable=not show_progress, leave=False):
    for box, cls in zip(obj_boxes, obj_classes):
      classes[_key(image_id, box)] = int(cls)
    for box in boxes_by_image.get(int(image_id), []):
      hists[_key(image_id, box)] = histogram(image, box)
  return hists, classes


def evaluate_split(data_dir: str, split: str, query_gt: list[dict], gallery_gt: list[dict],
                   show_progress: bool = False) -> dict:
  """`reference_top_k` of a converted split: its images read from the converter's TFRecords,
  the gallery items' categories from their objects."""
  boxes = {}
  for q in query_gt:
    boxes.setdefault(int(q["query_image_id"]), []).append(q["bbox"])
  for g in gallery_gt:
    boxes.setdefault(int(g["gallery_image_id"]), []).append(g["bbox"])
  hists, classes = split_histograms(data_dir, split, boxes, show_progress)
  missing = [k for k in (_key(g["gallery_image_id"], g["bbox"]) for g in gallery_gt)
             if k not in classes]
  if missing:
    raise ValueError(f"{data_dir}: split '{split}': gallery item (image id, box) {missing[0]} "
                     "has no object in the split's TFRecords (converted from other data?)")
  return reference_top_k(
      query_gt, gallery_gt,
      [classes[_key(g["gallery_image_id"], g["bbox"])] for g in gallery_gt],
      np.stack([hists[_key(q["query_image_id"], q["bbox"])] for q in query_gt]),
      np.stack([hists[_key(g["gallery_image_id"], g["bbox"])] for g in gallery_gt]))

