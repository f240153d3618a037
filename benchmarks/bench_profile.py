"""Where the hourglass's time goes: XLA's own profile of one forward and one train step, per
kind of op.

  python -m benchmarks.bench_profile [--dtype bfloat16] [--kernels onednn] [--width 256]
      [--batch 16] [--quick]

Runs the full-size stacked hourglass (or ``--width``) once under ``jax.profiler`` and sums the
durations of the executed ops by kind: XLA fusions by their name without the numeric suffix
(``ynn_fusion``, ``broadcast_multiply_fusion``, ...), oneDNN's custom calls as ``ffi_call``.
Run it in a training-like process: ``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=dot,reduce``
is set here before JAX starts, as train.py does.

XLA:CPU runs independent ops on concurrent threads, so the sum of op durations can exceed
the wall time; the oneDNN calls run one at a time (each uses every core), so their sum is
their share of the wall time.
"""

import collections
import glob
import gzip
import json
import os
import re
import tempfile
import time

from benchmarks import bench_training, common


def _op_kinds(trace_dir: str) -> dict:
  """{kind: [total ms, count]} over the executed ops of the trace in ``trace_dir``."""
  path = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)[0]
  with gzip.open(path) as trace:
    events = json.load(trace)
  events = events["traceEvents"] if isinstance(events, dict) else events
  kinds = collections.defaultdict(lambda: [0.0, 0])
  for event in events:
    name = event.get("name", "")
    # Complete events of executed ops; the host-side wrappers are left out.
    if event.get("ph") != "X" or name.startswith(("$", "ThunkExecutor", "PjitFunction")):
      continue
    if name.startswith("end:") or any(
      part in name
      for part in ("PjRt", "Await", "Handle ", "ParseArguments", "Wait for", "Allocate")
    ):
      continue
    kind = re.sub(r"\.\d+$", "", name)
    kinds[kind][0] += event["dur"] / 1e3
    kinds[kind][1] += 1
  return dict(kinds)


def profile(function, args, label: str, top: int) -> dict:
  import jax  # pylint: disable=g-import-not-at-top

  jax.block_until_ready(function(*args))  # compile
  jax.block_until_ready(function(*args))
  start = time.perf_counter()
  jax.block_until_ready(function(*args))
  wall = time.perf_counter() - start
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
    jax.block_until_ready(function(*args))
    jax.profiler.stop_trace()
    kinds = _op_kinds(trace_dir)
  total = sum(ms for ms, _ in kinds.values())
  rows = sorted(kinds.items(), key=lambda item: -item[1][0])[:top]
  print(f"\n{label}: wall {wall * 1e3:.0f} ms, sum of op durations {total:.0f} ms\n")
  print(
    common.markdown_table(
      ["op kind", "ms", "ops", "share of op time"],
      [[kind, f"{ms:.1f}", count, f"{100 * ms / total:.0f} %"] for kind, (ms, count) in rows],
    )
  )
  return {"wall_ms": wall * 1e3, "op_ms": {kind: ms for kind, (ms, _) in kinds.items()}}


def main():
  parser = common.parser("bench_profile", __doc__)
  parser.add_argument("--dtype", default="bfloat16", help="compute dtype")
  parser.add_argument("--kernels", default="onednn", help="config.hourglass.kernels")
  parser.add_argument("--width", type=int, default=256, help="hourglass width")
  parser.add_argument("--batch", type=int, default=16, help="faces per batch")
  parser.add_argument("--top", type=int, default=15, help="op kinds listed")
  args = parser.parse_args()
  if "xla_cpu_experimental_ynn_fusion_type" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
      os.environ.get("XLA_FLAGS", "") + " " + common.TRAINING_XLA_FLAG
    ).strip()
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from msm_jax.train import parallel, stages  # pylint: disable=g-import-not-at-top

  machine = common.machine_info()
  common.print_machine(machine)
  width, batch = (16, 2) if args.quick else (args.width, args.batch)
  stem = "8,8,8" if args.quick else ("64,64,128" if width >= 256 else "32,64,64")
  config = bench_training.load_config(
    "paper",
    [
      f"hourglass.width={width}",
      f"hourglass.stem_widths={stem}",
      f"hourglass.batch_size={batch}",
      f"hourglass.compute_dtype={args.dtype}",
      f"hourglass.kernels={args.kernels}",
    ],
  )
  module = stages.hourglass_module(config)
  images = np.random.default_rng(0).uniform(0, 1, (batch, 128, 128, 3)).astype(np.float32)
  variables = module.init(jax.random.key(0), images[:1], train=False)
  forward = jax.jit(lambda variables, images: module.apply(variables, images, train=False))
  title = f"width {width}, batch {batch}, {args.dtype}, kernels {args.kernels}"
  results = {"forward": profile(forward, (variables, images), f"Forward ({title})", args.top)}

  mesh = parallel.data_mesh()
  step, state = bench_training.step_and_state("hourglass", config, mesh)
  holder = {"state": parallel.replicate(state, mesh)}  # the step donates its state
  data = bench_training.random_batch("hourglass", config, np.random.default_rng(0))

  def train_step(data):
    holder["state"], metrics = step(holder["state"], data)
    return metrics

  data = parallel.shard_batch(data, mesh)
  results["train_step"] = profile(train_step, (data,), f"Train step ({title})", args.top)
  common.write_json(args.json, "bench_profile", args, machine, results)


if __name__ == "__main__":
  from msm_jax.cli import restart_with_page_reuse

  restart_with_page_reuse()  # as train.py and predict.py
  main()
