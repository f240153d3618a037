"""Faces per second delivered by the Grain input pipeline.

  python -m benchmarks.bench_input_pipeline [--workers 0,2] [--repeats 5] [--quick]
  python -m benchmarks.bench_input_pipeline --root /path/300w   # + a 300-W style folder tree

For every source (synthetic faces rendered on demand, as ``configs/synthetic.py`` trains on;
with ``--root``, every folder below it holding image + ``.pts`` pairs, decoded from disk),
each training stage's batches (hourglass: augmented crops, Sec. IV-C; ST-GAN: I_fake, I_real,
theta*) and each worker count, it times ``--num_batches`` batches, ``--repeats`` times, on
one iterator after ``--warmup_batches`` (worker start-up excluded), and reports the median
faces/s. A second table gives the single-process cost of each step per face. When
``benchmarks/results/bench_training.json`` exists, the training steps' images/s are shown
beside, to tell whether the pipeline keeps up.

Worker processes are spawned, hence the ``__main__`` guard at the bottom.
"""

import json
import os
import time

import numpy as np

from benchmarks import common
from configs import base
from msm_jax.data import augment, input_pipeline, stgan_pairs, synthetic, w300


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
  args = parser.parse_args()
  common.check_args(args)
  if args.quick:
    args.batch_size, args.num_batches, args.warmup_batches, args.num_synthetic = 4, 2, 1, 64
  machine = common.machine_info()
  common.print_machine(machine)
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

  results, rows = {"pipeline": [], "steps": []}, []
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
