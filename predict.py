"""68 face landmarks for photos and videos with the shipped pretrained MSM (Algorithm 2).

  python predict.py face.jpg
  python predict.py photos/ more.png --out predictions/ --batch-size 8
  python predict.py group.jpg --boxes boxes.json --model pretrained/
  python predict.py clip.mp4 [--overlay-video clip_overlay.mp4] [--jsonl -]
  python predict.py --camera 0 --jsonl - --max-frames 300

Folders are walked for image files (.jpg .jpeg .png .bmp .tif .tiff .webp), leaving out this
program's own overlays (*_overlay.png). Faces are found by the package's detectors in order
(dlib's HOG detector, then OpenCV's Haar cascade), each calibrated to the training crops,
unless --boxes gives them:

  boxes.json = {"photos/a.jpg": [[x0, y0, x1, y1], ...], "b.png": [x0, y0, x1, y1]}

A key is the image path as given (or as found in a folder) or its file name alone; boxes are
in pixels of the upright image (EXIF orientation applied), ideally the tight box around the
68 landmarks: the model crops that box grown 1.25 times and squared, as in training.

Writes per image <stem>.json (faces: box, 68 landmarks in 0-based pixels of the upright image,
per-landmark scores, reliable flags, the landmarks before the repair, the ST-GAN's theta) and
<stem>_overlay.png (green: reliable landmarks, red: repaired by the shape dictionary, blue:
the box) into --out; an output that would overwrite one of the inputs is refused. The --out
folder is never walked for inputs (`predict.py photos --out photos/out` and `predict.py .`
run twice read the photos only), unless it is itself one of the PATHs given.

Every file is written whole or not at all (a temporary file renamed over the target): a full
disk fails that image with the file named and leaves its older outputs as they were; Ctrl-C
stops with one line and exit status 130, the outputs written so far complete. A file that
cannot be read, or with no face found, is reported and skipped; the exit status is 1 if any
file failed (or no image was given), 2 for a bad boxes.json or a missing model.

Videos (one file, whatever OpenCV's bundled FFmpeg decodes: .mp4 .mov .avi .mkv .webm ...,
or --camera N) go through the tracker (msm_jax/inference/tracking.py): the detector finds the
faces on the first frame, then each frame's crops come from the previous frame's landmarks,
and the detector runs again only when a face is lost (its Eq. 9 confidence falls) or every
--detect-every frames. One JSON line per frame goes to --jsonl (default <out>/<stem>.jsonl; "-"
for the standard output), flushed as it is written:

  {"frame": 0, "time": 0.0, "faces": [{"id": 0, "box": [x0, y0, x1, y1],
   "landmarks": [[x, y], ...], "scores": [...], "reliable": [...], "confidence": 0.93,
   "detected": true, "refined": false}]}

(docs/video.md has every field.) --overlay-video draws them on the frames (.mp4, .mov, .m4v,
.avi or .mkv). A progress bar shows the frames per second. Ctrl-C stops with one line and
exit status 130: the JSON lines of the frames done are whole, the overlay video holds them.
A video or camera that cannot be opened is one line and exit status 1.

The traced and compiled pipeline is kept in the user's cache folder (~/.cache/msm-jax/jax,
or under $XDG_CACHE_HOME, or $MSM_JAX_CACHE_DIR), so a second run starts without compiling.
"""

import argparse
import contextlib
import dataclasses
import json
import math
import os
import sys

import numpy as np

from msm_jax import files

DEFAULT_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained")
OVERLAY_SUFFIX = "_overlay.png"


def parse_args(argv):
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument(
    "paths", nargs="*", metavar="PATH", help="image files or folders, or one video file"
  )
  parser.add_argument("--boxes", help="boxes.json (format above); default: the face detectors")
  parser.add_argument("--out", default="predictions", help="output folder")
  parser.add_argument("--batch-size", type=int, default=8, help="faces per model call")
  parser.add_argument("--model", default=DEFAULT_MODEL, help="pretrained package folder")
  parser.add_argument(
    "--compute",
    choices=("full", "adaptive"),
    help="full: the package's pipeline for every face; adaptive: the flip and re-crop pass "
    "only where the first pass is unsure (default: full for photos, adaptive for videos)",
  )
  parser.add_argument(
    "--thresholds",
    help="a TrackingThresholds JSON instead of the package's own (python -m "
    "msm_jax.eval.tracking_fit fits them into a package)",
  )
  video = parser.add_argument_group("videos")
  video.add_argument("--camera", type=int, metavar="N", help="read camera N instead of a file")
  video.add_argument("--jsonl", help='the JSON lines ("-": standard output)')
  video.add_argument("--overlay-video", metavar="PATH", help="the frames with the landmarks")
  video.add_argument(
    "--detect-every",
    type=int,
    metavar="N",
    help=f"run the detector every N frames to find new faces (0: only when a face is lost; "
    f"default {VIDEO_DETECT_EVERY})",
  )
  video.add_argument(
    "--network-every",
    type=int,
    metavar="N",
    help="run the landmark network on a tracked face every N frames, its landmarks carried "
    f"by the image's motion between (1: every frame; default {VIDEO_NETWORK_EVERY})",
  )
  video.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
  video.add_argument(
    "--no-smoothing", action="store_true", help="the landmarks as the pipeline gives them"
  )
  return parser.parse_args(argv)


VIDEO_DETECT_EVERY = 30
VIDEO_NETWORK_EVERY = 3
VIDEO_ONLY_FLAGS = (
  "jsonl",
  "overlay_video",
  "detect_every",
  "network_every",
  "max_frames",
  "no_smoothing",
)


def collect_images(
  paths, extensions, out: str | None = None
) -> tuple[list[str], list[tuple[str, str]], set[str]]:
  """(image files, [(path, error)] for paths that do not exist, every file given or inside a
  given folder: outputs never overwrite one of them).

  The output folder ``out`` is left out of the folders walked: a second run must not read the
  first's outputs (nor refuse to replace them as inputs). Given as a PATH, it is read."""
  images, missing, protected = [], [], set()
  skipped = None if out is None else os.path.realpath(out)
  for path in paths:
    if os.path.isdir(path):
      for folder, subfolders, names in os.walk(path):
        subfolders[:] = sorted(
          name for name in subfolders if os.path.realpath(os.path.join(folder, name)) != skipped
        )
        protected.update(os.path.realpath(os.path.join(folder, name)) for name in names)
        images += [
          os.path.join(folder, name)
          for name in sorted(names)
          if name.lower().endswith(extensions) and not name.endswith(OVERLAY_SUFFIX)
        ]
    elif os.path.isfile(path):
      images.append(path)
      protected.add(os.path.realpath(path))
    else:
      missing.append((path, f"{path}: no such file or folder"))
  return images, missing, protected


def read_boxes(path: str) -> dict[str, np.ndarray]:
  """boxes.json -> {key: [N, 4] float64}; ValueError naming the file and key if malformed."""
  try:
    with open(path, encoding="utf-8") as file:
      table = json.load(file)
  except UnicodeDecodeError as error:
    raise ValueError(f"{path}: cannot read boxes (not UTF-8 text: {error})") from None
  except (OSError, json.JSONDecodeError) as error:
    raise ValueError(f"{path}: cannot read boxes ({error})") from None
  if not isinstance(table, dict):
    raise ValueError(f'{path}: want an object {{"image": [[x0, y0, x1, y1], ...]}}')
  boxes = {}
  for key, value in table.items():
    try:
      array = np.asarray(value, np.float64)
    except (TypeError, ValueError):
      array = np.zeros((0,))
    if array.shape == (4,):  # one face, given as a flat box (as the Python API accepts)
      array = array[None]
    if (
      array.ndim != 2
      or array.shape[0] == 0
      or array.shape[1] != 4
      or not np.all(np.isfinite(array))
      or np.any(array[:, 2:] <= array[:, :2])
    ):
      raise ValueError(
        f"{path}: entry {key!r} must be a non-empty list of [x0, y0, x1, y1] "
        f"boxes with x1 > x0 and y1 > y0, got {value!r}"
      )
    boxes[key] = array
  return boxes


def boxes_for(image_path: str, table: dict) -> np.ndarray | None:
  for key, boxes in table.items():
    if os.path.abspath(key) == os.path.abspath(image_path):
      return boxes
  name = os.path.basename(image_path)
  return table.get(name)


def output_stem(path: str, used: set) -> str:
  """<stem>, or <stem>_2, _3... when two inputs share a file name."""
  stem = os.path.splitext(os.path.basename(path))[0]
  candidate, count = stem, 1
  while candidate in used:
    count += 1
    candidate = f"{stem}_{count}"
  used.add(candidate)
  return candidate


class OutputWriteError(OSError):
  """An output file that could not be written (a full disk...); the message names it."""


@contextlib.contextmanager
def writing(path: str, mode: str):
  """`files.atomic_write`, its errors naming the file: the target is left as it was."""
  try:
    with files.atomic_write(path, mode) as file:
      yield file
  except OutputWriteError:
    raise
  except OSError as error:
    raise OutputWriteError(f"{path}: not written ({error}); left as it was") from None


def write_outputs(stem: str, document: dict, overlay) -> None:
  """<stem>.json and <stem>_overlay.png (a PIL image), each whole or not at all. The JSON,
  written first, replaces its older file only after the PNG has replaced its own, so that a
  failure in either (a full disk, Ctrl-C) leaves the older pair as it was."""
  with writing(stem + ".json", "w") as json_file:
    json.dump(document, json_file, indent=1)
    json_file.flush()  # a full disk shows here, before the PNG replaces the older one
    with writing(stem + OVERLAY_SUFFIX, "wb") as png_file:
      overlay.save(png_file, format="PNG")


@dataclasses.dataclass
class Tally:
  """Images done so far (written or failed), for the summary and for Ctrl-C's line."""

  total: int | None = None
  written: int = 0
  faces: int = 0
  failures: list = dataclasses.field(default_factory=list)

  @property
  def done(self) -> int:
    return self.written + len(self.failures)


def main(argv=None) -> int:
  args = parse_args(argv)
  from msm_jax.inference import video

  if args.camera is not None or any(video.is_video(path) for path in args.paths):
    return predict_video(args)
  given = [name for name in VIDEO_ONLY_FLAGS if getattr(args, name) not in (None, False)]
  if given:
    flag = "--" + given[0].replace("_", "-")
    print(f"error: {flag} is for videos (a video file or --camera N)", file=sys.stderr)
    return 2
  if not args.paths:
    print("error: give image files or folders, a video file, or --camera N", file=sys.stderr)
    return 2
  tally = Tally()
  try:
    return predict(args, tally)
  except KeyboardInterrupt:
    if tally.total is None:
      print("interrupted before any image was done; nothing written", file=sys.stderr)
    else:
      print(
        f"interrupted: {tally.done} of {tally.total} images done ({tally.written} written to "
        f"{args.out}); outputs written so far are complete",
        file=sys.stderr,
      )
    return 130


def load_model(directory: str):
  """The package (JAX's compilations cached in the user's cache folder first), or None after
  one error line."""
  from msm_jax.inference import pipeline, pretrained

  pipeline.use_compilation_cache()
  try:
    return pretrained.load_pretrained(directory)
  except FileNotFoundError as error:
    print(
      f"error: no pretrained model in {directory} ({error}). Pass --model DIR, or make one "
      "from a training run: python -m msm_jax.train.packaging "
      "--config configs/300w_subset.py "
      f"--workdir runs/300w_subset --out pretrained/",
      file=sys.stderr,
    )
  except UnicodeDecodeError as error:  # the package's one text file
    config_path = os.path.join(directory, pretrained.CONFIG_FILE)
    print(f"error: {config_path}: not UTF-8 text ({error})", file=sys.stderr)
  except (OSError, ValueError) as error:  # these name their file
    print(f"error: cannot load the model in {directory}: {error}", file=sys.stderr)
  return None


def read_thresholds(path: str | None):
  """The tracking thresholds of --thresholds, or None without it (the package's own). A
  ValueError naming the file when it cannot be read."""
  from msm_jax.inference import tracking

  return None if path is None else tracking.TrackingThresholds.load(path)


def predict(args, tally: Tally) -> int:
  if args.batch_size < 1:
    print(f"error: --batch-size must be >= 1, got {args.batch_size}", file=sys.stderr)
    return 2
  try:
    table = read_boxes(args.boxes) if args.boxes else None
  except ValueError as error:
    print(f"error: {error}", file=sys.stderr)
    return 2

  from tqdm import tqdm

  from msm_jax.inference import prediction

  try:
    thresholds = read_thresholds(args.thresholds)
  except ValueError as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  model = load_model(args.model)
  if model is None:
    return 2
  refine_below = math.inf  # the full pipeline refines every face
  if (args.compute or "full") == "adaptive":
    from msm_jax.inference import tracking

    if thresholds is None:
      thresholds = tracking.package_thresholds(model)
    refine_below = thresholds.refine_below_detected

  files_found, failures, protected = collect_images(
    args.paths, prediction.IMAGE_EXTENSIONS, args.out
  )
  tally.failures = failures
  for _, message in failures:
    print(f"error: {message}", file=sys.stderr)
  todo = []
  for path in files_found:
    boxes = None if table is None else boxes_for(path, table)
    if table is not None and boxes is None:
      failures.append((path, f"{path}: no entry in {args.boxes}"))
      print(f"error: {failures[-1][1]}", file=sys.stderr)
    else:
      todo.append((path, boxes))

  if not todo and not failures:
    print(f"error: no image files in {', '.join(args.paths)}", file=sys.stderr)
    return 1
  try:
    os.makedirs(args.out, exist_ok=True)
  except OSError as error:
    print(f"error: cannot create the output folder {args.out}: {error}", file=sys.stderr)
    return 2
  tally.total = tally.done + len(todo)
  used_stems = set()
  show_progress = any(os.path.isdir(path) for path in args.paths)
  with tqdm(total=len(todo), unit="image", disable=not show_progress) as progress:
    # batch_size files per call (about one batch of faces): memory stays bounded on big
    # folders and the progress bar moves; the compiled pipeline is reused across calls.
    for start in range(0, len(todo), args.batch_size):
      chunk = todo[start : start + args.batch_size]
      results = prediction.predict_images(
        model,
        [path for path, _ in chunk],
        boxes=None if table is None else [boxes for _, boxes in chunk],
        batch_size=args.batch_size,
        errors="collect",
        compute=args.compute or "full",
        refine_below=refine_below,
      )
      for (path, _), result in zip(chunk, results):
        try:
          if result.error:
            raise ValueError(result.error)
          stem = os.path.join(args.out, output_stem(path, used_stems))
          clash = [
            out
            for out in (stem + ".json", stem + OVERLAY_SUFFIX)
            if os.path.realpath(out) in protected
          ]
          if clash:
            raise ValueError(f"{path}: not written: {clash[0]} is one of the input files")
          document = prediction.prediction_to_json(result, prediction.exif_orientation(path))
          overlay = prediction.overlay_image(prediction.load_upright(path), result.faces)
          write_outputs(stem, document, overlay)
          tally.faces += len(result.faces)
          tally.written += 1
        except (OSError, ValueError) as error:
          failures.append((path, str(error)))
          progress.write(f"error: {error}", file=sys.stderr)
        progress.update(1)

  print(
    f"{tally.written} image(s), {tally.faces} face(s) written to {args.out}; {len(failures)} failed"
  )
  for _, message in failures:
    print(f"  failed: {message}")
  return 1 if failures else 0


def check_video_args(args) -> str | None:
  """Why the flags cannot make a video run (one line), or None."""
  from msm_jax.inference import video

  sources = len(args.paths) + (args.camera is not None)
  if sources != 1:
    return "a video run reads one video file or --camera N, nothing else"
  if args.boxes is not None:
    return "--boxes is for photos; a video's faces are found by the detector"
  for flag, value, least in (
    ("--detect-every", args.detect_every, 0),
    ("--network-every", args.network_every, 1),
    ("--max-frames", args.max_frames, 1),
    ("--camera", args.camera, 0),
  ):
    if value is not None and value < least:
      return f"{flag} must be >= {least}, got {value}"
  if args.overlay_video is not None:
    try:
      video.check_writable_video(args.overlay_video)
    except video.VideoError as error:
      return str(error)
  return None


def video_outputs(args) -> tuple[str, str | None]:
  """(the JSON lines' path or "-", the overlay video's path or None)."""
  if args.jsonl is not None:
    return args.jsonl, args.overlay_video
  stem = f"camera{args.camera}" if args.camera is not None else output_stem(args.paths[0], set())
  return os.path.join(args.out, stem + ".jsonl"), args.overlay_video


def predict_video(args) -> int:
  """The video run (module docstring): 0, 1 for a video that cannot be read or an output that
  cannot be written, 2 for bad flags or a missing model, 130 on Ctrl-C."""
  problem = check_video_args(args)
  if problem:
    print(f"error: {problem}", file=sys.stderr)
    return 2
  try:
    thresholds = read_thresholds(args.thresholds)
  except ValueError as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  from msm_jax import cli
  from msm_jax.inference import smoothing, tracking, video

  jsonl_path, overlay_path = video_outputs(args)
  source_name = f"camera {args.camera}" if args.camera is not None else args.paths[0]
  outputs = [path for path in (jsonl_path, overlay_path) if path not in (None, "-")]
  if args.camera is None and any(
    os.path.realpath(path) == os.path.realpath(args.paths[0]) for path in outputs
  ):
    print(f"error: {args.paths[0]}: an output would overwrite the video", file=sys.stderr)
    return 2
  model = load_model(args.model)
  if model is None:
    return 2
  try:
    source = (
      video.open_camera(args.camera) if args.camera is not None else video.open_video(args.paths[0])
    )
  except video.VideoError as error:
    print(f"error: {error}", file=sys.stderr)
    return 1
  options = tracking.TrackerOptions(
    detect_every=VIDEO_DETECT_EVERY if args.detect_every is None else args.detect_every,
    smoothing=None if args.no_smoothing else smoothing.OneEuroParameters(),
    compute=args.compute or "adaptive",
    frame_rate=source.frame_rate or 30.0,
    network_every=VIDEO_NETWORK_EVERY if args.network_every is None else args.network_every,
  )
  tracker = tracking.Tracker(model, options, thresholds)
  with source, cli.interrupts_remembered():
    try:
      for path in outputs:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
      tracker.warm_up()  # one compilation (or a load from the cache) before the first frame
      return track_frames(args, source, tracker, jsonl_path, overlay_path)
    except KeyboardInterrupt:
      print(
        f"interrupted before the first frame of {source_name}; nothing written", file=sys.stderr
      )
      return 130
    except OSError as error:
      print(f"error: {error}", file=sys.stderr)
      return 1


def track_frames(args, source, tracker, jsonl_path: str, overlay_path: str | None) -> int:
  """Frames -> tracker -> JSON lines (+ overlay frames), with the progress bar; the outputs
  are finished on Ctrl-C and on a failed write too (the frames done so far)."""
  import contextlib

  from tqdm import tqdm

  from msm_jax import cli
  from msm_jax.inference import tracking, video

  summary = sys.stderr if jsonl_path == "-" else sys.stdout
  frames_with_faces, ids = 0, set()
  with contextlib.ExitStack() as stack:
    lines = stack.enter_context(video.JsonLines(jsonl_path))
    writer = None
    progress = stack.enter_context(
      tqdm(total=args.max_frames or source.frame_count, unit="frame", file=sys.stderr)
    )
    status = 0
    try:
      for frame in source:
        if cli.interrupt_requested():
          raise KeyboardInterrupt
        faces = tracker.update(frame.image, frame.time)
        lines.write(tracking.frame_to_json(frame.index, frame.time, faces))
        if overlay_path is not None:
          if writer is None:
            height, width = frame.image.shape[:2]
            rate = source.frame_rate or tracker.options.frame_rate
            writer = stack.enter_context(video.OverlayWriter(overlay_path, rate, (width, height)))
          writer.write(video.draw_faces(frame.image, faces))
        frames_with_faces += bool(faces)
        ids.update(face.track_id for face in faces)
        progress.update(1)
        if args.max_frames is not None and lines.lines >= args.max_frames:
          break
    except KeyboardInterrupt:
      status = 130
    except (OSError, video.VideoError) as error:
      progress.write(f"error: {error}", file=sys.stderr)
      status = 1
    overlay = ""
    if writer is not None:
      try:
        writer.commit()
        overlay = f", their overlay in {overlay_path}"
      except video.VideoError as error:
        progress.write(f"error: {error}", file=sys.stderr)
        status = status or 1
  where = "the standard output" if jsonl_path == "-" else jsonl_path
  if status == 130:
    print(
      f"interrupted: {lines.lines} frames done; {where} holds their lines{overlay}", file=sys.stderr
    )
    return status
  statistics = tracker.statistics
  print(
    f"{lines.lines} frame(s) of {source.name}, {frames_with_faces} with faces, "
    f"{len(ids)} face id(s); the detector ran {statistics.detector_runs} time(s); lines in "
    f"{where}{overlay}",
    file=summary,
  )
  if (
    status == 0
    and args.max_frames is None
    and source.frame_count is not None
    and source.frames_read < source.frame_count
  ):
    print(
      f"warning: {source.name}: {source.frames_read} of the {source.frame_count} frames its "
      "header announces could be decoded",
      file=sys.stderr,
    )
  return status


if __name__ == "__main__":
  from msm_jax.cli import restart_with_page_reuse

  restart_with_page_reuse()
  sys.exit(main())
