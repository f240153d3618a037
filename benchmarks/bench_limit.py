"""How close the hourglass gets to the machine's matmul peak.

  python -m benchmarks.bench_limit [--batch 16] [--matmul_size 4096] [--repeats 5] [--quick]

* FLOPs per face of the full-size stacked hourglass (Sec. III-B) forward pass and train
  step (forward, backward, Adam), from XLA's cost analysis of the lowered computations.
* The machine's measured peak: GFLOP/s of a large square float32 and bfloat16 matmul in
  JAX, without and with the YNN XLA flag (each in its own process), and in PyTorch when
  it is installed (oneDNN; its bfloat16 kernels use AVX512-BF16 / AMX where XLA does not);
  and of the hourglass's busiest 3x3 convolution in XLA, in oneDNN through msm_jax/kernels
  and in PyTorch channels-last.
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


CONV_SHAPE = dict(batch=16, size=64, channels=128)  # the hourglass's busiest 3x3 conv


def conv_rates(repeats: int, warmup: int, quick: bool = False) -> dict:
  """GFLOP/s of the hourglass's busiest 3x3 convolution (16 x 64 x 64 x 128 -> 128, forward)
  in float32 and bfloat16: XLA, oneDNN through msm_jax/kernels, and PyTorch channels-last
  (oneDNN inside, bfloat16 autocast) when installed."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from msm_jax.models import layers  # pylint: disable=g-import-not-at-top

  batch, size, channels = (2, 16, 16) if quick else CONV_SHAPE.values()
  flops = 2.0 * batch * size * size * 9 * channels * channels
  rng = np.random.default_rng(0)
  x = rng.standard_normal((batch, size, size, channels)).astype(np.float32)
  kernel = (rng.standard_normal((3, 3, channels, channels)) * 0.05).astype(np.float32)
  bias = np.zeros(channels, np.float32)
  rates = {}
  for dtype in ("float32", "bfloat16"):
    operands = [jnp.asarray(a, dtype) for a in (x, kernel, bias)]
    for name in ("xla", "onednn"):
      conv = jax.jit(
        lambda x, k, b, name=name: layers.KERNELS[name].convolution(
          x, k, b, (1, 1), ((1, 1), (1, 1))
        )
      )
      timing = common.time_calls(lambda: conv(*operands), repeats, warmup)
      label = "XLA" if name == "xla" else "oneDNN (msm_jax)"
      rates[f"{label} conv3x3 {dtype}"] = flops / timing.median / 1e9
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return rates
  conv = torch.nn.Conv2d(channels, channels, 3, padding=1).to(memory_format=torch.channels_last)
  tx = torch.from_numpy(x.transpose(0, 3, 1, 2)).contiguous(memory_format=torch.channels_last)
  for dtype in ("float32", "bfloat16"):
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16")

    def call():
      with torch.inference_mode(), autocast:
        return conv(tx)

    timing = common.time_calls(call, repeats, warmup)
    rates[f"PyTorch conv3x3 {dtype}"] = flops / timing.median / 1e9
  return rates


def peaks_by_dtype(rates: dict) -> dict:
  """{"float32": best rate, "bfloat16": best rate} over matmul and convolution rows whose name
  ends with the dtype."""
  return {
    dtype: max(rate for name, rate in rates.items() if name.endswith(dtype))
    for dtype in ("float32", "bfloat16")
    if any(name.endswith(dtype) for name in rates)
  }


def forward_flops(module, variables, images) -> float:
  """FLOPs of the inference-mode forward from XLA's cost analysis, counted with XLA's kernels
  (oneDNN's custom calls compute the same products, but XLA cannot see into them)."""
  import jax  # pylint: disable=g-import-not-at-top

  if getattr(module, "kernels", "xla") != "xla":
    module = module.clone(kernels="xla")
  forward = jax.jit(lambda variables, images: module.apply(variables, images, train=False))
  return float(forward.lower(variables, images).cost_analysis()["flops"])


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
  flops = forward_flops(module, variables, images)
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

  from msm_jax.cli import restart_with_page_reuse  # pylint: disable=g-import-not-at-top

  restart_with_page_reuse()  # the train-step worker runs as train.py does
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
  rates.update(conv_rates(args.repeats, args.warmup, args.quick))
  peaks = {
    "jax_float32": max(
      rate for name, rate in rates.items() if name.startswith("JAX") and name.endswith("float32")
    ),
    "best": max(rates.values()),
  }
  print(
    f"\nMatmul [{size}, {size}] @ [{size}, {size}] and 3x3 convolution "
    f"{CONV_SHAPE}, median of {args.repeats}:\n"
  )
  print(
    common.markdown_table(
      ["computation", "GFLOP/s"], [[name, f"{rate:.1f}"] for name, rate in rates.items()]
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
    f"GFLOP/s) and of the best rate measured, matmul or convolution "
    f"({peaks['best']:.1f} GFLOP/s):\n"
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
