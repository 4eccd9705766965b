"""Consumer-to-shop retrieval: exact match-network ranking and the official top-k protocol.

Ranking. The similarity network's match logit is a linear function of (v1 - v2)^2; its
preference for "same product" over "different" is d = w . (v1 - v2)^2 + b with
w = W[:, 1] - W[:, 0] and b = b[1] - b[0], and the match probability is sigmoid(d). Expanding
the square, d = w . v1^2 + w . v2^2 - 2 (w * v1) . v2 + b: scoring every query against every
gallery item is one matrix product plus two vectors, exactly (no approximation). `rank` does
this in jitted blocks of queries against a padded gallery and keeps the top k of each query.

Protocol (the official `deepfashion2_retrieval_test.py`, REFERENCE.md section 5.3), implemented
by `score` on the official file formats:
  1. Queries are detected items in user images; each submitted record is one detection with
     its 20 ranked gallery entries (shop image id + box).
  2. For each user image of the ground truth, every detection of that image is assigned to the
     ground-truth item it overlaps most (argmax IoU over all the image's items, style 0
     included, with no IoU floor: a detection overlapping nothing goes to the first item).
  3. Each ground-truth item with style > 0 is represented by its assigned detection of the
     same category with the highest score; with none (no detection, or only other categories)
     it is a miss.
  4. Targets are the ground-truth gallery items with the same pair_id and style; a hit at k
     when one of the first k entries is in a target image and its box has IoU >= 0.5 with a
     target box of that image. (An item without any target can never be hit.)
  5. top-k = hits / number of ground-truth query items with style > 0, k in 1, 5, 10, 15, 20.
"""

from __future__ import annotations

import functools
from collections import defaultdict

import jax
import jax.numpy as jnp
import numpy as np

from match_rcnn_jax.data import schema
from match_rcnn_jax.evaluation.results import ResultsError
from match_rcnn_jax.evaluation.results import is_number as _number

TOP_K = (1, 5, 10, 15, 20)
NUM_RANKED = 20  # gallery entries per query in a result record
HIT_IOU = 0.5


# ---------------------------------------------------------------------------- ranking


def similarity_vector(similarity_params) -> tuple[np.ndarray, float]:
  """(w [D], b) of the match logit d = w . (v1 - v2)^2 + b from the Similarity module's
  parameters ({'fc': {'kernel': [D, 2], 'bias': [2]}})."""
  kernel = np.asarray(similarity_params["fc"]["kernel"], np.float32)
  bias = np.asarray(similarity_params["fc"]["bias"], np.float32)
  return kernel[:, 1] - kernel[:, 0], float(bias[1] - bias[0])


def pairwise_logits(queries, gallery, w, b):
  """Match logits [Q, G] of every query [Q, D] against every gallery item [G, D]."""
  q = jnp.asarray(queries, jnp.float32)
  g = jnp.asarray(gallery, jnp.float32)
  w = jnp.asarray(w, jnp.float32)
  hi = jax.lax.Precision.HIGHEST
  qq = jnp.dot(q * q, w, precision=hi)
  gg = jnp.dot(g * g, w, precision=hi)
  cross = jnp.dot(q * w, g.T, precision=hi)
  return qq[:, None] + gg[None, :] - 2.0 * cross + b


@functools.partial(jax.jit, static_argnames=("k",))
def _block_top_k(queries, gallery, gallery_valid, w, b, k: int):
  logits = pairwise_logits(queries, gallery, w, b)
  logits = jnp.where(gallery_valid[None, :], logits, -jnp.inf)
  return jax.lax.top_k(logits, k)


def rank(queries: np.ndarray, gallery: np.ndarray, w, b, k: int = NUM_RANKED,
         block: int = 1024, progress=None) -> tuple[np.ndarray, np.ndarray]:
  """Top-k gallery indices [Q, k] and match logits [Q, k] of each query (best first).

  Queries go through one compiled function in blocks of `block` (the last one padded); the
  gallery is padded to a multiple of 1024 so nearby gallery sizes share a compilation. Entries
  past the gallery size (k > G) have index -1 and logit -inf.
  """
  queries = np.asarray(queries, np.float32)
  gallery = np.asarray(gallery, np.float32)
  n_q, n_g = len(queries), len(gallery)
  dim = gallery.shape[1] if gallery.ndim == 2 else queries.shape[1]
  g_pad = max(1024, -(-n_g // 1024) * 1024)
  gal = np.zeros((g_pad, dim), np.float32)
  gal[:n_g] = gallery
  valid = np.arange(g_pad) < n_g
  kk = min(k, g_pad)
  block = max(1, min(block, max(n_q, 1)))
  idx_out = np.full((n_q, k), -1, np.int64)
  val_out = np.full((n_q, k), -np.inf, np.float32)
  gal_d, valid_d = jnp.asarray(gal), jnp.asarray(valid)
  w = jnp.asarray(w, jnp.float32)
  for start in range(0, n_q, block):
    chunk = queries[start:start + block]
    n = len(chunk)
    if n < block:
      chunk = np.concatenate([chunk, np.zeros((block - n, dim), np.float32)])
    vals, idx = jax.device_get(_block_top_k(chunk, gal_d, valid_d, w, b, kk))
    vals, idx = vals[:n], idx[:n]
    found = min(kk, n_g)
    idx_out[start:start + n, :found] = idx[:, :found]
    val_out[start:start + n, :found] = vals[:, :found]
    if progress is not None:
      progress(n)
  return idx_out, val_out


def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


# ---------------------------------------------------------------------------- protocol


class RetrievalResultsError(ResultsError):
  """A malformed retrieval result file."""


def _box(v) -> bool:
  return isinstance(v, list) and len(v) == 4 and all(_number(x) for x in v)


def validate(records, image_ids: set, path: str) -> None:
  """Raises RetrievalResultsError naming the first malformed record."""
  if not isinstance(records, list):
    raise RetrievalResultsError(
        f"{path}: expected a list of retrieval records, got {type(records).__name__}")
  for i, r in enumerate(records):
    where = f"{path}: record {i}"
    if not isinstance(r, dict):
      raise RetrievalResultsError(f"{where}: expected an object")
    for key in ("query_image_id", "query_bbox", "query_cls", "query_score", "gallery_image_id",
                "gallery_bbox"):
      if key not in r:
        raise RetrievalResultsError(f"{where}: missing key '{key}'")
    if not isinstance(r["query_image_id"], int) or r["query_image_id"] not in image_ids:
      raise RetrievalResultsError(
          f"{where}: query_image_id {r['query_image_id']!r} is not an image of the split")
    if not _box(r["query_bbox"]):
      raise RetrievalResultsError(f"{where}: query_bbox must be 4 numbers [x1, y1, x2, y2]")
    if r["query_cls"] not in schema.CATEGORY_BY_ID:
      raise RetrievalResultsError(f"{where}: query_cls {r['query_cls']!r} is not in 1..13")
    if not _number(r["query_score"]):
      raise RetrievalResultsError(f"{where}: query_score {r['query_score']!r} is not a number")
    ids, boxes = r["gallery_image_id"], r["gallery_bbox"]
    if not isinstance(ids, list) or len(ids) != NUM_RANKED:
      raise RetrievalResultsError(f"{where}: gallery_image_id must list {NUM_RANKED} image ids")
    if not isinstance(boxes, list) or len(boxes) != NUM_RANKED:
      raise RetrievalResultsError(f"{where}: gallery_bbox must list {NUM_RANKED} boxes")
    for t, (gid, box) in enumerate(zip(ids, boxes)):
      if not isinstance(gid, int) or gid not in image_ids:
        raise RetrievalResultsError(
            f"{where}: gallery_image_id[{t}] {gid!r} is not an image of the split")
      if not _box(box):
        raise RetrievalResultsError(f"{where}: gallery_bbox[{t}] must be 4 numbers")


def iou_matrix(a, b) -> np.ndarray:
  """IoU [N, M] of boxes [N, 4] and [M, 4] in (x1, y1, x2, y2)."""
  a = np.asarray(a, np.float64).reshape(-1, 4)
  b = np.asarray(b, np.float64).reshape(-1, 4)
  area = lambda x: np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None)  # noqa
  lt = np.maximum(a[:, None, :2], b[None, :, :2])
  rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
  inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
  union = area(a)[:, None] + area(b)[None, :] - inter
  return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def score(query_gt: list[dict], gallery_gt: list[dict], records: list[dict]) -> dict:
  """{'top1', 'top5', 'top10', 'top15', 'top20'} of `records` (see the module docstring)."""
  gt_by_image = defaultdict(list)
  for q in query_gt:
    gt_by_image[q["query_image_id"]].append(q)
  dets_by_image = defaultdict(list)
  for r in records:
    dets_by_image[r["query_image_id"]].append(r)
  targets = defaultdict(lambda: defaultdict(list))  # (pair_id, style) -> image id -> boxes
  for g in gallery_gt:
    targets[g["pair_id"], g["style"]][g["gallery_image_id"]].append(g["bbox"])
  total = sum(1 for q in query_gt if q["style"] > 0)
  hits = np.zeros(len(TOP_K), np.int64)
  for image_id, items in gt_by_image.items():
    dets = dets_by_image.get(image_id)
    if not dets:
      continue  # its items stay in the denominator: misses
    ious = iou_matrix([d["query_bbox"] for d in dets], [q["bbox"] for q in items])
    assigned = np.argmax(ious, axis=1)  # no IoU floor; ties (and all-zero rows) -> first item
    for j, item in enumerate(items):
      if item["style"] <= 0:
        continue
      cands = [d for d, a in zip(dets, assigned) if a == j and d["query_cls"] == item["cls"]]
      if not cands:
        continue
      best = max(cands, key=lambda d: d["query_score"])  # first of equal scores
      first_hit = _first_hit(best, targets.get((item["pair_id"], item["style"]), {}))
      if first_hit is not None:
        hits += np.asarray([first_hit < k for k in TOP_K])
  return {f"top{k}": (float(h) / total if total else 0.0) for k, h in zip(TOP_K, hits)}


def _first_hit(record: dict, target_images: dict) -> int | None:
  """Rank of the first retrieved entry that is a target (IoU >= 0.5), or None."""
  for t, (gid, box) in enumerate(zip(record["gallery_image_id"][:NUM_RANKED],
                                     record["gallery_bbox"][:NUM_RANKED])):
    boxes = target_images.get(gid)
    if boxes and iou_matrix([box], boxes).max() >= HIT_IOU:
      return t
  return None


def make_records(queries: list[dict], gallery: list[dict], query_emb: np.ndarray,
                 gallery_emb: np.ndarray, w, b, progress=None) -> list[dict]:
  """Retrieval result records: for every query detection, its NUM_RANKED best gallery
  detections by match logit.

  queries / gallery: detections {'image_id', 'bbox' [x1, y1, x2, y2], 'category_id',
  'score'}; the embeddings are row-aligned with them. A gallery of fewer than NUM_RANKED
  items is padded by repeating its last ranked entry (the official format needs 20; a repeat
  can never turn a miss into a hit). Empty when either side is empty.
  """
  if not queries or not gallery:
    return []
  idx, _ = rank(query_emb, gallery_emb, w, b, NUM_RANKED, progress=progress)
  out = []
  for q, row in zip(queries, idx):
    row = [int(i) for i in row if i >= 0]
    row += [row[-1]] * (NUM_RANKED - len(row))
    out.append({"query_image_id": int(q["image_id"]),
                "query_bbox": [float(v) for v in q["bbox"]],
                "query_cls": int(q["category_id"]), "query_score": float(q["score"]),
                "gallery_image_id": [int(gallery[i]["image_id"]) for i in row],
                "gallery_bbox": [[float(v) for v in gallery[i]["bbox"]] for i in row]})
  return out
