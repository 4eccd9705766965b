"""The one place that asks which backend runs, outside the model.

- `resolve(model_cfg)`: the model's hardware-dependent implementation choices
  (`config.model.kernels`), a value `auto` replaced by the backend's choice; `models.build`
  calls it once, and the modules get what it says as explicit fields.
- `tune_host_allocator()`: glibc malloc settings for XLA:CPU, applied in this process
  (`mallopt`), on the CPU backend only. XLA:CPU allocates each execution's large temporary
  buffers afresh; with glibc's defaults a large buffer is a fresh mapping, freed memory is
  trimmed and worker threads get arenas of their own, so every step touches gigabytes of new
  pages (a train step of `configs/bench_cpu.py`: 1.3 to 1.9 million minor page faults, 4 to 10 s
  of system time). With one arena, large buffers from the heap and no trimming, none
  (benchmarks/RESULTS.md). The process keeps its peak heap between steps. On GPU and TPU hosts
  nothing is changed (one arena would serialise tf.data's worker threads there).
  `MATCH_RCNN_MALLOC_TUNING=0` turns it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys

import ml_collections

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
# One arena (a second one, a heap of 64 MB mappings, maps every larger request afresh); no
# request served by a fresh mapping; freed memory kept for the next step.
MALLOPT = {"M_ARENA_MAX": (_M_ARENA_MAX, 1), "M_MMAP_MAX": (_M_MMAP_MAX, 0),
           "M_TRIM_THRESHOLD": (_M_TRIM_THRESHOLD, 2 ** 31 - 1)}
OPT_OUT = "MATCH_RCNN_MALLOC_TUNING"

KERNEL_CHOICES = {"conv": ("xla", "cpu")}


def name() -> str:
  """The default backend's platform name: 'cpu', 'gpu' or 'tpu'."""
  import jax  # here, so that `apply_mallopt` alone does not load JAX
  return jax.default_backend()


def resolve(model_cfg) -> ml_collections.ConfigDict:
  """A copy of `model_cfg` (config.model) whose `kernels` fields are explicit: `auto` becomes
  the running backend's choice ("cpu" kernels on the CPU, XLA's own ops elsewhere)."""
  cfg = ml_collections.ConfigDict(model_cfg.to_dict() if hasattr(model_cfg, "to_dict")
                                  else model_cfg)
  kernels = cfg.get("kernels", ml_collections.ConfigDict({}))
  with cfg.ignore_type():
    cfg.kernels = kernels
  for field, choices in KERNEL_CHOICES.items():
    value = kernels.get(field, "auto")
    if value == "auto":
      value = "cpu" if name() == "cpu" else "xla"
    if value not in choices:
      raise ValueError(f"config.model.kernels.{field} must be 'auto' or one of {choices}, "
                       f"got {value!r}")
    with cfg.ignore_type():
      cfg.kernels[field] = value
  return cfg


def tune_host_allocator(environ=None) -> dict:
  """Applies `MALLOPT` in this process when the CPU backend runs on glibc (and the user has not
  set `MATCH_RCNN_MALLOC_TUNING=0`); returns the settings applied ({} when none). Call it at
  the start of an entry point, before the first step."""
  environ = os.environ if environ is None else environ
  if environ.get(OPT_OUT, "1") == "0" or name() != "cpu":
    return {}
  return apply_mallopt()


def apply_mallopt() -> dict:
  """Applies `MALLOPT` in this process on glibc, whatever the backend (a process that runs no
  JAX, such as the benchmark's torchvision side, takes the same settings); returns what was
  applied ({} elsewhere)."""
  if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
    return {}
  libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
  applied = {}
  for key, (param, value) in MALLOPT.items():
    if libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)) == 1:
      applied[key] = value
  return applied
