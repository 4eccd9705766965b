"""Consumer-to-shop retrieval: exact match-network ranking and the official top-k protocol.

Ranking. The similarity network's preference for "same product" over "different" is
d = w . (v1 - v2)^2 + b (`models.matching`: the difference of its two output logits, with
w <= 0), and the match probability is sigmoid(d). Expanding the square, d = w . v1^2 + w . v2^2
- 2 (w * v1) . v2 + b: scoring every query against every gallery item is one matrix product plus
two vectors, exactly (no approximation), the same function that scores the training batch's
pairs (`models.matching.pairwise_logits`). `rank` does this in jitted blocks of queries against
a padded gallery and keeps the top k of each query.

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

import dataclasses
import functools
from collections import Counter, defaultdict

import jax
import jax.numpy as jnp
import numpy as np

from match_rcnn_jax.data import schema
from match_rcnn_jax.evaluation.results import ResultsError
from match_rcnn_jax.evaluation.results import is_number as _number
from match_rcnn_jax.models import matching

TOP_K = (1, 5, 10, 15, 20)
NUM_RANKED = 20  # gallery entries per query in a result record
HIT_IOU = 0.5


# ---------------------------------------------------------------------------- ranking


def similarity_vector(similarity_params) -> tuple[np.ndarray, float]:
  """(w [D], b) of the match logit d = w . (v1 - v2)^2 + b from the Similarity module's
  parameters (`models.matching.effective_weights`: w = -softplus(weight) <= 0)."""
  w, b = matching.effective_weights(similarity_params)
  return np.asarray(w, np.float32), float(b)


def pairwise_logits(queries, gallery, w, b):
  """Match logits [Q, G] of every query [Q, D] against every gallery item [G, D]: the network's
  own `models.matching.pairwise_logits`."""
  return matching.pairwise_logits(queries, gallery, jnp.asarray(w, jnp.float32), b)


# Added to the logit of a gallery item of another category than the query's when ranking
# within the category first: below every same-category item, in their own order after them.
OTHER_CATEGORY = -1e4


@functools.partial(jax.jit, static_argnames=("k",))
def _block_top_k(queries, gallery, gallery_valid, w, b, query_classes, gallery_classes, k: int):
  logits = pairwise_logits(queries, gallery, w, b)
  logits += jnp.where(query_classes[:, None] == gallery_classes[None, :], 0.0, OTHER_CATEGORY)
  logits = jnp.where(gallery_valid[None, :], logits, -jnp.inf)
  return jax.lax.top_k(logits, k)


def rank(queries: np.ndarray, gallery: np.ndarray, w, b, k: int = NUM_RANKED,
         block: int | None = None, progress=None, block_mb: float = 256,
         query_classes=None, gallery_classes=None) -> tuple[np.ndarray, np.ndarray]:
  """Top-k gallery indices [Q, k] and match logits [Q, k] of each query (best first); with
  `query_classes` [Q] and `gallery_classes` [G], the gallery items of the query's category
  first (their logits unchanged, the others' lowered by 10^4).

  Queries go through one compiled function in blocks of `block` (the last one padded; by
  default 1024, fewer where a block's logits against the gallery would pass `block_mb` MB:
  memory stays linear in the query and gallery counts); the gallery is padded to a multiple
  of 1024 so nearby gallery sizes share a compilation. Entries past the gallery size (k > G)
  have index -1 and logit -inf.
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
  if block is None:
    block = max(1, min(1024, int(block_mb * 2**20) // (4 * g_pad)))
  block = max(1, min(block, max(n_q, 1)))
  idx_out = np.full((n_q, k), -1, np.int64)
  val_out = np.full((n_q, k), -np.inf, np.float32)
  gal_d, valid_d = jnp.asarray(gal), jnp.asarray(valid)
  w = jnp.asarray(w, jnp.float32)
  by_class = query_classes is not None and gallery_classes is not None
  q_cls = np.zeros(n_q, np.int32) if not by_class else np.asarray(query_classes, np.int32)
  g_cls = np.zeros(g_pad, np.int32)
  if by_class:
    g_cls[:n_g] = np.asarray(gallery_classes, np.int32)
  g_cls = jnp.asarray(g_cls)
  for start in range(0, n_q, block):
    chunk = queries[start:start + block]
    cls = q_cls[start:start + block]
    n = len(chunk)
    if n < block:
      chunk = np.concatenate([chunk, np.zeros((block - n, dim), np.float32)])
      cls = np.concatenate([cls, np.zeros(block - n, np.int32)])
    vals, idx = jax.device_get(_block_top_k(chunk, gal_d, valid_d, w, b, cls, g_cls, kk))
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
    validate_record(r, i, image_ids, path)


def validate_record(r, i: int, image_ids: set, path: str) -> None:
  """Raises RetrievalResultsError naming record `i` of `path` where it is malformed."""
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


@dataclasses.dataclass
class QueryResult:
  """One ground-truth query item with style > 0: the detection that represents it (None: a
  miss) and, per ranked gallery entry, whether it is one of the item's targets."""

  item: dict  # the query ground truth record
  record: dict | None
  hits: list  # [NUM_RANKED] bool (empty when record is None)

  @property
  def first_hit(self) -> int | None:
    return next((t for t, h in enumerate(self.hits) if h), None)


def query_results(query_gt: list[dict], gallery_gt: list[dict], records) -> list[QueryResult]:
  """Every ground-truth query item with style > 0 judged by the protocol (module docstring).

  `records` may be any iterable (a file read record by record): each detection is assigned to
  its image's item as it comes and only the best one of each item is kept, so memory grows
  with the ground truth, not with the number of records."""
  gt_by_image = defaultdict(list)
  for q in query_gt:
    gt_by_image[q["query_image_id"]].append(q)
  boxes_by_image = {image_id: np.asarray([q["bbox"] for q in items], np.float64)
                    for image_id, items in gt_by_image.items()}
  best = {}  # (image id, item index) -> its best detection so far
  for d in records:
    items = gt_by_image.get(d["query_image_id"])
    if not items:
      continue
    # argmax IoU over the image's items, no IoU floor; ties (and all zeros) -> the first item
    j = int(np.argmax(iou_matrix([d["query_bbox"]], boxes_by_image[d["query_image_id"]])[0]))
    if items[j]["style"] <= 0 or d["query_cls"] != items[j]["cls"]:
      continue
    key = (d["query_image_id"], j)
    if key not in best or d["query_score"] > best[key]["query_score"]:  # first of equal scores
      best[key] = d
  targets = target_boxes(gallery_gt)
  out = []
  for image_id, items in gt_by_image.items():
    for j, item in enumerate(items):
      if item["style"] <= 0:
        continue
      d = best.get((image_id, j))
      if d is None:  # no detection of its image assigned to it with its category: a miss
        out.append(QueryResult(item, None, []))
      else:
        out.append(QueryResult(item, d, _hits(d, targets.get(
            (item["pair_id"], item["style"]), {}))))
  return out


def target_boxes(gallery_gt: list[dict]) -> dict:
  """{(pair_id, style): {gallery image id: [boxes]}}: where each product's targets are."""
  targets = defaultdict(lambda: defaultdict(list))
  for g in gallery_gt:
    targets[g["pair_id"], g["style"]][g["gallery_image_id"]].append(g["bbox"])
  return targets


def top_k(results: list[QueryResult]) -> dict:
  """{'top1', ..., 'top20'}: the share of `results` with a target in the first k entries."""
  hits = np.zeros(len(TOP_K), np.int64)
  for r in results:
    if r.first_hit is not None:
      hits += np.asarray([r.first_hit < k for k in TOP_K])
  return {f"top{k}": (float(h) / len(results) if results else 0.0) for k, h in zip(TOP_K, hits)}


def score(query_gt: list[dict], gallery_gt: list[dict], records: list[dict]) -> dict:
  """{'top1', 'top5', 'top10', 'top15', 'top20'} of `records` (see the module docstring)."""
  return top_k(query_results(query_gt, gallery_gt, records))


SUBSETS: dict[str, dict[int, str]] = {
    attr: {int(v): v.name.lower() for v in values} for attr, values in schema.ATTRIBUTES.items()}


def score_subsets(results: list[QueryResult], attributes) -> dict:
  """{attribute: {value name: top-k dict or None}}: top-k over the query items with that value
  of the attribute (the paper's retrieval table by scale, occlusion, zoom-in and viewpoint of
  the query item; the gallery stays whole). `attributes(item)` gives a query item's
  {attribute: value} ({} when unknown); a subset without query items is None."""
  out = {}
  attrs = [attributes(r.item) for r in results]
  for attr, names in SUBSETS.items():
    out[attr] = {}
    for value, name in names.items():
      members = [r for r, a in zip(results, attrs) if a.get(attr) == value]
      out[attr][name] = top_k(members) if members else None
  return out


def first_entry(record: dict) -> tuple:
  """A retrieval record's first gallery entry: (shop image id, box rounded to 0.01)."""
  return (record["gallery_image_id"][0],
          tuple(round(float(v), 2) for v in record["gallery_bbox"][0]))


def hub_share(records) -> float:
  """The share of `records` whose first gallery entry is the most frequent first entry (an
  entry = shop image id + box): near 1 / gallery size for a ranking that depends on its query,
  near 1 when one "hub" item tops every ranking."""
  return hub_share_of(Counter(first_entry(r) for r in records))


def hub_share_of(firsts: Counter) -> float:
  """`hub_share` from the count of each first entry (`first_entry`) over the records."""
  total = sum(firsts.values())
  return firsts.most_common(1)[0][1] / total if total else 0.0


def roc_auc(scores, labels) -> float:
  """Area under the ROC curve of `scores` for binary `labels` (ties count one half); NaN
  without both classes."""
  scores = np.asarray(scores, np.float64)
  labels = np.asarray(labels, bool)
  n_pos, n_neg = int(labels.sum()), int((~labels).sum())
  if not n_pos or not n_neg:
    return float("nan")
  _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
  ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]  # 1-based, ties averaged
  return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def pair_auc_same_category(query_items: list[dict], query_emb, gallery_items: list[dict],
                           gallery_emb, w, b) -> float:
  """ROC AUC of the match logit over every (query item with style > 0, gallery item of the same
  category) pair: positives share pair_id and style, negatives are other products of the
  category, the pairs that only colour and pattern tell apart. Items: {'category_id',
  'pair_id', 'style'}, row-aligned with the embeddings."""
  q = [i for i, it in enumerate(query_items) if it["style"] > 0]
  if not q or not gallery_items:
    return float("nan")
  logits = np.asarray(pairwise_logits(np.asarray(query_emb)[q], gallery_emb, w, b))
  cat = lambda items, idx: np.asarray([items[i]["category_id"] for i in idx])  # noqa: E731
  key = lambda items, idx: np.asarray([(items[i]["pair_id"], items[i]["style"])  # noqa: E731
                                       for i in idx])
  g = range(len(gallery_items))
  same_cat = cat(query_items, q)[:, None] == cat(gallery_items, g)[None, :]
  same = (key(query_items, q)[:, None, :] == key(gallery_items, g)[None, :, :]).all(-1)
  return roc_auc(logits[same_cat], same[same_cat])


def _hits(record: dict, target_images: dict) -> list[bool]:
  """Per retrieved entry: a target (in a target image, IoU >= 0.5 with a target box)."""
  out = []
  for gid, box in zip(record["gallery_image_id"][:NUM_RANKED],
                      record["gallery_bbox"][:NUM_RANKED]):
    boxes = target_images.get(gid)
    out.append(bool(boxes) and bool(iou_matrix([box], boxes).max() >= HIT_IOU))
  return out


def make_records(queries: list[dict], gallery: list[dict], query_emb: np.ndarray,
                 gallery_emb: np.ndarray, w, b, progress=None,
                 within_category: bool = False) -> list[dict]:
  """Retrieval result records: for every query detection, its NUM_RANKED best gallery
  detections by match logit.

  queries / gallery: detections {'image_id', 'bbox' [x1, y1, x2, y2], 'category_id',
  'score'}; the embeddings are row-aligned with them. A gallery of fewer than NUM_RANKED
  items is padded by repeating its last ranked entry (the official format needs 20; a repeat
  can never turn a miss into a hit). Empty when either side is empty. `within_category`: the
  gallery items of the query's category (its `category_id`) ranked first (`rank`).
  """
  return list(iter_records(queries, gallery, query_emb, gallery_emb, w, b, progress,
                           within_category))


def iter_records(queries: list[dict], gallery: list[dict], query_emb: np.ndarray,
                 gallery_emb: np.ndarray, w, b, progress=None, within_category: bool = False):
  """`make_records`, one record at a time (the ranking is done first, then each record is
  made as it is taken: a million queries' records need not be held at once)."""
  if not queries or not gallery:
    return
  classes = {}
  if within_category:
    classes = {"query_classes": [q["category_id"] for q in queries],
               "gallery_classes": [g["category_id"] for g in gallery]}
  idx, _ = rank(query_emb, gallery_emb, w, b, NUM_RANKED, progress=progress, **classes)
  for q, row in zip(queries, idx):
    row = [int(i) for i in row if i >= 0]
    row += [row[-1]] * (NUM_RANKED - len(row))
    yield {"query_image_id": int(q["image_id"]),
           "query_bbox": [float(v) for v in q["bbox"]],
           "query_cls": int(q["category_id"]), "query_score": float(q["score"]),
           "gallery_image_id": [int(gallery[i]["image_id"]) for i in row],
           "gallery_bbox": [[float(v) for v in gallery[i]["bbox"]] for i in row]}
