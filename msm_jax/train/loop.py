"""The training loop shared by every stage: feed, step, log one step late, checkpoint, resume.

The device always has the next step queued: the host reads step n's metrics (to check that
they are finite, and to log them every `log_every` steps) only after dispatching step n + 1,
so its one wait per step is on a step that has already been followed by another. A
non-finite loss stops training with a message naming the step; because a checkpoint is
written only after its own step's metrics were checked, the newest checkpoint on disk is
always a good one.
"""

import json
import math
import os
import time
from typing import Callable, Iterator

import jax
import numpy as np

from msm_jax import cli
from msm_jax.train import checkpoints, parallel


class TrainingDivergedError(RuntimeError):
  """A loss became NaN or infinite."""


class TrainingInterrupted(KeyboardInterrupt):
  """Ctrl-C during a stage; the message says at which step (the newest checkpoint is whole)."""


class MetricsWriter:
  """Metrics as JSON lines (`<workdir>/metrics/<stage>.jsonl`) and TensorBoard event files.

  start_step: the step training resumes from; the lines of later steps (written before an
  interruption, replayed now) are dropped so that each step has its lines once.
  """

  def __init__(self, workdir: str, stage: str, start_step: int = 0):
    os.makedirs(os.path.join(workdir, "metrics"), exist_ok=True)
    path = os.path.join(workdir, "metrics", f"{stage}.jsonl")
    _drop_lines_after(path, start_step)
    self.evaluated_steps = _evaluated_steps(path)
    self._jsonl = open(path, "a")
    try:
      from tensorboardX import SummaryWriter

      self._tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard", stage))
    except ImportError:  # TensorBoard files are a convenience; JSON lines are the record.
      self._tensorboard = None

  def write(self, step: int, scalars: dict) -> None:
    self._jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
    self._jsonl.flush()
    if self._tensorboard is not None:
      for name, value in scalars.items():
        self._tensorboard.add_scalar(name, value, step)

  def sync(self) -> None:
    """Everything written so far on disk (before a checkpoint that follows it commits)."""
    self._jsonl.flush()
    os.fsync(self._jsonl.fileno())

  def close(self) -> None:
    self._jsonl.close()
    if self._tensorboard is not None:
      self._tensorboard.close()


def _step_of(line: str) -> float:
  """A metrics line's step; infinite for a line cut short by a kill (dropped with the later
  steps' lines)."""
  try:
    return json.loads(line)["step"]
  except (ValueError, KeyError, TypeError):
    return math.inf


def _evaluated_steps(path: str) -> set:
  """The steps whose validation scalars ("eval/...") the metrics file holds."""
  if not os.path.exists(path):
    return set()
  with open(path) as file:
    lines = [json.loads(line) for line in file if line.endswith("\n")]
  return {line["step"] for line in lines if any(key.startswith("eval/") for key in line)}


def _drop_lines_after(path: str, step: int) -> None:
  """Keep the complete lines of steps <= `step`; rewritten atomically, only if needed."""
  if not os.path.exists(path):
    return
  with open(path) as file:
    lines = file.readlines()
  kept = [line for line in lines if line.endswith("\n") and _step_of(line) <= step]
  if len(kept) == len(lines):
    return
  temporary = path + ".tmp"
  with open(temporary, "w") as file:
    file.writelines(kept)
  os.replace(temporary, path)


def _to_host(metrics: dict) -> dict:
  return {name: float(np.asarray(value)) for name, value in metrics.items()}


def _check_finite(stage: str, step: int, scalars: dict) -> None:
  bad = {name: value for name, value in scalars.items() if not math.isfinite(value)}
  if bad:
    raise TrainingDivergedError(
      f"{stage}: non-finite metrics at step {step}: {bad}. Training stopped; the newest "
      f"checkpoint (before step {step}) is intact. Lower the learning rate or check the data."
    )


def _format_duration(seconds: float) -> str:
  seconds = int(seconds)
  return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def train_stage(
  *,
  stage: str,
  step_fn: Callable,
  state,
  data: Iterator[dict],
  manager,
  mesh,
  total_steps: int,
  batch_size: int,
  workdir: str,
  log_every: int = 50,
  eval_fn: Callable | None = None,
  eval_every: int = 0,
  log: Callable[[str], None] = print,
):
  """Run `step_fn` from `state.step` to `total_steps`; returns the final state.

  data: yields host batches (dicts of numpy arrays, global batch on one host); its
    `get_state()` is checkpointed with the model;
  eval_fn(state) -> dict of scalars, run every `eval_every` steps and at the end.
  The state is replicated over the mesh first (a no-op when it already is), so a state
  restored or built on one device trains with batches sharded over many.
  """
  state = parallel.replicate(state, mesh)
  start_step = int(state.step)
  # Multi-host: every process steps and checkpoints (Orbax's saves are collective); process 0
  # alone writes the metrics.
  writer = MetricsWriter(workdir, stage, start_step) if jax.process_index() == 0 else _NoMetrics()
  progress = _Progress(stage, writer, log, total_steps, batch_size, start_step)
  pending = None  # (step, device metrics) of the previous step, read one step late
  interrupted = False
  is_eval_step = lambda step: (eval_every and step % eval_every == 0) or step == total_steps

  def evaluate(state, step: int) -> None:
    scalars = eval_fn(state)
    writer.write(step, {f"eval/{k}": v for k, v in scalars.items()})
    writer.sync()
    log(f"[{stage}] step {step} eval " + " ".join(f"{k}={v:.4f}" for k, v in scalars.items()))

  try:
    # A run stopped during the validation that follows a checkpoint resumes at that
    # checkpoint: the validation it did not record runs first.
    if eval_fn is not None and start_step and is_eval_step(start_step):
      if start_step not in writer.evaluated_steps:
        evaluate(state, start_step)
    for step in range(start_step + 1, total_steps + 1):
      if cli.interrupt_requested():  # a Ctrl-C that a library swallowed
        raise KeyboardInterrupt
      batch = parallel.shard_batch(next(data), mesh)
      state, metrics = step_fn(state, batch)
      progress.stepped()
      if pending is not None:
        progress.report(*pending, log_every)
      pending = (step, metrics)
      is_last = step == total_steps
      if manager.should_save(step) or is_last:
        # The step's metrics (checked finite) are on disk before its checkpoint commits: a
        # run killed after the commit resumes past this step and would not log it again.
        progress.report(*pending, log_every)
        pending = None
        writer.sync()
        checkpoints.save(manager, step, state, data.get_state(), {"stage": stage}, force=is_last)
      if eval_fn is not None and is_eval_step(step):
        evaluate(state, step)
    if pending is not None:
      progress.report(*pending, 1)
  except KeyboardInterrupt:
    interrupted = True
    raise TrainingInterrupted(
      f"at step {progress.steps_done} of the {stage} stage "
      f"(newest checkpoint: step {manager.latest_step() or 0})"
    ) from None
  finally:
    # Saves are synchronous; after Ctrl-C inside one, Orbax's closed event loop would never
    # report it finished.
    if not interrupted:
      manager.wait_until_finished()
    writer.close()
  return state


class _NoMetrics:
  """The MetricsWriter of processes other than process 0."""

  evaluated_steps = frozenset()

  def write(self, step: int, scalars: dict) -> None:
    pass

  def sync(self) -> None:
    pass

  def close(self) -> None:
    pass


class _Progress:
  """Checks each step's metrics (one step late), and every `log_every` steps writes them with
  the speed since the last report and the ETA."""

  def __init__(self, stage, writer, log, total_steps, batch_size, start_step):
    self.stage, self.writer, self.log = stage, writer, log
    self.total_steps, self.batch_size, self.start_step = total_steps, batch_size, start_step
    self.stage_start = self.window_start = time.perf_counter()
    self.window_steps = 0
    self.steps_done = start_step

  def stepped(self) -> None:
    self.window_steps += 1
    self.steps_done += 1

  def report(self, step: int, metrics, log_every: int) -> None:
    scalars = _to_host(metrics)
    _check_finite(self.stage, step, scalars)
    if step % log_every and step != self.total_steps:
      return
    now = time.perf_counter()
    steps_per_second = self.window_steps / max(now - self.window_start, 1e-9)
    eta = (self.total_steps - step) * (now - self.stage_start) / max(step - self.start_step, 1)
    speed = {
      "steps_per_second": steps_per_second,
      "images_per_second": steps_per_second * self.batch_size,
    }
    self.writer.write(step, {**scalars, **speed})
    shown = " ".join(f"{k}={v:.4g}" for k, v in scalars.items())
    self.log(
      f"[{self.stage}] step {step}/{self.total_steps} {shown} | {steps_per_second:.2f} steps/s "
      f"{speed['images_per_second']:.1f} img/s | ETA {_format_duration(eta)}"
    )
    self.window_start, self.window_steps = now, 0
