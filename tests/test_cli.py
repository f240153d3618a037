"""Process set-up of the command-line programs: XLA flags and the jemalloc re-exec."""

import os
import subprocess
import sys

import pytest

from msm_jax import cli

# A child that asks for the re-exec, then reports which allocator its process image mapped.
_CHILD = """
import sys
from msm_jax import cli
cli.restart_with_jemalloc()
maps = open("/proc/self/maps").read()
print("jemalloc" if "libjemalloc" in maps else "glibc", sys.argv[1:])
"""


def _run_child(**environment):
  env = {
    key: value
    for key, value in os.environ.items()
    if key not in ("LD_PRELOAD", "MSM_JAX_NO_JEMALLOC")
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
  return result.stdout.strip()


@pytest.mark.skipif(
  cli.jemalloc_path() is None or not sys.platform.startswith("linux"),
  reason="libjemalloc2 not installed",
)
def test_restart_preloads_jemalloc_and_keeps_arguments():
  assert _run_child() == "jemalloc ['--flag', 'x y']"


def test_restart_can_be_turned_off():
  assert _run_child(MSM_JAX_NO_JEMALLOC="1") == "glibc ['--flag', 'x y']"


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
    env=dict(os.environ, MSM_JAX_NO_JEMALLOC="1"),
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
