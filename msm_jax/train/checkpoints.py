"""Orbax checkpoints of a training run: the train state, the data iterator position, metadata.

One `CheckpointManager` per stage under `<workdir>/checkpoints/<stage>`: saves every N steps
and at the end, keeps the last K, writes atomically (a half-written step is never read back).
A checkpoint holds three items:
  state  - the TrainState pytree (params, BatchNorm statistics, optimiser states, step, rng);
  data   - the input pipeline's iterator state (JSON), so a resumed run sees exactly the
           batches an uninterrupted run would have seen;
  meta   - JSON: config name, epoch, anything a reader needs without loading arrays.
Each step's meta carries a checksum of every array of its state, taken from the arrays it
saved; a restore recomputes them, so bits flipped on disk are found even where the files still
decode. A step that cannot be read back, or whose arrays fail their checksums, is skipped for
the next older one with a warning naming the step (and the array); nothing is deleted. A
training run sets such steps aside (`damaged_step_<N>`), so it can save that step again.
"""

import hashlib
import os
import time
import warnings

import jax
import numpy as np
import orbax.checkpoint as ocp

CHECKSUMS = "checksums"  # the meta item's field: {array path: BLAKE2b of its bytes}
DAMAGED_PREFIX = "damaged_step_"


class CheckpointMismatchError(ValueError):
  """A checkpoint's arrays do not match the state the current config builds."""


class CheckpointUnreadableError(RuntimeError):
  """No checkpoint step of a directory can be restored."""


class CheckpointFallbackWarning(UserWarning):
  """The newest checkpoint step could not be restored; an older one is used."""


def checkpoint_manager(directory: str, every_steps: int, keep: int) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
    save_interval_steps=every_steps,
    max_to_keep=keep,
    create=True,
    # Synchronous saves: a SIGKILL right after `save` returns must not lose the step.
    enable_async_checkpointing=False,
  )
  # Handlers named up front (not only by the save/restore args), so `item_metadata` can read
  # a step's array shapes without restoring it.
  handlers = {
    "state": ocp.StandardCheckpointHandler(),
    "data": ocp.JsonCheckpointHandler(),
    "meta": ocp.JsonCheckpointHandler(),
  }
  return ocp.CheckpointManager(os.path.abspath(directory), options=options, item_handlers=handlers)


def save(
  manager: ocp.CheckpointManager,
  step: int,
  state,
  data_state: dict,
  meta: dict,
  force: bool = False,
) -> bool:
  """Save when the interval says so (or `force`); returns whether a checkpoint was written.
  ``meta`` gets the state's checksums (`state_checksums`)."""
  if not (force or manager.should_save(step)):
    return False
  meta = {**meta, CHECKSUMS: state_checksums(state)}
  return manager.save(
    step,
    args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data=ocp.args.JsonSave(data_state),
      meta=ocp.args.JsonSave(meta),
    ),
    force=force,
  )


def state_checksums(state) -> dict:
  """{array path: BLAKE2b hex digest of its bytes} for every array this process holds whole
  (a multi-host shard is left out)."""
  checksums = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
    if getattr(leaf, "is_fully_addressable", True):
      data = np.ascontiguousarray(jax.device_get(leaf))
      checksums[jax.tree_util.keystr(path)] = hashlib.blake2b(
        data.tobytes(), digest_size=16
      ).hexdigest()
  return checksums


def _checksum_failure(state, meta) -> str | None:
  """The first array whose bytes differ from its recorded checksum, or None (also for a step
  saved without checksums)."""
  recorded = meta.get(CHECKSUMS) if isinstance(meta, dict) else None
  if not recorded:
    return None
  for name, digest in state_checksums(state).items():
    if name in recorded and recorded[name] != digest:
      return f"array {name} does not match its checksum (bits changed on disk)"
  return None


def _set_aside(manager: ocp.CheckpointManager, step: int) -> str:
  """Rename a damaged step's folder so that the manager no longer sees it; returns the name."""
  directory = str(manager.directory)
  target = os.path.join(directory, f"{DAMAGED_PREFIX}{step}")
  if os.path.exists(target):
    target += f"_{time.strftime('%Y%m%d-%H%M%S')}"
  os.rename(os.path.join(directory, str(step)), target)
  return target


def restore_latest(manager: ocp.CheckpointManager, abstract_state, set_aside_damaged: bool = False):
  """(state, data_state, meta) of the newest checkpoint that restores, or None when there is
  none.

  `abstract_state` is a pytree of the same structure (arrays or ShapeDtypeStructs carrying
  the target shardings): the restored arrays land with those shardings. A step whose arrays
  have other shapes than `abstract_state` raises CheckpointMismatchError at once; a damaged
  step (unreadable, or an array failing its checksum) gives a CheckpointFallbackWarning and
  the next older step is tried. ``set_aside_damaged`` (a training run, which saves those
  steps again): the damaged steps' folders are renamed `damaged_step_<N>` (kept, named in the
  warning) and the manager reloaded.
  """
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
  damaged = []
  restored = _restore_newest(manager, abstract, damaged)
  # Only once a good step was found: where none restores, the run stops and nothing moves.
  if set_aside_damaged and damaged and jax.process_index() == 0:
    for step in damaged:
      warnings.warn(
        f"checkpoint {manager.directory}/{step} set aside as {_set_aside(manager, step)}",
        CheckpointFallbackWarning,
        stacklevel=2,
      )
    manager.reload()
  return restored


def _restore_newest(manager, abstract, damaged: list):
  failures = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      restored = manager.restore(
        step,
        args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract),
          data=ocp.args.JsonRestore(),
          meta=ocp.args.JsonRestore(),
        ),
      )
    except Exception as error:  # Orbax, TensorStore and JSON each raise their own kinds
      _raise_if_mismatched(manager, step, abstract, error)
      reason = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:300]}"
    else:
      reason = _checksum_failure(restored["state"], restored["meta"])
      if reason is None:
        return restored["state"], restored["data"], restored["meta"]
    failures.append(f"step {step} ({reason})")
    damaged.append(step)
    warnings.warn(
      f"checkpoint {manager.directory}/{step} cannot be restored, trying an older step: {reason}",
      CheckpointFallbackWarning,
      stacklevel=3,
    )
  if failures:
    raise CheckpointUnreadableError(
      f"no checkpoint in {manager.directory} can be restored: " + "; ".join(failures)
    )
  return None


def _shapes(tree) -> dict:
  """{leaf path: shape}, paths by key names, so a TrainState and the dicts Orbax's metadata
  holds for it compare equal."""

  def name(key):
    return str(next(getattr(key, a) for a in ("name", "key", "idx") if hasattr(key, a)))

  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {tuple(map(name, path)): tuple(leaf.shape) for path, leaf in leaves}


def _raise_if_mismatched(manager, step: int, abstract, error: Exception) -> None:
  """CheckpointMismatchError when the step's recorded arrays are another model's; returns
  when they fit or cannot be read (then the step itself is damaged)."""
  try:
    metadata = manager.item_metadata(step)["state"]  # None when its file is missing
    stored = None if metadata is None else _shapes(metadata)
  except Exception:  # unreadable metadata: a damaged step
    return
  if stored is None or stored == _shapes(abstract):
    return
  # Orbax's message lists every array of the tree; the first line says what differs.
  first_line = str(error).split(". Metadata keys")[0][:500]
  raise CheckpointMismatchError(
    f"checkpoint {manager.directory}/{step} does not fit the model the config builds "
    f"(was it trained with another config or code version?): {first_line}"
  ) from None
