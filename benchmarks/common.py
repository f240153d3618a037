"""What every benchmark script shares: the machine, timing, tables, JSON and worker processes.

Every script in ``benchmarks/`` prints the machine it ran on, times each case as
the median of ``--repeats`` (>= 5) calls after ``--warmup`` untimed calls, prints Markdown
tables and writes the same numbers, with the machine, to ``benchmarks/results/<name>.json``
(``--json`` overrides the path). ``--quick`` shrinks every case to a smoke run.

Process-level settings cannot change inside a running JAX process (XLA flags, the number of
forced CPU devices, the allocator), so cases that need other settings run in a child process
(``run_worker``) that prints its result as one ``BENCH_RESULT {json}`` line.
"""

import argparse
import dataclasses
import importlib.metadata
import json
import os
import pathlib
import platform
import resource
import subprocess
import sys
import time
from typing import Callable, Sequence

from msm_jax import cli

RESULTS_DIR = pathlib.Path(__file__).resolve().parent / "results"
REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
# jaxlib 0.10 on CPU: keeps YNNPACK for matrix products and reductions only. Training gets
# ~30 % faster, inference ~30 % slower (docs/cpu_notes.md), so benchmarks, like
# train.py and predict.py, set it for training processes only.
TRAINING_XLA_FLAG = "--xla_cpu_experimental_ynn_fusion_type=dot,reduce"
_RESULT_PREFIX = "BENCH_RESULT "
_PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "grain", "torch", "scikit-learn")


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as cpuinfo:
      for line in cpuinfo:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
  """The CPU features that decide matmul speed (AVX-512, bfloat16, AMX)."""
  try:
    with open("/proc/cpuinfo") as cpuinfo:
      flags = next(line for line in cpuinfo if line.startswith("flags")).split()
  except (OSError, StopIteration):
    return []
  wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
  return [flag for flag in wanted if flag in flags]


def _version(package: str) -> str:
  # Metadata only: importing torch (or jax) here would slow every script and pin settings.
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return "not installed"


def machine_info() -> dict:
  """CPU, cores, package versions and the process settings that change speed."""
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  return {
    "cpu": cpu_model(),
    "cpu_features": _cpu_flags(),
    "logical_cpus": os.cpu_count(),
    "usable_cpus": cores,
    "load_average_1min": round(os.getloadavg()[0], 2),
    "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    "python": platform.python_version(),
    "platform": platform.platform(),
    "versions": {package: _version(package) for package in _PACKAGES},
    "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
    "LD_PRELOAD": os.environ.get("LD_PRELOAD", ""),
    "MALLOC_CONF": os.environ.get("MALLOC_CONF", ""),
    "glibc_malloc": " ".join(
      f"{name}={os.environ[name]}" for name in cli.GLIBC_PAGE_REUSE if name in os.environ
    ),
    "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
  }


def print_machine(info: dict) -> None:
  versions = ", ".join(f"{name} {version}" for name, version in info["versions"].items())
  print(
    f"Machine: {info['cpu']} ({' '.join(info['cpu_features']) or 'no AVX-512'}), "
    f"{info['usable_cpus']} of {info['logical_cpus']} logical CPUs usable, "
    f"{info['memory_gb']} GB, load average {info['load_average_1min']} at start; "
    f"Python {info['python']}; {versions}"
  )
  print(
    f"XLA_FLAGS={info['XLA_FLAGS']!r} LD_PRELOAD={info['LD_PRELOAD']!r} "
    f"MALLOC_CONF={info['MALLOC_CONF']!r} glibc malloc: {info['glibc_malloc'] or 'defaults'}\n",
    flush=True,
  )


def parser(name: str, description: str) -> argparse.ArgumentParser:
  """An ArgumentParser with the options every benchmark shares."""
  result = argparse.ArgumentParser(
    prog=f"python -m benchmarks.{name}",
    description=description,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  result.add_argument(
    "--repeats",
    type=int,
    default=5,
    help="timed calls per case; the median is reported (default 5)",
  )
  result.add_argument(
    "--warmup", type=int, default=1, help="untimed calls before timing (compilation, caches)"
  )
  result.add_argument(
    "--quick",
    action="store_true",
    help="tiny sizes: a smoke run that checks the script, not the speed",
  )
  result.add_argument(
    "--json",
    default=str(RESULTS_DIR / f"{name}.json"),
    help="where to write the results (default benchmarks/results/<name>.json)",
  )
  return result


def check_args(args: argparse.Namespace) -> None:
  if args.repeats < 1:
    raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
  if args.warmup < 0:
    raise ValueError(f"--warmup must be >= 0, got {args.warmup}")


@dataclasses.dataclass(frozen=True)
class Timing:
  """Seconds per call over the timed repeats."""

  median: float
  minimum: float
  samples: tuple[float, ...]

  def as_dict(self) -> dict:
    return {"median_s": self.median, "min_s": self.minimum, "samples_s": list(self.samples)}


def _block(value):
  """Wait for JAX's asynchronous results; anything else passes through."""
  block = getattr(value, "block_until_ready", None)
  if block is not None:
    return block()
  if "jax" in sys.modules:
    return sys.modules["jax"].block_until_ready(value)
  return value


def time_calls(function: Callable[[], object], repeats: int, warmup: int = 1) -> Timing:
  """Median and minimum seconds of ``function()`` over ``repeats`` calls after ``warmup``.

  JAX results are waited for (block_until_ready) inside each timed call.
  """
  for _ in range(warmup):
    _block(function())
  samples = []
  for _ in range(repeats):
    start = time.perf_counter()
    _block(function())
    samples.append(time.perf_counter() - start)
  ordered = sorted(samples)
  middle = len(ordered) // 2
  median = ordered[middle] if len(ordered) % 2 else 0.5 * (ordered[middle - 1] + ordered[middle])
  return Timing(median=median, minimum=ordered[0], samples=tuple(samples))


def peak_rss_mb() -> float:
  """This process's peak resident memory so far (Linux reports kilobytes)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
  """Rows of already formatted cells -> a Markdown table; numbers right-aligned."""

  def is_number(cell):  # "-" marks a missing number
    text = str(cell).replace(",", "").replace(".", "", 1).removesuffix("x").removesuffix(" %")
    return isinstance(cell, (int, float)) or text == "-" or text.lstrip("-").isdigit()

  align = [
    "---:" if rows and all(is_number(row[i]) for row in rows) else "---"
    for i in range(len(headers))
  ]
  lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
  lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
  return "\n".join(lines)


def write_json(
  path: str, name: str, args: argparse.Namespace, machine: dict, results: dict
) -> None:
  """The results with the machine and the command-line arguments that produced them."""
  payload = {
    "benchmark": name,
    "command": " ".join([f"python -m benchmarks.{name}"] + sys.argv[1:]),
    "arguments": vars(args),
    "machine": machine,
    "results": results,
  }
  pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
  with open(path, "w") as file:
    json.dump(payload, file, indent=2, default=str)
  print(f"\nwrote {path}")


def process_env(*, training: bool, devices: int = 1, extra: dict | None = None) -> dict:
  """The environment of a JAX child process: the YNN flag for training processes only,
  ``devices`` forced host CPU devices, everything else inherited (the allocator included)."""
  flags = [
    flag
    for flag in os.environ.get("XLA_FLAGS", "").split()
    if "ynn_fusion" not in flag and "force_host_platform_device_count" not in flag
  ]
  if training:
    flags.append(TRAINING_XLA_FLAG)
  if devices > 1:
    flags.append(f"--xla_force_host_platform_device_count={devices}")
  env = dict(os.environ, XLA_FLAGS=" ".join(flags))
  # The children import `benchmarks` and `configs` from the repository root.
  env["PYTHONPATH"] = os.pathsep.join(
    filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])
  )
  env.update(extra or {})
  return env


def run_worker(module: str, arguments: Sequence[str], env: dict, timeout_s: float = 3600):
  """Run ``python -m module arguments`` and return the dict of its ``BENCH_RESULT`` line.

  The child's other output goes to this process's stderr. A failed child raises
  RuntimeError with its last lines, so one bad case is visible, not silently missing.
  """
  command = [sys.executable, "-m", module, *arguments]
  completed = subprocess.run(
    command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout_s, check=False
  )
  results = [
    line[len(_RESULT_PREFIX) :]
    for line in completed.stdout.splitlines()
    if line.startswith(_RESULT_PREFIX)
  ]
  if completed.returncode != 0 or not results:
    tail = "\n".join((completed.stdout + completed.stderr).splitlines()[-25:])
    raise RuntimeError(f"worker {' '.join(command)} failed (exit {completed.returncode}):\n{tail}")
  return json.loads(results[-1])


def emit_worker_result(result: dict) -> None:
  """A worker's answer to ``run_worker``: one line on stdout."""
  print(_RESULT_PREFIX + json.dumps(result, default=float), flush=True)


def format_seconds(seconds: float) -> str:
  if seconds >= 1.0:
    return f"{seconds:.2f} s"
  if seconds >= 1e-3:
    return f"{seconds * 1e3:.1f} ms"
  return f"{seconds * 1e6:.1f} us"
