"""Checks that a synthetic retrieval proxy measures appearance: the no-model reference rankers
stay low on its held-out split, and a small CNN trained on its ground-truth crops ranks well.

    python benchmarks/proxy_check.py [--config configs/demo.py] [--workdir runs/proxy_check]
        [--seconds 240] [--crop 32] [--json OUT.json] [--mn [--mn_infonce]] [--skip_cnn]

Makes (or reuses) the config's synthetic splits exactly as `train.py` does (`prepare`), then:
1. `evaluation.reference` on the held-out split: category chance, colour histogram, colour
   histogram inside the category (top-1 / 5 / 20, ground-truth boxes, the official hit rule);
2. a small CNN (6 conv layers, a 128-d L2-normalised embedding, InfoNCE between two crops of a
   product against the other products of the batch, siblings of a family among them) trained
   on the training split's ground-truth crops (`--crop` px windows, random per-channel gains
   and gamma) for `--seconds`, then ranking the held-out split's shop crops for each
   user crop by cosine similarity, scored by the same protocol code.
3. with `--mn`: the config's own matching network (`match_head.features="crop"`: its crop
   stream, MN and similarity network) trained alone for `--seconds` on the training split's
   (shop, user) crop pairs exactly as the train step's side batch feeds it (`data.crop_pairs`,
   `data.crop_pairs.CropBank`; the config's pair losses and optimizer), then ranking the
   held-out garments by its match logits: what the MN learns from the crops without the
   detector, to compare designs in minutes (`--mn_infonce`: with the CNN's loss instead).
   `mn_alone` pools each held-out garment's box from its whole image, as the demo's
   evaluation does; `mn_alone_bank_crops` from a crop made as the bank makes its crops.
The proxy is fit for retrieval when 1 is low and 2 is high (the issue's bounds: category chance
top-1 <= 0.10, colour histogram <= 0.15, inside the category <= 0.25, the CNN >= 0.50).
"""

import argparse
import json
import os
import platform
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from compare_torchvision import load_config  # benchmarks/: a config file -> its ConfigDict
from PIL import Image

from match_rcnn_jax.data import crop_pairs, prepare
from match_rcnn_jax.evaluation import reference, retrieval
from match_rcnn_jax.inference.ranking import NUM_RANKED

BOUNDS = {"category_chance": 0.10, "colour_histogram": 0.15,
          "colour_histogram_category": 0.25}
CNN_BOUND = 0.50


def _crop(path, box, size):
  with Image.open(path) as im:
    x1, y1, x2, y2 = (float(v) for v in box)
    return np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR,
                                               box=(x1, y1, max(x2, x1 + 1), max(y2, y1 + 1))))


def _split_items(data_dir, split):
  query = json.load(open(os.path.join(data_dir, f"{split}_query.json")))
  gallery = json.load(open(os.path.join(data_dir, f"{split}_gallery.json")))
  return query, gallery


def _image_path(data_dir, split, image_id):
  return os.path.join(data_dir, "raw", split, "image", f"{image_id:06d}.jpg")


class CropNet(nn.Module):
  dim: int = 128

  @nn.compact
  def __call__(self, x):
    for c in (16, 32, 64):
      x = nn.relu(nn.GroupNorm(num_groups=8)(nn.Conv(c, (3, 3))(x)))
      x = nn.relu(nn.GroupNorm(num_groups=8)(nn.Conv(c, (3, 3))(x)))
      x = nn.max_pool(x, (2, 2), (2, 2))
    x = jnp.concatenate([x.mean((1, 2)), x.max((1, 2))], -1)
    x = nn.Dense(self.dim)(x)
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True).clip(1e-6)


def _views(crops, idx, size, rng):
  """Augmented views [n, size, size, 3] in [-2, 2] of crops[idx] (a random size x size window
  of each, per-channel gains 0.8-1.25, gamma 0.8-1.25)."""
  n, full = len(idx), crops.shape[1]
  out = np.empty((n, size, size, 3), np.float32)
  off = rng.integers(0, full - size + 1, (n, 2))
  for i, (j, (dy, dx)) in enumerate(zip(idx, off)):
    out[i] = crops[j, dy:dy + size, dx:dx + size]
  x = np.clip(out / 255.0 * rng.uniform(0.8, 1.25, (n, 1, 1, 3)), 0, 1)
  x = x ** rng.uniform(0.8, 1.25, (n, 1, 1, 1))
  return (x - 0.5) / 0.25


def train_cnn(crops, products, families, seconds, size, seed=0, families_per_batch=12,
              products_per_family=4):
  """The CNN trained for `seconds` wall time with a symmetric InfoNCE loss (temperature 0.1)
  between two crops of each product in a batch, the batch's products drawn as
  `products_per_family` siblings from each of `families_per_batch` families (siblings are
  the hard negatives). Returns (embed fn of [n, size, size, 3] uint8 crops, steps)."""
  net = CropNet()
  params = net.init(jax.random.PRNGKey(seed), jnp.zeros((1, size, size, 3), jnp.float32))
  tx = optax.adam(2e-3)
  opt = tx.init(params)

  def loss_fn(p, a, b):
    ea, eb = net.apply(p, a), net.apply(p, b)
    logits = ea @ eb.T / 0.1
    labels = jnp.arange(len(a))
    return 0.5 * (optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
                  + optax.softmax_cross_entropy_with_integer_labels(logits.T, labels).mean())

  @jax.jit
  def step(p, o, a, b):
    loss, g = jax.value_and_grad(loss_fn)(p, a, b)
    upd, o = tx.update(g, o, p)
    return optax.apply_updates(p, upd), o, loss

  by_product = {}
  for i, prod in enumerate(products):
    by_product.setdefault(prod, []).append(i)
  by_family = {}
  for prod in by_product:
    by_family.setdefault(families[prod], []).append(prod)
  family_keys = sorted(by_family)
  rng = np.random.default_rng(seed)
  start, steps = time.time(), 0
  while time.time() - start < seconds:
    chosen = []
    for f in rng.choice(len(family_keys), families_per_batch, replace=False):
      prods = by_family[family_keys[f]]
      take = rng.choice(len(prods), min(products_per_family, len(prods)), replace=False)
      chosen += [prods[t] for t in take]
    a_idx, b_idx = [], []
    for prod in chosen:
      members = by_product[prod]
      pick = rng.choice(len(members), 2, replace=len(members) < 2)
      a_idx.append(members[pick[0]])
      b_idx.append(members[pick[1]])
    params, opt, loss = step(params, opt, _views(crops, a_idx, size, rng),
                             _views(crops, b_idx, size, rng))
    steps += 1
    if steps % 200 == 0:
      print(f"  step {steps}: loss {float(loss):.3f} ({time.time() - start:.0f} s)", flush=True)
  margin = (crops.shape[1] - size) // 2

  def embed(batch):
    x = batch[:, margin:margin + size, margin:margin + size].astype(np.float32)
    return np.asarray(jax.jit(net.apply)(params, (x / 255.0 - 0.5) / 0.25))
  return embed, steps


def train_mn(config, bank, seconds, seed=0, infonce=False):
  """The config's matching network (its crop stream, MN and similarity network: `features`
  must be "crop") trained alone on the crop bank's (shop, user) pairs, as the train step's side
  batch trains it (`data.crop_pairs` pairs a step, `crop_pairs_per_group` of a pair_id group,
  jittered boxes, the pair cross-entropy + `loss_weights.match_list` x the listwise term), with
  the config's optimizer, for `seconds`; `infonce`: the crop CNN's loss instead (symmetric
  InfoNCE of the cosine similarities / 0.1, the similarity network unused), ranking by cosine.
  Returns (embed fn of bank-style crops or of boxes of whole images, score fn of (query,
  gallery) embeddings, steps)."""
  from match_rcnn_jax.models import match_rcnn
  from match_rcnn_jax.models import targets as tgt
  from match_rcnn_jax.training import losses
  model = match_rcnn.build(config.model)
  variables = match_rcnn.init(model, jax.random.PRNGKey(seed), tuple(config.data.canvas))
  params, stats = variables["params"], variables.get("batch_stats", {})
  tx = optax.chain(optax.clip_by_global_norm(10.0),
                   optax.adamw(config.optimizer.learning_rate, weight_decay=1e-4))
  opt = tx.init(params)
  crop = model.config.match_head.crop_size
  pool = model.bind({}).pool_pixels  # the RoIAlign of inference, with the config's settings

  def embed(module, pixels, train):
    x = module.match_input(None, crop7=module.crop_features(pixels))
    return module.embed(x, train=train)

  def loss_fn(p, st, x, boxes, key, rng):
    k = x.shape[0]
    pixels = model.apply({"params": p}, rng, x, boxes, method=match_rcnn.MatchRCNN.crop_pair_pixels)
    emb, upd = model.apply({"params": p, "batch_stats": st}, pixels, True,
                           method=embed, mutable=["batch_stats"])
    emb = emb.reshape(k, 2, -1)
    logits = model.apply({"params": p}, emb[:, 0], emb[:, 1],
                         method=lambda m, a, b: m.similarity.pairwise(a, b))
    labels, valid = tgt.pair_targets(key[:, 0], key[:, 1], jnp.ones(k, bool), key[:, 0],
                                     key[:, 1], jnp.ones(k, bool))
    out = {"pair_logits": logits, "pair_labels": labels, "pair_valid": valid}
    pair = losses.pair_match(out)["loss_match"]
    listwise = losses.listwise_match(out)
    total = (config.loss_weights.match * pair
             + config.loss_weights.get("match_list", 0.0) * listwise)
    if infonce:
      e = emb / jnp.linalg.norm(emb, axis=-1, keepdims=True).clip(1e-6)
      cos = e[:, 1] @ e[:, 0].T / 0.1
      lab = jnp.arange(k)
      total = 0.5 * (optax.softmax_cross_entropy_with_integer_labels(cos, lab).mean()
                     + optax.softmax_cross_entropy_with_integer_labels(cos.T, lab).mean())
    return total, (upd.get("batch_stats", {}), listwise)

  @jax.jit
  def step(p, st, o, x, boxes, key, rng):
    (loss, (st, listwise)), g = jax.value_and_grad(loss_fn, has_aux=True)(p, st, x, boxes, key,
                                                                         rng)
    upd, o = tx.update(g, o, p)
    return optax.apply_updates(p, upd), st, o, loss, listwise

  rng = np.random.default_rng(seed)
  start, steps = time.time(), 0
  pairs, per_group = int(config.data.crop_pairs), int(config.data.crop_pairs_per_group)
  while time.time() - start < seconds:
    b = bank.sample(rng, pairs, per_group)
    params, stats, opt, loss, listwise = step(params, stats, opt, b["crop_pairs"],
                                              b["crop_pair_boxes"], b["crop_pair_key"],
                                              jax.random.PRNGKey(steps))
    steps += 1
    if steps % 200 == 0:
      print(f"  step {steps}: loss {float(loss):.3f} listwise {float(listwise):.3f} "
            f"({time.time() - start:.0f} s)", flush=True)
  @jax.jit
  def embed_eval(x, boxes):
    """Embeddings of the garments at `boxes` [n, 4] of x [n, H, W, 3] (bank-style crops or
    whole images), pooled as inference pools them."""
    pixels = pool(x, boxes[:, None], crop)[:, 0]
    return model.apply({"params": params, "batch_stats": stats}, pixels, False, method=embed)

  def scores(q, g):
    if infonce:
      return (q / np.linalg.norm(q, axis=-1, keepdims=True)) @ (
          g / np.linalg.norm(g, axis=-1, keepdims=True)).T
    return np.asarray(model.apply({"params": params}, q, g,
                                  method=lambda m, a, b: m.similarity.pairwise(a, b)))
  return embed_eval, scores, steps


def _cnn_rows(data_dir, train_split, eval_split, query, gallery, args) -> dict:
  """The crop CNN trained on every ground-truth product item of the training split (shop and
  user crops), ranking the held-out split's."""
  t_query, t_gallery = _split_items(data_dir, train_split)
  items = [(q["query_image_id"], q["bbox"], (q["pair_id"], q["style"])) for q in t_query
           if q["style"] > 0]
  items += [(g["gallery_image_id"], g["bbox"], (g["pair_id"], g["style"])) for g in t_gallery
            if g["style"] > 0]
  full = args.crop + args.crop // 8
  crops = np.stack([_crop(_image_path(data_dir, train_split, i), b, full) for i, b, _ in items])
  products = [p for _, _, p in items]
  families = {p: p[0] for p in products}  # a pair_id group is a family of products
  print(f"training the crop CNN on {len(crops)} crops of {len(set(products))} products "
        f"for {args.seconds:.0f} s")
  embed, steps = train_cnn(crops, products, families, args.seconds, args.crop)
  q_emb = embed(np.stack([_crop(_image_path(data_dir, eval_split, q["query_image_id"]),
                                q["bbox"], full) for q in query]))
  g_emb = embed(np.stack([_crop(_image_path(data_dir, eval_split, g["gallery_image_id"]),
                                g["bbox"], full) for g in gallery]))
  order = np.argsort(-q_emb @ g_emb.T, axis=1, kind="stable")[:, :NUM_RANKED]
  records = reference.ranked_records(query, gallery, order)
  cnn = retrieval.top_k(retrieval.query_results(query, gallery, records))
  return {"crop_cnn": {k: round(v, 4) for k, v in cnn.items()}, "crop_cnn_steps": steps,
          "crop_cnn_seconds": args.seconds}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="configs/demo.py")
  parser.add_argument("--workdir", default="runs/proxy_check")
  parser.add_argument("--seconds", type=float, default=240.0)
  parser.add_argument("--crop", type=int, default=32)
  parser.add_argument("--json", default="")
  parser.add_argument("--mn", action="store_true",
                      help="also train the config's matching network alone on the training "
                           "split's crop pairs (data.crop_pairs; features='crop') and rank")
  parser.add_argument("--mn_infonce", action="store_true",
                      help="--mn with the crop CNN's loss (cosine InfoNCE) instead of the MN's")
  parser.add_argument("--skip_cnn", action="store_true", help="no crop CNN")
  args = parser.parse_args()
  config = load_config(args.config)
  data_dir = prepare.resolve_data_dir(config, args.workdir)
  train_split, eval_split = config.data.train_split, config.data.eval_split
  out = {"config": args.config, "machine": platform.node(), "date": time.strftime("%Y-%m-%d")}

  query, gallery = _split_items(data_dir, eval_split)
  out["queries"] = sum(q["style"] > 0 for q in query)
  out["gallery"] = len(gallery)
  out["reference"] = reference.evaluate_split(data_dir, eval_split, query, gallery)

  if not args.skip_cnn:
    out.update(_cnn_rows(data_dir, train_split, eval_split, query, gallery, args))
  if args.mn:
    config.data.dir = data_dir
    bank = crop_pairs.CropBank.from_split(config.data, train_split,
                                          int(config.data.crop_pairs_size), host=(0, 1))
    print(f"training the matching network alone on {len(bank.crops)} crops of "
          f"{len(bank.products)} products for {args.seconds:.0f} s")
    embed, score, steps = train_mn(config, bank, args.seconds, infonce=args.mn_infonce)

    def bank_crops(items, key):
      """Each garment as the crop bank holds the training split's (a resized window)."""
      x = np.stack([
          (crop_pairs.crop(np.asarray(Image.open(_image_path(data_dir, eval_split, it[key]))
                                      .convert("RGB")), it["bbox"], bank.size) / 255.0
           - bank.mean) / bank.std for it in items]).astype(np.float32)
      box = np.asarray(crop_pairs.gt_box_in_crop(bank.size), np.float32)
      return np.asarray(embed(x, np.broadcast_to(box, (len(items), 4))))

    def in_images(items, key):
      """Each garment's box of its whole image, resized and zero-padded (after normalising)
      to the canvas as the evaluation pipeline does it, pooled as inference pools it."""
      canvas_h, canvas_w = config.data.canvas
      embs = []
      for i in range(0, len(items), 64):
        part = items[i:i + 64]
        images = np.zeros((len(part), canvas_h, canvas_w, 3), np.float32)
        boxes = np.zeros((len(part), 4), np.float32)
        for j, it in enumerate(part):
          im = Image.open(_image_path(data_dir, eval_split, it[key])).convert("RGB")
          w, h = im.size
          scale = min(config.data.short_side / min(h, w), config.data.max_side / max(h, w))
          if scale != 1.0:
            im = im.resize((round(w * scale), round(h * scale)), Image.BILINEAR)
          x = (np.asarray(im, np.float32) / 255.0 - bank.mean) / bank.std
          images[j, :x.shape[0], :x.shape[1]] = x[:canvas_h, :canvas_w]
          boxes[j] = np.asarray(it["bbox"], np.float32) * scale
        embs.append(np.asarray(embed(images, boxes)))
      return np.concatenate(embs)

    for name, make in (("mn_alone", in_images), ("mn_alone_bank_crops", bank_crops)):
      q_emb, g_emb = make(query, "query_image_id"), make(gallery, "gallery_image_id")
      order = np.argsort(-score(q_emb, g_emb), axis=1, kind="stable")[:, :NUM_RANKED]
      records = reference.ranked_records(query, gallery, order)
      mn = retrieval.top_k(retrieval.query_results(query, gallery, records))
      out[name] = {k: round(v, 4) for k, v in mn.items()}
    out["mn_alone_steps"] = steps

  print(f"held-out split: {out['queries']} queries, {out['gallery']} gallery garments")
  print(f"{'ranker':<28}{'top1':>8}{'top5':>8}{'top20':>8}  bound on top1")
  ok = True
  rows = [(name, m, BOUNDS[name], m["top1"] <= BOUNDS[name])
          for name, m in out["reference"].items()]
  for name in ("crop_cnn", "mn_alone"):
    if name in out:
      rows.append((name, out[name], CNN_BOUND, out[name]["top1"] >= CNN_BOUND))
  for name, m, bound, good in rows:
    sign = ">=" if name in ("crop_cnn", "mn_alone") else "<="
    print(f"{name:<28}{m['top1']:8.3f}{m['top5']:8.3f}{m['top20']:8.3f}  {sign} {bound:.2f} "
          f"{'ok' if good else 'NOT MET'}")
    ok &= good
  if "mn_alone_bank_crops" in out:
    m = out["mn_alone_bank_crops"]
    print(f"{'mn_alone_bank_crops':<28}{m['top1']:8.3f}{m['top5']:8.3f}{m['top20']:8.3f}")
  out["proxy_ok"] = bool(ok)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(out, f, indent=1)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
