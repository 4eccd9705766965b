"""Trains the tiny config into a workdir; with `--kill_at_save S` the process SIGKILLs itself
while orbax commits the checkpoint of step S (its files written, the final rename pending), as a
machine losing power mid-write would. Args: data_dir workdir [--kill_at_save S]."""

import os
import signal
import sys

from orbax.checkpoint._src.path import async_path

from configs import tiny
from match_rcnn_jax.training import loop


def main():
  data_dir, workdir = sys.argv[1], sys.argv[2]
  if "--kill_at_save" in sys.argv:
    step = sys.argv[sys.argv.index("--kill_at_save") + 1]
    rename = async_path.rename

    async def dying_rename(src, dst):
      if os.path.basename(str(dst)) == step:
        os.kill(os.getpid(), signal.SIGKILL)
      return await rename(src, dst)

    async_path.rename = dying_rename
  config = tiny.get_config()
  config.data_dir = data_dir
  config.train.eval_at_end = False
  loop.train(config, workdir)


if __name__ == "__main__":
  main()
