"""One process of the multi-process training test (tests/test_parallel.py).

  python -m tests.distributed_worker pair WORKDIR        (JAX_COORDINATOR_ADDRESS,
                                                          JAX_NUM_PROCESSES, JAX_PROCESS_ID set)
  python -m tests.distributed_worker reference WORKDIR   one process, both shards' batches
  python -m tests.distributed_worker resume WORKDIR      one process, continues the pair's run

"pair" runs `train.py`'s own code (`run.train`) and saves the parameters this process holds
at the end; "reference" steps the same stage on the concatenation of the two processes'
batches, and on process 0's half alone; "resume" trains on in the pair's workdir to twice the steps.
"""

import os
import sys

import jax
import numpy as np
from flax import traverse_util

from msm_jax.train import parallel, run, stages
from tests import tiny_models

STEPS = 2  # 16 training faces, global batch 8


def tiny_config(epochs: int = 1):
  config = tiny_models.tiny_config()
  config.data.train_size, config.data.validation_size, config.data.test_size = 16, 4, 4
  config.data.worker_count = 0
  config.stages = "hourglass"
  config.hourglass.batch_size = 8
  config.hourglass.epochs = epochs
  config.checkpoint.every_steps = 1
  config.evaluate_after_training = False
  return config


def save_params(path: str, params) -> None:
  """This process's copy of replicated parameters (its addressable shard is the whole array)."""
  local = jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), params)
  np.savez(path, **traverse_util.flatten_dict(local, sep="/"))


def reference(workdir: str) -> None:
  from msm_jax.data import datasets

  config = tiny_config()
  stage = stages.STAGES["hourglass"]
  train_source, _ = datasets.train_and_validation_sources(config)
  setup = stage.setup(config, len(train_source) // config.hourglass.batch_size)
  save_params(os.path.join(workdir, "params_start.npz"), setup.state.models["hourglass"].params)
  host = tiny_config()
  host.hourglass.batch_size = config.hourglass.batch_size // 2
  shards = [iter(stage.data(train_source, host, shard_index=i, shard_count=2)) for i in (0, 1)]
  mesh = parallel.data_mesh()
  step = stage.step(config, setup, mesh)
  whole = half = parallel.replicate(setup.state, mesh)
  half = jax.tree.map(lambda x: x.copy(), whole)  # the steps donate their state
  for _ in range(STEPS):
    first, second = next(shards[0]), next(shards[1])
    batch = {key: np.concatenate([first[key], second[key]]) for key in first}
    whole, _ = step(whole, parallel.shard_batch(batch, mesh))
    # What process 0 would do if the gradients were not all-reduced: its half alone.
    half, _ = step(half, parallel.shard_batch(first, mesh))
  save_params(os.path.join(workdir, "params_reference.npz"), whole.models["hourglass"].params)
  save_params(os.path.join(workdir, "params_half.npz"), half.models["hourglass"].params)


def main(mode: str, workdir: str) -> None:
  if mode == "pair":
    final = run.train(tiny_config(), workdir)["hourglass"]
    assert jax.process_count() == 2 and int(final.step) == STEPS
    name = f"params_process{jax.process_index()}.npz"
    save_params(os.path.join(workdir, name), final.models["hourglass"].params)
  elif mode == "reference":
    reference(workdir)
  elif mode == "resume":
    final = run.train(tiny_config(epochs=2), workdir)["hourglass"]
    assert int(final.step) == 2 * STEPS
  else:
    raise SystemExit(f"unknown mode {mode!r}")
  print(f"{mode} done")


if __name__ == "__main__":
  main(*sys.argv[1:])
