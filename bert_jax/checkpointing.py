"""Orbax checkpoints of (train state, data-iterator position): restore-or-init, async saves, keep-N.

Layout: WORKDIR/checkpoints/<step>/{state, data}. `state` is the TrainState
(params, optimizer, step, rng), restored straight into its shardings on any
mesh; `data` holds one JSON file per process with its iterator position.
Orbax writes each step into a temporary folder and renames it when complete,
and deletes old steps only after a newer one is finalised, so a crash never
costs the last good checkpoint. An unreadable step is reported and skipped in
favour of the one before it, never deleted.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import grain.checkpoint as grain_ckpt
import jax
import orbax.checkpoint as ocp
from absl import logging

from bert_jax.runtime import fileio


class CheckpointMismatch(ValueError):
  """A readable checkpoint whose tree does not fit the configured model."""


class SaveFailed(RuntimeError):
  """A checkpoint or model folder could not be written (disk full, permission, object store); the run stops."""


def error_cause(error: BaseException) -> str:
  """"Type: message" on one line, shortened around the middle (the OS's reason comes last)."""
  text = " ".join(str(error).split())
  text = text if len(text) <= 400 else f"{text[:160]} ... {text[-220:]}"
  return f"{type(error).__name__}: {text}"


def folder_write_failed(what: str, path: str, error: BaseException, state: str, relaunch: str) -> SaveFailed:
  """The error for a model folder that could not be written: what, where, why, what is intact, what next.

  state: what is intact ("The checkpoints are complete"); relaunch: what the same command then does.
  """
  return SaveFailed(f"writing {what} to {path} failed ({error_cause(error)}). {state}; free space or fix the "
                    f"path's permissions and relaunch the same command: {relaunch}.")


def _path(path) -> str:
  """A key path as "a/b/0/c", whatever the container types (dataclass fields, dicts, tuples)."""
  parts = []
  for entry in path:
    for attr in ("name", "key", "idx"):
      if hasattr(entry, attr):
        parts.append(str(getattr(entry, attr)))
        break
  return "/".join(parts)


class Checkpointer:
  """Wraps an Orbax CheckpointManager for one run directory."""

  def __init__(self, directory: str, *, keep: int = 3, async_save: bool = True):
    self.directory = fileio.resolve(directory)  # local (absolute) or gs://
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=async_save)
    self.manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={"state": ocp.StandardCheckpointHandler(), "data": grain_ckpt.CheckpointHandler()})
    self._writing: int | None = None  # the step of the save in flight (its errors surface later)
    self._failed = False

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(self, step: int, state, data_iterator=None, *, force: bool = False) -> bool:
    """Starts writing `step` (asynchronously); a failure of this or the save in flight raises SaveFailed."""
    items = {"state": ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items["data"] = grain_ckpt.CheckpointSave(data_iterator)
    try:
      saved = self.manager.save(step, args=ocp.args.Composite(**items), force=force)
    except Exception as e:  # noqa: BLE001 - whatever the storage raised, reported with the step and path
      raise self._save_failed(step, e) from e
    if saved:
      self._writing = step
    return saved

  def _save_failed(self, step: int | None, error: BaseException) -> SaveFailed:
    """The error to stop with: which step failed where, and the complete checkpoints, each read back."""
    self._failed = True
    try:  # the storage that failed the save may fail this listing too: the message must survive it
      self.manager.reload()
      listed = self.steps()
    except Exception:  # noqa: BLE001
      listed = []
    # An asynchronous save fails in the background and is reported by the next call: name that step.
    unfinished = self._writing is not None and self._writing not in listed
    failed = self._writing if unfinished else step
    done = [s for s in listed if s != failed]
    intact = [s for s in done if self._readable(s)]
    damaged = sorted(set(done) - set(intact))
    cause = error_cause(error)
    what = (f"saving checkpoint step {failed} to {self.directory / str(failed)}" if failed is not None
            else f"a checkpoint save to {self.directory}")
    return SaveFailed(
        f"{what} failed ({cause}). "
        + (f"The earlier checkpoints (steps {intact}) are complete and read back. " if intact else
           "No earlier checkpoint exists. ")
        + (f"steps {damaged} do not read back. " if damaged else "")
        + "The unfinished step is an orbax temporary folder that a resumed run ignores. Free space or fix "
        + "the path's permissions and relaunch the same command"
        + (f": it resumes from step {intact[-1]}." if intact else "."))

  def _readable(self, step: int) -> bool:
    """Whether a finalised step's metadata reads back (its tree and the files Orbax commits last)."""
    try:
      return self.manager.item_metadata(step)["state"] is not None
    except Exception:  # noqa: BLE001
      return False

  def restore_latest(self, abstract_state, data_iterator=None, log: Callable[[str], None] = logging.warning):
    """(state, step) from the newest readable checkpoint, or (None, None) if there is none.

    abstract_state: a tree of jax.ShapeDtypeStruct with shardings (the target layout).
    """
    for step in reversed(self.steps()):
      problems = self.mismatches(step, abstract_state)
      if problems:
        # A readable checkpoint of another model is a configuration error, not damage: stop, touch nothing.
        raise CheckpointMismatch(
            f"checkpoint step {step} in {self.directory} does not fit the configured model (was the config "
            f"changed?); nothing was modified:\n  " + "\n  ".join(problems[:12])
            + ("\n  ..." if len(problems) > 12 else "") + "\nUse the config that wrote it, or a new workdir.")
      try:
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iterator is not None and (self.directory / str(step) / "data").is_dir():
          items["data"] = grain_ckpt.CheckpointRestore(data_iterator)
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        return restored["state"], step
      except Exception as e:  # noqa: BLE001 - any failure to read means: try the previous step
        log(f"checkpoint step {step} in {self.directory} is unreadable ({type(e).__name__}: {str(e)[:300]}); "
            "falling back to the previous one")
        self._set_aside(step)
    return None, None

  def mismatches(self, step: int, abstract_state) -> list[str]:
    """Differences between a step's saved state tree and abstract_state (names, shapes); [] if it fits.

    Unreadable metadata gives [] too: the restore attempt then reports the damage.
    """
    try:
      saved_tree = self.manager.item_metadata(step)["state"]
    except Exception:  # noqa: BLE001
      return []
    if saved_tree is None:
      return []
    saved = {_path(p): tuple(leaf.shape) for p, leaf in jax.tree_util.tree_flatten_with_path(saved_tree)[0]
             if hasattr(leaf, "shape")}
    wanted = {_path(p): tuple(leaf.shape) for p, leaf in jax.tree_util.tree_flatten_with_path(abstract_state)[0]}
    problems = [f"{k}: saved shape {saved[k]}, the model needs {v}" for k, v in wanted.items()
                if k in saved and saved[k] != v]
    problems += [f"{k}: the model needs it, the checkpoint lacks it" for k in wanted if k not in saved]
    problems += [f"{k}: in the checkpoint, not in the model" for k in saved if k not in wanted]
    return problems

  def _set_aside(self, step: int) -> None:
    """Moves an unreadable step out of Orbax's view (kept on disk for inspection, not deleted)."""
    if jax.process_index() != 0:
      return
    src = self.directory / str(step)
    if src.is_dir():
      src.rename(self.directory / f"unreadable-{step}-{int(time.time())}")
    self.manager.reload()

  def wait(self) -> None:
    """Blocks until the save in flight is complete; its failure raises SaveFailed."""
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # noqa: BLE001
      raise self._save_failed(self._writing, e) from e
    self._writing = None

  def close(self) -> None:
    """Waits for the save in flight and releases the manager (after a failure, without raising again)."""
    try:
      if not self._failed:
        self.wait()
    finally:
      try:
        self.manager.close()
      except Exception:  # noqa: BLE001 - the failure was reported; closing must not hide it
        if not self._failed:
          raise

