"""tf.data input pipelines over converted DeepFashion2 TFRecords, emitting static-shape numpy.

* `image_dataset(cfg, split, train=...)`: batches of single images, [B, ...].
* `pair_dataset(cfg, split)`: batches of (shop image, user image) pairs of one pair_id that
  share a style > 0, [P, 2, ...] with index 0 = shop and 1 = user. Each epoch pairs every
  eligible user image with one shop image of its group drawn at random. With
  `cfg.pair_batches_by_category` the P pairs of a batch share the category of their product,
  so that garments of one category but different products meet in a batch (the confusion set
  of retrieval); with `cfg.pair_batches_by_group` they come from one pair_id group (its
  products of different styles: the hardest negatives); the match loss labels every shop item
  against every user item of the global batch by pair_id and style
  (`models.targets.pair_targets`).

Every batch has the same shapes (canvas, max instances, mask crop size all from config), so the
jitted step never recompiles. Input files are split across hosts by TFDS
(`jax.process_index()` / `jax.process_count()`), order and augmentation are deterministic for a
given seed, and batches are prefetched.

The data config (`cfg`, an ml_collections.ConfigDict) fields: dir, canvas (H, W), short_side,
max_side, scale_jitter (lo, hi), flip_prob, max_instances, mask_crop_size, pixel_mean,
pixel_std, shuffle_buffer, seed, pair_batches_by_category, pair_batches_by_group.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_datasets as tfds

from match_rcnn_jax.data import schema, tfrecords, transforms

_GROUP_BITS = 16  # group_size < 2**16 is packed with pair_id into the grouping key


def _host() -> tuple[int, int]:
  import jax
  return jax.process_index(), jax.process_count()


def read_split(data_dir: str, split: str, shuffle: bool, seed: int,
               host: tuple[int, int] | None = None, decoders=None,
               split_examples: bool = False) -> tf.data.Dataset:
  """Raw TFDS examples of this host's share of the split's files (`decoders`: TFDS's, e.g.
  to skip decoding the masks). A split of fewer files than hosts is an error, unless
  `split_examples` (evaluation): then each host reads every file and keeps every
  `count`-th example from its index on."""
  builder = tfrecords.load_builder(data_dir, split)
  index, count = host if host is not None else _host()
  num_shards = len(builder.info.splits[split].shard_lengths)
  if num_shards < count and split_examples:
    ds = builder.as_dataset(split=split, shuffle_files=False, decoders=decoders,
                            read_config=tfds.ReadConfig(interleave_cycle_length=1,
                                                        try_autocache=False))
    return ds.shard(count, index)
  if num_shards < count:
    raise ValueError(f"{tfrecords.split_dir(data_dir, split)}: {num_shards} shard(s) cannot be "
                     f"split over {count} hosts; convert again with a smaller "
                     "--examples_per_shard")
  # No TFDS auto-cache: it would keep a small split's decoded examples in memory after the
  # first epoch, so small (synthetic) splits would skip the decoding that real ones pay for.
  read_config = tfds.ReadConfig(
      shuffle_seed=seed, interleave_cycle_length=min(4, max(1, num_shards // count)),
      try_autocache=False, input_context=tf.distribute.InputContext(num_input_pipelines=count,
                                               input_pipeline_id=index))
  return builder.as_dataset(split=split, shuffle_files=shuffle, read_config=read_config,
                            decoders=decoders)


def _preprocess(cfg, train: bool, with_masks: bool):
  def fn(ex, rand):
    ex = transforms.from_tfds(ex)
    if with_masks:
      ex = transforms.crop_masks(ex, cfg.mask_crop_size)
    else:
      ex.pop("masks")
    seed = tf.stack([rand, tf.constant(0, tf.int64)])
    if train and cfg.flip_prob > 0:
      ex = transforms.random_hflip(ex, seed, cfg.flip_prob)
    else:
      ex["flipped"] = tf.constant(False)
    jitter = 1.0
    if train and tuple(cfg.scale_jitter) != (1.0, 1.0):
      lo, hi = cfg.scale_jitter
      jitter = tf.random.stateless_uniform([], seed=seed + 1, minval=lo, maxval=hi)
    ex = transforms.resize_and_pad(ex, cfg.short_side, cfg.max_side, tuple(cfg.canvas), jitter)
    ex = transforms.normalize(ex, tuple(cfg.pixel_mean), tuple(cfg.pixel_std))
    ex = transforms.pad_instances(ex, cfg.max_instances)
    ex["rand"] = rand
    return ex
  return fn


def _options() -> tf.data.Options:
  opts = tf.data.Options()
  opts.deterministic = True
  opts.experimental_optimization.map_parallelization = True
  return opts


def _per_image(cfg, split: str, train: bool, with_masks: bool, host) -> tf.data.Dataset:
  index = (host or _host())[0]
  ds = read_split(cfg.dir, split, shuffle=train, seed=cfg.seed, host=host,
                  split_examples=not train)
  rand = tf.data.Dataset.random(seed=cfg.seed + 7919 * index, rerandomize_each_iteration=True)
  ds = tf.data.Dataset.zip((ds, rand))
  return ds.map(_preprocess(cfg, train, with_masks), num_parallel_calls=tf.data.AUTOTUNE)


_DROP = ("group_size", "rand")


def image_dataset(cfg, split: str, batch_size: int, train: bool, with_masks: bool = True,
                  repeat: bool | None = None, host=None) -> tf.data.Dataset:
  """Batches of single images. Training shuffles, flips, jitters and repeats forever."""
  ds = _per_image(cfg, split, train, with_masks, host)
  ds = ds.map(lambda ex: {k: v for k, v in ex.items() if k not in _DROP})
  if train:
    ds = ds.shuffle(cfg.shuffle_buffer, seed=cfg.seed, reshuffle_each_iteration=True)
  if repeat if repeat is not None else train:
    ds = ds.repeat()
  ds = ds.batch(batch_size, drop_remainder=train)
  return ds.with_options(_options()).prefetch(tf.data.AUTOTUNE)


def _shared_style(styles_a: tf.Tensor, valid_a: tf.Tensor, styles_b: tf.Tensor,
                  valid_b: tf.Tensor) -> tf.Tensor:
  """[..., M, M] bool: item i of a and item j of b have the same style > 0."""
  same = tf.equal(styles_a[..., :, None], styles_b[..., None, :])
  pos = (styles_a[..., :, None] > 0) & valid_a[..., :, None] & valid_b[..., None, :]
  return same & pos


def _group_to_pairs(group: dict) -> tf.data.Dataset:
  """All images of one pair_id -> one (shop, user) pair per eligible user image."""
  is_user = tf.equal(group["source"], int(schema.Source.USER))
  is_shop = tf.equal(group["source"], int(schema.Source.SHOP))
  # share[u, s]: user image u and shop image s have a product in common.
  match = _shared_style(group["styles"][:, None], group["valid"][:, None],
                        group["styles"][None, :], group["valid"][None, :])  # [G, G, M, M]
  share = tf.reduce_any(match, axis=[2, 3]) & is_user[:, None] & is_shop[None, :]
  eligible = tf.reduce_any(share, axis=1)
  users = tf.cast(tf.where(eligible)[:, 0], tf.int32)

  def pick(u):
    seed = tf.stack([group["rand"][u], tf.constant(1, tf.int64)])
    noise = tf.random.stateless_uniform(tf.shape(share)[1:], seed=seed)
    s = tf.argmax(tf.where(share[u], noise, -1.0), output_type=tf.int32)
    shop = {k: v[s] for k, v in group.items()}
    user = {k: v[u] for k, v in group.items()}
    pair = {k: tf.stack([shop[k], user[k]]) for k in group if k not in _DROP}
    # The category of the product the two share (the first one, in shop item order).
    shared = tf.reduce_any(_shared_style(shop["styles"], shop["valid"], user["styles"],
                                         user["valid"]), axis=1)
    pair["_category"] = tf.gather(shop["classes"], tf.argmax(tf.cast(shared, tf.int32)))
    return pair

  return tf.data.Dataset.from_tensor_slices(users).map(pick)


def pair_dataset(cfg, split: str, pairs_per_batch: int, host=None,
                 repeat: bool = True) -> tf.data.Dataset:
  """Training batches of (shop, user) image pairs, [P, 2, ...] (see module docstring)."""
  ds = _per_image(cfg, split, True, True, host)
  mask = (1 << _GROUP_BITS) - 1

  def key(ex):
    return ex["pair_id"] * (1 << _GROUP_BITS) + tf.minimum(ex["group_size"], mask)

  def reduce(_, window):
    return window.batch(mask).flat_map(_group_to_pairs)

  ds = ds.group_by_window(key, reduce, window_size_func=lambda k: k & mask)
  ds = ds.shuffle(cfg.shuffle_buffer, seed=cfg.seed, reshuffle_each_iteration=True)
  if repeat:
    ds = ds.repeat()
  if cfg.get("pair_batches_by_group", False):
    # The P pairs of a batch come from one pair_id group: its products are told apart from
    # each other (in the appearance-mode proxy, siblings of one family and palette).
    ds = ds.group_by_window(
        lambda ex: ex["pair_id"][0],
        lambda _, window: window.batch(pairs_per_batch, drop_remainder=True),
        window_size=pairs_per_batch)
  elif cfg.get("pair_batches_by_category", False):
    ds = ds.group_by_window(
        lambda ex: tf.cast(ex["_category"], tf.int64),
        lambda _, window: window.batch(pairs_per_batch, drop_remainder=True),
        window_size=pairs_per_batch)
  else:
    ds = ds.batch(pairs_per_batch, drop_remainder=True)
  ds = ds.map(lambda ex: {k: v for k, v in ex.items() if k != "_category"})
  return ds.with_options(_options()).prefetch(tf.data.AUTOTUNE)


def split_images(data_dir: str, split: str, image_ids) -> dict:
  """{image id: uint8 image [H, W, 3]} of the images of `split` in `image_ids`, decoding those
  only."""
  builder = tfrecords.load_builder(data_dir, split)
  ds = builder.as_dataset(split=split, shuffle_files=False,
                          decoders={"image": tfds.decode.SkipDecoding()})
  wanted = tf.constant(sorted(int(i) for i in image_ids) or [-1], tf.int64)
  ds = ds.filter(lambda ex: tf.reduce_any(tf.equal(tf.cast(ex["image_id"], tf.int64), wanted)))
  ds = ds.map(lambda ex: (ex["image_id"], tf.io.decode_image(ex["image"], channels=3,
                                                             expand_animations=False)))
  return {int(i): im for i, im in ds.as_numpy_iterator()}


def as_numpy(ds: tf.data.Dataset):
  """Iterator of numpy dict batches."""
  return iter(tfds.as_numpy(ds))
