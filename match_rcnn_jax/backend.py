"""The one place that asks which backend runs, outside the model.

- `resolve(model_cfg)`: how the model is computed on this hardware
  (`config.model.implementation`), each `auto` replaced by the backend's choice;
  `models.match_rcnn.build` calls it once, and the modules get what it says (the convolutions
  as an injected `models.layers.Convs`, the rest as explicit fields).
- `tune_host_allocator()`: the host memory policy of XLA:CPU, applied in this process before
  a backend starts, when the process will run on the CPU backend only. XLA:CPU allocates each
  execution's large temporary buffers afresh; with glibc's defaults a large buffer is a fresh
  mapping, freed memory is trimmed and worker threads get arenas of their own, so every step
  touches gigabytes of new pages; with one arena, large buffers from the heap and no trimming
  (`mallopt`), it touches none. The process keeps its peak heap between steps. And
  computations run synchronously (`jax_cpu_enable_async_dispatch` off): with asynchronous
  dispatch an execution's outputs are ready (and `block_until_ready` returns) a moment before
  its temporaries are freed, so the next step could allocate its own first, and the heap then
  held two steps' temporaries. On GPU and TPU hosts nothing is changed (one arena would
  serialise tf.data's worker threads there). `MATCH_RCNN_MALLOC_TUNING=0` turns it off.
- `release_free_heap()`: the heap's free pages back to the system once (`malloc_trim`); train.py
  has the training loop call it between compiling the train step and running it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import importlib.util
import os
import platform
import sys

import ml_collections

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
# One arena (a second one, a heap of 64 MB mappings, maps every larger request afresh); no
# request served by a fresh mapping; freed memory kept for the next step (-1: never trim; a
# finite threshold gives a step's XLA temporaries back to the kernel after every step, and the
# next step faults them in again).
MALLOPT = {"M_ARENA_MAX": (_M_ARENA_MAX, 1), "M_MMAP_MAX": (_M_MMAP_MAX, 0),
           "M_TRIM_THRESHOLD": (_M_TRIM_THRESHOLD, -1)}
OPT_OUT = "MATCH_RCNN_MALLOC_TUNING"
# JAX's option for asynchronous dispatch on the CPU backend (`tune_host_allocator` turns it off).
ASYNC_DISPATCH = "jax_cpu_enable_async_dispatch"


def name() -> str:
  """The default backend's platform name: 'cpu', 'gpu' or 'tpu'."""
  import jax  # here, so that `apply_mallopt` alone does not load JAX
  return jax.default_backend()


IMPLEMENTATION_CHOICES = {"conv": ("xla", "cpu"), "roi_align": ("gather", "einsum"),
                          "train_heads": ("chunked", "dense")}
IMPLEMENTATION_SIZES = ("roi_align_piece_mb", "train_head_chunk", "train_head_keep_rows",
                        "infer_head_chunk")
CPU_ROI_ALIGN_PIECE_MB = 128
CPU_INFER_HEAD_CHUNK = 10


def _auto(field: str, platform_name: str):
  """The backend's choice for `config.model.implementation.<field>`: auto (None for sizes)."""
  cpu = platform_name == "cpu"
  if field == "conv":
    return "cpu" if cpu else "xla"
  if field == "roi_align":
    return "einsum" if platform_name == "tpu" else "gather"
  if field == "roi_align_piece_mb":
    return CPU_ROI_ALIGN_PIECE_MB if cpu else 0
  if field == "infer_head_chunk":
    return CPU_INFER_HEAD_CHUNK if cpu else 0
  return "chunked" if cpu else "dense"  # train_heads


def resolve(model_cfg, platform_name: str | None = None) -> ml_collections.ConfigDict:
  """A copy of `model_cfg` (config.model; an older layout is upgraded first,
  `configs.model.upgrade`) whose `implementation` fields are explicit: each `auto` (None for
  a size) becomes the running backend's choice (configs/model.py says which), or that of
  `platform_name` ("cpu", "gpu", "tpu") when given (e.g. to compile an accelerator's program
  on the CPU for its memory analysis)."""
  from configs.model import upgrade
  cfg = upgrade(model_cfg)
  impl, platform_name = cfg.implementation, platform_name or name()
  for field, choices in IMPLEMENTATION_CHOICES.items():
    if impl[field] == "auto":
      impl[field] = _auto(field, platform_name)
    if impl[field] not in choices:
      raise ValueError(f"config.model.implementation.{field} must be 'auto' or one of "
                       f"{choices}, got {impl[field]!r}")
  for field in IMPLEMENTATION_SIZES:
    if impl[field] is None:  # auto
      impl[field] = _auto(field, platform_name)
    if not isinstance(impl[field], int) or impl[field] < 0:
      raise ValueError(f"config.model.implementation.{field} must be an integer >= 0, "
                       f"got {impl[field]!r}")
  return cfg


def planned_platform() -> str | None:
  """The platform JAX will run on, found without starting a backend: the first of
  `JAX_PLATFORMS` (or `jax.config.jax_platforms`) when set, else "cpu" when no accelerator
  plugin is installed (no `jax_plugins` entry point or module, no libtpu); None when it cannot
  be told before a backend starts."""
  import jax
  platforms = jax.config.jax_platforms or os.environ.get("JAX_PLATFORMS", "")
  if platforms:
    return platforms.split(",")[0].strip().lower()
  if list(importlib.metadata.entry_points(group="jax_plugins")):
    return None
  if importlib.util.find_spec("jax_plugins") or importlib.util.find_spec("libtpu"):
    return None
  return "cpu"


def tune_host_allocator(environ=None) -> dict:
  """Applies the CPU backend's host memory policy in this process when it will run on the CPU
  backend (and the user has not set `MATCH_RCNN_MALLOC_TUNING=0`): `MALLOPT` on glibc, and
  synchronous dispatch (`jax_cpu_enable_async_dispatch` off: a call returns once its
  temporaries are freed, so one step's temporaries at a time); returns the settings applied
  ({} when none).

  Call it at the start of an entry point, before anything starts a JAX backend: the arena
  limit binds only threads that have not allocated yet, and a backend starts XLA's thread
  pools (applied after that, the train step of configs/bench_cpu.py kept its million page
  faults a step); the dispatch mode is read when the CPU backend starts. Where the platform
  cannot be told before a backend starts (`planned_platform` None: an accelerator plugin is
  installed), nothing is changed."""
  environ = os.environ if environ is None else environ
  if environ.get(OPT_OUT, "1") == "0" or planned_platform() != "cpu":
    return {}
  import jax
  jax.config.update(ASYNC_DISPATCH, False)
  return {**apply_mallopt(), ASYNC_DISPATCH: False}


def _libc():
  if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
    return None
  return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def release_free_heap() -> bool:
  """Gives the pages of the heap's free memory back to the system (glibc's `malloc_trim(0)`),
  once, e.g. after compiling: with trimming off (`MALLOPT`), the memory that XLA's compiler
  freed stays resident, and the train step's temporaries, allocated above it, add to it.
  True where it ran (glibc)."""
  libc = _libc()
  if libc is None:
    return False
  libc.malloc_trim(ctypes.c_size_t(0))
  return True


def apply_mallopt() -> dict:
  """Applies `MALLOPT` in this process on glibc, whatever the backend (a process that runs no
  JAX, such as the benchmark's torchvision side, takes the same settings); returns what was
  applied ({} elsewhere)."""
  libc = _libc()
  if libc is None:
    return {}
  applied = {}
  for key, (param, value) in MALLOPT.items():
    if libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)) == 1:
      applied[key] = value
  return applied
