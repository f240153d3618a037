"""Process set-up of the command-line programs: XLA flags and the allocator re-exec."""

import gc
import os
import signal
import subprocess
import sys

import pytest

from msm_jax import cli

# A child that asks for the re-exec, then reports its allocator settings and, from a worker
# thread (as XLA's threads allocate), the page faults of writing a freed-and-reallocated
# 64 MiB block nine times.
_CHILD = """
import ctypes, os, resource, sys, threading
from msm_jax import cli
cli.restart_with_page_reuse()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = 64 << 20
faults = []
def touch_freed_blocks():
  for _ in range(10):
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
thread = threading.Thread(target=touch_freed_blocks)
thread.start()
thread.join()
allocator = "jemalloc" if "libjemalloc" in open("/proc/self/maps").read() else "glibc"
arenas = os.environ.get("MALLOC_ARENA_MAX", "unset")
print(allocator, arenas, faults[-1] - faults[0], sys.argv[1:])
"""

_PAGES = (64 << 20) // os.sysconf("SC_PAGE_SIZE")  # pages of the block


def _run_child(**environment):
  """(allocator, MALLOC_ARENA_MAX, page faults of the last nine writes, argv) of the child."""
  env = {
    key: value
    for key, value in os.environ.items()
    if key not in ("LD_PRELOAD", "MSM_JAX_SYSTEM_MALLOC", *cli.GLIBC_PAGE_REUSE)
  }
  env.update(environment)
  result = subprocess.run(
    [sys.executable, "-c", _CHILD, "--flag", "x y"],
    env=env,
    capture_output=True,
    text=True,
    timeout=60,
    check=True,
  )
  allocator, arenas, faults, argv = result.stdout.strip().split(" ", 3)
  return allocator, arenas, int(faults), argv


linux_glibc = pytest.mark.skipif(
  not sys.platform.startswith("linux") or not cli._is_glibc(), reason="needs Linux with glibc"
)


@linux_glibc
def test_restart_reuses_freed_pages_and_keeps_arguments():
  allocator, arenas, faults, argv = _run_child()
  assert argv == "['--flag', 'x y']"
  expected = "jemalloc" if cli.jemalloc_path() else "glibc"
  assert (allocator, arenas) == (expected, "unset" if cli.jemalloc_path() else "1")
  # Each write of a fresh mapping faults every page; a reused block faults none. A tenth of
  # one block's pages leaves room for the interpreter's own allocations.
  assert faults < _PAGES // 10


@linux_glibc
def test_system_malloc_faults_the_pages_again():
  # glibc's default: a 64 MiB block is above the largest mmap threshold (32 MiB), so every
  # malloc maps fresh pages and every free unmaps them.
  allocator, arenas, faults, _ = _run_child(MSM_JAX_SYSTEM_MALLOC="1")
  assert (allocator, arenas) == ("glibc", "unset")
  assert faults > 9 * _PAGES // 2


@linux_glibc
def test_user_allocator_settings_are_kept():
  allocator, arenas, _, _ = _run_child(MALLOC_ARENA_MAX="4")
  assert (allocator, arenas) == ("glibc", "4")


def test_training_flags_added_once_and_respect_opt_out(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
  monkeypatch.delenv("MSM_JAX_NO_YNN", raising=False)
  cli.configure_training_process()
  cli.configure_training_process()
  assert os.environ["XLA_FLAGS"] == (
    "--xla_force_host_platform_device_count=4 --xla_cpu_experimental_ynn_fusion_type=dot,reduce"
  )
  monkeypatch.setenv("XLA_FLAGS", "")
  monkeypatch.setenv("MSM_JAX_NO_YNN", "1")
  cli.configure_training_process()
  assert os.environ["XLA_FLAGS"] == ""


def _run_script(*args):
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  return subprocess.run(
    [sys.executable, os.path.join(root, args[0]), *args[1:]],
    cwd=root,
    env=dict(os.environ, MSM_JAX_SYSTEM_MALLOC="1"),
    capture_output=True,
    text=True,
    timeout=120,
  )


@pytest.mark.parametrize(
  "script, own_flag", [("train.py", "--allow_changed_config"), ("evaluate.py", "--checkpoint")]
)
def test_help_exits_zero_and_lists_the_flags(script, own_flag):
  short = _run_script(script, "--help")
  assert short.returncode == 0, short.stderr[-2000:]
  assert own_flag in short.stdout and "--config" in short.stdout
  assert "--verbosity" not in short.stdout  # absl's own flags only in --helpfull
  full = _run_script(script, "--helpfull")
  assert full.returncode == 0, full.stderr[-2000:]
  assert own_flag in full.stdout and "--verbosity" in full.stdout


def test_missing_required_flag_still_fails():
  result = _run_script("train.py", "--workdir", "unused")
  assert result.returncode == 1
  assert "Flag --config must have a value" in result.stderr


def test_evaluate_reports_a_missing_run_in_one_line(tmp_path):
  missing = tmp_path / "no_such_300w"
  result = _run_script(
    "evaluate.py",
    "--config",
    os.path.join("configs", "300w.py"),
    "--workdir",
    str(tmp_path),
    f"--config.data.root={missing}",
  )
  assert result.returncode == 1, result.stderr[-2000:]
  assert result.stderr.startswith("error: no hourglass checkpoint in")
  assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize(
  "stage, message",
  [
    ("hourglass", "error: the hourglass network makes 128x128 maps from 256x256 crops"),
    ("stgan", "error: the ST-GAN reads 128x128 crops (Table I) but data.crop_size is 256"),
  ],
)
def test_train_reports_config_fields_that_do_not_fit_in_one_line(tmp_path, stage, message):
  result = _run_script(
    "train.py",
    "--config",
    os.path.join("configs", "synthetic.py"),
    "--workdir",
    str(tmp_path / "run"),
    "--config.data.crop_size=256",
    f"--config.stages={stage}",
  )
  assert result.returncode == 2, result.stderr[-2000:]  # refused before anything is written
  assert not (tmp_path / "run").exists()
  last = result.stderr.splitlines()[-1]
  assert last.startswith(message), result.stderr[-2000:]
  assert "Traceback" not in result.stderr


def test_the_allocator_restart_is_for_cpu_computation_only(monkeypatch):
  monkeypatch.setenv("JAX_PLATFORMS", "cuda")
  assert not cli.computes_on_cpu_only()
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  assert cli.computes_on_cpu_only()
  monkeypatch.delenv("JAX_PLATFORMS")
  monkeypatch.setattr(cli, "_ACCELERATOR_PLUGINS", ("json",))  # an installed module stands in
  assert not cli.computes_on_cpu_only()
  monkeypatch.setattr(cli, "_ACCELERATOR_PLUGINS", ("no_such_plugin_module",))
  assert cli.computes_on_cpu_only()
  # On an accelerator the process is not re-executed.
  monkeypatch.setattr(cli, "_ACCELERATOR_PLUGINS", ("json",))
  for name in ("MSM_JAX_SYSTEM_MALLOC", "LD_PRELOAD", *cli.GLIBC_PAGE_REUSE):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setattr(cli.os, "execve", lambda *args: pytest.fail("re-executed"))
  cli.restart_with_page_reuse()


_TOOLS = (
  "msm_jax.train.packaging",
  "msm_jax.train.detector_calibration",
  "msm_jax.eval.detector_accuracy",
  "msm_jax.eval.robustness",
  "msm_jax.eval.annotation_offset",
  "msm_jax.eval.tracking_fit",
  "msm_jax.eval.dlib_peer",
  "msm_jax.eval.inference_levers",
  "msm_jax.inference.export",
)


def test_every_tool_help_exits_zero():
  """`python -m <tool> --help` prints its usage and exits 0 (absl's default exit is 1)."""
  environment = dict(os.environ, MSM_JAX_SYSTEM_MALLOC="1")
  for tool in _TOOLS:
    result = subprocess.run(
      [sys.executable, "-m", tool, "--help"],
      capture_output=True,
      text=True,
      timeout=300,
      env=environment,
    )
    assert result.returncode == 0, (tool, result.stderr[-2000:])
    assert "usage" in result.stdout.lower() or "flags" in result.stdout.lower(), tool


def _collect_with(callback):
  gc.callbacks.append(callback)
  try:
    gc.collect()
  finally:
    gc.callbacks.remove(callback)


def test_a_ctrl_c_inside_a_gc_callback_is_remembered_and_not_reported(monkeypatch):
  """Python cannot raise out of a garbage-collection callback; it hands the exception to
  `sys.unraisablehook` ("Exception ignored", a traceback) and goes on. Inside
  `interrupts_remembered` the interrupt is counted (the training loop stops on the count)
  and not reported; other ignored errors still reach the hook."""
  reported = []
  monkeypatch.setattr(sys, "unraisablehook", lambda report: reported.append(report.exc_type))
  handler = signal.getsignal(signal.SIGINT)

  def interrupting(phase, info):
    if phase == "start":
      signal.raise_signal(signal.SIGINT)

  def failing(phase, info):
    if phase == "start":
      raise ValueError("a callback's own error")

  with cli.interrupts_remembered():
    _collect_with(interrupting)
    assert cli.interrupt_requested() and reported == []
    _collect_with(failing)
    assert reported == [ValueError]
  assert not cli.interrupt_requested()
  assert signal.getsignal(signal.SIGINT) is handler
  # Python's default handler's KeyboardInterrupt is reported as ignored, and nothing counts it.
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    _collect_with(interrupting)
  finally:
    signal.signal(signal.SIGINT, previous)
  assert reported == [ValueError, KeyboardInterrupt] and not cli.interrupt_requested()


def test_an_ignored_ctrl_c_stays_ignored():
  """A process a shell started in the background inherits SIGINT ignored, so that Ctrl-C in
  that shell leaves it running; `interrupts_remembered` keeps it so."""
  previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
  try:
    with cli.interrupts_remembered():
      assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
      signal.raise_signal(signal.SIGINT)
      assert not cli.interrupt_requested()
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
  finally:
    signal.signal(signal.SIGINT, previous)
