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
