"""68 face landmarks for photos with the shipped pretrained MSM (Algorithm 2).

  python predict.py face.jpg
  python predict.py photos/ more.png --out predictions/ --batch-size 8
  python predict.py group.jpg --boxes boxes.json --model pretrained/

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
"""

import argparse
import contextlib
import dataclasses
import json
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
  parser.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
  parser.add_argument("--boxes", help="boxes.json (format above); default: the face detectors")
  parser.add_argument("--out", default="predictions", help="output folder")
  parser.add_argument("--batch-size", type=int, default=8, help="faces per model call")
  parser.add_argument("--model", default=DEFAULT_MODEL, help="pretrained package folder")
  return parser.parse_args(argv)


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

  from msm_jax.inference import prediction, pretrained

  try:
    model = pretrained.load_pretrained(args.model)
  except FileNotFoundError as error:
    print(
      f"error: no pretrained model in {args.model} ({error}). Pass --model DIR, or make one "
      "from a training run: python -m msm_jax.train.packaging "
      "--config configs/300w_subset.py "
      f"--workdir runs/300w_subset --out pretrained/",
      file=sys.stderr,
    )
    return 2
  except UnicodeDecodeError as error:  # the package's one text file
    config_path = os.path.join(args.model, pretrained.CONFIG_FILE)
    print(f"error: {config_path}: not UTF-8 text ({error})", file=sys.stderr)
    return 2
  except (OSError, ValueError) as error:  # these name their file
    print(f"error: cannot load the model in {args.model}: {error}", file=sys.stderr)
    return 2

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


if __name__ == "__main__":
  from msm_jax.cli import restart_with_page_reuse

  restart_with_page_reuse()
  sys.exit(main())
