"""The training loop: non-finite losses stop it cleanly; a SIGKILLed run resumes exactly."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from msm_jax import cli
from msm_jax.train import checkpoints, loop, parallel
from msm_jax.train.state import ModelState, new_train_state

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class CountingIterator:
  """Batches {"x": [2] float32}; its state is the position (like Grain's, JSON-able)."""

  def __init__(self, nan_at: int | None = None):
    self.position, self.nan_at = 0, nan_at

  def __next__(self):
    self.position += 1
    value = np.nan if self.position == self.nan_at else float(self.position)
    return {"x": np.full((2,), value, np.float32)}

  def get_state(self):
    return {"position": self.position}

  def set_state(self, state):
    self.position = state["position"]


def _toy_step(state, batch):
  """w <- w + mean(x); loss = w."""
  params = {"w": state.models["toy"].params["w"] + jnp.mean(batch["x"])}
  models = {"toy": ModelState(params=params, batch_stats={}, opt_state=())}
  return state.replace(step=state.step + 1, models=models), {"loss": params["w"]}


def _toy_state():
  return new_train_state(
    0, {"toy": ModelState(params={"w": jnp.zeros(())}, batch_stats={}, opt_state=())}
  )


def _train_toy(tmp_path, manager, iterator, state, total_steps, eval_fn=None):
  """`loop.train_stage` on the toy step, metrics every step, validation (``eval_fn``) at the
  end only, no console output."""
  return loop.train_stage(
    stage="toy",
    step_fn=jax.jit(_toy_step),
    state=state,
    data=iterator,
    manager=manager,
    mesh=parallel.data_mesh(),
    total_steps=total_steps,
    batch_size=2,
    workdir=str(tmp_path),
    log_every=1,
    eval_fn=eval_fn,
    log=lambda _: None,
  )


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
  manager = checkpoints.checkpoint_manager(str(tmp_path / "ckpt"), every_steps=2, keep=3)
  iterator = CountingIterator(nan_at=5)
  with pytest.raises(loop.TrainingDivergedError, match="step 5"):
    _train_toy(tmp_path, manager, iterator, _toy_state(), total_steps=10)
  assert manager.latest_step() == 4
  state, data_state, _ = checkpoints.restore_latest(manager, _toy_state())
  # w after 4 steps = 1 + 2 + 3 + 4; the data position is 4.
  assert float(state.models["toy"].params["w"]) == 10.0 and data_state == {"position": 4}
  lines = (tmp_path / "metrics" / "toy.jsonl").read_text().splitlines()
  assert len(lines) == 4  # steps 1-4 logged; step 5 was caught before logging


def test_resumed_toy_run_matches_an_uninterrupted_one(tmp_path):
  def run(directory, total):
    manager = checkpoints.checkpoint_manager(str(directory), every_steps=3, keep=2)
    iterator, state = CountingIterator(), _toy_state()
    restored = checkpoints.restore_latest(manager, state)
    if restored:
      state, data_state, _ = restored
      iterator.set_state(data_state)
    return _train_toy(tmp_path, manager, iterator, state, total_steps=total)

  run(tmp_path / "a", 5)  # "interrupted" after its step-3 checkpoint and the final one at 5
  resumed = run(tmp_path / "a", 8)
  straight = run(tmp_path / "b", 8)
  assert (
    float(resumed.models["toy"].params["w"]) == float(straight.models["toy"].params["w"]) == 36.0
  )


class Killed(Exception):
  """Stands for a SIGKILL: the run stops between two steps."""


class KilledIterator(CountingIterator):
  """Raises Killed instead of giving batch `kill_at`."""

  def __init__(self, kill_at: int):
    super().__init__()
    self.kill_at = kill_at

  def __next__(self):
    if self.position + 1 == self.kill_at:
      raise Killed
    return super().__next__()


class SwallowingIterator(CountingIterator):
  """Gets a Ctrl-C while making batch `at` and swallows it, as `asyncio.run` does when the
  interrupt lands as its task finishes."""

  def __init__(self, at: int):
    super().__init__()
    self.at = at

  def __next__(self):
    if self.position + 1 == self.at:
      try:
        signal.raise_signal(signal.SIGINT)
      except KeyboardInterrupt:
        pass
    return super().__next__()


def test_a_ctrl_c_that_a_library_swallows_still_stops_training_at_the_next_step(tmp_path):
  manager = checkpoints.checkpoint_manager(str(tmp_path / "ckpt"), every_steps=100, keep=1)
  with cli.interrupts_remembered():
    with pytest.raises(loop.TrainingInterrupted, match="at step 3 of the toy stage"):
      _train_toy(tmp_path, manager, SwallowingIterator(3), _toy_state(), total_steps=10)
  assert not cli.interrupt_requested()  # forgotten outside the block
  # Without the handler the same swallowed Ctrl-C is lost and training runs to the end.
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    manager = checkpoints.checkpoint_manager(str(tmp_path / "again"), every_steps=100, keep=1)
    state = _train_toy(tmp_path / "again", manager, SwallowingIterator(3), _toy_state(), 10)
  finally:
    signal.signal(signal.SIGINT, previous)
  assert int(state.step) == 10


def test_a_resumed_run_logs_each_step_once(tmp_path):
  manager = checkpoints.checkpoint_manager(str(tmp_path / "ckpt"), every_steps=3, keep=2)

  def run(iterator, state):
    return _train_toy(tmp_path, manager, iterator, state, total_steps=8)

  with pytest.raises(Killed):  # steps 1-5 run; the newest checkpoint is step 3's
    run(KilledIterator(kill_at=6), _toy_state())
  metrics = tmp_path / "metrics" / "toy.jsonl"
  with open(metrics, "a") as file:
    file.write('{"step": 5, "lo')  # the kill also cut a line short
  logged = [json.loads(line)["step"] for line in metrics.read_text().splitlines()[:-1]]
  assert logged == [1, 2, 3, 4] and manager.latest_step() == 3

  state, data_state, _ = checkpoints.restore_latest(manager, _toy_state())
  iterator = CountingIterator()
  iterator.set_state(data_state)
  final = run(iterator, state)
  assert float(final.models["toy"].params["w"]) == 36.0  # 1 + 2 + ... + 8
  lines = [json.loads(line) for line in metrics.read_text().splitlines()]
  assert [line["step"] for line in lines] == [1, 2, 3, 4, 5, 6, 7, 8]
  assert [line["loss"] for line in lines] == [1, 3, 6, 10, 15, 21, 28, 36]


def _train_command(workdir, total_epochs):
  return [
    sys.executable,
    os.path.join(ROOT, "train.py"),
    "--config",
    os.path.join(ROOT, "configs", "synthetic.py"),
    "--workdir",
    str(workdir),
    "--config.stages=hourglass",
    "--config.data.train_size=32",
    "--config.data.validation_size=0",
    "--config.hourglass.batch_size=4",
    f"--config.hourglass.epochs={total_epochs}",
    "--config.hourglass.width=8",
    "--config.hourglass.depth=2",
    "--config.hourglass.stem_widths=(4, 4, 8)",
    "--config.checkpoint.every_steps=2",
    "--config.log_every_steps=1",
    "--config.evaluate_after_training=false",
  ]


def _final_params(workdir):
  directory = os.path.join(workdir, "checkpoints", "hourglass")
  with ocp.CheckpointManager(directory, item_names=("state", "data", "meta")) as manager:
    step = manager.latest_step()
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  return step, restored["state"]["models"]["hourglass"]["params"]


def test_sigkilled_training_resumes_to_the_same_parameters(tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT)
  # The run to kill is long (100 epochs of 8 steps), so however fast this machine and however
  # late the poll below, it is still running when killed; the comparison then trains both
  # runs to a length past the kill point (the schedule does not depend on the length).
  killed_dir = tmp_path / "killed"
  process = subprocess.Popen(
    _train_command(killed_dir, 100), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
  )
  checkpoint_dir = killed_dir / "checkpoints" / "hourglass"
  deadline = time.time() + 600
  while time.time() < deadline and process.poll() is None:
    done = (
      [int(name) for name in os.listdir(checkpoint_dir) if name.isdigit()]
      if checkpoint_dir.exists()
      else []
    )
    if done and max(done) >= 4:
      break
    time.sleep(0.05)
  process.send_signal(signal.SIGKILL)
  assert process.wait() == -signal.SIGKILL, "the run ended before it could be killed"
  killed_at, _ = _final_params(killed_dir)
  assert killed_at >= 4
  total_epochs = killed_at // 8 + 2
  steps_total = 8 * total_epochs  # 32 faces, batch 4

  resumed = subprocess.run(
    _train_command(killed_dir, total_epochs), env=env, capture_output=True, text=True, timeout=600
  )
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"resumed from step {killed_at}" in resumed.stdout + resumed.stderr
  straight = subprocess.run(
    _train_command(tmp_path / "straight", total_epochs),
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert straight.returncode == 0, straight.stderr[-3000:]
  # The console shows the progress, not the libraries' INFO logs (Orbax's checkpointing).
  assert "[hourglass] step" in straight.stdout
  assert "checkpoint_manager" not in straight.stdout + straight.stderr
  step_a, params_a = _final_params(tmp_path / "straight")
  step_b, params_b = _final_params(killed_dir)
  assert step_a == step_b == steps_total
  # The same program on the same machine replays the same batches: bit-identical.
  jax.tree.map(
    lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), params_a, params_b
  )


def test_restoring_into_another_architecture_is_a_short_clear_error(tmp_path):
  manager = checkpoints.checkpoint_manager(str(tmp_path), every_steps=1, keep=1)
  checkpoints.save(manager, 1, _toy_state(), {"position": 1}, {}, force=True)
  other = new_train_state(
    0, {"toy": ModelState(params={"v": jnp.zeros((3,))}, batch_stats={}, opt_state=())}
  )
  with pytest.raises(checkpoints.CheckpointMismatchError, match="does not fit") as error:
    checkpoints.restore_latest(manager, other)
  assert len(str(error.value)) < 1000


def test_a_kill_right_after_a_checkpoint_commits_loses_no_metrics_line(tmp_path):
  """Step 3's checkpoint commits, then the run dies before step 4: step 3's line was written
  (and synced) before the commit, so the resumed run, which starts after step 3, has it."""
  manager = checkpoints.checkpoint_manager(str(tmp_path / "ckpt"), every_steps=3, keep=2)
  with pytest.raises(Killed):
    _train_toy(tmp_path, manager, KilledIterator(kill_at=4), _toy_state(), total_steps=6)
  assert manager.latest_step() == 3
  state, data_state, _ = checkpoints.restore_latest(manager, _toy_state())
  iterator = CountingIterator()
  iterator.set_state(data_state)
  _train_toy(tmp_path, manager, iterator, state, total_steps=6)
  lines = [
    json.loads(line) for line in (tmp_path / "metrics" / "toy.jsonl").read_text().splitlines()
  ]
  assert [line["step"] for line in lines] == [1, 2, 3, 4, 5, 6]


def test_a_run_killed_during_its_final_validation_validates_on_resume(tmp_path):
  manager = checkpoints.checkpoint_manager(str(tmp_path / "ckpt"), every_steps=2, keep=2)
  calls = []

  def dying_eval(state):
    raise Killed  # the final checkpoint is committed; the validation never finishes

  def eval_fn(state):
    calls.append(float(state.models["toy"].params["w"]))
    return {"w": calls[-1]}

  def run(state, iterator, validation):
    return _train_toy(tmp_path, manager, iterator, state, 4, eval_fn=validation)

  with pytest.raises(Killed):
    run(_toy_state(), CountingIterator(), dying_eval)
  assert manager.latest_step() == 4
  state, data_state, _ = checkpoints.restore_latest(manager, _toy_state())
  iterator = CountingIterator()
  iterator.set_state(data_state)
  run(state, iterator, eval_fn)
  assert calls == [10.0]  # the restored final state (1 + 2 + 3 + 4), validated once
  lines = [
    json.loads(line) for line in (tmp_path / "metrics" / "toy.jsonl").read_text().splitlines()
  ]
  assert [line for line in lines if "eval/w" in line] == [{"step": 4, "eval/w": 10.0}]
  run(state, iterator, eval_fn)  # a finished run resumed again validates nothing more
  assert calls == [10.0]


def test_ctrl_c_in_train_py_is_one_line_and_exit_130(tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT)
  workdir = tmp_path / "run"
  process = subprocess.Popen(
    _train_command(workdir, 100),
    env=env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
    text=True,
    # A test run started in the background inherits SIGINT ignored: the command gets the
    # default, as from a terminal.
    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
  )
  checkpoint_dir = workdir / "checkpoints" / "hourglass"
  deadline = time.time() + 600
  while time.time() < deadline and process.poll() is None:
    if checkpoint_dir.exists() and any(name.isdigit() for name in os.listdir(checkpoint_dir)):
      break
    time.sleep(0.05)
  process.send_signal(signal.SIGINT)
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 130, stderr[-3000:]
  assert "Traceback" not in stderr, stderr[-3000:]
  last = stderr.strip().splitlines()[-1]
  assert last.startswith("interrupted at step ") and "hourglass stage" in last, last
  assert last.endswith("the same command resumes from the newest checkpoint"), last
