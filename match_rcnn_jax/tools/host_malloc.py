"""glibc malloc settings for XLA:CPU, applied by re-executing the entry point.

XLA:CPU allocates each execution's large temporary buffers afresh. With glibc's defaults, a
buffer above the mmap threshold (at most 32 MB) is a fresh mapping, freed memory is trimmed, and
worker threads get arenas of their own, whose large requests are fresh mappings too: every step
then touches gigabytes of new pages. A train step of `configs/bench_cpu.py` took 1.3 to 1.9
million minor page faults and 4 to 10 s of system time per step; with the settings below, none
(benchmarks/RESULTS.md). glibc reads them from the environment at start-up only, so the entry
points (`train.py`, `eval.py`, the benchmarks) call `reexec_with_tuned_malloc()` first, which
restarts the process once with them set. The process keeps its peak heap instead of returning
it to the system between steps.

Values the user has set win; `MATCH_RCNN_MALLOC_TUNING=0` turns this off. Nothing happens off
Linux / glibc.
"""

from __future__ import annotations

import os
import platform
import sys

SETTINGS = {
    # One arena: a second one (a heap of 64 MB mappings) maps every larger request afresh.
    "MALLOC_ARENA_MAX": "1",
    "MALLOC_MMAP_THRESHOLD_": str(16 << 30),  # large buffers from the heap, not fresh mappings
    "MALLOC_TRIM_THRESHOLD_": str(16 << 30),  # freed memory is kept for the next step
}
OPT_OUT = "MATCH_RCNN_MALLOC_TUNING"


def tuned_environment(environ) -> dict | None:
  """The environment to restart with, or None when there is nothing to do."""
  if environ.get(OPT_OUT, "1") == "0":
    return None
  if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
    return None
  if all(k in environ for k in SETTINGS):
    return None
  return {**SETTINGS, **environ}


def reexec_with_tuned_malloc() -> None:
  """Restarts this process (same interpreter, options and arguments) with `SETTINGS` in its
  environment, unless they are set already; call it before anything else is imported."""
  env = tuned_environment(os.environ)
  if env is None:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
