"""How close the hourglass gets to the machine's matmul peak.

  python -m benchmarks.bench_limit [--batch 16] [--matmul_size 4096] [--repeats 5] [--quick]

* FLOPs per face of the full-size stacked hourglass (Sec. III-B) forward pass and train
  step (forward, backward, Adam), from XLA's cost analysis of the lowered computations.
* The machine's measured peak: GFLOP/s of a large square float32 and bfloat16 matmul in
  JAX, without and with the YNN XLA flag (each in its own process), and in PyTorch when
  it is installed (oneDNN; its bfloat16 kernels use AVX512-BF16 / AMX where XLA does not).
* The achieved rate: FLOPs / median time of the forward pass (this process, no YNN flag, as
  predict.py) and of the train step (a ``bench_training`` worker with the YNN flag, as
  train.py), and its fraction of the float32 and of the overall measured peak.

Convolutions are not matmuls (im2col, halos, BatchNorm, elementwise work between them), so
the fraction of a matmul peak is an upper-bound view of what is left, not a target.
"""

import argparse
import time

from benchmarks import bench_training, common


def jax_matmul_rates(size: int, repeats: int, warmup: int) -> dict:
  """GFLOP/s of ``[n, n] @ [n, n]`` in float32 and bfloat16 (float32 accumulate)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  rates = {}
  for dtype in (jnp.float32, jnp.bfloat16):
    keys = jax.random.split(jax.random.key(0))
    a, b = (jax.random.normal(key, (size, size), dtype) for key in keys)
    matmul = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
    timing = common.time_calls(lambda: matmul(a, b), repeats, warmup)
    rates[jnp.dtype(dtype).name] = 2.0 * size**3 / timing.median / 1e9
  return rates


def torch_matmul_rates(size: int, repeats: int, warmup: int) -> dict:
  """The same matmuls in PyTorch eager (bfloat16 inputs, bfloat16 output as autocast)."""
  import torch  # pylint: disable=g-import-not-at-top

  rates = {}
  for dtype in (torch.float32, torch.bfloat16):
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=generator).to(dtype) for _ in range(2))
    with torch.inference_mode():
      timing = common.time_calls(lambda: torch.mm(a, b), repeats, warmup)
    rates[str(dtype).replace("torch.", "")] = 2.0 * size**3 / timing.median / 1e9
  return rates


def hourglass_forward(batch: int, overrides, repeats: int, warmup: int) -> dict:
  """FLOPs (cost analysis of the lowered forward) and median time at ``batch``."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from msm_jax.train import stages  # pylint: disable=g-import-not-at-top

  config = bench_training.load_config("paper", overrides)
  module = stages.hourglass_module(config)
  images = jnp.zeros((batch, config.data.crop_size, config.data.crop_size, 3), jnp.float32)
  variables = module.init(jax.random.key(0), images[:1], train=False)
  forward = jax.jit(lambda variables, images: module.apply(variables, images, train=False))
  lowered = forward.lower(variables, images)
  flops = float(lowered.cost_analysis()["flops"])
  start = time.perf_counter()
  compiled = lowered.compile()
  compile_s = time.perf_counter() - start
  timing = common.time_calls(lambda: compiled(variables, images), repeats, warmup)
  return {
    "batch": batch,
    "flops_per_face": flops / batch,
    "compile_s": compile_s,
    "time": timing.as_dict(),
    "gflops_per_s": flops / timing.median / 1e9,
  }


def _rate_row(name, gflop_per_face, seconds, batch, rate, peaks):
  return [
    name,
    f"{gflop_per_face:.2f}",
    batch,
    f"{seconds:.3f}",
    f"{rate:.1f}",
    f"{100 * rate / peaks['jax_float32']:.0f} %",
    f"{100 * rate / peaks['best']:.0f} %",
  ]


def main():
  parser = common.parser("bench_limit", __doc__)
  parser.add_argument("--batch", type=int, default=16, help="faces per forward / train step")
  parser.add_argument("--matmul_size", type=int, default=4096, help="n of the n x n matmuls")
  parser.add_argument("--matmul_worker", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  common.check_args(args)
  size = 512 if args.quick else args.matmul_size
  if args.matmul_worker:
    common.emit_worker_result(jax_matmul_rates(size, args.repeats, args.warmup))
    return

  from msm_jax.cli import restart_with_jemalloc  # pylint: disable=g-import-not-at-top

  restart_with_jemalloc()  # the train-step worker runs as train.py does
  machine = common.machine_info()
  common.print_machine(machine)
  batch = 2 if args.quick else args.batch
  overrides = [f"hourglass.batch_size={batch}"] + (
    ["hourglass.width=16", "hourglass.stem_widths=8,8,8"] if args.quick else []
  )

  matmul_arguments = [
    "--matmul_worker",
    "--matmul_size",
    str(size),
    "--repeats",
    str(args.repeats),
    "--warmup",
    str(args.warmup),
  ] + (["--quick"] if args.quick else [])
  rates = {}
  for training, label in ((False, "JAX"), (True, "JAX + YNN flag")):
    worker = common.run_worker(
      "benchmarks.bench_limit", matmul_arguments, common.process_env(training=training)
    )
    rates.update({f"{label} {dtype}": rate for dtype, rate in worker.items()})
  try:
    rates.update(
      {
        f"PyTorch {dtype}": rate
        for dtype, rate in torch_matmul_rates(size, args.repeats, args.warmup).items()
      }
    )
  except ImportError:
    print("PyTorch not installed: its matmul rows are left out (benchmarks/requirements.txt)")
  peaks = {
    "jax_float32": max(
      rate for name, rate in rates.items() if name.startswith("JAX") and name.endswith("float32")
    ),
    "best": max(rates.values()),
  }
  print(f"\nMatmul [{size}, {size}] @ [{size}, {size}], median of {args.repeats}:\n")
  print(
    common.markdown_table(
      ["matmul", "GFLOP/s"], [[name, f"{rate:.1f}"] for name, rate in rates.items()]
    )
  )

  forward = hourglass_forward(batch, overrides, args.repeats, args.warmup)
  train = common.run_worker(
    "benchmarks.bench_training",
    bench_training.worker_arguments("paper", "hourglass", overrides, args.repeats, args.warmup),
    common.process_env(training=True),
  )
  forward_seconds = forward["time"]["median_s"]
  train_seconds = train["step"]["median_s"]
  train_rate = train["flops_per_step"] / train_seconds / 1e9
  print(
    f"\nStacked hourglass ({'--quick sizes' if args.quick else 'full size'}), batch "
    f"{batch}; fractions of the best JAX float32 matmul ({peaks['jax_float32']:.1f} "
    f"GFLOP/s) and of the best matmul measured ({peaks['best']:.1f} GFLOP/s):\n"
  )
  print(
    common.markdown_table(
      [
        "computation",
        "GFLOP/face",
        "batch",
        "s (median)",
        "GFLOP/s",
        "of JAX f32 peak",
        "of best peak",
      ],
      [
        _rate_row(
          "forward (no YNN flag)",
          forward["flops_per_face"] / 1e9,
          forward_seconds,
          batch,
          forward["gflops_per_s"],
          peaks,
        ),
        _rate_row(
          "train step (YNN flag)",
          train["flops_per_image"] / 1e9,
          train_seconds,
          batch,
          train_rate,
          peaks,
        ),
      ],
    )
  )
  print(
    f"\nFLOPs: XLA cost analysis of the lowered (unoptimised) computation; train step / "
    f"forward FLOPs = {train['flops_per_image'] / forward['flops_per_face']:.2f}."
  )
  common.write_json(
    args.json,
    "bench_limit",
    args,
    machine,
    {
      "matmul_size": size,
      "matmul_gflops_per_s": rates,
      "peaks_gflops_per_s": peaks,
      "forward": forward,
      "train_step": {**train, "gflops_per_s": train_rate},
    },
  )


if __name__ == "__main__":
  main()
