"""Data parallelism over every device: a 1-D `Mesh` with axis "data".

The batch is sharded along its first dimension on "data", parameters and optimiser state are
replicated, and `jax.jit` (GSPMD) inserts the gradient all-reduce. BatchNorm statistics are
computed over the *global* batch, so N devices give the same update as one device on the
same global batch (tests/test_steps.py checks it with 4 forced CPU devices). The same
code runs on 1 CPU, 4 fake CPU devices, 8 GPUs or a TPU pod slice.

Multi-host: call `maybe_initialize_distributed()` first thing; it runs
`jax.distributed.initialize()` when the standard coordinator variables are set
(JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID), or on cloud TPU / SLURM where
JAX detects the cluster itself (set MSM_JAX_DISTRIBUTED=1 there). Every host then feeds its
own slice of the global batch (`host_batch_size`).
"""

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


COORDINATOR_VARIABLES = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def maybe_initialize_distributed() -> None:
  """Join a multi-host job when the launcher's environment asks for it; no-op otherwise.

  JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and JAX_PROCESS_ID are
  passed to `jax.distributed.initialize` (which does not read the last two itself);
  MSM_JAX_DISTRIBUTED=1 alone lets JAX detect the cluster (cloud TPU, SLURM).
  """
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    missing = [name for name in COORDINATOR_VARIABLES if not os.environ.get(name)]
    if missing:
      raise ValueError(
        f"JAX_COORDINATOR_ADDRESS is set: a multi-process job also needs {', '.join(missing)}"
      )
    jax.distributed.initialize(
      coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
      num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
      process_id=int(os.environ["JAX_PROCESS_ID"]),
    )
  elif os.environ.get("MSM_JAX_DISTRIBUTED"):
    jax.distributed.initialize()


def data_mesh() -> Mesh:
  """A 1-D mesh over all devices of all hosts, axis "data".

  Auto axis type: the compiler propagates the batch sharding through the model (GSPMD), so
  the model code needs no sharding annotations (`make_mesh` defaults to Explicit axes, under
  which every reshape of a sharded batch would need one).
  """
  return jax.make_mesh(
    (jax.device_count(),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,)
  )


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over "data"; other dimensions whole."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def check_batch_size(global_batch_size: int, mesh: Mesh, name: str = "batch_size") -> None:
  """A clear error instead of a sharding failure deep inside XLA."""
  devices = mesh.devices.size
  if global_batch_size % devices:
    raise ValueError(
      f"config {name}={global_batch_size} must be divisible by the number of "
      f"devices ({devices}) to shard the batch over the 'data' axis"
    )


def host_batch_size(global_batch_size: int) -> int:
  """How many examples this host loads per step."""
  return global_batch_size // jax.process_count()


def shard_batch(batch, mesh: Mesh):
  """Place a host-local batch (pytree of numpy arrays) on the mesh, split over "data".

  Single-host: a plain `device_put`. Multi-host: every host passes its own slice and the global
  array is assembled with `make_array_from_process_local_data`.
  """
  sharding = batch_sharding(mesh)
  if jax.process_count() == 1:
    return jax.device_put(batch, sharding)
  return jax.tree.map(
    lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch
  )


def replicate(tree, mesh: Mesh):
  """Copy a pytree (parameters, optimiser state) onto every device of the mesh."""
  return jax.device_put(tree, replicated_sharding(mesh))
