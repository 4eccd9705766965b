"""The entry points' glibc malloc settings: one restart with them set, user values kept."""

import json
import os
import platform
import subprocess
import sys

import pytest

from match_rcnn_jax.tools import host_malloc

SCRIPT = """
import json, os, sys
from match_rcnn_jax.tools import host_malloc
print("start", flush=True)
host_malloc.reexec_with_tuned_malloc()
print(json.dumps({"argv": sys.argv[1:], "env": {k: os.environ.get(k) for k in
                  (*host_malloc.SETTINGS, host_malloc.OPT_OUT)}}))
"""


def _run(tmp_path, env):
  script = tmp_path / "entry.py"
  script.write_text(SCRIPT)
  base = {k: v for k, v in os.environ.items()
          if k not in host_malloc.SETTINGS and k != host_malloc.OPT_OUT}
  res = subprocess.run([sys.executable, str(script), "--flag", "a b"], capture_output=True,
                       text=True, env={**base, **env})
  assert res.returncode == 0, res.stderr[-3000:]
  lines = res.stdout.strip().splitlines()
  return lines[:-1], json.loads(lines[-1])


@pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc",
                    reason="glibc only")
def test_restarts_once_with_the_settings_keeping_user_values(tmp_path):
  before, out = _run(tmp_path, {"MALLOC_ARENA_MAX": "4"})
  assert before == ["start", "start"]  # the script ran twice: restarted exactly once
  assert out["argv"] == ["--flag", "a b"]
  assert out["env"]["MALLOC_ARENA_MAX"] == "4"  # the user's value wins
  assert out["env"]["MALLOC_MMAP_THRESHOLD_"] == host_malloc.SETTINGS["MALLOC_MMAP_THRESHOLD_"]
  assert out["env"]["MALLOC_TRIM_THRESHOLD_"] == host_malloc.SETTINGS["MALLOC_TRIM_THRESHOLD_"]
  before, out = _run(tmp_path, {host_malloc.OPT_OUT: "0"})
  assert before == ["start"]  # opted out: no restart, nothing set
  assert out["env"]["MALLOC_MMAP_THRESHOLD_"] is None


def test_tuned_environment_is_a_no_op_when_set_or_opted_out():
  full = {**host_malloc.SETTINGS, "PATH": "/bin"}
  assert host_malloc.tuned_environment(full) is None
  assert host_malloc.tuned_environment({host_malloc.OPT_OUT: "0"}) is None
