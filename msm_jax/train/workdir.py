"""A training run's workdir: one training process at a time, and a recorded config.

`locked` holds `<workdir>/.lock` while `run.train` writes there: two runs sharing a workdir
would interleave their checkpoints and metrics. `record_config` keeps `config.json` (the
config of the newest run) and `config_history.jsonl` (every accepted run's), and refuses a
config whose checkpoint-shaping fields differ from the recorded one: resuming such a run
would fail on the first restore, or silently mix two datasets in one run.
"""

import contextlib
import datetime
import json
import os
import socket

LOCK_FILE = ".lock"
CONFIG_FILE = "config.json"
HISTORY_FILE = "config_history.jsonl"

# The fields that shape the checkpoints' arrays or the faces they were trained on.
CHECKPOINT_FIELDS = (
  "data.scheme",
  "data.crop_size",
  "data.heatmap_size",
  "data.dataset",
  "data.root",
  "data.train_size",
  "data.train_split",
  "data.validation_fraction",
  "data.validation_list",
  "hourglass.architecture",
  "hourglass.width",
  "hourglass.depth",
  "hourglass.num_stacks",
  "hourglass.stem_widths",
  "hourglass.space_to_depth",
  "stgan.generator_width",
  "stgan.discriminator_width",
  "resnet.architecture",
  "resnet.width",
)


class WorkdirError(RuntimeError):
  """The workdir cannot be used: `train.py` prints these as one line."""


class WorkdirUnwritableError(WorkdirError):
  """The workdir cannot be created or written."""


class WorkdirLockedError(WorkdirError):
  """Another training process holds the workdir."""


class ConfigChangedError(WorkdirError):
  """The config differs from the workdir's recorded one in a checkpoint-shaping field."""


def _now() -> str:
  return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _is_running(pid: int) -> bool:
  try:
    os.kill(pid, 0)  # signal 0: only checks that the process exists
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's process
    return True
  return True


def _read_lock(path: str) -> dict | None:
  """The lock's record, or None when it is gone or unreadable (being written, or damaged)."""
  try:
    with open(path) as file:
      return json.load(file)
  except (FileNotFoundError, json.JSONDecodeError):
    return None


def prepare(workdir: str) -> None:
  """Create the workdir; WorkdirUnwritableError (one line) where that, or writing in it,
  is not allowed."""
  try:
    os.makedirs(workdir, exist_ok=True)
    # One probe per process: the processes of a multi-host job prepare the same workdir.
    probe = os.path.join(workdir, f".write_test.{socket.gethostname()}.{os.getpid()}")
    with open(probe, "w"):
      pass
    os.remove(probe)
  except OSError as error:
    raise WorkdirUnwritableError(
      f"cannot write to the workdir {os.path.abspath(workdir)}: {error.strerror or error}"
    ) from None


def acquire_lock(workdir: str, log=print) -> str:
  """Create `<workdir>/.lock` ({"pid", "host", "started"}) atomically; returns its path.

  A lock left by a process of this host that is no longer running is broken (one log line);
  any other existing lock raises WorkdirLockedError.
  """
  path = os.path.join(workdir, LOCK_FILE)
  host = socket.gethostname()
  for _ in range(2):  # a second try after breaking a stale lock
    try:
      descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      holder = _read_lock(path) or {}
      pid = holder.get("pid")
      if holder.get("host") != host or not isinstance(pid, int) or pid < 1 or _is_running(pid):
        raise WorkdirLockedError(
          f"workdir {os.path.abspath(workdir)} is in use by process {holder.get('pid', '?')} "
          f"on host {holder.get('host', '?')} (since {holder.get('started', '?')}); if no "
          f"training runs there, delete {path}"
        ) from None
      log(f"breaking the stale lock of process {pid} (no longer running) on {workdir}")
      with contextlib.suppress(FileNotFoundError):  # another process broke it first
        os.remove(path)
      continue
    with os.fdopen(descriptor, "w") as file:
      json.dump({"pid": os.getpid(), "host": host, "started": _now()}, file)
    return path
  raise WorkdirLockedError(f"workdir {os.path.abspath(workdir)}: another process took {path}")


@contextlib.contextmanager
def locked(workdir: str, log=print):
  """Hold the workdir's lock for the `with` body; released on exceptions too."""
  path = acquire_lock(workdir, log)
  try:
    yield path
  finally:
    with contextlib.suppress(FileNotFoundError):
      os.remove(path)


_ABSENT = object()


def _field(tree: dict, dotted: str):
  for key in dotted.split("."):
    if not isinstance(tree, dict) or key not in tree:
      return _ABSENT
    tree = tree[key]
  return tree


def changed_fields(recorded: dict, config: dict) -> list[str]:
  """`CHECKPOINT_FIELDS` that differ, as "name: old -> new". A field missing from either
  config (one written before the field existed) is not compared."""
  changes = []
  for name in CHECKPOINT_FIELDS:
    old, new = _field(recorded, name), _field(config, name)
    if old is not _ABSENT and new is not _ABSENT and old != new:
      changes.append(f"{name}: {old!r} -> {new!r}")
  return changes


def record_config(config, workdir: str, allow_changed: bool = False, log=print) -> None:
  """Check `config` against `<workdir>/config.json`, then append it to the history and
  make it the recorded config. Raises ConfigChangedError unless `allow_changed`."""
  # Through JSON, so tuples compare equal to the lists that config.json holds.
  values = json.loads(config.to_json_best_effort())
  path = os.path.join(workdir, CONFIG_FILE)
  if os.path.exists(path):
    with open(path) as file:
      changes = changed_fields(json.load(file), values)
    if changes and not allow_changed:
      raise ConfigChangedError(
        f"the config differs from {path} in fields that shape the checkpoints ("
        + "; ".join(changes)
        + "): use a new workdir, or pass --allow_changed_config"
      )
    if changes:
      log("config changed (allowed): " + "; ".join(changes))
  with open(os.path.join(workdir, HISTORY_FILE), "a") as file:
    file.write(json.dumps({"started": _now(), "config": values}) + "\n")
  temporary = path + ".tmp"
  with open(temporary, "w") as file:
    file.write(config.to_json_best_effort(indent=2))
  os.replace(temporary, path)  # a crash mid-write leaves the old config.json whole
