"""Process set-up shared by the command-line programs (train.py, evaluate.py, predict.py)."""

import os
import sys

# Measured on this 2-core CPU machine (docs/cpu_notes.md): the YNN fusion makes a
# training step ~30 % faster but slows inference by ~30 %, so it is set for training only.
_TRAINING_XLA_FLAGS = "--xla_cpu_experimental_ynn_fusion_type=dot,reduce"

# glibc's malloc returns and re-faults XLA's large per-step temporaries; jemalloc with decay
# off keeps them mapped. Measured on the full-size hourglass train step (batch 16, YNN flag
# on): 5.0 s with jemalloc vs 6.2 s without. The price: the process keeps its peak memory.
_JEMALLOC_PATHS = (
  "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
  "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
  "/usr/lib64/libjemalloc.so.2",
)
_JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"


def configure_training_process() -> None:
  """Set CPU XLA flags before JAX initialises its backend (no effect on GPU/TPU)."""
  flags = os.environ.get("XLA_FLAGS", "")
  if "ynn_fusion" not in flags and os.environ.get("MSM_JAX_NO_YNN") is None:
    os.environ["XLA_FLAGS"] = f"{flags} {_TRAINING_XLA_FLAGS}".strip()


def quiet_library_logs() -> None:
  """Library INFO logs (Orbax writes ~240 lines per stage) at WARNING, so the console shows the
  stages, the progress lines and the report; absl's ``--verbosity=0`` brings them back."""
  from absl import flags, logging

  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


def parse_flags_help_exits_zero(argv):
  """absl's flag parsing (`app.run(main, flags_parser=...)`), except that --help and
  --helpfull exit 0: absl exits 1 after printing the help, which scripts and CI read as a
  failure."""
  from absl import app, flags

  try:
    return flags.FLAGS(argv)
  except flags.Error:
    return app.parse_flags_with_usage(argv)  # prints the error as absl does, exits 1
  except SystemExit as stop:  # while parsing, only the help flags exit
    raise SystemExit(0 if stop.code == 1 else stop.code) from None


def load_config_file(path: str):
  """`get_config()` of a configs/<name>.py file, for the argparse commands (train.py and
  evaluate.py take theirs through ml_collections' --config flag)."""
  import importlib.util

  sys.path.insert(0, os.getcwd())  # config files import `configs`
  spec = importlib.util.spec_from_file_location("msm_jax_config_file", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def jemalloc_path() -> str | None:
  """The system's jemalloc (Debian/Ubuntu package libjemalloc2), if installed."""
  return next((path for path in _JEMALLOC_PATHS if os.path.exists(path)), None)


def restart_with_jemalloc() -> None:
  """Re-execute this program with jemalloc preloaded, once, if it is installed.

  The allocator must be chosen before the process starts, hence the re-exec; it happens
  before JAX is imported, so nothing is lost. MSM_JAX_NO_JEMALLOC=1 turns it off.
  """
  library = jemalloc_path()
  preloaded = os.environ.get("LD_PRELOAD", "")
  if (
    library is None
    or "jemalloc" in preloaded
    or os.environ.get("MSM_JAX_NO_JEMALLOC")
    or not sys.platform.startswith("linux")
  ):
    return
  environment = dict(os.environ, LD_PRELOAD=f"{library} {preloaded}".strip())
  environment.setdefault("MALLOC_CONF", _JEMALLOC_CONF)
  # orig_argv: the interpreter options and -c/-m forms too, not just the script arguments.
  os.execve(sys.executable, sys.orig_argv, environment)
