"""Inference speed of the one-jit MSM pipeline (Algorithm 2), per stage.

  python -m benchmarks.bench_inference [--batch_sizes 1,8,32] [--repeats 5] [--quick]

Times ``msm_jax.inference.pipeline.make_inference_fn`` at the paper's sizes (GDNN of Table I, the
256-channel two-stack hourglass, N = 500 exemplars, k = 100) on uint8 256x256 images with
one face box each: faces/s and ms/face per batch size, compile time separately, and the
peak resident memory of the process. Each batch size runs in its own worker process (so
the peak memory is that batch size's), without the YNN XLA flag (it slows inference; see
``msm_jax/cli.py``).

The per-stage table times the same computation cut into four separately jitted pieces,
each fed the previous piece's outputs: ST (crop, GDNN, canonical warp), hourglass,
decode + score (Eq. 8-9, reliability), SR (align, kNN + ridge of Eq. 11, back to image
pixels). Their sum exceeds the one-jit time by what fusion across the cuts saves; the
worker checks that the pieces give the one-jit landmarks.

Weights are random (speed does not depend on them). Paper: 14 faces/s on a GTX 1080,
CNN 50 ms + reconstruction 20 ms per face (Sec. IV-F).
"""

import argparse
import time

import numpy as np

from benchmarks import common

PAPER_FACES_PER_S, PAPER_CNN_MS, PAPER_RECONSTRUCTION_MS = 14.0, 50.0, 20.0
STAGES = ("ST", "hourglass", "decode + score", "SR")
IMAGE_SIZE = 256


def _models(quick: bool):
  """GDNN, hourglass, pipeline options and random variables at paper (or --quick) sizes."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from benchmarks import bench_reconstruction, bench_training  # pylint: disable=g-import-not-at-top
  from msm_jax.core import landmarks  # pylint: disable=g-import-not-at-top
  from msm_jax.inference import pipeline
  from msm_jax.train import stages  # pylint: disable=g-import-not-at-top

  overrides = (
    ["hourglass.width=16", "hourglass.stem_widths=8,8,8", "stgan.generator_width=0.25"]
    if quick
    else []
  )
  config = bench_training.load_config("paper", overrides)
  generator, hourglass = stages.generator_module(config), stages.hourglass_module(config)
  crops = jnp.zeros((1, config.data.crop_size, config.data.crop_size, 3), jnp.float32)
  scheme = landmarks.get_scheme(config.data.scheme)
  variables = {
    "generator": generator.init(jax.random.key(1), crops, train=False),
    "hourglass": hourglass.init(jax.random.key(2), crops, train=False),
    "dictionary": jnp.asarray(
      bench_reconstruction.realistic_faces(np.random.default_rng(3), config.shape.dictionary_size)
    ),
    "thresholds": jnp.asarray(
      landmarks.region_thresholds(
        scheme, config.shape.contour_threshold, config.shape.feature_threshold
      )
    ),
  }
  options = pipeline.PipelineOptions(
    crop_size=config.data.crop_size,
    heatmap_size=config.data.heatmap_size,
    decode_blur_sigma=config.hourglass.sigma,
    score_radius=config.shape.score_radius,
    num_neighbours=config.shape.num_neighbours,
    ridge_lambda=config.shape.ridge_lambda,
  )
  return generator, hourglass, options, variables


def stage_functions(generator, hourglass, options):
  """The pipeline cut into four jitted pieces; same maths as ``pipeline.make_inference_fn``
  (whose private helpers it calls, so that the two cannot drift apart)."""
  # pylint: disable=protected-access
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from msm_jax.core import geometry, heatmaps, sampler  # pylint: disable=g-import-not-at-top
  from msm_jax.inference import pipeline

  size = options.crop_size

  def spatial_transformer(variables, images, boxes):
    images = images.astype(jnp.float32) / 255.0
    crop_theta = geometry.crop_theta(boxes, images.shape[1:3], size)
    st_theta = generator.apply(
      variables["generator"], sampler.warp(images, crop_theta, (size, size)), train=False
    )
    total_theta = (
      pipeline._normalised_homogeneous(crop_theta) @ pipeline._normalised_homogeneous(st_theta)
    )[:, :2]
    return sampler.warp(images, total_theta, (size, size)), total_theta

  def landmark_network(variables, canonical):
    return hourglass.apply(variables["hourglass"], canonical, train=False)[-1]

  def decode_and_score(logits, thresholds):
    maps = heatmaps.spatial_softmax(logits) if options.heatmaps_are_logits else logits
    points = heatmaps.heatmap_to_crop(
      heatmaps.decode_heatmaps(maps, options.decode_method, blur_sigma=options.decode_blur_sigma),
      size,
      options.heatmap_size,
    )
    scores = heatmaps.normalise_scores(
      heatmaps.landmark_scores(maps, heatmaps.heatmap_argmax(maps), options.score_radius)
    )
    return points, heatmaps.reliable_mask(scores, thresholds)

  def shape_repair(points, reliable, dictionary, total_theta, image_hw):
    repaired = pipeline._repair(points, reliable, dictionary, options)
    to_image = geometry.theta_to_pixel_matrix(total_theta, image_hw, (size, size))
    return geometry.apply_affine(repaired, to_image)

  return (
    jax.jit(spatial_transformer),
    jax.jit(landmark_network),
    jax.jit(decode_and_score),
    jax.jit(shape_repair, static_argnums=4),
  )


def _inputs(batch: int):
  rng = np.random.default_rng(batch)
  images = rng.integers(0, 256, (batch, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
  boxes = np.tile(np.array([[40.0, 36.0, 216.0, 212.0]], np.float32), (batch, 1))
  return images, boxes + rng.uniform(-8, 8, boxes.shape).astype(np.float32)


def measure_batch(batch: int, quick: bool, repeats: int, warmup: int) -> dict:
  """One batch size: compile, one-jit timing, per-stage timings, peak RSS (in a worker)."""
  import jax  # pylint: disable=g-import-not-at-top

  from msm_jax.inference import pipeline  # pylint: disable=g-import-not-at-top

  generator, hourglass, options, variables = _models(quick)
  images, boxes = (jax.device_put(array) for array in _inputs(batch))
  infer = pipeline.make_inference_fn(generator, hourglass, options)
  start = time.perf_counter()
  compiled = infer.lower(variables, images, boxes).compile()
  compile_s = time.perf_counter() - start
  whole = common.time_calls(lambda: compiled(variables, images, boxes), repeats, warmup)
  outputs = compiled(variables, images, boxes)

  st, network, decode, repair = stage_functions(generator, hourglass, options)
  canonical, total_theta = st(variables, images, boxes)
  logits = network(variables, canonical)
  points, reliable = decode(logits, variables["thresholds"])
  final = repair(points, reliable, variables["dictionary"], total_theta, images.shape[1:3])
  stage_calls = {
    "ST": lambda: st(variables, images, boxes),
    "hourglass": lambda: network(variables, canonical),
    "decode + score": lambda: decode(logits, variables["thresholds"]),
    "SR": lambda: repair(points, reliable, variables["dictionary"], total_theta, images.shape[1:3]),
  }
  stage_timings = {
    name: common.time_calls(call, repeats, warmup).as_dict() for name, call in stage_calls.items()
  }
  # The pieces must compute what the pipeline computes (same reliable set, same points).
  reliable_agreement = float(np.mean(np.asarray(reliable) == np.asarray(outputs["reliable"])))
  final_difference = float(np.max(np.abs(np.asarray(final) - np.asarray(outputs["landmarks"]))))
  if reliable_agreement < 0.99 or final_difference > 0.5:
    raise AssertionError(
      f"stage pieces differ from the one-jit pipeline: reliable agreement "
      f"{reliable_agreement:.3f}, max landmark difference "
      f"{final_difference:.3f} px"
    )
  return {
    "batch": batch,
    "compile_s": compile_s,
    "pipeline": whole.as_dict(),
    "stages": stage_timings,
    "peak_rss_mb": common.peak_rss_mb(),
    "pieces_max_landmark_difference_px": final_difference,
  }


def main():
  parser = common.parser("bench_inference", __doc__)
  parser.add_argument("--batch_sizes", default="1,8,32", help="comma list of batch sizes")
  parser.add_argument("--worker_batch", type=int, default=0, help=argparse.SUPPRESS)
  args = parser.parse_args()
  common.check_args(args)
  if args.worker_batch:
    common.emit_worker_result(
      measure_batch(args.worker_batch, args.quick, args.repeats, args.warmup)
    )
    return

  machine = common.machine_info()
  common.print_machine(machine)
  batch_sizes = [1, 2] if args.quick else [int(size) for size in args.batch_sizes.split(",")]
  results = []
  for batch in batch_sizes:
    arguments = [
      "--worker_batch",
      str(batch),
      "--repeats",
      str(args.repeats),
      "--warmup",
      str(args.warmup),
    ] + (["--quick"] if args.quick else [])
    results.append(
      common.run_worker("benchmarks.bench_inference", arguments, common.process_env(training=False))
    )
    print(f"  batch {batch}: {batch / results[-1]['pipeline']['median_s']:.1f} faces/s", flush=True)

  rows = [
    [
      "paper (GTX 1080, Sec. IV-F)",
      1,
      "-",
      f"{1e3 / PAPER_FACES_PER_S:.1f}",
      f"{1e3 / PAPER_FACES_PER_S:.1f}",
      f"{PAPER_FACES_PER_S:.1f}",
      "-",
    ]
  ]
  for result in results:
    seconds, batch = result["pipeline"]["median_s"], result["batch"]
    rows.append(
      [
        "msm-jax one-jit pipeline",
        batch,
        f"{result['compile_s']:.1f}",
        f"{seconds * 1e3:.1f}",
        f"{seconds * 1e3 / batch:.2f}",
        f"{batch / seconds:.1f}",
        f"{result['peak_rss_mb']:.0f}",
      ]
    )
  print(
    f"\nOne-jit inference (Algorithm 2), uint8 {IMAGE_SIZE}x{IMAGE_SIZE} images, one face each:\n"
  )
  print(
    common.markdown_table(
      ["pipeline", "batch", "compile s", "ms/batch (median)", "ms/face", "faces/s", "peak RSS MB"],
      rows,
    )
  )

  stage_rows = [
    [
      "paper",
      1,
      f"{PAPER_CNN_MS:.0f} (ST + hourglass)",
      "-",
      "-",
      f"{PAPER_RECONSTRUCTION_MS:.0f}",
      f"{PAPER_CNN_MS + PAPER_RECONSTRUCTION_MS:.0f}",
      f"{1e3 / PAPER_FACES_PER_S:.1f}",
    ]
  ]
  for result in results:
    batch = result["batch"]
    per_face = {name: result["stages"][name]["median_s"] * 1e3 / batch for name in STAGES}
    stage_rows.append(
      ["msm-jax", batch]
      + [f"{per_face[name]:.2f}" for name in STAGES]
      + [f"{sum(per_face.values()):.2f}", f"{result['pipeline']['median_s'] * 1e3 / batch:.2f}"]
    )
  print("\nPer stage, ms/face (each piece jitted alone):\n")
  print(
    common.markdown_table(["", "batch"] + list(STAGES) + ["sum of pieces", "one jit"], stage_rows)
  )
  print(
    f"\nMedian of {args.repeats} calls after {args.warmup} warm-up; compile time excluded "
    "from the timings; peak RSS of the worker process (includes compilation)."
  )
  common.write_json(
    args.json,
    "bench_inference",
    args,
    machine,
    {
      "batches": results,
      "paper": {
        "faces_per_s": PAPER_FACES_PER_S,
        "cnn_ms": PAPER_CNN_MS,
        "reconstruction_ms": PAPER_RECONSTRUCTION_MS,
      },
    },
  )


if __name__ == "__main__":
  from msm_jax.cli import restart_with_page_reuse

  restart_with_page_reuse()  # as predict.py
  main()
