"""The three PN streams on RoI features, with torchvision's layer layout and names.

* BoxHead: TwoMLPHead (fc6, fc7: 1024) + predictor (class logits, class-specific deltas).
* MaskHead: 4 x (3x3 conv 256 + ReLU), 2x2 stride-2 deconv + ReLU, 1x1 conv -> per-class logits
  at twice the RoI size (28 x 28 from 14 x 14).
* LandmarkHead: 8 x (3x3 conv 512 + ReLU), 4x4 stride-2 deconv -> 294 heatmaps, bilinear x2
  upsample (56 x 56 from 14 x 14), as Mask R-CNN's keypoint head.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from match_rcnn_jax.models import layers

_KAIMING_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class BoxHead(nn.Module):
  num_classes: int = 14  # 13 categories + background (index 0)
  hidden: int = 1024
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    """x [..., 7, 7, C] -> class logits [..., K], deltas [..., K, 4], fc7 features."""
    lead = x.shape[:-3]
    x = x.reshape(*lead, -1)
    x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="fc6")(x))
    x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="fc7")(x))
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name="cls_score",
                      kernel_init=nn.initializers.normal(0.01))(x)
    deltas = nn.Dense(4 * self.num_classes, dtype=self.dtype, name="bbox_pred",
                      kernel_init=nn.initializers.normal(0.001))(x)
    return (logits.astype(jnp.float32),
            deltas.reshape(*lead, self.num_classes, 4).astype(jnp.float32), x)


# Stride-2 transposed convs run as sub-pixel convolutions: for PyTorch's
# ConvTranspose2d(k, stride 2, padding p), output pixel 2m + r reads input m + d through kernel
# tap t = 2 (m - i) + r + p, so each of the 4 output phases (ry, rx) is an ordinary stride-1
# conv over the input followed by depth-to-space. Same numbers as the transposed conv, but the
# gradients are those of a plain conv (XLA's CPU gradient of an input-dilated conv is ~10x
# slower). _TAPS[(k, p)][r] maps an input offset d (-1, 0, 1) to the kernel tap, or None.
_TAPS = {(4, 1): ({-1: 3, 0: 1}, {0: 2, 1: 0}), (2, 0): ({0: 0}, {0: 1})}


class Deconv2x(nn.Module):
  """ConvTranspose2d(kernel, stride 2, padding) with PyTorch semantics.

  Parameters: `kernel` [kh, kw, out, in] (torchvision's weight transposed (2, 3, 1, 0)) and
  `bias` [out].
  """

  features: int
  kernel: int
  padding: int
  dtype: layers.Dtype = jnp.float32
  convs: layers.Convs = layers.XLA  # how its convs are computed

  @nn.compact
  def __call__(self, x, channels=None):
    """x [N, H, W, C] -> [N, 2H, 2W, features], or with `channels` [N, K] (int) only those
    output channels of each sample, [N, 2H, 2W, K] (computed for them alone)."""
    k, c_in = self.kernel, x.shape[-1]
    # flax reads (.., out, in) as fan_in = out * k * k, fan_out = in * k * k: PyTorch's fan_out.
    w = self.param("kernel", _KAIMING_OUT, (k, k, self.features, c_in))
    b = self.param("bias", nn.initializers.zeros, (self.features,))
    x = x.astype(self.dtype)
    if channels is None:
      kernel, size = self._phase_kernel(w, c_in)  # [size, size, in, 4, out]
      pad = size // 2
      conv = self.convs.deconv_general
      y = conv(x, kernel.reshape(size, size, c_in, -1).astype(self.dtype), (1, 1),
               ((pad, pad), (pad, pad)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
      bias = b
    else:
      # The phase kernel and the per-sample patches and kernels are recomputed for the
      # backward pass rather than kept (the phase kernel 2.25x the size of w, the rest 9x and
      # 4 x 9 x K / H / W the size of x): stacks, a gather and slices.
      y = jax.checkpoint(self._per_sample)(x, w, channels)
      bias = b[channels][:, None, None, :]
    n, h, wd, _ = y.shape
    out = y.shape[-1] // 4
    y = y.reshape(n, h, wd, 2, 2, out).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(n, 2 * h, 2 * wd, out) + bias.astype(self.dtype)

  def _per_sample(self, x, w, channels):
    """x [N, H, W, in] with each sample's own output channels [N, K] of the phase kernel of
    `w` ([size, size, in, 4, out]): patches [N, H, W, size * size * in] x [N, ..., 4 * K]."""
    c_in = x.shape[-1]
    kernel, size = self._phase_kernel(w, c_in)
    pad = size // 2
    sub = jnp.take(kernel, channels, axis=-1)  # [size, size, in, 4, N, K]
    sub = jnp.moveaxis(sub, 4, 0)  # [N, kh, kw, in, 4, K]
    patches = self.convs.patches(x, size, pad)
    if not self.convs.patches_tap_major:  # (in, kh, kw)
      sub = sub.transpose(0, 3, 1, 2, 4, 5)  # [N, in, kh, kw, 4, K]
    sub = sub.reshape(x.shape[0], c_in * size * size, -1).astype(self.dtype)
    return jnp.einsum("nhwp,npc->nhwc", patches, sub)

  def _phase_kernel(self, w, c_in):
    taps = _TAPS[(self.kernel, self.padding)]
    offsets = sorted({d for t in taps for d in t})  # (-1, 0, 1) or (0,)
    zeros = jnp.zeros((c_in, self.features), w.dtype)
    rows = []
    for dy in offsets:
      cols = []
      for dx in offsets:
        phases = []
        for ry in (0, 1):
          for rx in (0, 1):
            ty, tx = taps[ry].get(dy), taps[rx].get(dx)
            phases.append(zeros if ty is None or tx is None else w[ty, tx].T)
        cols.append(jnp.stack(phases, axis=1))  # [in, 4, out], phase-major
      rows.append(jnp.stack(cols))
    return jnp.stack(rows), len(offsets)


def _deconv(features, kernel, padding, name, dtype, convs=layers.XLA):
  return Deconv2x(features, kernel, padding, dtype=dtype, convs=convs, name=name)


class MaskHead(nn.Module):
  num_classes: int = 14
  channels: int = 256
  num_convs: int = 4
  dtype: layers.Dtype = jnp.float32
  convs: layers.Convs = layers.XLA  # how its convs are computed

  def setup(self):
    self.fcn = [self.convs(self.channels, 3, name=f"mask_fcn{i + 1}", dtype=self.dtype,
                              kernel_init=_KAIMING_OUT)
                  for i in range(self.num_convs)]
    self.conv5_mask = _deconv(self.channels, 2, 0, "conv5_mask", self.dtype, self.convs)
    self.mask_fcn_logits = self.convs(self.num_classes, 1, name="mask_fcn_logits",
                                       dtype=self.dtype, kernel_init=_KAIMING_OUT)

  def features(self, x):
    """x [..., S, S, C] -> the 4-conv features [N, S, S, channels] (N = prod of leading)."""
    x = x.reshape(-1, *x.shape[-3:])
    for c in self.fcn:
      x = nn.relu(c(x))
    return x

  def logits(self, features):
    """The 4-conv features [N, S, S, channels] -> mask logits [N, 2S, 2S, num_classes]."""
    x = nn.relu(self.conv5_mask(features))
    return self.mask_fcn_logits(x).astype(jnp.float32)

  def __call__(self, x):
    """x [..., S, S, C] -> mask logits [..., 2S, 2S, num_classes]."""
    y = self.logits(self.features(x))
    return y.reshape(*x.shape[:-3], *y.shape[1:])

  def class_logits(self, x, classes):
    """x [N, S, S, C], classes [N] (int) -> each RoI's logits of its class [N, 2S, 2S]."""
    logits = self(x)
    return jnp.einsum("nhwc,nc->nhw", logits,
                      jax.nn.one_hot(classes, self.num_classes, dtype=logits.dtype))


class LandmarkHead(nn.Module):
  num_landmarks: int = 294
  channels: int = 512
  num_convs: int = 8
  dtype: layers.Dtype = jnp.float32
  convs: layers.Convs = layers.XLA  # how its convs are computed

  def setup(self):
    self.fcn = [self.convs(self.channels, 3, name=f"kp_fcn{i + 1}", dtype=self.dtype,
                              kernel_init=_KAIMING_OUT)
                  for i in range(self.num_convs)]
    self.kps_score_lowres = _deconv(self.num_landmarks, 4, 1, "kps_score_lowres", self.dtype,
                                    self.convs)

  def features(self, x):
    """x [..., S, S, C] -> the 8-conv features [N, S, S, channels] (N = prod of leading)."""
    x = x.reshape(-1, *x.shape[-3:])
    for c in self.fcn:
      x = nn.relu(c(x))
    return x

  def block_logits(self, x, channels):
    """Heatmap logits [N, 4S, 4S, K] of the landmark channels [N, K] of each RoI
    (x [N, S, S, C]): the deconv is evaluated for those channels only, then upsampled x2
    (bilinear) as in `__call__`."""
    return self.block_logits_of_features(self.features(x), channels)

  def block_logits_of_features(self, features, channels):
    """`block_logits` from the 8-conv features [N, S, S, channels] (`features`)."""
    y = self.kps_score_lowres(features, channels).astype(jnp.float32)
    n, h, w, k = y.shape
    return jax.image.resize(y, (n, 2 * h, 2 * w, k), "bilinear")

  def __call__(self, x):
    """x [..., S, S, C] -> heatmap logits [..., 4S, 4S, num_landmarks]."""
    lead = x.shape[:-3]
    y = self.kps_score_lowres(self.features(x))
    n, h, w, k = y.shape
    y = jax.image.resize(y.astype(jnp.float32), (n, 2 * h, 2 * w, k), "bilinear")
    return y.reshape(*lead, 2 * h, 2 * w, k)
