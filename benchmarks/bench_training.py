"""Training speed: images/s of every stage's jitted update step.

  python -m benchmarks.bench_training [--repeats 5] [--configs synthetic,paper] [--quick]

For the synthetic config (``configs/synthetic.py``: narrow networks that train on 2 cores)
and the paper config (``configs/base.py``: Table I/II widths, the 256-channel hourglass of
Sec. III-B, the full Res-50 of Sec. IV-G), times one update step of each stage - ST-GAN
(Algorithm 1: two G and two D updates), hourglass, Res-50 baseline - on a random batch of
the config's size. The data pipeline is left out (``bench_input_pipeline`` measures it).
Each case runs in its own process with the settings ``train.py`` uses: the YNN XLA flag and
the allocator that reuses freed pages (``msm_jax/cli.py``).

Data parallelism: the hourglass step again with the batch sharded over 1, 2 and 4 forced
host CPU devices (``--xla_force_host_platform_device_count``). On a machine with fewer
cores than devices this measures the cost of sharding, not a speed-up.

Each step's FLOPs come from XLA's cost analysis of the lowered step (before optimisation);
``bench_limit`` and ``bench_torch`` run the hourglass case through ``--worker``.
"""

import argparse
import os
import time

from benchmarks import common

STAGES = ("stgan", "hourglass", "resnet")
_SCALING_CAVEAT = (
  "Caveat: forced host devices are slices of the same {cores} usable core(s), not extra "
  "hardware. These rows show the overhead of sharding (collectives, smaller per-device "
  "matmuls, thread scheduling), not the speed-up that real devices would give."
)
# --quick: the same code paths at sizes that compile and run in seconds.
_QUICK_OVERRIDES = (
  "hourglass.width=16",
  "hourglass.stem_widths=8,8,8",
  "resnet.width=0.125",
  "stgan.generator_width=0.25",
  "stgan.discriminator_width=0.125",
  "hourglass.batch_size=4",
  "stgan.batch_size=4",
  "resnet.batch_size=4",
)


def load_config(name: str, overrides=()):
  """``synthetic`` (configs/synthetic.py) or ``paper`` (configs/base.py), with ``a.b=v``
  overrides typed like the field they replace (tuples as comma lists)."""
  from configs import base, synthetic  # pylint: disable=g-import-not-at-top

  if name not in ("synthetic", "paper"):
    raise ValueError(f"--config must be 'synthetic' or 'paper', got {name!r}")
  config = synthetic.get_config() if name == "synthetic" else base.get_config()
  for override in overrides:
    key, separator, text = override.partition("=")
    section, _, field = key.partition(".")
    if not separator or section not in config or field not in config[section]:
      raise ValueError(
        f"override {override!r}: expected section.field=value with an existing field"
      )
    old = config[section][field]
    if isinstance(old, tuple):
      value = tuple(type(old[0])(part) for part in text.split(","))
    elif isinstance(old, bool):
      value = text.lower() in ("1", "true", "yes")
    else:
      value = type(old)(text)
    config[section][field] = value
  return config


def random_batch(stage: str, config, rng):
  import numpy as np  # pylint: disable=g-import-not-at-top

  from msm_jax.train import stages as stage_lib  # pylint: disable=g-import-not-at-top

  size = config.data.crop_size
  batch_size = config[stage].batch_size
  images = lambda: rng.integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8)
  if stage == "stgan":
    theta = np.tile(np.eye(2, 3, dtype=np.float32), (batch_size, 1, 1))
    theta += rng.normal(0.0, 0.05, theta.shape).astype(np.float32)
    return {"fake": images(), "real": images(), "theta": theta}
  num_points = stage_lib.num_landmarks(config)
  landmarks = rng.uniform(0.2 * size, 0.8 * size, (batch_size, num_points, 2))
  return {
    "images": images(),
    "landmarks": landmarks.astype(np.float32),
    "visible": np.ones((batch_size, num_points), bool),
  }


def step_and_state(stage: str, config, mesh):
  from msm_jax.train import stages as stage_lib  # pylint: disable=g-import-not-at-top

  registered = stage_lib.STAGES[stage]  # the update train.py runs for this stage
  setup = registered.setup(config, 100)
  step, state = registered.step(config, setup, mesh), setup.state
  return step, state


def step_flops(stage: str, config, mesh, batch) -> float:
  """FLOPs of one update from XLA's cost analysis, counted on XLA's convolutions: oneDNN's
  custom calls (config.hourglass.kernels) compute the same products but XLA cannot see
  into them."""
  config = config.copy_and_resolve_references()
  if "kernels" in config.get(stage, {}):
    config[stage].kernels = "xla"
  step, state = step_and_state(stage, config, mesh)
  from msm_jax.train import parallel  # pylint: disable=g-import-not-at-top

  return float(step.lower(parallel.replicate(state, mesh), batch).cost_analysis()["flops"])


def time_train_step(stage: str, config, repeats: int, warmup: int) -> dict:
  """Compile and time one stage's update step on a random batch; runs in a worker."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from msm_jax.train import parallel  # pylint: disable=g-import-not-at-top

  mesh = parallel.data_mesh()
  parallel.check_batch_size(config[stage].batch_size, mesh, f"{stage}.batch_size")
  step, state = step_and_state(stage, config, mesh)
  state = parallel.replicate(state, mesh)
  batch = parallel.shard_batch(random_batch(stage, config, np.random.default_rng(0)), mesh)
  start = time.perf_counter()
  lowered = step.lower(state, batch)
  compiled = lowered.compile()
  compile_s = time.perf_counter() - start
  holder = {"state": state}

  def one_step():
    holder["state"], metrics = compiled(holder["state"], batch)
    return metrics

  timing = common.time_calls(one_step, repeats, warmup)
  jax.block_until_ready(holder["state"])
  flops = step_flops(stage, config, mesh, batch)
  batch_size = config[stage].batch_size
  return {
    "stage": stage,
    "batch_size": batch_size,
    "devices": jax.device_count(),
    "compile_s": compile_s,
    "step": timing.as_dict(),
    "images_per_s": batch_size / timing.median,
    "flops_per_step": flops,
    "flops_per_image": flops / batch_size,
    "peak_rss_mb": common.peak_rss_mb(),
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }


def worker_arguments(config: str, stage: str, overrides, repeats: int, warmup: int) -> list:
  """Command-line arguments of a ``--worker`` run (used by bench_torch and bench_limit)."""
  arguments = [
    "--worker",
    "--config",
    config,
    "--stage",
    stage,
    "--repeats",
    str(repeats),
    "--warmup",
    str(warmup),
  ]
  for override in overrides:
    arguments += ["--set", override]
  return arguments


def _run_case(config: str, stage: str, overrides, args, devices: int = 1) -> dict:
  env = common.process_env(training=True, devices=devices)
  return common.run_worker(
    "benchmarks.bench_training",
    worker_arguments(config, stage, overrides, args.repeats, args.warmup),
    env,
  )


def _row(config: str, result: dict) -> list:
  return [
    config,
    result["stage"],
    result["batch_size"],
    result["devices"],
    f"{result['compile_s']:.1f}",
    f"{result['step']['median_s']:.3f}",
    f"{result['step']['min_s']:.3f}",
    f"{result['images_per_s']:.1f}",
    f"{result['flops_per_image'] / 1e9:.2f}",
    f"{result['peak_rss_mb']:.0f}",
  ]


_HEADERS = [
  "config",
  "stage",
  "batch",
  "devices",
  "compile s",
  "step s (median)",
  "step s (min)",
  "images/s",
  "GFLOP/image",
  "peak RSS MB",
]


def main():
  parser = common.parser("bench_training", __doc__)
  parser.add_argument("--configs", default="synthetic,paper", help="comma list of synthetic, paper")
  parser.add_argument("--stages", default=",".join(STAGES), help="comma list of stages")
  parser.add_argument(
    "--scaling_config",
    default="synthetic",
    help="config of the data-parallel scaling rows (hourglass stage)",
  )
  parser.add_argument("--device_counts", default="1,2,4", help="forced CPU device counts")
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--config", default="synthetic", help=argparse.SUPPRESS)
  parser.add_argument("--stage", default="hourglass", help=argparse.SUPPRESS)
  parser.add_argument("--set", action="append", default=[], help="override: section.field=value")
  args = parser.parse_args()
  common.check_args(args)
  if args.stage not in STAGES:
    raise ValueError(f"--stage must be one of {STAGES}, got {args.stage!r}")

  if args.worker:
    config = load_config(args.config, args.set)
    common.emit_worker_result(time_train_step(args.stage, config, args.repeats, args.warmup))
    return

  from msm_jax.cli import restart_with_page_reuse  # pylint: disable=g-import-not-at-top

  restart_with_page_reuse()  # as train.py: the workers inherit the allocator
  machine = common.machine_info()
  common.print_machine(machine)
  overrides = list(_QUICK_OVERRIDES if args.quick else ()) + args.set
  configs = [name.strip() for name in args.configs.split(",") if name.strip()]
  stages = [name.strip() for name in args.stages.split(",") if name.strip()]
  unknown = sorted(set(stages) - set(STAGES))
  if unknown:
    raise ValueError(f"--stages: unknown {unknown}; choose from {STAGES}")

  results = {"per_stage": [], "scaling": []}
  rows = []
  for config in configs:
    for stage in stages:
      result = _run_case(config, stage, overrides, args)
      results["per_stage"].append({"config": config, **result})
      rows.append(_row(config, result))
      print(f"  {config} {stage}: {result['images_per_s']:.1f} images/s", flush=True)
  print(
    "\nUpdate step per stage (1 device, YNN flag; random batch, no input pipeline)"
    + (" - --quick: every config shrunk to the same tiny widths" if args.quick else "")
    + ":\n"
  )
  print(common.markdown_table(_HEADERS, rows))

  scaling_rows = []
  for devices in (int(count) for count in args.device_counts.split(",")):
    result = _run_case(args.scaling_config, "hourglass", overrides, args, devices)
    results["scaling"].append({"config": args.scaling_config, **result})
    scaling_rows.append(_row(args.scaling_config, result))
  single = results["scaling"][0]["images_per_s"]
  for row, result in zip(scaling_rows, results["scaling"]):
    row.append(f"{result['images_per_s'] / single:.2f}x")
  print(f"\nData parallelism, hourglass stage, {args.scaling_config} config:\n")
  print(
    common.markdown_table(
      _HEADERS + [f"vs {results['scaling'][0]['devices']} device"], scaling_rows
    )
  )
  caveat = _SCALING_CAVEAT.format(cores=machine["usable_cpus"])
  results["scaling_caveat"] = caveat
  print(f"\n{caveat}")
  print(
    f"Median (min) of {args.repeats} steps after {args.warmup} warm-up step(s); compile "
    "time excluded; GFLOP/image from XLA's cost analysis of the lowered step."
  )
  common.write_json(args.json, "bench_training", args, machine, results)


if __name__ == "__main__":
  main()
