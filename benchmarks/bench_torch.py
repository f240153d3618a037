"""The stacked hourglass in JAX and in PyTorch eager, same run, at two sizes.

  python -m benchmarks.bench_torch [--sizes full,shipped] [--repeats 5] [--quick]

``build_torch_twin`` builds a PyTorch twin of ``msm_jax.models.hourglass.StackedHourglass``
(Sec. III-B, Fig. 3-4): same layers, same order, same BatchNorm settings, its submodules
named like the Flax ones so that ``copy_flax_weights`` maps every Flax variable onto it.
Before timing, the script checks the twin: equal parameter counts, and with the same
(randomised) weights copied in, equal heatmaps in inference and in training mode.

First the machine's peak per dtype: the best of PyTorch's 4096^2 matmul and of the
hourglass's busiest 3x3 convolution in XLA, oneDNN (msm_jax/kernels) and PyTorch
(``bench_limit``). Then, for each size ("full": the paper's width 256; "shipped": the width
192 of ``pretrained/``), batch 16 (Sec. IV-C), the forward pass (inference mode) and one
train step (forward, the spatial-softmax cross-entropy of ``train/losses.py`` on both
stacks, backward, Adam):

* JAX float32 and bfloat16 compute (``config.hourglass.compute_dtype``), each with XLA's
  kernels and with oneDNN's (``config.hourglass.kernels``). Each case in its own worker
  process (no PyTorch, with its own OpenMP runtime, beside it): inference without the YNN XLA
  flag (as predict.py), the train step with it (as train.py, ``bench_training --worker``).
* PyTorch eager float32 and bfloat16 autocast, each with NCHW and channels-last memory.

and prints GFLOP/s with the fraction of the peak of the row's dtype, and JAX/PyTorch speed
ratios against PyTorch's fastest configuration with the targets: inference >= 1.0x (stretch
1.5x), train step >= 1.0x. Both frameworks run under the same allocator (one that reuses
freed pages, as train.py and predict.py; ``--system_malloc``: the system's as it is).
"""

import argparse
import copy
import dataclasses
import time

import numpy as np

from benchmarks import bench_limit, bench_training, common

INFERENCE_TARGET, INFERENCE_STRETCH, TRAIN_TARGET = 1.0, 1.5, 1.0


@dataclasses.dataclass(frozen=True)
class Sizes:
  """The hourglass and batch the run uses (full size unless --quick)."""

  batch: int
  crop_size: int = 128
  width: int = 256
  stem_widths: tuple = (64, 64, 128)
  num_landmarks: int = 68

  def overrides(self) -> list:
    """bench_training --set overrides of configs/base.py giving these sizes."""
    return [
      f"hourglass.width={self.width}",
      "hourglass.stem_widths=" + ",".join(map(str, self.stem_widths)),
      f"hourglass.batch_size={self.batch}",
      f"data.crop_size={self.crop_size}",
      f"data.heatmap_size={self.crop_size // 2}",
    ]


def build_torch_twin(sizes: Sizes, num_stacks: int = 2, depth: int = 4):
  """A PyTorch ``StackedHourglass`` equal to the Flax one (defined here so that torch is
  only imported by this script)."""
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top

  class BatchNormReLU(nn.BatchNorm2d):
    """``layers.BatchNormReLU``: PyTorch's BatchNorm defaults (momentum 0.1, eps 1e-5)."""

    def forward(self, x):
      return F.relu(super().forward(x))

  def conv1x1(cin, cout):
    return nn.Conv2d(cin, cout, 1)

  def conv3x3(cin, cout):
    return nn.Conv2d(cin, cout, 3, padding=1)

  class ResidualUnit(nn.Module):
    def __init__(self, cin, features):
      super().__init__()
      half = features // 2
      self.BatchNormReLU_0, self.Conv1x1_0 = BatchNormReLU(cin), conv1x1(cin, half)
      self.BatchNormReLU_1, self.Conv_0 = BatchNormReLU(half), conv3x3(half, half)
      self.BatchNormReLU_2, self.Conv1x1_1 = BatchNormReLU(half), conv1x1(half, features)
      self.skip = conv1x1(cin, features) if cin != features else None

    def forward(self, x):
      y = self.Conv1x1_0(self.BatchNormReLU_0(x))
      y = self.Conv_0(self.BatchNormReLU_1(y))
      y = self.Conv1x1_1(self.BatchNormReLU_2(y))
      return (x if self.skip is None else self.skip(x)) + y

  class HourglassModule(nn.Module):
    def __init__(self, features, level):
      super().__init__()
      self.skip = ResidualUnit(features, features)
      self.down = ResidualUnit(features, features)
      if level > 1:
        self.inner = HourglassModule(features, level - 1)
      else:
        self.bottom = ResidualUnit(features, features)
      self.up = ResidualUnit(features, features)
      self.deconv = nn.ConvTranspose2d(features, features, 2, stride=2)

    def forward(self, x):
      low = self.down(F.max_pool2d(x, 2))
      low = self.inner(low) if hasattr(self, "inner") else self.bottom(low)
      return self.skip(x) + self.deconv(self.up(low))

  class StackedHourglass(nn.Module):
    def __init__(self):
      super().__init__()
      width, (s1, s2, s3) = sizes.width, sizes.stem_widths
      self.stem_conv1, self.BatchNormReLU_0 = conv3x3(3, s1), BatchNormReLU(s1)
      self.stem_conv2, self.BatchNormReLU_1 = conv3x3(s1, s2), BatchNormReLU(s2)
      self.stem_conv3 = conv3x3(s2, s3)
      self.stem_residual = ResidualUnit(s3, width)
      for stack in range(num_stacks):
        setattr(self, f"hourglass{stack}", HourglassModule(width, depth))
        setattr(self, f"head_residual{stack}", ResidualUnit(width, width))
        setattr(self, f"BatchNormReLU_{2 + 2 * stack}", BatchNormReLU(width))
        setattr(self, f"head_conv{stack}", conv1x1(width, width))
        setattr(self, f"BatchNormReLU_{3 + 2 * stack}", BatchNormReLU(width))
        setattr(self, f"heatmaps{stack}", conv1x1(width, sizes.num_landmarks))
        if stack < num_stacks - 1:
          setattr(self, f"features_back{stack}", conv1x1(width, width))
          setattr(self, f"heatmaps_back{stack}", conv1x1(sizes.num_landmarks, width))

    def forward(self, images):
      """images [B, 3, H, W] -> heatmaps [num_stacks, B, L, H/2, W/2]."""
      x = self.stem_conv2(self.BatchNormReLU_0(self.stem_conv1(images)))
      x = self.stem_conv3(self.BatchNormReLU_1(F.max_pool2d(x, 2)))
      x = self.stem_residual(x)
      heatmaps = []
      for stack in range(num_stacks):
        y = getattr(self, f"head_residual{stack}")(getattr(self, f"hourglass{stack}")(x))
        y = getattr(self, f"head_conv{stack}")(getattr(self, f"BatchNormReLU_{2 + 2 * stack}")(y))
        y = getattr(self, f"BatchNormReLU_{3 + 2 * stack}")(y)
        stack_heatmaps = getattr(self, f"heatmaps{stack}")(y)
        heatmaps.append(stack_heatmaps.float())
        if stack < num_stacks - 1:
          x = (
            x
            + getattr(self, f"features_back{stack}")(y)
            + getattr(self, f"heatmaps_back{stack}")(stack_heatmaps)
          )
      return torch.stack(heatmaps)

  return StackedHourglass()


def copy_flax_weights(torch_model, variables) -> None:
  """Flax ``{"params", "batch_stats"}`` of StackedHourglass -> the twin, in place.

  Convolution kernels [kh, kw, Cin, Cout] -> [Cout, Cin, kh, kw]. The 2x2 deconvolution:
  ``layers.Deconv2x2`` paints output block (2h + i, 2w + j) with ``kernel[1 - i, 1 - j]``,
  PyTorch's ConvTranspose2d with ``weight[:, :, i, j]``, so the taps are flipped and the
  kernel becomes [Cin, Cout, kh, kw]. Every Flax variable must be used exactly once.
  """
  import torch  # pylint: disable=g-import-not-at-top
  from flax.traverse_util import flatten_dict  # pylint: disable=g-import-not-at-top

  flax_leaves = {
    "/".join(path): np.asarray(leaf, np.float32)
    for collection in ("params", "batch_stats")
    for path, leaf in flatten_dict(variables[collection]).items()
  }
  used = set()

  def take(key):
    if key not in flax_leaves:
      raise KeyError(f"the Flax hourglass has no variable {key!r} for the PyTorch twin")
    used.add(key)
    return torch.from_numpy(flax_leaves[key].copy())

  with torch.no_grad():
    for name, module in torch_model.named_modules():
      prefix = name.replace(".", "/")
      if isinstance(module, torch.nn.BatchNorm2d):
        module.weight.copy_(take(f"{prefix}/scale"))
        module.bias.copy_(take(f"{prefix}/bias"))
        module.running_mean.copy_(take(f"{prefix}/mean"))
        module.running_var.copy_(take(f"{prefix}/var"))
      elif isinstance(module, torch.nn.ConvTranspose2d):
        module.weight.copy_(take(f"{prefix}/kernel").flip(0, 1).permute(2, 3, 0, 1))
        module.bias.copy_(take(f"{prefix}/bias"))
      elif isinstance(module, torch.nn.Conv2d):
        module.weight.copy_(take(f"{prefix}/kernel").permute(3, 2, 0, 1))
        module.bias.copy_(take(f"{prefix}/bias"))
  unused = sorted(set(flax_leaves) - used)
  if unused:
    raise ValueError(f"Flax variables without a PyTorch counterpart: {unused[:5]}")


def randomise_variables(variables, seed: int = 0):
  """Random weights everywhere, so that the check cannot pass by symmetry (the deconvs start
  as identical identity taps, the BatchNorm statistics as 0 and 1)."""
  import jax  # pylint: disable=g-import-not-at-top
  from flax.traverse_util import flatten_dict, unflatten_dict  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(seed)
  flat = flatten_dict(variables)
  for path, leaf in flat.items():
    shape, name = leaf.shape, path[-1]
    if name == "kernel":
      value = rng.normal(0.0, np.sqrt(1.0 / np.prod(shape[:-1])), shape)
    elif name in ("scale", "var"):
      value = rng.uniform(0.5, 1.5, shape)
    else:  # bias, mean
      value = rng.normal(0.0, 0.1, shape)
    flat[path] = jax.numpy.asarray(value, leaf.dtype)
  return unflatten_dict(flat)


def _count(tree) -> int:
  import jax  # pylint: disable=g-import-not-at-top

  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def check_twin(flax_model, variables, torch_model, images: np.ndarray) -> dict:
  """Equal parameter counts, and equal heatmaps (eval and train mode) with equal weights.

  Raises AssertionError when the twin differs. Returns the counts and the worst errors.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top

  flax_count = _count(variables["params"])
  torch_count = sum(parameter.numel() for parameter in torch_model.parameters())
  assert flax_count == torch_count, f"parameters: Flax {flax_count:,} vs PyTorch {torch_count:,}"
  copy_flax_weights(torch_model, variables)
  torch_images = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
  errors = {}
  for mode in ("eval", "train"):
    if mode == "eval":
      expected = flax_model.apply(variables, images, train=False)
      torch_model.eval()
    else:
      expected, _ = flax_model.apply(variables, images, train=True, mutable=["batch_stats"])
      torch_model.train()
    with torch.no_grad():
      actual = torch_model(torch_images).numpy().transpose(0, 1, 3, 4, 2)
    expected = np.asarray(jax.device_get(expected))
    scale = float(np.max(np.abs(expected)))
    error = float(np.max(np.abs(actual - expected))) / scale
    assert error < 1e-4, f"{mode} mode: max |PyTorch - Flax| / max |Flax| = {error:.2e} >= 1e-4"
    errors[f"{mode}_max_relative_error"] = error
  torch_model.eval()
  return {"parameters": flax_count, **errors}


def gaussian_targets(landmarks: np.ndarray, sizes: Sizes, sigma: float = 1.5) -> np.ndarray:
  """[B, L, 2] crop pixels -> [B, L, h, w] Gaussian maps (as the JAX step renders them)."""
  from msm_jax.core import heatmaps  # pylint: disable=g-import-not-at-top

  points = heatmaps.crop_to_heatmap(landmarks, sizes.crop_size, sizes.crop_size // 2)
  maps = heatmaps.gaussian_heatmaps(points, sizes.crop_size // 2, sigma)
  return np.asarray(maps).transpose(0, 3, 1, 2)


def torch_cases(
  base_model, images: np.ndarray, targets: np.ndarray, repeats: int, warmup: int
) -> list:
  """Forward (inference mode) and train step of every PyTorch eager configuration."""
  import torch  # pylint: disable=g-import-not-at-top

  # XLA:CPU flushes denormals to zero; PyTorch does so only when asked.
  torch.set_flush_denormal(True)
  results = []
  for dtype in ("float32", "bfloat16"):
    for channels_last in (False, True):
      memory = torch.channels_last if channels_last else torch.contiguous_format
      model = copy.deepcopy(base_model).to(memory_format=memory)
      x = torch.from_numpy(images.transpose(0, 3, 1, 2)).contiguous(memory_format=memory)
      target = torch.from_numpy(np.array(targets)).flatten(2)
      target = target / target.sum(-1, keepdim=True).clamp_min(1e-12)
      optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
      autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16")

      def forward():
        with torch.inference_mode(), autocast():
          return model(x)

      def train_step():
        optimizer.zero_grad(set_to_none=True)
        with autocast():
          logits = model(x)
        # The spatial-softmax cross-entropy of train/losses.py, summed over the stacks.
        log_probabilities = torch.log_softmax(logits.float().flatten(3), dim=-1)
        loss = -(target * log_probabilities).sum(-1).mean(dim=(1, 2)).sum()
        loss.backward()
        optimizer.step()
        return loss

      model.eval()
      forward_timing = common.time_calls(forward, repeats, warmup)
      model.train()
      train_timing = common.time_calls(train_step, repeats, warmup)
      name = f"PyTorch {dtype}{' autocast' if dtype == 'bfloat16' else ''}" + (
        ", channels-last" if channels_last else ", NCHW"
      )
      results.append(
        {"name": name, "forward": forward_timing.as_dict(), "train_step": train_timing.as_dict()}
      )
      print(
        f"  {name}: forward {forward_timing.median:.3f} s, train step {train_timing.median:.3f} s",
        flush=True,
      )
  return results


def jax_forward_case(sizes: "Sizes", case: "JaxCase", repeats: int, warmup: int) -> dict:
  """The Flax forward pass (inference mode) with the case's compute dtype and kernels, on the
  run's random images and weights (``random_inputs``; ``variables`` stay float32). Runs in
  a worker process: no PyTorch (and its own OpenMP runtime) in the same process."""
  import jax  # pylint: disable=g-import-not-at-top

  from msm_jax.train import stages  # pylint: disable=g-import-not-at-top

  images, _, variables = random_inputs(sizes)
  module = stages.hourglass_module(bench_training.load_config("paper", case.overrides(sizes)))
  forward = jax.jit(lambda variables, images: module.apply(variables, images, train=False))
  device_images = jax.device_put(images)
  start = time.perf_counter()
  jax.block_until_ready(forward(variables, device_images))
  compile_s = time.perf_counter() - start
  timing = common.time_calls(lambda: forward(variables, device_images), repeats, warmup)
  return {"compile_and_first_call_s": compile_s, "forward": timing.as_dict()}


def random_inputs(sizes: "Sizes"):
  """(images [B, S, S, 3], landmarks [B, L, 2], randomised Flax variables): the same in every
  process of a run (seeded)."""
  import jax  # pylint: disable=g-import-not-at-top

  from msm_jax.models.hourglass import StackedHourglass  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  images = rng.uniform(0.0, 1.0, (sizes.batch, sizes.crop_size, sizes.crop_size, 3))
  images = images.astype(np.float32)
  landmarks = rng.uniform(0.2, 0.8, (sizes.batch, sizes.num_landmarks, 2)) * sizes.crop_size
  flax_model = StackedHourglass(
    num_landmarks=sizes.num_landmarks, width=sizes.width, stem_widths=sizes.stem_widths
  )
  variables = randomise_variables(flax_model.init(jax.random.key(0), images[:1], train=False))
  return images, landmarks, variables


@dataclasses.dataclass(frozen=True)
class JaxCase:
  """One JAX configuration: compute dtype and ``config.hourglass.kernels``."""

  dtype: str
  kernels: str

  @property
  def name(self) -> str:
    kernels = "oneDNN kernels" if self.kernels == "onednn" else "XLA kernels"
    return f"JAX {self.dtype}, {kernels}"

  def overrides(self, sizes: Sizes) -> list:
    return sizes.overrides() + [
      f"hourglass.compute_dtype={self.dtype}",
      f"hourglass.kernels={self.kernels}",
    ]


JAX_CASES = [JaxCase(d, k) for d in ("float32", "bfloat16") for k in ("xla", "onednn")]
SIZES = {
  "full": Sizes(batch=16),
  "shipped": Sizes(batch=16, width=192, stem_widths=(32, 64, 64)),
  "quick": Sizes(batch=2, crop_size=64, width=32, stem_widths=(8, 8, 16)),
}


def _dtype_of(name: str) -> str:
  return "bfloat16" if "bfloat16" in name else "float32"


def _rate_cells(result: dict, key: str, flops: float, peaks: dict) -> list:
  """GFLOP/s of a timed case and its fraction of the measured peak of its dtype."""
  if key not in result:
    return ["-", "-"]
  rate = flops / result[key]["median_s"] / 1e9
  peak = peaks.get(_dtype_of(result["name"]))
  return [f"{rate:.0f}", f"{100 * rate / peak:.0f} %" if peak else "-"]


def _ratio_rows(jax_results: dict, torch_best: dict) -> list:
  rows = []
  for name, result in jax_results.items():
    for key, target, stretch in (
      ("forward", INFERENCE_TARGET, INFERENCE_STRETCH),
      ("train_step", TRAIN_TARGET, None),
    ):
      if key not in result:
        continue
      ratio = torch_best[key]["median_s"] / result[key]["median_s"]
      status = "met" if ratio >= target else "not met"
      if stretch and ratio >= target:
        status += f", stretch {stretch}x {'met' if ratio >= stretch else 'not met'}"
      rows.append(
        [
          name,
          "inference" if key == "forward" else "train step",
          f"{result[key]['median_s']:.3f}",
          torch_best[key]["name"],
          f"{torch_best[key]['median_s']:.3f}",
          f"{ratio:.2f}x",
          f">= {target}x",
          status,
        ]
      )
  return rows


def run_size(label: str, sizes: Sizes, args, peaks: dict) -> dict:
  """Every JAX case and every PyTorch configuration at one size; prints its tables."""
  from msm_jax.models.hourglass import StackedHourglass  # pylint: disable=g-import-not-at-top

  print(f"\n## {label}: width {sizes.width}, stem {sizes.stem_widths}, batch {sizes.batch}\n")
  jax_results = {case.name: {"name": case.name} for case in JAX_CASES}
  train_flops = None
  for case in [] if args.skip_train else JAX_CASES:
    worker = common.run_worker(
      "benchmarks.bench_training",
      bench_training.worker_arguments(
        "paper", "hourglass", case.overrides(sizes), args.repeats, args.warmup
      ),
      common.process_env(training=True),
    )
    train_flops = worker["flops_per_step"]
    jax_results[case.name].update(train_step=worker["step"], train_compile_s=worker["compile_s"])
    print(f"  {case.name}: train step {worker['step']['median_s']:.3f} s", flush=True)

  for case in JAX_CASES:
    worker = common.run_worker(
      "benchmarks.bench_torch",
      ["--forward_worker", f"{label},{case.dtype},{case.kernels}"]
      + ["--repeats", str(args.repeats), "--warmup", str(args.warmup)],
      common.process_env(training=False),
    )
    jax_results[case.name].update(worker)
    print(f"  {case.name}: forward {worker['forward']['median_s']:.3f} s", flush=True)

  import torch  # pylint: disable=g-import-not-at-top

  images, landmarks, variables = random_inputs(sizes)
  flax_model = StackedHourglass(
    num_landmarks=sizes.num_landmarks, width=sizes.width, stem_widths=sizes.stem_widths
  )
  torch_model = build_torch_twin(sizes)
  twin = check_twin(flax_model, variables, torch_model, images[:2])
  print(
    f"Twin check: {twin['parameters']:,} parameters in both; max relative heatmap error "
    f"{twin['eval_max_relative_error']:.1e} (inference mode), "
    f"{twin['train_max_relative_error']:.1e} (training mode) with the same weights",
    flush=True,
  )
  forward_flops = bench_limit.forward_flops(flax_model, variables, images)
  torch_results = torch_cases(
    torch_model, images, gaussian_targets(landmarks, sizes), args.repeats, args.warmup
  )

  headers = [
    "configuration",
    "forward s",
    "faces/s",
    "GFLOP/s",
    "of peak",
    "train step s",
    "images/s",
    "GFLOP/s",
    "of peak",
  ]
  rows = []
  for result in list(jax_results.values()) + torch_results:
    forward, train = result.get("forward"), result.get("train_step")
    rows.append(
      [
        result["name"],
        f"{forward['median_s']:.3f}" if forward else "-",
        f"{sizes.batch / forward['median_s']:.1f}" if forward else "-",
        *_rate_cells(result, "forward", forward_flops, peaks),
        f"{train['median_s']:.3f}" if train else "-",
        f"{sizes.batch / train['median_s']:.1f}" if train else "-",
        *(_rate_cells(result, "train_step", train_flops, peaks) if train_flops else ["-", "-"]),
      ]
    )
  print(
    f"\nStacked hourglass, batch {sizes.batch}, {sizes.crop_size}x{sizes.crop_size} input, "
    f"width {sizes.width}, {twin['parameters']:,} parameters, "
    f"{forward_flops / sizes.batch / 1e9:.2f} GFLOP/face forward; torch threads "
    f"{torch.get_num_threads()}; 'of peak': of the best measured rate in that dtype:\n"
  )
  print(common.markdown_table(headers, rows))
  torch_best = {}
  for key in ("forward", "train_step"):
    best = min(torch_results, key=lambda r: r[key]["median_s"])
    torch_best[key] = {"name": best["name"], **best[key]}
  print(
    "\nJAX / PyTorch speed (PyTorch time / JAX time, > 1: JAX faster), against PyTorch's "
    "fastest eager configuration:\n"
  )
  print(
    common.markdown_table(
      ["JAX", "task", "JAX s", "best PyTorch", "PyTorch s", "ratio", "target", "status"],
      _ratio_rows(jax_results, torch_best),
    )
  )
  return {
    "sizes": dataclasses.asdict(sizes),
    "twin_check": twin,
    "forward_flops": forward_flops,
    "train_step_flops": train_flops,
    "jax": jax_results,
    "torch": torch_results,
    "torch_best": torch_best,
  }


def main():
  parser = common.parser("bench_torch", __doc__)
  parser.add_argument(
    "--sizes",
    default="full,shipped",
    help="comma list of: full (the paper's width 256), shipped (pretrained/'s width 192)",
  )
  parser.add_argument(
    "--system_malloc",
    action="store_true",
    help="keep the system allocator as it is (default: one that reuses freed pages, as "
    "train.py and predict.py)",
  )
  parser.add_argument("--skip_train", action="store_true", help="forward passes only")
  parser.add_argument("--forward_worker", help=argparse.SUPPRESS)  # "size,dtype,kernels"
  args = parser.parse_args()
  common.check_args(args)
  if args.forward_worker:
    label, dtype, kernels = args.forward_worker.split(",")
    common.emit_worker_result(
      jax_forward_case(SIZES[label], JaxCase(dtype, kernels), args.repeats, args.warmup)
    )
    return
  if not args.system_malloc:
    from msm_jax.cli import restart_with_page_reuse  # pylint: disable=g-import-not-at-top

    restart_with_page_reuse()
  labels = ["quick"] if args.quick else args.sizes.split(",")
  unknown = [label for label in labels if label not in SIZES]
  if unknown:
    parser.error(f"--sizes: unknown {unknown}; expected full, shipped")
  machine = common.machine_info()
  common.print_machine(machine)

  # The machine's peak per dtype: the best matmul and 3x3 convolution rates measured here.
  rates = bench_limit.conv_rates(args.repeats, args.warmup, args.quick)
  try:
    rates.update(
      {
        f"PyTorch matmul {dtype}": rate
        for dtype, rate in bench_limit.torch_matmul_rates(
          512 if args.quick else 4096, args.repeats, args.warmup
        ).items()
      }
    )
  except ImportError:
    pass
  peaks = bench_limit.peaks_by_dtype(rates)
  print(
    common.markdown_table(
      ["peak candidate", "GFLOP/s"], [[n, f"{r:.0f}"] for n, r in rates.items()]
    )
  )
  results = {label: run_size(label, SIZES[label], args, peaks) for label in labels}
  print(
    f"\nMedian of {args.repeats} calls after {args.warmup} warm-up; JAX cases in worker "
    "processes, inference without the YNN flag, train steps with it (as train.py). FLOPs "
    f"from XLA's cost analysis with XLA's kernels. Measured on: {machine['cpu']} "
    f"({' '.join(machine['cpu_features'])})."
  )
  common.write_json(
    args.json,
    "bench_torch",
    args,
    machine,
    {
      "peak_candidates_gflops_per_s": rates,
      "peaks_gflops_per_s": peaks,
      "sizes": results,
      "targets": {
        "inference": INFERENCE_TARGET,
        "inference_stretch": INFERENCE_STRETCH,
        "train_step": TRAIN_TARGET,
      },
    },
  )


if __name__ == "__main__":
  main()
