"""Faces per second delivered by the Grain input pipeline (msm_jax/data/input_pipeline.py).

  python -m benchmarks.bench_pipeline                          # synthetic faces
  python -m benchmarks.bench_pipeline --w300_root=/path/300w   # + a folder tree of .pts faces

For every source (synthetic faces rendered on demand; with ``--w300_root``, every
folder below it holding image + ``.pts`` pairs, decoded from disk), every stage's
batches (hourglass: augmented crops; ST-GAN: I_fake, I_real, theta*) and every
worker count, the script times ``--num_batches`` batches after ``--warmup_batches``
(worker start-up excluded) and prints a Markdown table, then the single-process
cost of each step per face, then the machine.
"""

import os
import platform
import time

import numpy as np
from absl import app, flags

from configs import base
from msm_jax.data import augment, input_pipeline, stgan_pairs, synthetic, w300

_W300_ROOT = flags.DEFINE_string("w300_root", "", "folder tree of 300-W style image + .pts faces")
_WORKERS = flags.DEFINE_list("workers", ["0", "2"], "worker counts to time")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "faces per batch (Sec. IV-C: 16)")
_NUM_BATCHES = flags.DEFINE_integer("num_batches", 20, "timed batches per row")
_WARMUP_BATCHES = flags.DEFINE_integer("warmup_batches", 3, "untimed batches first")
_NUM_SYNTHETIC = flags.DEFINE_integer("num_synthetic", 2000, "synthetic faces in the source")


def _config(batch_size):
    config = base.get_config()
    config.hourglass.batch_size = batch_size
    config.stgan.batch_size = batch_size
    return config


def _w300_records(root):
    """Every folder under ``root`` that holds .pts files, read with the 300-W reader."""
    records = []
    for folder, _, files in sorted(os.walk(root)):
        if any(name.endswith(".pts") for name in files):
            records += w300.read_pts_folder(folder)
    if not records:
        raise FileNotFoundError(f"no image + .pts faces under {root}")
    return records


def _faces_per_second(dataset, batch_size):
    iterator = iter(dataset)
    try:
        for _ in range(_WARMUP_BATCHES.value):
            next(iterator)
        start = time.perf_counter()
        for _ in range(_NUM_BATCHES.value):
            next(iterator)
        elapsed = time.perf_counter() - start
    finally:
        iterator.close()
    return _NUM_BATCHES.value * batch_size / elapsed


def _per_face_ms(function, examples):
    function(examples[0])
    start = time.perf_counter()
    for example in examples:
        function(example)
    return 1e3 * (time.perf_counter() - start) / len(examples)


def _step_costs(name, source, config):
    """Single-process milliseconds per face of each pipeline step (no Grain)."""
    tables = input_pipeline.SchemeTables.from_name(config.data.scheme)
    options = augment.AugmentOptions.from_config(config.augment)
    pair_options = stgan_pairs.StganPairOptions.from_config(config)
    rng = np.random.default_rng(0)
    examples = [source[i] for i in range(min(len(source), 50))]
    rows = [(f"{name}: read / render", _per_face_ms(
        lambda example: source[example["index"]], examples))]
    rows.append((f"{name}: hourglass crop + augmentation", _per_face_ms(
        lambda e: augment.augment_face(
            e["image"], e["landmarks"], e["occluded"], e["box"], rng,
            crop_size=config.data.crop_size, margin=config.data.box_margin,
            options=options, flip_permutation=tables.flip_permutation), examples)))
    rows.append((f"{name}: ST-GAN pair", _per_face_ms(
        lambda e: stgan_pairs.make_stgan_pair(
            e["image"], e["landmarks"], e["box"], rng, options=pair_options,
            anchors=tables.anchors, flip_permutation=tables.flip_permutation), examples)))
    return rows


def _machine():
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import grain  # pylint: disable=g-import-not-at-top
    import PIL  # pylint: disable=g-import-not-at-top
    return (f"{model}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}, "
            f"Pillow {PIL.__version__}, grain {grain.__version__}, numpy {np.__version__}")


def main(argv):
    del argv
    batch_size = _BATCH_SIZE.value
    config = _config(batch_size)
    sources = {"synthetic (rendered, 160 px)": input_pipeline.SyntheticSource(
        seed=0, num_faces=_NUM_SYNTHETIC.value, config=synthetic.SyntheticConfig(image_size=160))}
    if _W300_ROOT.value:
        records = _w300_records(_W300_ROOT.value)
        sources[f"300-W folder ({len(records)} faces, JPEG/PNG)"] = input_pipeline.RecordSource(records)
    builders = {"hourglass": input_pipeline.hourglass_train_dataset,
                "ST-GAN": input_pipeline.stgan_train_dataset}

    print("| source | batches | workers | faces/s |\n|---|---|---|---|")
    for source_name, source in sources.items():
        for stage, build in builders.items():
            for workers in (int(count) for count in _WORKERS.value):
                rate = _faces_per_second(build(source, config, worker_count=workers), batch_size)
                print(f"| {source_name} | {stage} | {workers} | {rate:.0f} |", flush=True)

    print("\n| step, one process | ms per face |\n|---|---|")
    for source_name, source in sources.items():
        short_name = source_name.split(" (")[0]
        for step, milliseconds in _step_costs(short_name, source, config):
            print(f"| {step} | {milliseconds:.2f} |")
    print(f"\nbatch size {batch_size}, {_NUM_BATCHES.value} timed batches per row after "
          f"{_WARMUP_BATCHES.value} warm-up; crop {config.data.crop_size} px; "
          f"augmentation: {augment.AugmentOptions.from_config(config.augment)}")
    print(f"machine: {_machine()}")


if __name__ == "__main__":
    app.run(main)
