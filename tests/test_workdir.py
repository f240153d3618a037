"""The workdir of `run.train`: one training process at a time (<workdir>/.lock), and a config
that cannot silently change the data or networks under the recorded one (config.json)."""

import json
import os
import socket
import subprocess
import sys

import pytest

from msm_jax.train import run, stages
from msm_jax.train import workdir as workdir_lib
from msm_jax.train.workdir import ConfigChangedError, WorkdirLockedError
from tests import tiny_models


def _tiny_config():
  config = tiny_models.tiny_config()
  config.stages = "hourglass"
  config.data.train_size = 8
  config.data.validation_size = 0
  config.hourglass.batch_size = 4
  config.hourglass.epochs = 1
  config.evaluate_after_training = False
  return config


@pytest.fixture
def stub_stage(monkeypatch):
  """The hourglass stage replaced by one that records the workdir's lock while it "trains"
  (a real stage compiles for minutes on a busy 2-core machine); `calls` lists the locks."""
  calls = []

  def fake_run(config, workdir, log):
    lock = os.path.join(workdir, ".lock")
    calls.append(json.load(open(lock)) if os.path.exists(lock) else None)
    if config.seed == 13:
      raise RuntimeError("stage failed")

  monkeypatch.setitem(stages.STAGES, "hourglass", stages.Stage(name="hourglass", run=fake_run))
  return calls


def _write_lock(workdir, pid, host):
  os.makedirs(workdir, exist_ok=True)
  lock = {"pid": pid, "host": host, "started": "2024-01-01T00:00:00+00:00"}
  with open(os.path.join(workdir, ".lock"), "w") as file:
    json.dump(lock, file)
  return lock


def _exited_pid() -> int:
  process = subprocess.Popen([sys.executable, "-c", "pass"])
  process.wait()  # reaped: the pid names no process now
  return process.pid


def test_a_live_lock_refuses_a_second_run(tmp_path, stub_stage):
  sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
  try:
    lock = _write_lock(tmp_path, sleeper.pid, socket.gethostname())
    with pytest.raises(WorkdirLockedError) as error:
      run.train(_tiny_config(), str(tmp_path), log=lambda _: None)
    message = str(error.value)
    assert "\n" not in message
    assert str(tmp_path) in message and f"process {sleeper.pid} " in message
    assert f"host {socket.gethostname()} " in message
    assert stub_stage == []  # nothing trained, nothing recorded, the lock left as it was
    assert sorted(os.listdir(tmp_path)) == [".lock"]
    assert json.load(open(tmp_path / ".lock")) == lock
  finally:
    sleeper.kill()
    sleeper.wait()


def test_a_lock_of_another_host_is_not_broken(tmp_path, stub_stage):
  # The pid is dead here, but it names a process of the other host, which may be running.
  lock = _write_lock(tmp_path, _exited_pid(), "another-host")
  with pytest.raises(WorkdirLockedError, match="on host another-host "):
    run.train(_tiny_config(), str(tmp_path), log=lambda _: None)
  assert stub_stage == [] and json.load(open(tmp_path / ".lock")) == lock


def test_a_stale_lock_is_broken_with_one_log_line(tmp_path, stub_stage):
  dead = _exited_pid()
  _write_lock(tmp_path, dead, socket.gethostname())
  lines = []
  run.train(_tiny_config(), str(tmp_path), log=lines.append)
  assert lines[0] == f"breaking the stale lock of process {dead} (no longer running) on {tmp_path}"
  assert not any("no longer running" in line for line in lines[1:])
  assert [(call["pid"], call["host"]) for call in stub_stage] == [
    (os.getpid(), socket.gethostname())
  ]
  assert not (tmp_path / ".lock").exists()


def test_the_lock_is_released_when_training_fails(tmp_path, stub_stage):
  config = _tiny_config()
  config.seed = 13  # the stub stage raises
  with pytest.raises(RuntimeError, match="stage failed"):
    run.train(config, str(tmp_path), log=lambda _: None)
  assert stub_stage[0]["pid"] == os.getpid()  # held while the stage ran
  assert not (tmp_path / ".lock").exists()


def _history_widths(workdir) -> list:
  with open(os.path.join(workdir, "config_history.jsonl")) as file:
    return [json.loads(line)["config"]["hourglass"]["width"] for line in file]


def test_a_changed_network_is_refused_unless_allowed(tmp_path, stub_stage):
  workdir, quiet = str(tmp_path), lambda _: None
  run.train(_tiny_config(), workdir, log=quiet)
  run.train(_tiny_config(), workdir, log=quiet)  # a resume with the same config
  recorded = (tmp_path / "config.json").read_bytes()
  assert json.loads(recorded)["hourglass"]["width"] == 8

  wider = _tiny_config()
  wider.hourglass.width = 16
  wider.data.crop_size = 96
  with pytest.raises(ConfigChangedError) as error:
    run.train(wider, workdir, log=quiet)
  message = str(error.value)
  assert "\n" not in message
  assert "data.crop_size: 128 -> 96; hourglass.width: 8 -> 16)" in message
  assert (tmp_path / "config.json").read_bytes() == recorded
  assert len(stub_stage) == 2 and _history_widths(workdir) == [8, 8]
  assert not (tmp_path / ".lock").exists()  # a refused run releases the lock too

  lines = []
  run.train(wider, workdir, log=lines.append, allow_changed=True)
  assert "config changed (allowed): data.crop_size: 128 -> 96; hourglass.width: 8 -> 16" in lines
  assert json.loads((tmp_path / "config.json").read_text())["hourglass"]["width"] == 16
  assert len(stub_stage) == 3 and _history_widths(workdir) == [8, 8, 16]

  slower = _tiny_config()
  slower.hourglass.width = 16
  slower.data.crop_size = 96
  slower.hourglass.learning_rate = 1e-4  # does not shape the checkpoints: accepted
  run.train(slower, workdir, log=quiet)
  assert len(stub_stage) == 4 and _history_widths(workdir) == [8, 8, 16, 16]


def test_a_real_run_holds_the_lock_then_releases_it(tmp_path):
  held = []

  def log(line):
    if line.startswith("[hourglass] step"):
      held.append(json.load(open(tmp_path / ".lock"))["pid"])

  run.train(_tiny_config(), str(tmp_path), log=log)
  assert held == [os.getpid()]  # one progress line (step 2 of 2), logged under the lock
  assert not (tmp_path / ".lock").exists()
  assert json.loads((tmp_path / "config.json").read_text())["hourglass"]["width"] == 8
  assert _history_widths(tmp_path) == [8]
  assert os.path.isdir(tmp_path / "checkpoints" / "hourglass" / "2")


def test_an_unwritable_workdir_is_one_clear_line(tmp_path, stub_stage):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a folder")
  from msm_jax.train.workdir import WorkdirUnwritableError

  with pytest.raises(WorkdirUnwritableError, match="cannot write to the workdir .*a_file/run"):
    run.train(_tiny_config(), str(blocker / "run"), log=lambda _: None)


def test_train_py_reports_a_locked_workdir_in_one_line(tmp_path):
  # What a user sees: exit status 1 and one line naming the holder, no traceback.
  workdir = tmp_path / "run"
  workdir.mkdir()
  sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
  try:
    lock = {"pid": sleeper.pid, "host": socket.gethostname(), "started": "now"}
    (workdir / ".lock").write_text(json.dumps(lock))
    result = subprocess.run(
      [
        sys.executable,
        os.path.join(tiny_models.ROOT, "train.py"),
        "--config",
        os.path.join(tiny_models.ROOT, "configs", "synthetic.py"),
        "--workdir",
        str(workdir),
      ],
      capture_output=True,
      text=True,
      timeout=600,
      env=dict(os.environ, MSM_JAX_SYSTEM_MALLOC="1"),
    )
  finally:
    sleeper.kill()
    sleeper.wait()
  assert result.returncode == 1
  assert f"is in use by process {sleeper.pid}" in result.stderr
  assert "Traceback" not in result.stderr


def test_an_empty_lock_is_broken_with_a_message(tmp_path):
  """A 0-byte lock (a full disk) names no holder: it is broken, not a lock held forever."""
  (tmp_path / ".lock").write_text("")
  lines = []
  with workdir_lib.locked(str(tmp_path), lines.append):
    assert json.load(open(tmp_path / ".lock"))["pid"] == os.getpid()
  assert lines == [
    f"breaking the unreadable lock {tmp_path / '.lock'} (empty or damaged, its holder unknown)"
  ]
  assert not (tmp_path / ".lock").exists()


_RACER = """
import json, sys, time
from msm_jax.train import workdir
workdir_dir, start = sys.argv[1], float(sys.argv[2])
while time.time() < start:
  pass
try:
  workdir.acquire_lock(workdir_dir, log=lambda line: None)
except workdir.WorkdirLockedError:
  print("refused")
else:
  print("holder")
  time.sleep(3)  # holds the lock (alive) while the others decide
"""


def test_many_processes_breaking_one_stale_lock_leave_exactly_one_holder(tmp_path):
  """Check, remove, create is not atomic; the flock'd break is: whatever the interleaving,
  one process holds the workdir and every other is refused."""
  import time

  for trial in range(4):
    workdir = tmp_path / f"run{trial}"
    workdir.mkdir()
    _write_lock(workdir, _exited_pid(), socket.gethostname())
    start = time.time() + 4.0  # every racer is imported and spinning by then
    racers = [
      subprocess.Popen(
        [sys.executable, "-c", _RACER, str(workdir), str(start)], stdout=subprocess.PIPE, text=True
      )
      for _ in range(6)
    ]
    outcomes = sorted(racer.communicate(timeout=120)[0].strip() for racer in racers)
    assert outcomes == ["holder"] + ["refused"] * 5, (trial, outcomes)


@pytest.mark.parametrize(
  "field, value",
  [
    ("data.box_margin", 2.0),
    ("data.synthetic.occlusion_prob", 0.9),
    ("data.box_source", "detector"),
    ("hourglass.batch_size", 2),
    ("augment.rotation_degrees", 5.0),
  ],
)
def test_a_resume_that_would_mix_two_datasets_is_refused(tmp_path, stub_stage, field, value):
  workdir, quiet = str(tmp_path), lambda _: None
  run.train(_tiny_config(), workdir, log=quiet)
  changed = _tiny_config()
  *sections, name = field.split(".")
  node = changed
  for section in sections:
    node = node[section]
  assert name in node, field  # the field exists in the config: the test changes a real one
  node[name] = value
  with pytest.raises(ConfigChangedError, match=field.replace(".", r"\.") + ": "):
    run.train(changed, workdir, log=quiet)
  assert len(stub_stage) == 1


def test_reading_or_evaluation_fields_may_change_on_resume(tmp_path, stub_stage):
  workdir, quiet = str(tmp_path), lambda _: None
  run.train(_tiny_config(), workdir, log=quiet)
  changed = _tiny_config()
  changed.data.worker_count = 2
  changed.data.skip_bad_samples = True
  changed.hourglass.learning_rate = 1e-4  # the optimiser, not the faces
  run.train(changed, workdir, log=quiet)
  assert len(stub_stage) == 2


def test_a_history_line_cut_short_is_dropped_before_the_next_record(tmp_path, stub_stage):
  """A full disk left a partial last line: the next run's record starts a line of its own,
  and every line of the history parses."""
  workdir, quiet = str(tmp_path), lambda _: None
  run.train(_tiny_config(), workdir, log=quiet)
  history = tmp_path / "config_history.jsonl"
  with open(history, "a") as file:
    file.write('{"started": "2026-01-01", "config": {"da')
  run.train(_tiny_config(), workdir, log=quiet)
  records = [json.loads(line) for line in history.read_text().splitlines()]
  assert len(records) == 2 and all("config" in record for record in records)
