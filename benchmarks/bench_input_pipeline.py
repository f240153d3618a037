"""Faces per second delivered by the Grain input pipeline.

  python -m benchmarks.bench_input_pipeline [--workers 0,2] [--repeats 5] [--quick]
  python -m benchmarks.bench_input_pipeline --root /path/300w   # + a 300-W style folder tree
  python -m benchmarks.bench_input_pipeline --photos_from ../shared/data/300w_subset
      # + original-size photos: the folder path against the prepared TFDS crops

For every source (synthetic faces rendered on demand, as ``configs/synthetic.py`` trains on;
with ``--root``, every folder below it holding image + ``.pts`` pairs, decoded from disk),
each training stage's batches (hourglass: augmented crops, Sec. IV-C; ST-GAN: I_fake, I_real,
theta*) and each worker count, it times ``--num_batches`` batches, ``--repeats`` times, on
one iterator after ``--warmup_batches`` (worker start-up excluded), and reports the median
faces/s. A second table gives the single-process cost of each step per face. When
``benchmarks/results/bench_training.json`` exists, the training steps' images/s are shown
beside, to tell whether the pipeline keeps up.

With ``--photos_from``, the faces of that 300-W style tree become original-size photos
(``--num_photos`` of them, enlarged to ``--photo_side`` pixels, JPEG: the size of 300-W's
HELEN photos) in a scratch folder, prepared as TFDS crops (``msm_jax/data/tfds``, the builder
config of the recipe's 256-pixel crops), and both are read with the recipe's augmentation
(``configs/recipe.py``): faces per CPU-second of the whole process tree (main process, its
reading threads and the worker processes), ``tfds_speedup`` = the TFDS path's over the folder
path's (the smaller over the worker counts), the two paths' batches of one seed compared, and
how many such cores one accelerator needs: the hourglass train step's FLOPs per image
(``bench_training``'s JSON, configs/base.py at width 256, which the recipe's 256-pixel crops
through space-to-depth 2 match) against ``--accelerator_tflops`` at ``--utilization``.

Worker processes are spawned, hence the ``__main__`` guard at the bottom.
"""

import json
import os
import shutil
import tempfile
import time
import warnings

import numpy as np
import psutil
from PIL import Image

from benchmarks import common
from configs import base, recipe
from msm_jax.data import augment, input_pipeline, stgan_pairs, synthetic, w300
from msm_jax.data.images import record_image
from msm_jax.data.tfds import builders as tfds_builders


def _config(batch_size: int):
  config = base.get_config()
  config.hourglass.batch_size = batch_size
  config.stgan.batch_size = batch_size
  # Where the template sits does not change the cost; "fixed" skips deriving it from data.
  config.stgan.template_source = "fixed"
  return config


def _w300_records(root: str):
  """Every folder under ``root`` that holds .pts files, read with the 300-W reader."""
  if not os.path.isdir(root):
    raise FileNotFoundError(f"--root {root} is not a folder")
  records = []
  for folder, _, files in sorted(os.walk(root)):
    if any(name.endswith(".pts") for name in files):
      records += w300.read_pts_folder(folder)
  if not records:
    raise FileNotFoundError(f"--root {root}: no image + .pts faces below it")
  return records


def faces_per_second(
  dataset, batch_size: int, num_batches: int, warmup_batches: int, repeats: int
) -> common.Timing:
  """Timing of faces/s over ``repeats`` runs of ``num_batches`` batches on one iterator."""
  iterator = iter(dataset)
  try:
    for _ in range(warmup_batches):
      next(iterator)

    def some_batches():
      for _ in range(num_batches):
        next(iterator)

    seconds = common.time_calls(some_batches, repeats, warmup=0)
  finally:
    close = getattr(iterator, "close", None)
    if close is not None:
      close()
  faces = num_batches * batch_size
  rates = sorted(faces / sample for sample in seconds.samples)
  # Faces/s of the median run, and of the fastest (the "min" of a rate is its maximum).
  return common.Timing(median=faces / seconds.median, minimum=rates[-1], samples=tuple(rates))


def _per_face_seconds(function, examples, repeats: int) -> float:
  timing = common.time_calls(lambda: [function(example) for example in examples], repeats)
  return timing.median / len(examples)


def step_costs(name: str, source, config, repeats: int, faces: int) -> list:
  """Single-process seconds per face of each pipeline step (no Grain)."""
  tables = input_pipeline.SchemeTables.from_name(config.data.scheme)
  options = augment.AugmentOptions.from_config(config.augment)
  pair_options = stgan_pairs.StganPairOptions.from_config(config)
  rng = np.random.default_rng(0)
  examples = [source[i] for i in range(min(len(source), faces))]
  return [
    (
      f"{name}: read / render",
      _per_face_seconds(lambda example: source[example["index"]], examples, repeats),
    ),
    (
      f"{name}: hourglass crop + augmentation",
      _per_face_seconds(
        lambda e: augment.augment_face(
          e["image"],
          e["landmarks"],
          e["occluded"],
          e["box"],
          rng,
          crop_size=config.data.crop_size,
          margin=config.data.box_margin,
          options=options,
          flip_permutation=tables.flip_permutation,
        ),
        examples,
        repeats,
      ),
    ),
    (
      f"{name}: ST-GAN pair",
      _per_face_seconds(
        lambda e: stgan_pairs.make_stgan_pair(
          e["image"],
          e["landmarks"],
          e["box"],
          rng,
          options=pair_options,
          anchors=tables.anchors,
          flip_permutation=tables.flip_permutation,
        ),
        examples,
        repeats,
      ),
    ),
  ]


# --- Original-size photos: the folder path against the prepared crops ------------------------

# H100 SXM, dense bfloat16 tensor-core peak (NVIDIA's datasheet), and the share of it a
# convolutional training step typically sustains.
H100_BF16_TFLOPS = 989.0
UTILIZATION = 0.4
PHOTO_JPEG_QUALITY = 90


def make_photos(source_root: str, out_root: str, count: int, side: int) -> int:
  """The first ``count`` faces under ``source_root`` (every folder holding .pts), evenly spread,
  enlarged to ``side`` pixels on their longer side, as JPEG + .pts in the same folders under
  ``out_root`` (landmarks through the same enlargement, pixel centres kept). Returns the count."""
  records = _w300_records(source_root)
  picks = [
    records[i] for i in np.linspace(0, len(records) - 1, min(count, len(records))).astype(int)
  ]
  for record in picks:
    image = Image.fromarray(record_image(record))
    factor = side / max(image.size)
    size = tuple(round(length * factor) for length in image.size)
    relative = os.path.relpath(record.image_path, source_root)
    stem = os.path.join(out_root, os.path.splitext(relative)[0])
    os.makedirs(os.path.dirname(stem), exist_ok=True)
    image.resize(size, Image.Resampling.BICUBIC).save(stem + ".jpg", quality=PHOTO_JPEG_QUALITY)
    # Pixel i spans [i - 1/2, i + 1/2]: a point keeps its place in the area it marks.
    landmarks = (record.landmarks.astype(np.float64) + 0.5) * factor - 0.5
    points = "\n".join(f"{x + 1:.4f} {y + 1:.4f}" for x, y in landmarks)  # .pts are 1-based
    with open(stem + ".pts", "w") as file:
      file.write(f"version: 1\nn_points: 68\n{{\n{points}\n}}\n")
  return len(picks)


def prepare_crops(photo_root: str, data_dir: str, config_name: str) -> float:
  """Builds the photos as prepared crops (what `python -m msm_jax.data.tfds build` runs);
  returns the seconds it took."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  start = time.perf_counter()
  builder = tfds_builders.Msm300w(config=config_name, data_dir=data_dir)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # "found N of 3,148 faces": a sample of 300-W on purpose
    builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=photo_root)
    )
  return time.perf_counter() - start


def _tree_cpu_seconds() -> float:
  """CPU seconds of this process and its live children (Grain's worker processes)."""
  processes = [psutil.Process(), *psutil.Process().children(recursive=True)]
  total = 0.0
  for process in processes:
    try:
      times = process.cpu_times()
    except psutil.NoSuchProcess:
      continue
    total += times.user + times.system
  return total


def faces_per_cpu_second(dataset, batch_size, num_batches, warmup_batches, repeats) -> dict:
  """Faces/s (wall) and faces per CPU-second of the process tree, medians of ``repeats``
  runs of ``num_batches`` batches on one iterator after ``warmup_batches``."""
  iterator = iter(dataset)
  walls, cpus = [], []
  try:
    for _ in range(warmup_batches):
      next(iterator)
    for _ in range(repeats):
      cpu, wall = _tree_cpu_seconds(), time.perf_counter()
      for _ in range(num_batches):
        next(iterator)
      walls.append(time.perf_counter() - wall)
      cpus.append(_tree_cpu_seconds() - cpu)
  finally:
    close = getattr(iterator, "close", None)
    if close is not None:
      close()
  faces = num_batches * batch_size
  return {
    "faces_per_s": faces / float(np.median(walls)),
    "faces_per_cpu_s": faces / float(np.median(cpus)),
    "wall_s": walls,
    "cpu_s": cpus,
  }


def compare_paths(folder, prepared, config, num_batches: int) -> dict:
  """The first batches of one seed from both paths: how far their examples are apart. Without
  natural occluders, whose texture is a window of the image they are given: the photo on one
  path, the stored crop on the other."""
  config = config.copy_and_resolve_references()
  config.augment.natural_occluder = 0.0
  config.augment.schedule.natural_occluder = ((0.0, 0.0),)
  batches = [
    list(zip(range(num_batches), input_pipeline.hourglass_train_dataset(s, config, worker_count=0)))
    for s in (folder, prepared)
  ]
  landmarks, pixels, flags = [], [], []
  for (_, from_folder), (_, from_prepared) in zip(*batches):
    landmarks.append(np.abs(from_prepared["landmarks"] - from_folder["landmarks"]).max())
    pixels.append(np.abs(from_prepared["images"].astype(np.int16) - from_folder["images"]))
    flags.append(
      np.array_equal(from_prepared["occluded"], from_folder["occluded"])
      and np.array_equal(from_prepared["visible"], from_folder["visible"])
    )
  pixels = np.concatenate([p.ravel() for p in pixels])
  return {
    "landmarks_max_px": float(max(landmarks)),
    "flags_equal": bool(all(flags)),
    "pixels_mean_abs": float(pixels.mean()),
    "pixels_p99_abs": float(np.percentile(pixels, 99)),
    "pixels_max_abs": int(pixels.max()),
  }


def _step_gflop_per_image() -> float | None:
  path = common.RESULTS_DIR / "bench_training.json"
  if not path.exists():
    return None
  with open(path) as file:
    rows = json.load(file)["results"]["per_stage"]
  row = next((r for r in rows if (r["config"], r["stage"]) == ("paper", "hourglass")), None)
  return None if row is None else row["flops_per_image"] / 1e9


def tfds_comparison(args) -> dict:
  """Original-size photos through the folder path and the prepared crops (module docstring)."""
  config = recipe.apply(base.get_config())
  config.hourglass.batch_size = args.batch_size
  config.data.root = ""
  config_name = f"crop{config.data.crop_size}"
  scratch = args.scratch or tempfile.mkdtemp(prefix="bench_input_pipeline_")
  photo_root, data_dir = os.path.join(scratch, "300w"), os.path.join(scratch, "tfds")
  try:
    start = time.perf_counter()
    count = make_photos(args.photos_from, photo_root, args.num_photos, args.photo_side)
    print(f"  {count} photos of {args.photo_side} px in {time.perf_counter() - start:.0f} s")
    build_s = prepare_crops(photo_root, data_dir, config_name)
    print(f"  prepared as {config_name} in {build_s:.0f} s", flush=True)
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # "found N of 3,148 faces": a sample of 300-W on purpose
      folder = input_pipeline.RecordSource(w300.read_300w(photo_root, "train"))
    prepared = input_pipeline.PreparedSource(f"msm_300w/{config_name}", "train", data_dir)
    sizes = [
      os.path.getsize(os.path.join(directory, name))
      for directory, _, names in os.walk(data_dir)
      for name in names
      if ".array_record" in name
    ]
    rows = []
    for workers in (int(count) for count in args.workers.split(",")):
      for path, source in (("folder", folder), ("tfds", prepared)):
        rate = faces_per_cpu_second(
          input_pipeline.hourglass_train_dataset(source, config, worker_count=workers),
          args.batch_size,
          args.num_batches,
          args.warmup_batches,
          args.repeats,
        )
        rows.append({"path": path, "workers": workers, **rate})
        print(
          f"  {path}, {workers} workers: {rate['faces_per_s']:.1f} faces/s, "
          f"{rate['faces_per_cpu_s']:.1f} faces per CPU-second",
          flush=True,
        )
    comparison = compare_paths(folder, prepared, config, args.compare_batches)
  finally:
    if not args.scratch:
      shutil.rmtree(scratch, ignore_errors=True)
  speedups = {}
  for row in rows:
    if row["path"] == "tfds":
      folder_row = next(r for r in rows if (r["path"], r["workers"]) == ("folder", row["workers"]))
      speedups[str(row["workers"])] = row["faces_per_cpu_s"] / folder_row["faces_per_cpu_s"]
  gflop = args.step_gflop or _step_gflop_per_image()
  accelerator_images_per_s = (
    None if gflop is None else args.accelerator_tflops * 1e3 * args.utilization / gflop
  )
  for row in rows:
    row["cores_per_accelerator"] = (
      None if gflop is None else accelerator_images_per_s / row["faces_per_cpu_s"]
    )
  return {
    "photos": count,
    "photo_side": args.photo_side,
    "builder_config": config_name,
    "build_s_per_face": build_s / count,
    "stored_bytes_per_face": sum(sizes) / count,
    "rows": rows,
    "tfds_speedup_by_workers": speedups,
    "tfds_speedup": min(speedups.values()),
    "examples": comparison,
    "step_gflop_per_image": gflop,
    "accelerator_tflops": args.accelerator_tflops,
    "utilization": args.utilization,
    "accelerator_images_per_s": accelerator_images_per_s,
  }


def print_tfds_comparison(result: dict, args) -> None:
  print(
    f"\nOriginal-size photos ({result['photos']} faces enlarged to {result['photo_side']} px, "
    f"JPEG) against their prepared crops ({result['builder_config']}, "
    f"{result['stored_bytes_per_face'] / 1e3:.0f} kB and {result['build_s_per_face']:.2f} s "
    f"of building per face), hourglass batches of {args.batch_size} with the recipe's "
    "augmentation:\n"
  )
  cores = lambda row: (
    "-" if row["cores_per_accelerator"] is None else f"{row['cores_per_accelerator']:.0f}"
  )
  table = [
    [
      row["path"],
      row["workers"],
      f"{row['faces_per_s']:.1f}",
      f"{row['faces_per_cpu_s']:.1f}",
      cores(row),
    ]
    for row in result["rows"]
  ]
  headers = ["path", "workers", "faces/s", "faces per CPU-second", "cores per accelerator"]
  print(common.markdown_table(headers, table))
  speedups = ", ".join(
    f"{w} workers {x:.1f}x" for w, x in result["tfds_speedup_by_workers"].items()
  )
  print(f"\ntfds_speedup (faces per CPU-second, TFDS / folder): {speedups}")
  examples = result["examples"]
  flags = "equal" if examples["flags_equal"] else "DIFFER"
  print(
    f"Same seed, {args.compare_batches} batches: landmarks within "
    f"{examples['landmarks_max_px']:.2g} px, flags {flags}; "
    f"pixels differ by {examples['pixels_mean_abs']:.2f} grey levels on average (99th percentile "
    f"{examples['pixels_p99_abs']:.0f}, max {examples['pixels_max_abs']}): the stored crop's "
    "resampling and JPEG (natural occluders off here: they cut their texture from the image "
    "they are given, the photo or the stored crop)"
  )
  if result["step_gflop_per_image"] is None:
    print("(run bench_training first, or pass --step_gflop, for the cores an accelerator needs)")
  else:
    print(
      f"Cores per accelerator: {result['accelerator_images_per_s']:.0f} images/s = "
      f"{result['accelerator_tflops']:g} TFLOP/s x {result['utilization']:.0%} / "
      f"{result['step_gflop_per_image']:.1f} GFLOP per image (the hourglass train step), "
      "divided by each row's faces per CPU-second"
    )


def _training_consumption() -> str:
  """The training steps' images/s from bench_training's JSON, if it has been run."""
  path = common.RESULTS_DIR / "bench_training.json"
  if not path.exists():
    return "(run bench_training first to compare with what the training steps consume)"
  with open(path) as file:
    results = json.load(file)["results"]["per_stage"]
  rates = ", ".join(f"{row['config']} {row['stage']} {row['images_per_s']:.1f}" for row in results)
  return f"Training steps consume (images/s, {path.name}): {rates}."


def main():
  parser = common.parser("bench_input_pipeline", __doc__)
  parser.add_argument("--root", default="", help="folder tree of 300-W style image + .pts faces")
  parser.add_argument("--workers", default="0,2", help="comma list of Grain worker counts")
  parser.add_argument("--batch_size", type=int, default=16, help="faces per batch (Sec. IV-C)")
  parser.add_argument("--num_batches", type=int, default=10, help="batches per timed run")
  parser.add_argument("--warmup_batches", type=int, default=3, help="untimed batches first")
  parser.add_argument("--num_synthetic", type=int, default=2000, help="faces in the source")
  parser.add_argument(
    "--photos_from", default="", help="300-W style tree: its faces become original-size photos"
  )
  parser.add_argument("--num_photos", type=int, default=64, help="photos made from it")
  parser.add_argument("--photo_side", type=int, default=3000, help="their longer side, pixels")
  parser.add_argument(
    "--scratch",
    default="",
    help="keep the photos and crops here (default: a temporary folder, removed)",
  )
  parser.add_argument("--compare_batches", type=int, default=4, help="batches compared per path")
  parser.add_argument("--accelerator_tflops", type=float, default=H100_BF16_TFLOPS)
  parser.add_argument("--utilization", type=float, default=UTILIZATION)
  parser.add_argument(
    "--step_gflop",
    type=float,
    default=None,
    help="train step GFLOP per image (default: bench_training's JSON)",
  )
  parser.add_argument("--no_synthetic", action="store_true", help="only the photo comparison")
  args = parser.parse_args()
  common.check_args(args)
  if args.quick:
    args.batch_size, args.num_batches, args.warmup_batches, args.num_synthetic = 4, 2, 1, 64
    args.num_photos, args.photo_side, args.compare_batches = 4, 1000, 1
  machine = common.machine_info()
  common.print_machine(machine)
  results = {"pipeline": [], "steps": []}
  if args.photos_from:
    results["tfds"] = tfds_comparison(args)
    results["tfds_speedup"] = results["tfds"]["tfds_speedup"]
    print_tfds_comparison(results["tfds"], args)
  if args.no_synthetic:
    common.write_json(args.json, "bench_input_pipeline", args, machine, results)
    return
  config = _config(args.batch_size)
  sources = {
    "synthetic (rendered, 160 px)": input_pipeline.SyntheticSource(
      seed=0, num_faces=args.num_synthetic, config=synthetic.SyntheticConfig(image_size=160)
    )
  }
  if args.root:
    records = _w300_records(args.root)
    sources[f"300-W folder ({len(records)} faces, JPEG/PNG)"] = input_pipeline.RecordSource(records)
  builders = {
    "hourglass": input_pipeline.hourglass_train_dataset,
    "ST-GAN": input_pipeline.stgan_train_dataset,
  }

  rows = []
  for source_name, source in sources.items():
    for stage, build in builders.items():
      for workers in (int(count) for count in args.workers.split(",")):
        start = time.perf_counter()
        rate = faces_per_second(
          build(source, config, worker_count=workers),
          args.batch_size,
          args.num_batches,
          args.warmup_batches,
          args.repeats,
        )
        results["pipeline"].append(
          {
            "source": source_name,
            "stage": stage,
            "workers": workers,
            "faces_per_s": rate.median,
            "faces_per_s_max": rate.minimum,
            "samples": list(rate.samples),
            "wall_s": time.perf_counter() - start,
          }
        )
        rows.append([source_name, stage, workers, f"{rate.median:.0f}", f"{rate.minimum:.0f}"])
        print(f"  {source_name}, {stage}, {workers} workers: {rate.median:.0f} faces/s", flush=True)
  print(
    f"\nGrain pipeline with augmentation, batch {args.batch_size}, crop "
    f"{config.data.crop_size} px:\n"
  )
  print(
    common.markdown_table(
      ["source", "batches", "workers", "faces/s (median)", "faces/s (best)"], rows
    )
  )

  step_rows = []
  for source_name, source in sources.items():
    for step, seconds in step_costs(
      source_name.split(" (")[0], source, config, args.repeats, 8 if args.quick else 50
    ):
      results["steps"].append({"step": step, "ms_per_face": seconds * 1e3})
      step_rows.append([step, f"{seconds * 1e3:.2f}", f"{1.0 / seconds:.0f}"])
  print("\nEach step alone, one process:\n")
  print(common.markdown_table(["step", "ms/face (median)", "faces/s"], step_rows))
  print(
    f"\n{args.num_batches} timed batches per run, median of {args.repeats} runs after "
    f"{args.warmup_batches} warm-up batches; augmentation: "
    f"{augment.AugmentOptions.from_config(config.augment)}"
  )
  print(_training_consumption())
  common.write_json(args.json, "bench_input_pipeline", args, machine, results)


if __name__ == "__main__":
  main()
