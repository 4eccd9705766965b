"""match_rcnn_jax.backend: the model's `auto` kernels resolved for the backend, and the
in-process glibc allocator settings."""

import os
import platform
import subprocess
import sys

import jax
import ml_collections
import pytest

from configs.model import model_config
from match_rcnn_jax import backend
from match_rcnn_jax.models import match_rcnn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_resolve_picks_the_backends_choices_and_keeps_explicit_ones():
  cfg = model_config()
  impl = cfg.implementation
  assert (impl.conv, impl.roi_align, impl.train_heads) == ("auto",) * 3
  assert impl.roi_align_piece_mb is None and impl.infer_head_chunk is None
  resolved = backend.resolve(cfg).implementation
  on_cpu = jax.default_backend() == "cpu"
  assert resolved.conv == ("cpu" if on_cpu else "xla")
  assert resolved.roi_align == ("einsum" if jax.default_backend() == "tpu" else "gather")
  assert resolved.train_heads == ("chunked" if on_cpu else "dense")
  assert resolved.roi_align_piece_mb == (backend.CPU_ROI_ALIGN_PIECE_MB if on_cpu else 0)
  assert resolved.infer_head_chunk == (backend.CPU_INFER_HEAD_CHUNK if on_cpu else 0)
  assert impl.conv == "auto"  # the input is not changed
  impl.conv, impl.roi_align, impl.train_heads = "xla", "einsum", "dense"
  impl.roi_align_piece_mb, impl.infer_head_chunk = 7, 0
  explicit = backend.resolve(cfg).implementation
  assert (explicit.conv, explicit.roi_align, explicit.train_heads, explicit.roi_align_piece_mb,
          explicit.infer_head_chunk) == ("xla", "einsum", "dense", 7, 0)
  for field, bad in (("conv", "winograd"), ("roi_align", "bilinear"), ("train_heads", "some"),
                     ("train_head_chunk", -1), ("roi_align_piece_mb", -2),
                     ("infer_head_chunk", -3)):
    wrong = model_config()
    wrong.implementation[field] = bad
    with pytest.raises(ValueError, match=f"implementation.{field}"):
      backend.resolve(wrong)


def test_resolve_reads_older_exports_layouts():
  """A config.model of an earlier layout resolves to today's: the oldest (`train` with the
  head chunking, roi_align.backend, no implementation block) and the next (`kernels`,
  `detections.head_chunk`)."""
  old = model_config().to_dict()
  old.pop("implementation")
  old["train"] = {**old.pop("sampling"), "head_chunk": 8, "head_keep_rows": 16}
  old["roi_align"]["backend"] = "einsum"
  resolved = backend.resolve(ml_collections.ConfigDict(old))
  assert resolved.sampling.to_dict() == model_config().sampling.to_dict()
  assert "train" not in resolved and "backend" not in resolved.roi_align
  impl = resolved.implementation
  assert impl.train_heads == "chunked"
  assert impl.train_head_chunk == 8 and impl.train_head_keep_rows == 16
  assert impl.roi_align == "einsum"
  assert impl.conv in ("cpu", "xla")
  kernels = model_config().to_dict()
  kernels["kernels"] = {**kernels.pop("implementation"), "conv": "xla", "train_head_chunk": 4}
  del kernels["kernels"]["infer_head_chunk"]
  kernels["detections"]["head_chunk"] = 3
  resolved = backend.resolve(ml_collections.ConfigDict(kernels))
  assert "kernels" not in resolved and "head_chunk" not in resolved.detections
  assert resolved.detections.to_dict() == model_config().detections.to_dict()
  impl = resolved.implementation
  assert (impl.conv, impl.train_head_chunk, impl.infer_head_chunk) == ("xla", 4, 3)


def test_build_resolves_and_the_model_refuses_auto():
  model = match_rcnn.build(model_config())
  assert model.config.implementation.conv in ("cpu", "xla")
  unresolved = match_rcnn.MatchRCNN(ml_collections.FrozenConfigDict(model_config()))
  with pytest.raises(ValueError, match="match_rcnn.build"):
    match_rcnn.init(unresolved, jax.random.PRNGKey(0), (64, 64))


@pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc"
                    or jax.default_backend() != "cpu", reason="glibc on the CPU backend only")
def test_tune_host_allocator_applies_mallopt_unless_opted_out():
  assert backend.tune_host_allocator({backend.OPT_OUT: "0"}) == {}
  previous = jax.config.values[backend.ASYNC_DISPATCH]
  try:
    applied = backend.tune_host_allocator({})
  finally:  # the dispatch mode is read when a backend starts: this process's is unchanged
    jax.config.update(backend.ASYNC_DISPATCH, previous)
  assert applied == {**{k: v for k, (_, v) in backend.MALLOPT.items()},
                     backend.ASYNC_DISPATCH: False}


_ONE_STEP_AT_A_TIME_SCRIPT = """
import ctypes, sys
from match_rcnn_jax import backend
if sys.argv[1] == "tuned":
  backend.tune_host_allocator({})  # before the backend starts, as the entry points call it
import jax, jax.numpy as jnp

class Info(ctypes.Structure):  # glibc's struct mallinfo2
  _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                             "usmblks", "fsmblks", "uordblks", "fordblks",
                                             "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
def in_use_mb():  # allocated bytes, heap and mappings
  info = libc.mallinfo2()
  return (info.uordblks + info.hblkhd) / 2**20

@jax.jit
def step(x):  # 256 MB of temporaries, a loop over them
  y = jnp.broadcast_to(x, (64, *x.shape)) + 1
  y = jax.lax.fori_loop(0, 3, lambda i, y: jnp.sqrt(y * 1.5 + 1), y)
  return x + jnp.sum(y) * 1e-9
x = jax.block_until_ready(step(jnp.ones((1024, 1024), jnp.float32)))
base = in_use_mb()
x = step(x)
ready = x.is_ready()  # right after the call, before any wait
held = []
for _ in range(20):
  x = jax.block_until_ready(step(x))
  held.append(in_use_mb() - base)
print(int(ready), max(held))
"""


def test_tuned_cpu_steps_free_their_temporaries_before_returning():
  """With the CPU policy applied a call returns when the computation is done, its 256 MB of
  temporaries freed: a loop of steps never holds two steps' temporaries. (Without it the call
  returns at once, and the temporaries are freed a moment after the outputs are ready: some
  steps of the loop find the previous step's still allocated.)"""
  out = {}
  for mode in ("tuned", "plain"):
    res = subprocess.run([sys.executable, "-c", _ONE_STEP_AT_A_TIME_SCRIPT, mode],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    ready, held = res.stdout.split()[-2:]
    out[mode] = (ready == "1", float(held))
  assert out["tuned"][0] and not out["plain"][0]  # synchronous / asynchronous dispatch
  assert out["tuned"][1] < 64  # MB still allocated once a step has returned


_RELEASE_SCRIPT = """
import os, numpy as np
from match_rcnn_jax import backend
backend.apply_mallopt()  # no trimming, no fresh mappings: freed memory stays resident
def rss_mb():
  return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
big = np.ones(400 * 2**18, np.float32)  # 400 MB on the heap
small = np.ones(1024, np.float32)  # allocated above it: the heap's top cannot shrink
before = rss_mb()
del big
freed = rss_mb()
assert backend.release_free_heap()
print(before, freed, rss_mb())
"""


@pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc",
                    reason="glibc only")
def test_release_free_heap_gives_freed_pages_back():
  """With the settings of `MALLOPT` freed memory stays resident until `release_free_heap`."""
  res = subprocess.run([sys.executable, "-c", _RELEASE_SCRIPT], capture_output=True,
                       text=True, cwd=ROOT)
  assert res.returncode == 0, res.stderr[-2000:]
  before, freed, released = map(float, res.stdout.split())
  assert freed > before - 50  # freed but kept
  assert released < freed - 300  # given back


def test_planned_platform_follows_jax_platforms(monkeypatch):
  """The platform is told without starting a backend: JAX_PLATFORMS first, and the tuning is
  skipped for an accelerator."""
  if jax.config.jax_platforms:
    pytest.skip("jax_platforms is set in this process's config")
  monkeypatch.setenv("JAX_PLATFORMS", "tpu,cpu")
  assert backend.planned_platform() == "tpu"
  assert backend.tune_host_allocator({}) == {}
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  assert backend.planned_platform() == "cpu"
