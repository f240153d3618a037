"""Readers for 300-W (and any folder of images + ``.pts``, e.g. Menpo 2D).

300-W (Sec. IV-A 1-2) ships one ``.pts`` file per face next to its image:

    version: 1
    n_points:  68
    {
    x1 y1
    ...
    x68 y68
    }

The coordinates are 1-based MATLAB pixel coordinates (the centre of the top-left
pixel is (1, 1); see menpo/menpo#160 "PTS landmarks are nearly always 1-based").
:func:`read_pts` subtracts 1, once, so every record is in the library's 0-based
pixel-centre convention. Headerless files (68 lines of ``x y``) are accepted too.

Splits, as in the paper (Sec. IV-A) and every public 300-W loader:

    split      folders                                      faces
    train      afw + helen/trainset + lfpw/trainset         3,148 (337 + 2,000 + 811)
    common     helen/testset + lfpw/testset                 554 (330 + 224)
    challenge  ibug                                         135
    full       common + challenge                           689
    private    300W/01_Indoor + 300W/02_Outdoor             600 (300 + 300)

Official face boxes live in ``Bounding Boxes/bounding_boxes_<folder>.mat``
(``helen/trainset`` -> ``bounding_boxes_helen_trainset.mat``): a MATLAB v5 file
with a 1 x N cell array ``bounding_boxes`` of structs with fields ``imgName``,
``bb_detector`` and ``bb_ground_truth`` (each box ``[x0 y0 x1 y1]``, 1-based
like the points, so shifted by -1 too). Layout as read by public 300-W loaders
(D-X-Y's SAN/SBR ``load_box``, MERL's LUVLi ``get_bounding_box_detected``).

Menpo 2D (the paper's shape dictionary, Sec. IV-C, uses its semi-frontal faces)
is a folder of images + ``.pts`` in the same format, mixing 68-point
semi-frontal and 39-point profile faces: :func:`read_menpo` keeps the former.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Sequence

import numpy as np
import scipy.io

from msm_jax.data.images import ImageReadError, image_size
from msm_jax.data.records import (
  BAD_FACE_ERRORS,
  AnnotationError,
  FaceRecord,
  box_from_landmarks,
  check_finite,
  check_inside_image,
  collect_faces,
  warn_count,
)

POINTS_300W = 68
MENPO_PROFILE_POINTS = 39

SPLIT_FOLDERS: dict[str, tuple[str, ...]] = {
  "train": ("afw", "helen/trainset", "lfpw/trainset"),
  "common": ("helen/testset", "lfpw/testset"),
  "challenge": ("ibug",),
  "full": ("helen/testset", "lfpw/testset", "ibug"),
  "private": ("300W/01_Indoor", "300W/02_Outdoor"),
}
FOLDER_SIZES: dict[str, int] = {
  "afw": 337,
  "helen/trainset": 2000,
  "lfpw/trainset": 811,
  "helen/testset": 330,
  "lfpw/testset": 224,
  "ibug": 135,
  "300W/01_Indoor": 300,
  "300W/02_Outdoor": 300,
}
BOX_SOURCES = ("landmarks", "detector", "ground_truth")
BOUNDING_BOX_DIRS = ("Bounding Boxes", "Bounding_Boxes")  # official zip name, common rename
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
DEFAULT_MAX_OUTSIDE = 0.25

_log = logging.getLogger(__name__)
_BAD_FACE_ERRORS = (*BAD_FACE_ERRORS, ImageReadError)


def _parse_point_line(line: str, path: str, line_number: int) -> tuple[float, float]:
  parts = line.split()
  try:
    if len(parts) != 2:
      raise ValueError
    return float(parts[0]), float(parts[1])
  except ValueError:
    raise AnnotationError(
      f"{path}, line {line_number}: expected two numbers 'x y', got {line!r}"
    ) from None


def read_pts(path: str | os.PathLike, n_points: int | None = POINTS_300W) -> np.ndarray:
  """Read one ``.pts`` file (headered or headerless) and convert it to 0-based.

  Args:
    path: the .pts file.
    n_points: required number of points, or None to accept any.
  Returns:
    [L, 2] float32 (x, y), 0-based: the file's 1-based values minus 1.
  Raises:
    FileNotFoundError, or AnnotationError naming the file for a directory, a
    malformed header or line, a wrong point count, or NaN/inf.
  """
  path = os.fspath(path)
  if os.path.isdir(path):
    raise _directory_error(path)
  try:
    with open(path, encoding="utf-8-sig") as file:  # -sig: a BOM would hide the header
      text = file.read()
  except UnicodeDecodeError:
    raise AnnotationError(f"{path}: not a text .pts file") from None
  lines = [
    (number, line.strip()) for number, line in enumerate(text.splitlines(), 1) if line.strip()
  ]
  if not lines:
    raise AnnotationError(f"{path}: empty .pts file")
  if lines[0][1].lower().startswith("version"):
    if len(lines) < 4 or lines[2][1] != "{" or lines[-1][1] != "}":
      raise AnnotationError(
        f"{path}: malformed header: expected 'version', 'n_points: N', '{{', points, '}}'"
      )
    key, _, value = lines[1][1].partition(":")
    if key.strip().lower() != "n_points" or not value.strip().isdigit():
      raise AnnotationError(
        f"{path}, line {lines[1][0]}: expected 'n_points: N', got {lines[1][1]!r}"
      )
    body = lines[3:-1]
    if len(body) != int(value):
      raise AnnotationError(
        f"{path}: header says n_points: {int(value)} but {len(body)} point lines follow"
      )
  else:
    body = lines
  points = np.array(
    [_parse_point_line(line, path, number) for number, line in body], dtype=np.float64
  ).reshape(-1, 2)
  if n_points is not None and points.shape[0] != n_points:
    raise AnnotationError(f"{path}: {points.shape[0]} points, expected {n_points}")
  check_finite(points, path)
  return (points - 1.0).astype(np.float32)


def _directory_error(path: str) -> AnnotationError:
  return AnnotationError(f"{path}: is a directory, not a .pts file")


def read_bounding_boxes_mat(path: str | os.PathLike) -> dict[str, dict[str, np.ndarray]]:
  """Read an official 300-W ``bounding_boxes_<folder>.mat``.

  Returns:
    {image file name: {"detector": [4], "ground_truth": [4]}}, float32
    (x0, y0, x1, y1) converted to 0-based (minus 1, like the .pts points).
  """
  path = os.fspath(path)
  try:
    content = scipy.io.loadmat(path, simplify_cells=True)
  except FileNotFoundError:
    raise FileNotFoundError(f"300-W bounding box file not found: {path}") from None
  except (ValueError, NotImplementedError, OSError) as error:
    raise AnnotationError(f"{path}: not a readable MATLAB .mat file ({error})") from None
  if "bounding_boxes" not in content:
    raise AnnotationError(
      f"{path}: no 'bounding_boxes' variable "
      f"(found {sorted(k for k in content if not k.startswith('__'))})"
    )
  entries = content["bounding_boxes"]
  entries = [entries] if isinstance(entries, dict) else list(entries)
  boxes = {}
  fields = {"imgName", "bb_detector", "bb_ground_truth"}
  for index, entry in enumerate(entries):
    if not isinstance(entry, dict) or not fields <= set(entry):
      raise AnnotationError(f"{path}: entry {index} lacks imgName / bb_detector / bb_ground_truth")
    name = str(entry["imgName"]).strip()
    pair = {}
    for key, field in (("detector", "bb_detector"), ("ground_truth", "bb_ground_truth")):
      box = np.asarray(entry[field], dtype=np.float64).reshape(-1)
      if (
        box.shape != (4,)
        or not np.all(np.isfinite(box))
        or not (box[2] > box[0] and box[3] > box[1])
      ):
        raise AnnotationError(
          f"{path}: {field} of {name!r} is not a finite [x0 y0 x1 y1] box: {box.tolist()}"
        )
      pair[key] = (box - 1.0).astype(np.float32)
    boxes[name] = pair
  return boxes


def _pair_files(folder: str) -> tuple[list[tuple[str, str]], list[tuple[str, Exception]]]:
  """Match every .pts with its image (same stem); list each orphan as an error."""
  by_stem: dict[str, dict[str, list[str]]] = {}
  for name in sorted(os.listdir(folder)):
    stem, extension = os.path.splitext(name)
    extension = extension.lower()
    if extension == ".pts" or extension in IMAGE_EXTENSIONS:
      kind = "pts" if extension == ".pts" else "image"
      by_stem.setdefault(stem, {"pts": [], "image": []})[kind].append(os.path.join(folder, name))
  pairs, orphans = [], []
  for stem, files in by_stem.items():
    if not files["pts"]:
      orphans.append(
        (
          files["image"][0],
          FileNotFoundError(
            f"{files['image'][0]}: image has no annotation file {stem}.pts next to it"
          ),
        )
      )
    elif not files["image"] and os.path.isdir(files["pts"][0]):
      orphans.append((files["pts"][0], _directory_error(files["pts"][0])))
    elif not files["image"]:
      orphans.append(
        (
          files["pts"][0],
          FileNotFoundError(
            f"{files['pts'][0]}: annotation has no image {stem}"
            f"{{{','.join(IMAGE_EXTENSIONS)}}} next to it"
          ),
        )
      )
    elif len(files["image"]) > 1:
      orphans.append(
        (
          files["pts"][0],
          AnnotationError(f"{files['pts'][0]}: several images share its name: {files['image']}"),
        )
      )
    else:
      pairs.append((files["pts"][0], files["image"][0]))
  return pairs, orphans


def _find_boxes_mat(root: str, folder: str) -> str:
  name = "bounding_boxes_" + folder.replace("/", "_") + ".mat"
  candidates = [os.path.join(root, directory, name) for directory in BOUNDING_BOX_DIRS]
  for candidate in candidates:
    if os.path.isfile(candidate):
      return candidate
  raise FileNotFoundError(
    f"official 300-W boxes for {folder!r} not found: expected {' or '.join(candidates)}"
  )


def _raise(error: Exception) -> None:
  raise error


def _read_face(
  pts_path: str,
  image_path: str,
  subset: str,
  *,
  n_points: int,
  max_outside: float,
  boxes: dict | None,
  box_source: str,
  ignored_point_counts: Sequence[int],
  ignored: list[str],
) -> FaceRecord | None:
  """One image + .pts pair as a FaceRecord; None (listed in ``ignored``) for an ignored count."""
  landmarks = read_pts(pts_path, n_points=None)
  if landmarks.shape[0] in ignored_point_counts:
    ignored.append(pts_path)
    return None
  if landmarks.shape[0] != n_points:
    raise AnnotationError(f"{pts_path}: {landmarks.shape[0]} points, expected {n_points}")
  width, height = image_size(image_path)
  check_inside_image(landmarks, width, height, max_outside, pts_path)
  if box_source == "landmarks":
    box = box_from_landmarks(landmarks)
  else:
    name = os.path.basename(image_path)
    if name not in boxes:
      raise AnnotationError(f"{pts_path}: the official box file has no entry for {name}")
    box = boxes[name][box_source]
  return FaceRecord(image_path=image_path, landmarks=landmarks, box=box, subset=subset)


def _folder_faces(
  folder: str,
  subset: str,
  *,
  n_points: int,
  max_outside: float,
  boxes: dict | None = None,
  box_source: str = "landmarks",
  ignored_point_counts: Sequence[int] = (),
  ignored: list[str] | None = None,
) -> list[tuple[str, Callable[[], FaceRecord | None]]]:
  """(source, build) per face of one folder of images + .pts, for ``collect_faces``.

  An orphan file's build raises its error; a face with one of
  ``ignored_point_counts`` points builds to None and its .pts is added to ``ignored``.
  """
  pairs, orphans = _pair_files(folder)
  if not pairs and not orphans:
    raise FileNotFoundError(f"{folder}: no .pts annotation files or images found")
  faces = [(source, functools.partial(_raise, error)) for source, error in orphans]
  for pts_path, image_path in pairs:
    build = functools.partial(
      _read_face,
      pts_path,
      image_path,
      subset,
      n_points=n_points,
      max_outside=max_outside,
      boxes=boxes,
      box_source=box_source,
      ignored_point_counts=ignored_point_counts,
      ignored=[] if ignored is None else ignored,
    )
    faces.append((pts_path, build))
  return faces


def read_pts_folder(
  folder: str | os.PathLike,
  *,
  n_points: int = POINTS_300W,
  subset: str | None = None,
  skip_bad: bool = False,
  max_outside: float = DEFAULT_MAX_OUTSIDE,
) -> list[FaceRecord]:
  """Read every image + ``.pts`` pair of one folder (not recursive).

  For custom datasets in the 300-W format. ``subset`` defaults to the folder's
  name. Boxes are the landmarks' tight boxes. Landmarks beyond ``max_outside``
  times the image size outside the image are an error. With ``skip_bad``, bad
  faces (orphan files, malformed or degenerate .pts, unreadable image headers)
  are left out and counted in one SkippedFacesWarning; otherwise the first one
  raises.
  """
  folder = os.fspath(folder)
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"folder not found: {folder}")
  subset = subset if subset is not None else os.path.basename(os.path.normpath(folder))
  faces = _folder_faces(folder, subset, n_points=n_points, max_outside=max_outside)
  return collect_faces(folder, folder, faces, skip_bad=skip_bad, bad_face_errors=_BAD_FACE_ERRORS)


def read_menpo(
  folder: str | os.PathLike, *, skip_bad: bool = False, max_outside: float = DEFAULT_MAX_OUTSIDE
) -> list[FaceRecord]:
  """Read the 68-point semi-frontal faces of a Menpo 2D folder (subset "menpo").

  The 39-point profile faces in the same folder are left out (logged at INFO),
  not treated as errors; any other point count is an error.
  """
  folder = os.fspath(folder)
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"Menpo folder not found: {folder}")
  profiles = []
  faces = _folder_faces(
    folder,
    "menpo",
    n_points=POINTS_300W,
    max_outside=max_outside,
    ignored_point_counts=(MENPO_PROFILE_POINTS,),
    ignored=profiles,
  )
  records = collect_faces(
    folder, folder, faces, skip_bad=skip_bad, bad_face_errors=_BAD_FACE_ERRORS
  )
  if profiles:
    _log.info("%s: ignored %d faces with %d points", folder, len(profiles), MENPO_PROFILE_POINTS)
  return records


def read_300w(
  root: str | os.PathLike,
  split: str,
  *,
  box_source: str = "landmarks",
  skip_bad: bool = False,
  max_outside: float = DEFAULT_MAX_OUTSIDE,
) -> list[FaceRecord]:
  """Read a 300-W split from the official folder tree.

  Args:
    root: folder holding afw/, helen/, lfpw/, ibug/, 300W/ and (for official
      boxes) "Bounding Boxes/".
    split: "train", "common", "challenge", "full" or "private".
    box_source: "landmarks" (tight box of the points), "detector" or
      "ground_truth" (the official boxes; their .mat must exist).
    skip_bad: leave bad faces out (one SkippedFacesWarning) instead of raising.
    max_outside: how far outside the image a landmark may lie, as a fraction
      of the image size.
  Returns:
    FaceRecords sorted by folder then file name; ``subset`` is the folder
    ("helen/trainset"). A split found only in part warns "found N of M"
    (DatasetSizeWarning); a split with no faces at all raises.
  """
  root = os.fspath(root)
  if split not in SPLIT_FOLDERS:
    raise ValueError(f"unknown 300-W split {split!r}; choose from {sorted(SPLIT_FOLDERS)}")
  if box_source not in BOX_SOURCES:
    raise ValueError(f"unknown box_source {box_source!r}; choose from {BOX_SOURCES}")
  if not os.path.isdir(root):
    raise FileNotFoundError(f"300-W root folder not found: {root}")
  faces = []
  for folder in SPLIT_FOLDERS[split]:
    path = os.path.join(root, *folder.split("/"))
    if not os.path.isdir(path) or not os.listdir(path):
      continue
    boxes = (
      None if box_source == "landmarks" else read_bounding_boxes_mat(_find_boxes_mat(root, folder))
    )
    faces += _folder_faces(
      path,
      folder,
      n_points=POINTS_300W,
      max_outside=max_outside,
      boxes=boxes,
      box_source=box_source,
    )
  if not faces:
    raise FileNotFoundError(
      f"no 300-W faces for split {split!r} under {root}: expected folders "
      f"{', '.join(SPLIT_FOLDERS[split])}"
    )
  expected = sum(FOLDER_SIZES[folder] for folder in SPLIT_FOLDERS[split])
  warn_count(f"300-W {split}", len(faces), expected, root)
  return collect_faces(
    f"300-W {split}", root, faces, skip_bad=skip_bad, bad_face_errors=_BAD_FACE_ERRORS
  )
