"""Synthetic DeepFashion2 in the released layout: `D/image/NNNNNN.jpg` + `D/annos/NNNNNN.json`.

    python -m match_rcnn_jax.data.synthetic --output_dir D --num_images N [--seed S]
        [--image_size PX]

Garments are category-shaped polygons (a short-sleeve top has short sleeves, trousers two legs)
whose landmarks sit at fixed places of a per-category template, so local landmark k always means
the same spot on the garment, and mirrored landmark pairs follow the flip table of `schema`.
Images come in groups sharing a `pair_id` (stored consecutively, as in the real training set):
shop images show the group's products large on a plain background; user images show them
smaller on clutter, possibly cut by the border or overlapped, beside style-0 distractors (some
shop images show one too). Every product shown in a user image is shown in a shop image of its
group. All items of the same pair_id and style > 0 share a look (colours and pattern), so
retrieval is learnable. Attribute rules (synthetic, documented in the README): scale from box
area / image area (10% / 40%), occlusion from the share of labelled landmarks hidden by a later
garment (< 10% slight, < 40% medium), zoom-in from the share of the garment outside the image
(< 5% no, < 30% medium), viewpoint random (shop: no-wear or frontal; user: frontal or
side-back).
Landmarks outside the image are written as (0, 0, 0). Deterministic for a given seed.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
from PIL import Image, ImageDraw

from match_rcnn_jax.data import schema

# Right half of each category's outline in a unit garment frame (x in [0.5, 1], y down), from
# the top of the symmetry axis to the bottom; the left half is its mirror image.
_HALF_OUTLINES = {
    1: [(.5, .06), (.62, 0), (.78, .06), (1, .32), (.9, .42), (.78, .3), (.78, 1), (.5, 1)],
    2: [(.5, .06), (.6, 0), (.72, .05), (1, .9), (.9, .93), (.75, .35), (.75, 1), (.5, 1)],
    3: [(.5, .3), (.6, 0), (.78, .06), (1, .32), (.9, .42), (.78, .3), (.78, 1), (.53, 1)],
    4: [(.5, .3), (.6, 0), (.72, .05), (1, .9), (.9, .93), (.75, .35), (.75, 1), (.53, 1)],
    5: [(.5, .12), (.64, 0), (.74, 0), (.8, .25), (.82, 1), (.5, 1)],
    6: [(.5, .2), (.66, 0), (.7, 0), (.8, .3), (.82, 1), (.5, 1)],
    7: [(.5, 0), (.9, 0), (1, .9), (.6, 1), (.5, .45)],
    8: [(.5, 0), (.85, 0), (.95, 1), (.6, 1), (.5, .25)],
    9: [(.5, 0), (.78, 0), (1, 1), (.5, 1)],
    10: [(.5, .05), (.62, 0), (.76, .04), (1, .2), (.92, .28), (.76, .2), (.72, .45), (.95, 1),
         (.5, 1)],
    11: [(.5, .05), (.6, 0), (.72, .04), (1, .6), (.92, .63), (.74, .22), (.72, .45), (.95, 1),
         (.5, 1)],
    12: [(.5, .08), (.64, 0), (.74, 0), (.78, .2), (.72, .45), (.95, 1), (.5, 1)],
    13: [(.5, .15), (.66, 0), (.7, 0), (.76, .25), (.72, .45), (.95, 1), (.5, 1)],
}
# Garment height / width.
_ASPECT = {1: 1.0, 2: 1.0, 3: 1.05, 4: 1.05, 5: 1.3, 6: 1.35, 7: 0.8, 8: 1.9, 9: 0.9, 10: 1.6,
           11: 1.6, 12: 1.7, 13: 1.7}


def _outline(cat_id: int) -> np.ndarray:
  right = np.asarray(_HALF_OUTLINES[cat_id], np.float64)
  left = right[::-1].copy()
  left[:, 0] = 1.0 - left[:, 0]
  # Drop axis points duplicated by the mirror.
  left = left[[abs(p[0] - 0.5) > 1e-9 for p in left]]
  return np.concatenate([right, left])


def _point_on_polyline(poly: np.ndarray, t: float) -> np.ndarray:
  seg = np.diff(poly, axis=0)
  lengths = np.hypot(seg[:, 0], seg[:, 1])
  cum = np.concatenate([[0.0], np.cumsum(lengths)])
  s = t * cum[-1]
  i = min(int(np.searchsorted(cum, s, side="right")) - 1, len(seg) - 1)
  frac = (s - cum[i]) / max(lengths[i], 1e-12)
  return poly[i] + frac * seg[i]


def landmark_template(cat_id: int) -> np.ndarray:
  """[n, 2] landmark positions in the unit garment frame, mirror-consistent with FLIP_PAIRS."""
  cat = schema.CATEGORY_BY_ID[cat_id]
  pairs = schema.FLIP_PAIRS[cat_id]
  paired = {a for p in pairs for a in p}
  selfs = [k for k in range(1, cat.num_landmarks + 1) if k not in paired]
  half = np.asarray(_HALF_OUTLINES[cat_id], np.float64)
  pts = np.zeros((cat.num_landmarks, 2))
  for j, (a, b) in enumerate(pairs):
    p = _point_on_polyline(half, (j + 0.5) / len(pairs))
    pts[b - 1] = p
    pts[a - 1] = (1.0 - p[0], p[1])
  for j, k in enumerate(selfs):
    pts[k - 1] = (0.5, 0.05 + 0.9 * (j + 0.5) / len(selfs))
  return pts


def _clip_polygon(poly: np.ndarray, w: float, h: float) -> np.ndarray:
  """Sutherland-Hodgman clip of a polygon [n, 2] to the rectangle [0, w] x [0, h]."""
  def clip(points, inside, intersect):
    out = []
    for i in range(len(points)):
      cur, prev = points[i], points[i - 1]
      if inside(cur):
        if not inside(prev):
          out.append(intersect(prev, cur))
        out.append(cur)
      elif inside(prev):
        out.append(intersect(prev, cur))
    return out

  def at_x(x0):
    return lambda p, q: (x0, p[1] + (q[1] - p[1]) * (x0 - p[0]) / (q[0] - p[0]))

  def at_y(y0):
    return lambda p, q: (p[0] + (q[0] - p[0]) * (y0 - p[1]) / (q[1] - p[1]), y0)

  pts = [tuple(p) for p in poly]
  for inside, inter in ((lambda p: p[0] >= 0, at_x(0.0)), (lambda p: p[0] <= w, at_x(w)),
                        (lambda p: p[1] >= 0, at_y(0.0)), (lambda p: p[1] <= h, at_y(h))):
    if not pts:
      break
    pts = clip(pts, inside, inter)
  return np.asarray(pts, np.float64).reshape(-1, 2)


def _area(poly: np.ndarray) -> float:
  if len(poly) < 3:
    return 0.0
  x, y = poly[:, 0], poly[:, 1]
  return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _inside(points: np.ndarray, poly: np.ndarray) -> np.ndarray:
  """Even-odd point-in-polygon test for points [m, 2]."""
  x, y = points[:, 0:1], points[:, 1:2]
  x1, y1 = poly[:, 0], poly[:, 1]
  x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
  crosses = ((y1 > y) != (y2 > y)) & (x < (x2 - x1) * (y - y1) / (y2 - y1 + 1e-12) + x1)
  return crosses.sum(axis=1) % 2 == 1


def _look(rng: np.random.Generator) -> dict:
  return {"c1": tuple(int(v) for v in rng.integers(20, 236, 3)),
          "c2": tuple(int(v) for v in rng.integers(20, 236, 3)),
          "pattern": int(rng.integers(0, 4)), "period": int(rng.integers(6, 16))}


def _texture(look: dict, w: int, h: int, rng: np.random.Generator, jitter: float) -> np.ndarray:
  yy, xx = np.mgrid[0:h, 0:w]
  p = look["period"]
  kind = look["pattern"]
  if kind == 0:
    sel = np.zeros((h, w), bool)
  elif kind == 1:
    sel = (yy // p) % 2 == 0
  elif kind == 2:
    sel = ((xx + yy) // p) % 2 == 0
  else:
    sel = ((xx // p) + (yy // p)) % 2 == 0
  c1 = np.asarray(look["c1"], np.float32) * (1 + jitter * rng.uniform(-1, 1))
  c2 = np.asarray(look["c2"], np.float32) * (1 + jitter * rng.uniform(-1, 1))
  return np.where(sel[..., None], c2, c1)


def _background(kind: str, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
  if kind == "shop":
    base = rng.uniform(215, 250)
    return np.full((h, w, 3), base, np.float32) + rng.normal(0, 2, (h, w, 3))
  yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
  a, b = rng.uniform(40, 200, 3), rng.uniform(-80, 80, 3)
  img = a + b * (xx[..., None] * rng.uniform(-1, 1) + yy[..., None] * rng.uniform(-1, 1))
  im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
  draw = ImageDraw.Draw(im)
  for _ in range(int(rng.integers(3, 9))):
    x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
    r = rng.uniform(0.03, 0.15) * max(w, h)
    draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r],
                 fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
  return np.asarray(im, np.float32) + rng.normal(0, 6, (h, w, 3))


def _render_image(specs: list[dict], source: str, size: int, rng: np.random.Generator):
  """Draws the garments of one image; returns (uint8 image, list of item annotations)."""
  w = int(size * rng.uniform(0.75, 1.0)) if rng.random() < 0.5 else size
  h = size if w != size else int(size * rng.uniform(0.75, 1.0))
  canvas = _background(source, w, h, rng)
  placed = []
  for k, spec in enumerate(specs):
    cat = spec["category_id"]
    if source == "shop":
      gw = rng.uniform(0.45, 0.8) * w / max(1, len(specs)) * (1.4 if len(specs) > 1 else 1)
    else:
      gw = rng.uniform(0.25, 0.6) * w
    gh = gw * _ASPECT[cat]
    if gh > 1.15 * h:
      gh = rng.uniform(0.7, 1.1) * h
      gw = gh / _ASPECT[cat]
    if source == "shop" and len(specs) == 1:
      cx, cy = w / 2 + rng.uniform(-0.05, 0.05) * w, h / 2 + rng.uniform(-0.05, 0.05) * h
    elif source == "shop":
      cx = w * (k + 0.5) / len(specs)
      cy = h / 2 + rng.uniform(-0.05, 0.05) * h
    else:
      # Users' photos may cut the garment at the border (zoom-in).
      cx = rng.uniform(0.15, 0.85) * w
      cy = rng.uniform(0.2, 0.8) * h
    origin = np.array([cx - gw / 2, cy - gh / 2])
    scale = np.array([gw, gh])
    outline = _outline(cat) * scale + origin
    landmarks = landmark_template(cat) * scale + origin
    placed.append((spec, outline, landmarks))

  yy, xx = np.mgrid[0:h, 0:w]
  pix = np.stack([xx.ravel() + 0.5, yy.ravel() + 0.5], 1)
  for spec, outline, _ in placed:
    inside = _inside(pix, outline).reshape(h, w)
    tex = _texture(spec["look"], w, h, rng, jitter=0.08 if source == "user" else 0.0)
    shade = 1.0 if source == "shop" else rng.uniform(0.75, 1.1)
    canvas = np.where(inside[..., None], tex * shade, canvas)
  image = np.clip(canvas + rng.normal(0, 3, canvas.shape), 0, 255).astype(np.uint8)

  items = []
  for k, (spec, outline, landmarks) in enumerate(placed):
    clipped = _clip_polygon(outline, w, h)
    full_area = _area(outline)
    if _area(clipped) < 0.02 * full_area or len(clipped) < 3:
      continue  # (almost) entirely outside the image: not annotated
    x1, y1 = np.floor(clipped.min(0))
    x2, y2 = np.ceil(clipped.max(0))
    in_image = ((landmarks[:, 0] >= 0) & (landmarks[:, 0] <= w) & (landmarks[:, 1] >= 0) &
                (landmarks[:, 1] <= h))
    covered = np.zeros(len(landmarks), bool)
    for _, later, _ in placed[k + 1:]:
      covered |= _inside(landmarks, later)
    vis = np.where(in_image, np.where(covered, 1, 2), 0)
    lm = np.where(in_image[:, None], np.round(landmarks), 0)
    labelled = max(1, int((vis > 0).sum()))
    occluded = float((vis == 1).sum()) / labelled
    outside = 1.0 - _area(clipped) / full_area
    ratio = (x2 - x1) * (y2 - y1) / (w * h)
    viewpoint = int(rng.choice([1, 2])) if source == "shop" else int(rng.choice([2, 2, 3]))
    cat = spec["category_id"]
    items.append({
        "segmentation": [[float(round(v, 2)) for v in clipped.ravel()]],
        "scale": int(schema.scale_from_area_ratio(ratio)),
        "viewpoint": viewpoint,
        "zoom_in": 1 if outside < 0.05 else (2 if outside < 0.3 else 3),
        "landmarks": [int(v) for row in np.concatenate([lm, vis[:, None]], 1) for v in row],
        "style": spec["style"],
        "bounding_box": [int(x1), int(y1), int(x2), int(y2)],
        "category_id": cat,
        "occlusion": 1 if occluded < 0.1 else (2 if occluded < 0.4 else 3),
        "category_name": schema.CATEGORY_BY_ID[cat].name,
    })
  return image, items


def _group_plan(rng: np.random.Generator) -> list[tuple[str, list[int]]]:
  """One pair_id group: [(source, [product indices shown])], with 1-2 products, shop images
  first. Every product a user image shows is shown by a shop image of the group, as the
  released data guarantees (the official retrieval script asserts that every query item has a
  target), so a split cut after any image keeps it."""
  n_products = 1 if rng.random() < 0.6 else 2
  shops = []
  for _ in range(int(rng.integers(1, 3))):
    shown = list(range(n_products)) if rng.random() < 0.5 else [int(rng.integers(n_products))]
    shops.append(shown)
  users = [[int(rng.integers(n_products))] for _ in range(int(rng.integers(1, 4)))]
  for product in sorted({p for shown in users for p in shown} - {p for s in shops for p in s}):
    shops[0] = sorted(shops[0] + [product])
  return [("shop", shown) for shown in shops] + [("user", shown) for shown in users]


def generate(output_dir: str, num_images: int, seed: int = 0, image_size: int = 320) -> None:
  """Writes `num_images` images and annotations under `output_dir/{image,annos}`."""
  os.makedirs(os.path.join(output_dir, "image"), exist_ok=True)
  os.makedirs(os.path.join(output_dir, "annos"), exist_ok=True)
  rng = np.random.default_rng(seed)
  image_id, pair_id = 0, 0
  while image_id < num_images:
    pair_id += 1
    products = []
    for style in range(1, 3):
      cat = int(rng.integers(1, schema.NUM_CATEGORIES + 1))
      products.append({"category_id": cat, "style": style, "look": _look(rng)})
    for source, shown in _group_plan(rng):
      if image_id >= num_images:
        break
      image_id += 1
      specs = [products[i] for i in shown]
      # Style-0 garments (no product of the pair_id): beside the product in many user photos,
      # and in some shop photos (worn with it, as in the released data's shop images).
      if rng.random() < (0.6 if source == "user" else 0.25 if len(specs) == 1 else 0.0):
        distractor = {"category_id": int(rng.integers(1, schema.NUM_CATEGORIES + 1)),
                      "style": 0, "look": _look(rng)}
        specs.insert(int(rng.integers(0, len(specs) + 1)), distractor)
      image, items = _render_image(specs, source, image_size, rng)
      if not items:  # every garment fell outside: draw the product centred instead
        image, items = _render_image(specs[:1], "shop", image_size, rng)
      anno = {"source": source, "pair_id": pair_id}
      anno.update({f"item{i}": item for i, item in enumerate(items, start=1)})
      stem = f"{image_id:06d}"
      Image.fromarray(image).save(os.path.join(output_dir, "image", stem + ".jpg"), quality=92)
      with open(os.path.join(output_dir, "annos", stem + ".json"), "w") as f:
        json.dump(anno, f)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--output_dir", required=True)
  parser.add_argument("--num_images", type=int, required=True)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--image_size", type=int, default=320,
                      help="long side of the images in pixels")
  args = parser.parse_args(argv)
  if args.num_images < 1:
    parser.error("--num_images must be >= 1")
  if args.image_size < 32:
    parser.error("--image_size must be >= 32")
  generate(args.output_dir, args.num_images, args.seed, args.image_size)
  print(f"wrote {args.num_images} images and annotations to {args.output_dir}")


if __name__ == "__main__":
  main()
