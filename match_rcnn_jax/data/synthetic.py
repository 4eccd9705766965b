"""Synthetic DeepFashion2 in the released layout: `D/image/NNNNNN.jpg` + `D/annos/NNNNNN.json`.

    python -m match_rcnn_jax.data.synthetic --output_dir D --num_images N [--seed S]
        [--image_size PX] [--mode colour|appearance]

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

Two modes decide what tells products apart:
- "colour" (the default, used by the detection tests): each product has its own two random
  colours and one of four patterns, and user photos differ from shop photos by brightness only,
  so a colour histogram of the box identifies a product.
- "appearance" (the demo's retrieval proxy): a pair_id group is a *family* of 4-6 products
  (styles 1..K) of one category that share a palette and the share of each colour, and differ
  in one factor each from the family's first product: the motif (nine kinds), its scale, its
  placement (all over, a band, a chest patch) or a structural detail (the hem flared or
  tapered, which moves the outline and the landmarks). Colours come from a small shared set and
  motifs recur across families. User photos carry per-channel colour casts (gains 0.7-1.3),
  gamma, shading, blur, JPEG artefacts, occluding bars and clutter in the product's palette;
  shop photos milder ones. About a third of the products are shown in shop images only. A
  colour histogram finds a family at best, not the product: identity is the motif's shape,
  scale and layout, or the garment's outline (`retrieval_reference` rankers measure it).
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

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


def _background(kind: str, w: int, h: int, rng: np.random.Generator,
                palette=None) -> np.ndarray:
  """A shop photo's plain backdrop, or a user photo's gradient with blobs (half of them in the
  colours of `palette` when given: clutter in the product's own colours)."""
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
    fill = tuple(int(v) for v in rng.integers(0, 256, 3))
    if palette is not None and rng.random() < 0.5:
      fill = tuple(palette[int(rng.integers(len(palette)))])
    draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=fill)
  return np.asarray(im, np.float32) + rng.normal(0, 6, (h, w, 3))

# ---------------------------------------------------------------------------- appearance mode

MODES = ("colour", "appearance")
# The shared colour set of the appearance mode (RGB): families draw two distinct colours from
# it, so palettes recur across families and categories. None is as light as a shop photo's
# backdrop (215-250), so a garment always stands out from it.
_COLOURS = np.asarray([
    (30, 30, 35), (150, 150, 195), (40, 50, 110), (150, 30, 40), (40, 110, 60), (200, 170, 60),
    (120, 80, 50), (190, 120, 160), (90, 150, 200), (210, 110, 50), (120, 120, 125),
    (70, 120, 120)], np.float32)
MOTIFS = ("stripes_h", "stripes_v", "stripes_d", "checks", "dots", "floral", "crosses",
          "zigzag", "diamonds")
_PERIODS = (0.11, 0.18, 0.28)  # motif period / garment width
_PLACEMENTS = ("all", "band", "patch")
_FLARES = (0.0, 0.3, -0.25)  # hem width change: x <- 0.5 + (x - 0.5)(1 + flare (y - 0.5))
# The garment-frame regions of the placements ((u0, v0, u1, v1) in the unit garment frame) and
# about the share of the garment's area each covers: the motif's density inside is raised so
# its share of the whole garment stays the family's coverage.
_REGIONS = {"all": ((-1.0, -1.0, 2.0, 2.0), 1.0), "band": ((-1.0, 0.25, 2.0, 0.75), 0.5),
            "patch": ((0.22, 0.12, 0.78, 0.62), 0.37)}


def _motif_field(motif: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """A field over the motif plane (period 1 in a and b) whose low values draw the motif."""
  fa, fb = a - np.floor(a), b - np.floor(b)
  dx, dy = fa - 0.5, fb - 0.5
  if motif == "stripes_h":
    return fb
  if motif == "stripes_v":
    return fa
  if motif == "stripes_d":
    t = a + b
    return t - np.floor(t)
  if motif == "checks":
    return np.minimum(fa, fb)
  if motif == "dots":
    return np.hypot(dx, dy)
  if motif == "floral":
    return np.hypot(dx, dy) / (1.0 + 0.55 * np.cos(5.0 * np.arctan2(dy, dx)))
  if motif == "crosses":
    return np.minimum(np.abs(dx), np.abs(dy)) + 2.0 * (np.maximum(np.abs(dx), np.abs(dy)) > 0.38)
  if motif == "zigzag":
    t = b + 0.5 * np.abs(2.0 * fa - 1.0)
    return t - np.floor(t)
  if motif == "diamonds":
    return np.abs(dx) + np.abs(dy)
  raise ValueError(f"unknown motif {motif!r}")


_THRESHOLDS: dict = {}


def _motif_threshold(motif: str, coverage: float) -> float:
  """The field value under which `coverage` of the motif plane lies (so every motif, at any
  scale, paints the same share of the garment in its second colour)."""
  key = (motif, round(coverage, 4))
  if key not in _THRESHOLDS:
    t = (np.arange(256) + 0.5) / 256
    field = _motif_field(motif, t[None, :], t[:, None])
    _THRESHOLDS[key] = float(np.quantile(field, min(max(coverage, 0.0), 1.0)))
  return _THRESHOLDS[key]


def _motif_look(rng: np.random.Generator) -> dict:
  """A random appearance-mode look (a family's first product, or a style-0 garment)."""
  palette = rng.choice(len(_COLOURS), 2, replace=False)
  return {"c1": tuple(int(v) for v in _COLOURS[palette[0]]),
          "c2": tuple(int(v) for v in _COLOURS[palette[1]]),
          "coverage": float(rng.uniform(0.15, 0.22)),
          "motif": str(rng.choice(MOTIFS)), "period": float(rng.choice(_PERIODS)),
          "placement": str(rng.choice(_PLACEMENTS)), "flare": float(rng.choice(_FLARES))}


_FACTORS = {"motif": MOTIFS, "period": _PERIODS, "placement": _PLACEMENTS, "flare": _FLARES}


def _family_looks(rng: np.random.Generator, n: int) -> list[dict]:
  """n distinct looks: the first random, each other one the first with one factor changed."""
  base = _motif_look(rng)
  looks, seen = [base], {tuple(base[f] for f in _FACTORS)}
  while len(looks) < n:
    factor = str(rng.choice(list(_FACTORS)))
    look = dict(base, **{factor: rng.choice(_FACTORS[factor]).item()})
    key = tuple(look[f] for f in _FACTORS)
    if key not in seen:
      seen.add(key)
      looks.append(look)
  return looks


def _flare(points: np.ndarray, flare: float) -> np.ndarray:
  out = np.array(points, np.float64)
  out[:, 0] = 0.5 + (out[:, 0] - 0.5) * (1.0 + flare * (out[:, 1] - 0.5))
  return out


def _motif_texture(look: dict, origin: np.ndarray, scale: np.ndarray, w: int, h: int,
                   rng: np.random.Generator, jitter: float) -> np.ndarray:
  """[h, w, 3] the look drawn in the garment's own frame (the motif moves and scales with the
  garment), the second colour on the motif inside the placement's region."""
  yy, xx = np.mgrid[0:h, 0:w] + 0.5
  u, v = (xx - origin[0]) / scale[0], (yy - origin[1]) / scale[1]
  period = look["period"]
  a, b = u / period, v * (scale[1] / scale[0]) / period
  (u0, v0, u1, v1), share = _REGIONS[look["placement"]]
  coverage = min(1.0, look["coverage"] / share)
  sel = _motif_field(look["motif"], a, b) < _motif_threshold(look["motif"], coverage)
  sel &= (u >= u0) & (u <= u1) & (v >= v0) & (v <= v1)
  c1 = np.asarray(look["c1"], np.float32) * (1 + jitter * rng.uniform(-1, 1))
  c2 = np.asarray(look["c2"], np.float32) * (1 + jitter * rng.uniform(-1, 1))
  return np.where(sel[..., None], c2, c1)


def _bar(rng: np.random.Generator, centre, length: float, width: float) -> np.ndarray:
  """A rotated rectangle polygon [4, 2] (an arm, a strap, a bag's edge: an occluder)."""
  t = rng.uniform(0, np.pi)
  d, n = np.array([np.cos(t), np.sin(t)]), np.array([-np.sin(t), np.cos(t)])
  c = np.asarray(centre, np.float64)
  return np.stack([c - d * length / 2 - n * width / 2, c + d * length / 2 - n * width / 2,
                   c + d * length / 2 + n * width / 2, c - d * length / 2 + n * width / 2])


def _photo(canvas: np.ndarray, source: str, rng: np.random.Generator) -> tuple[np.ndarray, int]:
  """The camera of an appearance-mode photo: per-channel gains, gamma, shading, blur; returns
  (uint8 image, JPEG quality)."""
  h, w = canvas.shape[:2]
  strong = source == "user"
  gains = rng.uniform(0.7, 1.3, 3) if strong else rng.uniform(0.95, 1.05, 3)
  gamma = rng.uniform(0.7, 1.4) if strong else rng.uniform(0.95, 1.05)
  yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
  g = rng.uniform(-1, 1, 2)
  shading = 1.0 + (rng.uniform(0.1, 0.35) if strong else 0.03) * (
      g[0] * (xx - 0.5) + g[1] * (yy - 0.5)) * 2
  x = np.clip(canvas / 255.0, 0, 1) ** gamma * gains * shading[..., None]
  image = Image.fromarray(np.clip(x * 255 + rng.normal(0, 3, x.shape), 0, 255).astype(np.uint8))
  radius = rng.uniform(0.0, 1.0) if strong else rng.uniform(0.0, 0.3)
  if radius > 0.25:
    image = image.filter(ImageFilter.GaussianBlur(radius))
  quality = int(rng.integers(45, 90)) if strong else 92
  return np.asarray(image), quality



def _render_image(specs: list[dict], source: str, size: int, rng: np.random.Generator,
                  mode: str = "colour"):
  """Draws the garments of one image; returns (uint8 image, list of item annotations, JPEG
  quality). In the appearance mode the last spec is the image's product (its palette is the
  clutter's), garments wear motif looks and the photo gets its camera (`_photo`)."""
  appearance = mode == "appearance"
  w = int(size * rng.uniform(0.75, 1.0)) if rng.random() < 0.5 else size
  h = size if w != size else int(size * rng.uniform(0.75, 1.0))
  palette = (specs[-1]["look"]["c1"], specs[-1]["look"]["c2"]) if appearance else None
  canvas = _background(source, w, h, rng, palette)
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
    flare = spec["look"].get("flare", 0.0)
    outline = _flare(_outline(cat), flare) * scale + origin
    landmarks = _flare(landmark_template(cat), flare) * scale + origin
    placed.append((spec, outline, landmarks, origin, scale))

  yy, xx = np.mgrid[0:h, 0:w]
  pix = np.stack([xx.ravel() + 0.5, yy.ravel() + 0.5], 1)
  for spec, outline, _, origin, scale in placed:
    inside = _inside(pix, outline).reshape(h, w)
    jitter = 0.08 if source == "user" else 0.0
    if appearance:
      tex = _motif_texture(spec["look"], origin, scale, w, h, rng, jitter)
    else:
      tex = _texture(spec["look"], w, h, rng, jitter)
    shade = 1.0 if source == "shop" else rng.uniform(0.75, 1.1)
    canvas = np.where(inside[..., None], tex * shade, canvas)
  occluders = []
  if appearance and source == "user" and rng.random() < 0.5:
    # A bar across the product (an arm, a strap): its landmarks under it become occluded.
    _, outline, _, _, scale = placed[-1]
    centre = outline.mean(0) + rng.uniform(-0.25, 0.25, 2) * scale
    bar = _bar(rng, centre, rng.uniform(0.6, 1.2) * scale[0], rng.uniform(0.08, 0.16) * scale[0])
    fill = palette[int(rng.integers(2))] if rng.random() < 0.5 else rng.integers(0, 256, 3)
    canvas = np.where(_inside(pix, bar).reshape(h, w)[..., None],
                      np.asarray(fill, np.float32), canvas)
    occluders.append(bar)
  if appearance:
    image, quality = _photo(canvas, source, rng)
  else:
    image = np.clip(canvas + rng.normal(0, 3, canvas.shape), 0, 255).astype(np.uint8)
    quality = 92

  items = []
  for k, (spec, outline, landmarks, _, _) in enumerate(placed):
    clipped = _clip_polygon(outline, w, h)
    full_area = _area(outline)
    if _area(clipped) < 0.02 * full_area or len(clipped) < 3:
      continue  # (almost) entirely outside the image: not annotated
    x1, y1 = np.floor(clipped.min(0))
    x2, y2 = np.ceil(clipped.max(0))
    in_image = ((landmarks[:, 0] >= 0) & (landmarks[:, 0] <= w) & (landmarks[:, 1] >= 0) &
                (landmarks[:, 1] <= h))
    covered = np.zeros(len(landmarks), bool)
    for later in [p[1] for p in placed[k + 1:]] + occluders:
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
  return image, items, quality


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


def _family_plan(rng: np.random.Generator, n_products: int) -> list[tuple[str, list[int]]]:
  """One appearance-mode family (pair_id group): [(source, [product index])], shop images
  first. Each product has 1-2 shop images; two thirds of them 1-2 user images, the others none
  (gallery products that no query shows)."""
  shops, users = [], []
  for p in range(n_products):
    shops += [p] * (1 + int(rng.random() < 0.25))
    if rng.random() < 2 / 3:
      users += [p] * (1 + int(rng.random() < 0.4))
  return [("shop", [p]) for p in shops] + [("user", [p]) for p in users]


def generate(output_dir: str, num_images: int, seed: int = 0, image_size: int = 320,
             mode: str = "colour") -> None:
  """Writes `num_images` images and annotations under `output_dir/{image,annos}` (`mode`: see
  the module docstring)."""
  if mode not in MODES:
    raise ValueError(f"synthetic mode must be one of {MODES}, got {mode!r}")
  appearance = mode == "appearance"
  os.makedirs(os.path.join(output_dir, "image"), exist_ok=True)
  os.makedirs(os.path.join(output_dir, "annos"), exist_ok=True)
  rng = np.random.default_rng(seed)
  image_id, pair_id = 0, 0
  while image_id < num_images:
    pair_id += 1
    if appearance:
      cat = int(rng.integers(1, schema.NUM_CATEGORIES + 1))
      looks = _family_looks(rng, int(rng.integers(4, 7)))
      products = [{"category_id": cat, "style": i + 1, "look": look}
                  for i, look in enumerate(looks)]
      plan = _family_plan(rng, len(products))
    else:
      products = []
      for style in range(1, 3):
        cat = int(rng.integers(1, schema.NUM_CATEGORIES + 1))
        products.append({"category_id": cat, "style": style, "look": _look(rng)})
      plan = _group_plan(rng)
    for source, shown in plan:
      if image_id >= num_images:
        break
      image_id += 1
      specs = [products[i] for i in shown]
      # Style-0 garments (no product of the pair_id): beside the product in many user photos,
      # and in some shop photos (worn with it, as in the released data's shop images).
      if rng.random() < (0.6 if source == "user" else 0.25 if len(specs) == 1 else 0.0):
        distractor = {"category_id": int(rng.integers(1, schema.NUM_CATEGORIES + 1)),
                      "style": 0, "look": _motif_look(rng) if appearance else _look(rng)}
        # appearance: the product is drawn last (its palette is the clutter's, nothing covers it
        # but the occluding bar)
        at = 0 if appearance else int(rng.integers(0, len(specs) + 1))
        specs.insert(at, distractor)
      image, items, quality = _render_image(specs, source, image_size, rng, mode)
      if not items:  # every garment fell outside: draw the product centred instead
        image, items, quality = _render_image(specs[-1:] if appearance else specs[:1], "shop",
                                              image_size, rng, mode)
      anno = {"source": source, "pair_id": pair_id}
      anno.update({f"item{i}": item for i, item in enumerate(items, start=1)})
      stem = f"{image_id:06d}"
      Image.fromarray(image).save(os.path.join(output_dir, "image", stem + ".jpg"),
                                  quality=quality)
      with open(os.path.join(output_dir, "annos", stem + ".json"), "w") as f:
        json.dump(anno, f)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--output_dir", required=True)
  parser.add_argument("--num_images", type=int, required=True)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--image_size", type=int, default=320,
                      help="long side of the images in pixels")
  parser.add_argument("--mode", choices=MODES, default="colour",
                      help="what tells products apart (module docstring)")
  args = parser.parse_args(argv)
  if args.num_images < 1:
    parser.error("--num_images must be >= 1")
  if args.image_size < 32:
    parser.error("--image_size must be >= 32")
  generate(args.output_dir, args.num_images, args.seed, args.image_size, args.mode)
  print(f"wrote {args.num_images} images and annotations to {args.output_dir}")


if __name__ == "__main__":
  main()
