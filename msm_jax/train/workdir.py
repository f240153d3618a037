"""A training run's workdir: one training process at a time, and a recorded config.

`locked` holds `<workdir>/.lock` while `run.train` writes there: two runs sharing a workdir
would interleave their checkpoints and metrics. `record_config` keeps `config.json` (the
config of the newest run) and `config_history.jsonl` (every accepted run's), and refuses a
config whose fields that shape the checkpoints or what a step trains on differ from the
recorded one (`compared_fields`): resuming such a run would fail on the first restore, or
silently mix two datasets (or two meanings of "step") in one run.
"""

import contextlib
import datetime
import fcntl
import json
import os
import socket

from msm_jax import files

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
  # What a step trains on: its batch (the meaning of "step"), the order of the faces, the
  # heatmap targets. Every field of the data sections counts too (`DATA_SECTIONS`).
  "seed",
  "stgan.batch_size",
  "hourglass.batch_size",
  "hourglass.sigma",
  "resnet.batch_size",
  "joint.batch_size",
)
# Sections whose every field changes the faces a step trains on (which faces, their boxes and
# crops, the synthetic generator, the augmentation), except the `RESUME_SAFE_FIELDS`.
DATA_SECTIONS = ("data", "augment")
# Fields of those sections that change how the data is read or evaluated, not what trains.
RESUME_SAFE_FIELDS = (
  "data.worker_count",
  "data.prefetch",
  "data.skip_bad_samples",
  "data.eval_dataset",
  "data.eval_root",
  "data.eval_splits",
  "data.tfds_data_dir",  # where the prepared crops are, not what they hold
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


def _parse_lock(text: str) -> dict | None:
  """A lock's record, or None when it is empty or damaged (a full disk, a crash)."""
  try:
    record = json.loads(text)
  except json.JSONDecodeError:
    return None
  return record if isinstance(record, dict) else None


def _read_lock(path: str) -> dict | None:
  try:
    with open(path) as file:
      return _parse_lock(file.read())
  except FileNotFoundError:
    return None


def _create_lock(path: str, record: dict) -> bool:
  """Create ``path`` holding ``record``, complete or not at all: the record is written and
  synced under a private name, then hard-linked into place (which fails where ``path``
  exists). False where another process holds ``path``."""
  private = f"{path}.{socket.gethostname()}.{os.getpid()}"
  try:
    with open(private, "w") as file:
      json.dump(record, file)
      file.flush()
      os.fsync(file.fileno())
    os.link(private, path)
    return True
  except FileExistsError:
    return False
  finally:
    with contextlib.suppress(FileNotFoundError):
      os.remove(private)


def _stale_reason(holder: dict | None, host: str, workdir: str, path: str) -> str | None:
  """Why the lock ``holder`` may be broken (the log line), or None where it may not."""
  if holder is None:
    return f"breaking the unreadable lock {path} (empty or damaged, its holder unknown)"
  pid = holder.get("pid")
  if holder.get("host") != host or not isinstance(pid, int) or pid < 1 or _is_running(pid):
    return None
  return f"breaking the stale lock of process {pid} (no longer running) on {workdir}"


def _same_file(descriptor: int, path: str) -> bool:
  try:
    return os.path.samestat(os.fstat(descriptor), os.stat(path))
  except FileNotFoundError:
    return False


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

  A lock left by a process of this host that is no longer running, or one that is empty or
  unreadable, is broken (one log line); any other existing lock raises WorkdirLockedError.
  Breaking is race-free: a breaker takes an exclusive `flock` on the lock file it read and
  removes it only while that file is still the lock, so of several processes breaking one
  stale lock at once exactly one becomes the holder.
  """
  path = os.path.join(workdir, LOCK_FILE)
  host = socket.gethostname()
  record = {"pid": os.getpid(), "host": host, "started": _now()}
  for _ in range(16):  # each retry follows a lock broken or released meanwhile
    if _create_lock(path, record):
      return path
    try:
      file = open(path)
    except FileNotFoundError:
      continue  # released meanwhile
    with file:
      fcntl.flock(file.fileno(), fcntl.LOCK_EX)
      if not _same_file(file.fileno(), path):
        continue  # broken (and perhaps taken) by another process meanwhile
      holder = _parse_lock(file.read())
      reason = _stale_reason(holder, host, workdir, path)
      if reason is None:
        raise WorkdirLockedError(
          f"workdir {os.path.abspath(workdir)} is in use by process {holder.get('pid', '?')} "
          f"on host {holder.get('host', '?')} (since {holder.get('started', '?')}); if no "
          f"training runs there, delete {path}"
        ) from None
      log(reason)
      os.remove(path)  # under the flock of this very file: no other breaker removes a new one
  raise WorkdirLockedError(f"workdir {os.path.abspath(workdir)}: another process took {path}")


@contextlib.contextmanager
def locked(workdir: str, log=print):
  """Hold the workdir's lock for the `with` body; released on exceptions too."""
  path = acquire_lock(workdir, log)
  try:
    yield path
  finally:
    if (_read_lock(path) or {}).get("pid") == os.getpid():
      with contextlib.suppress(FileNotFoundError):
        os.remove(path)


_ABSENT = object()


def _field(tree: dict, dotted: str):
  for key in dotted.split("."):
    if not isinstance(tree, dict) or key not in tree:
      return _ABSENT
    tree = tree[key]
  return tree


def _leaf_fields(tree, prefix: str) -> list[str]:
  if not isinstance(tree, dict):
    return [prefix]
  return [name for key, value in tree.items() for name in _leaf_fields(value, f"{prefix}.{key}")]


def compared_fields(recorded: dict, config: dict) -> list[str]:
  """`CHECKPOINT_FIELDS` and every leaf field of the `DATA_SECTIONS` of either config, less
  the `RESUME_SAFE_FIELDS`, sorted."""
  names = set(CHECKPOINT_FIELDS)
  for section in DATA_SECTIONS:
    for tree in (recorded, config):
      names.update(_leaf_fields(tree.get(section, {}), section))
  return sorted(names - set(RESUME_SAFE_FIELDS))


def changed_fields(recorded: dict, config: dict) -> list[str]:
  """Fields of `compared_fields` that differ, as "name: old -> new". A field missing from
  either config (one written before the field existed) is not compared."""
  changes = []
  for name in compared_fields(recorded, config):
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
        f"the config differs from {path} in fields that shape the checkpoints or what a step "
        "trains on (" + "; ".join(changes) + "): use a new workdir, or pass --allow_changed_config"
      )
    if changes:
      log("config changed (allowed): " + "; ".join(changes))
  history = os.path.join(workdir, HISTORY_FILE)
  _drop_partial_last_line(history)
  with open(history, "a") as file:
    file.write(json.dumps({"started": _now(), "config": values}) + "\n")
    file.flush()
    os.fsync(file.fileno())
  files.write_text(path, config.to_json_best_effort(indent=2))


def _drop_partial_last_line(path: str) -> None:
  """An append-only log cut short (a full disk, a kill mid-write) ends in a partial line:
  it is cut back to its last complete line, so the next record starts a line of its own."""
  if not os.path.exists(path):
    return
  with open(path, "rb+") as file:
    data = file.read()
    if data and not data.endswith(b"\n"):
      file.truncate(data.rfind(b"\n") + 1)
