"""Multi-process training (msm_jax/train/parallel.py): two processes on this machine, joined by
`jax.distributed` over CPU collectives, each with one CPU device and its own slice of the data,
run the hourglass stage through `train.py`'s code (tests/distributed_worker.py)."""

import os
import socket
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def _environment(**extra) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu", **extra)
  # One CPU device per process, on top of whatever other XLA flags the suite runs with.
  flags = [
    flag
    for flag in env.get("XLA_FLAGS", "").split()
    if not flag.startswith("--xla_force_host_platform_device_count")
  ]
  env["XLA_FLAGS"] = " ".join(flags + ["--xla_force_host_platform_device_count=1"])
  for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    env.pop(name, None)
  env.update(extra)
  return env


def _worker(mode: str, workdir: str, **env) -> subprocess.Popen:
  return subprocess.Popen(
    [sys.executable, "-m", "tests.distributed_worker", mode, workdir],
    cwd=ROOT,
    env=_environment(**env),
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )


def _finish(process: subprocess.Popen, mode: str) -> str:
  output, _ = process.communicate(timeout=600)
  assert process.returncode == 0 and f"{mode} done" in output, output[-4000:]
  return output


def _load(path: str) -> dict:
  with np.load(path) as data:
    return {key: data[key] for key in data.files}


def test_two_processes_train_as_one_and_one_process_resumes_their_checkpoint(tmp_path):
  workdir = str(tmp_path / "run")
  address = f"127.0.0.1:{_free_port()}"
  pair = [
    _worker(
      "pair",
      workdir,
      JAX_COORDINATOR_ADDRESS=address,
      JAX_NUM_PROCESSES="2",
      JAX_PROCESS_ID=str(index),
    )
    for index in range(2)
  ]
  # Both outputs first: a process that fails makes the other time out, and the failure's
  # reason is in its own output.
  outputs = [process.communicate(timeout=600)[0] for process in pair]
  for process, output in zip(pair, outputs):
    assert process.returncode == 0 and "pair done" in output, "\n\n".join(outputs)[-8000:]
  assert "[hourglass] step 2/2" in outputs[0] and "2 process(es)" in outputs[0], outputs[0]

  # Both processes hold the same parameters: each applied the same all-reduced gradient.
  first, second = (_load(os.path.join(workdir, f"params_process{i}.npz")) for i in range(2))
  assert first.keys() == second.keys()
  for key in first:
    np.testing.assert_array_equal(first[key], second[key], err_msg=key)

  # One process stepping the concatenation of the two processes' batches.
  _finish(_worker("reference", workdir), "reference")
  start = _load(os.path.join(workdir, "params_start.npz"))
  reference = _load(os.path.join(workdir, "params_reference.npz"))

  def norm(tree):
    return float(np.sqrt(sum(np.sum(np.square(leaf, dtype=np.float64)) for leaf in tree)))

  half = _load(os.path.join(workdir, "params_half.npz"))
  update = norm(reference[key] - start[key] for key in start)
  difference = norm(first[key] - reference[key] for key in start)
  unreduced = norm(half[key] - reference[key] for key in start)
  print("update", update, "two processes vs one", difference, "half batch vs one", unreduced)
  # The all-reduce sums the two half-batch gradients in another order than one device sums
  # the batch: float32 rounding, which Adam's g / (sqrt(v) + eps) enlarges where a gradient
  # is near eps. What the bug this guards against (each process stepping on its own half)
  # gives is measured alongside; the bar sits between the two.
  assert update > 0 and difference <= 0.25 * unreduced, (difference, unreduced, update)

  # The pair's checkpoint, resumed by a single process.
  output = _finish(_worker("resume", workdir), "resume")
  assert "[hourglass] resumed from step 2" in output, output[-4000:]
  assert "[hourglass] step 4/4" in output, output[-4000:]
