"""Orbax checkpoints of the train state: periodic and final saves, keep-last-N, atomic writes
(orbax writes to a temporary directory and renames it when complete), resume from the latest.
Model variables alone and the inference export: `models.export`.
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


def manager(workdir: str, keep: int) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), "checkpoints"),
      options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=False))


def save(mngr: ocp.CheckpointManager, step: int, state) -> None:
  mngr.save(step, args=ocp.args.StandardSave(jax.device_get(state)), force=True)
  mngr.wait_until_finished()


def restore_latest(mngr: ocp.CheckpointManager, template):
  """(state, step) of the latest complete checkpoint, or (None, 0) when there is none."""
  step = mngr.latest_step()
  if step is None:
    return None, 0
  state = mngr.restore(step, args=ocp.args.StandardRestore(jax.device_get(template)))
  return state, step


