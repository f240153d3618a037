"""Process set-up shared by the command-line programs (train.py, evaluate.py, predict.py)."""

import contextlib
import os
import signal
import sys

# XLA:CPU's YNN fusion speeds training steps up and slows inference down
# (docs/cpu_notes.md), so it is set for training only.
_TRAINING_XLA_FLAGS = "--xla_cpu_experimental_ynn_fusion_type=dot,reduce"

# glibc's malloc gives XLA:CPU's large per-step temporaries back to the kernel (mmap'd
# blocks, per-thread arenas trimmed on free) and faults them in again on every step. Two
# allocators keep the pages instead, at the price of the process keeping its peak memory:
# jemalloc with decay off where installed, otherwise glibc's malloc with one arena (XLA's
# threads would otherwise allocate from their own mmap'd heaps), no mmap'd blocks and no
# trimming. What each gains is in docs/cpu_notes.md.
_JEMALLOC_PATHS = (
  "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
  "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
  "/usr/lib64/libjemalloc.so.2",
)
_JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"
GLIBC_PAGE_REUSE = {
  "MALLOC_ARENA_MAX": "1",
  "MALLOC_MMAP_MAX_": "0",
  "MALLOC_TRIM_THRESHOLD_": str(2**40),
}


def configure_training_process() -> None:
  """Set CPU XLA flags before JAX initialises its backend (no effect on GPU/TPU)."""
  flags = os.environ.get("XLA_FLAGS", "")
  if "ynn_fusion" not in flags and os.environ.get("MSM_JAX_NO_YNN") is None:
    os.environ["XLA_FLAGS"] = f"{flags} {_TRAINING_XLA_FLAGS}".strip()


_INTERRUPTS = {"count": 0}


def _on_interrupt(signum, frame):
  del signum, frame
  _INTERRUPTS["count"] += 1
  raise KeyboardInterrupt


@contextlib.contextmanager
def interrupts_remembered():
  """Inside it Ctrl-C (SIGINT) raises KeyboardInterrupt as Python's default handler does, and
  is also counted, so that code which swallows the exception cannot lose it: `asyncio.run`
  (inside Orbax's saves) would otherwise put in a handler that cancels its task, and an
  interrupt that lands as that task finishes is dropped. Loops that must stop check
  `interrupt_requested()`. An interrupt that lands in a garbage-collection callback (JAX has
  one) or a finaliser cannot propagate: Python reports it as "Exception ignored" with a
  traceback, which is left out here since the loops stop on the count. Main thread only
  (where Python runs signal handlers)."""
  if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # started in the background by a shell
    yield  # that shell's Ctrl-C is not meant for this process
    return
  previous = signal.signal(signal.SIGINT, _on_interrupt)
  previous_hook = sys.unraisablehook

  def unraisable(report):
    if not isinstance(report.exc_value, KeyboardInterrupt):
      previous_hook(report)

  _INTERRUPTS["count"] = 0
  sys.unraisablehook = unraisable
  try:
    yield
  finally:
    signal.signal(signal.SIGINT, previous)
    sys.unraisablehook = previous_hook
    _INTERRUPTS["count"] = 0


def interrupt_requested() -> bool:
  """Whether a SIGINT arrived inside `interrupts_remembered()`."""
  return _INTERRUPTS["count"] > 0


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

  spec = importlib.util.spec_from_file_location("msm_jax_config_file", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def jemalloc_path() -> str | None:
  """The system's jemalloc (Debian/Ubuntu package libjemalloc2), if installed."""
  return next((path for path in _JEMALLOC_PATHS if os.path.exists(path)), None)


def _is_glibc() -> bool:
  import platform

  return platform.libc_ver()[0] == "glibc"


# Accelerator plugins of jaxlib: where one is installed JAX computes on the accelerator and the
# host allocator does not matter.
_ACCELERATOR_PLUGINS = (
  "jax_cuda12_plugin",
  "jax_cuda13_plugin",
  "jax_rocm60_plugin",
  "jax_rocm7_plugin",
  "libtpu",
)


def computes_on_cpu_only() -> bool:
  """True when JAX will compute on the CPU: JAX_PLATFORMS names cpu alone, or no accelerator
  plugin is installed (checked without importing JAX)."""
  import importlib.util

  platforms = os.environ.get("JAX_PLATFORMS", "")
  if platforms:
    return platforms.strip().lower() == "cpu"
  return not any(importlib.util.find_spec(name) for name in _ACCELERATOR_PLUGINS)


def restart_with_page_reuse() -> None:
  """Re-execute this program, once, with an allocator that reuses freed pages: jemalloc
  preloaded if installed, else glibc's malloc set by its environment variables (one arena,
  no mmap'd blocks, no trimming). Linux only.

  The allocator must be chosen before the process starts, hence the re-exec; it happens
  before JAX is imported, so nothing is lost. Child processes inherit the choice.
  Only where JAX computes on the CPU (`computes_on_cpu_only`). MSM_JAX_SYSTEM_MALLOC=1 keeps
  the allocator as it is; so does an LD_PRELOAD'ed jemalloc or any of glibc's
  MALLOC_ARENA_MAX / MALLOC_MMAP_MAX_ / MALLOC_TRIM_THRESHOLD_ already set.
  """
  preloaded = os.environ.get("LD_PRELOAD", "")
  if (
    os.environ.get("MSM_JAX_SYSTEM_MALLOC")
    or not sys.platform.startswith("linux")
    or not computes_on_cpu_only()
    or "jemalloc" in preloaded
    or any(name in os.environ for name in GLIBC_PAGE_REUSE)
  ):
    return
  library = jemalloc_path()
  environment = dict(os.environ)
  if library is not None:
    environment["LD_PRELOAD"] = f"{library} {preloaded}".strip()
    environment.setdefault("MALLOC_CONF", _JEMALLOC_CONF)
  elif _is_glibc():
    environment.update(GLIBC_PAGE_REUSE)
  else:
    return
  # orig_argv: the interpreter options and -c/-m forms too, not just the script arguments.
  os.execve(sys.executable, sys.orig_argv, environment)
