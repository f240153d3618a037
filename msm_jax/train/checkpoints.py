"""Orbax checkpoints of a training run: the train state, the data iterator position, metadata.

One `CheckpointManager` per stage under `<workdir>/checkpoints/<stage>`: saves every N steps
and at the end, keeps the last K, writes atomically (a half-written step is never read back).
A checkpoint holds three items:
  state  - the TrainState pytree (params, BatchNorm statistics, optimiser states, step, rng);
  data   - the input pipeline's iterator state (JSON), so a resumed run sees exactly the
           batches an uninterrupted run would have seen;
  meta   - JSON: config name, epoch, anything a reader needs without loading arrays.
A step that cannot be read back (damaged files on disk) is skipped for the next older one,
with a warning; nothing is deleted.
"""

import os
import warnings

import jax
import orbax.checkpoint as ocp


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
  """Save when the interval says so (or `force`); returns whether a checkpoint was written."""
  return manager.save(
    step,
    args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data=ocp.args.JsonSave(data_state),
      meta=ocp.args.JsonSave(meta),
    ),
    force=force,
  )


def restore_latest(manager: ocp.CheckpointManager, abstract_state):
  """(state, data_state, meta) of the newest checkpoint that restores, or None when there is
  none.

  `abstract_state` is a pytree of the same structure (arrays or ShapeDtypeStructs carrying
  the target shardings): the restored arrays land with those shardings. A step whose arrays
  have other shapes than `abstract_state` raises CheckpointMismatchError at once; a damaged
  step gives a CheckpointFallbackWarning and the next older step is tried.
  """
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
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
      failures.append(f"step {step} ({reason})")
      warnings.warn(
        f"checkpoint {manager.directory}/{step} cannot be restored, trying an older step: {reason}",
        CheckpointFallbackWarning,
        stacklevel=2,
      )
      continue
    return restored["state"], restored["data"], restored["meta"]
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
