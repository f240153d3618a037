"""Orbax checkpoints of a training run: the train state, the data iterator position, metadata.

One `CheckpointManager` per stage under `<workdir>/checkpoints/<stage>`: saves every N steps
and at the end, keeps the last K, writes atomically (a half-written step is never read back).
A checkpoint holds three items:
  state  - the TrainState pytree (params, BatchNorm statistics, optimiser states, step, rng);
  data   - the input pipeline's iterator state (JSON), so a resumed run sees exactly the
           batches an uninterrupted run would have seen;
  meta   - JSON: config name, epoch, anything a reader needs without loading arrays.
"""

import os

import jax
import orbax.checkpoint as ocp


class CheckpointMismatchError(ValueError):
  """A checkpoint's arrays do not match the state the current config builds."""


def checkpoint_manager(directory: str, every_steps: int, keep: int) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
    save_interval_steps=every_steps,
    max_to_keep=keep,
    create=True,
    # Synchronous saves: a SIGKILL right after `save` returns must not lose the step.
    enable_async_checkpointing=False,
  )
  return ocp.CheckpointManager(
    os.path.abspath(directory), options=options, item_names=("state", "data", "meta")
  )


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
  """(state, data_state, meta) of the newest checkpoint, or None when there is none.

  `abstract_state` is a pytree of the same structure (arrays or ShapeDtypeStructs carrying
  the target shardings): the restored arrays land with those shardings.
  """
  step = manager.latest_step()
  if step is None:
    return None
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
  try:
    restored = manager.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract),
        data=ocp.args.JsonRestore(),
        meta=ocp.args.JsonRestore(),
      ),
    )
  except ValueError as error:
    # Orbax's message lists every array of the tree; the first line says what differs.
    first_line = str(error).split(". Metadata keys")[0][:500]
    raise CheckpointMismatchError(
      f"checkpoint {manager.directory}/{step} does not fit the model the config builds "
      f"(was it trained with another config or code version?): {first_line}"
    ) from None
  return restored["state"], restored["data"], restored["meta"]
