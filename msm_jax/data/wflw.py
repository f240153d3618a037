"""Reader for WFLW (Wu et al., "Look at Boundary", CVPR 2018) — Sec. IV-A 4, Table VI.

Official layout (root = the folder holding both archives, extracted):

    WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_train.txt  (7,500 faces)
    WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_test.txt   (2,500 faces)
    WFLW_images/<event folder>/<file>.jpg

One face per line, whitespace separated, 207 fields:

    x0 y0 x1 y1 ... x97 y97        196 landmark coordinates, interleaved (x, y) per point
    x_min y_min x_max y_max        the face rectangle ("rect")
    pose expression illumination make-up occlusion blur    six 0/1 attribute flags
    <event folder>/<file>.jpg      image path relative to WFLW_images/

Coordinate convention: the values are used as 0-based pixel coordinates, with
no shift. WFLW was produced with C++/Python tooling (LAB, Caffe), not MATLAB,
and every public loader uses the numbers as they are: HRNet-facial's
``wflw.py`` (its ``+1``/``-1`` around ``transform_pixel`` are its own internal
convention, applied to every dataset), PIPNet's ``process_wflw`` (clips to
``[0, width]`` and slices the image with the rect directly). A 0.5 px
ambiguity (pixel corner vs centre) cannot be settled from the release; it is
far below annotation noise.

The six test subsets of Table VI are the test faces whose flag is 1
(:func:`wflw_subsets`); their official sizes are in ``TEST_SUBSET_SIZES``.
"""

from __future__ import annotations

import functools
import os

import numpy as np

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

POINTS_WFLW = 98
ATTRIBUTE_NAMES = ("pose", "expression", "illumination", "makeup", "occlusion", "blur")
SPLIT_SIZES = {"train": 7500, "test": 2500}
TEST_SUBSET_SIZES = {
  "pose": 326,
  "expression": 314,
  "illumination": 698,
  "makeup": 206,
  "occlusion": 736,
  "blur": 773,
}
BOX_SOURCES = ("landmarks", "official")
LIST_DIR = os.path.join("WFLW_annotations", "list_98pt_rect_attr_train_test")
IMAGES_DIR = "WFLW_images"
DEFAULT_MAX_OUTSIDE = 0.25

_FIELDS = 2 * POINTS_WFLW + 4 + len(ATTRIBUTE_NAMES) + 1
_BAD_FACE_ERRORS = (*BAD_FACE_ERRORS, ImageReadError)


def parse_wflw_line(line: str, source: str) -> tuple[np.ndarray, np.ndarray, dict, str]:
  """Parse one annotation line.

  Args:
    line: one line of a list_98pt_rect_attr_*.txt file.
    source: "file, line N", used in error messages.
  Returns:
    (landmarks [98, 2] float32, rect [4] float32 (x_min, y_min, x_max, y_max),
    {attribute name: 0 or 1}, image path relative to WFLW_images/).
  """
  parts = line.split()
  if len(parts) < _FIELDS:
    raise AnnotationError(
      f"{source}: {len(parts)} fields, expected {_FIELDS} "
      "(196 coordinates, 4 rect values, 6 flags, image path)"
    )
  numbers_end = 2 * POINTS_WFLW + 4
  try:
    numbers = np.array([float(value) for value in parts[:numbers_end]], dtype=np.float64)
    flags = [int(value) for value in parts[numbers_end : numbers_end + len(ATTRIBUTE_NAMES)]]
  except ValueError:
    raise AnnotationError(f"{source}: a coordinate, rect value or flag is not a number") from None
  if any(flag not in (0, 1) for flag in flags):
    raise AnnotationError(f"{source}: attribute flags must be 0 or 1, got {flags}")
  check_finite(numbers, source)
  landmarks = numbers[: 2 * POINTS_WFLW].reshape(POINTS_WFLW, 2)
  rect = numbers[2 * POINTS_WFLW : numbers_end]
  if not (rect[2] > rect[0] and rect[3] > rect[1]):
    raise AnnotationError(f"{source}: rect {rect.tolist()} is not x_min y_min x_max y_max")
  image_relative = " ".join(parts[numbers_end + len(ATTRIBUTE_NAMES) :])
  return (
    landmarks.astype(np.float32),
    rect.astype(np.float32),
    dict(zip(ATTRIBUTE_NAMES, flags)),
    image_relative,
  )


def _read_face(
  line: str,
  source: str,
  images_dir: str,
  subset: str,
  *,
  box_source: str,
  check_images: bool,
  max_outside: float,
) -> FaceRecord:
  """One list line as a FaceRecord (``source``: "file, line N")."""
  landmarks, rect, attributes, relative = parse_wflw_line(line, source)
  image_path = os.path.join(images_dir, relative)
  if check_images:
    width, height = image_size(image_path)
    check_inside_image(landmarks, width, height, max_outside, source)
  box = rect if box_source == "official" else box_from_landmarks(landmarks)
  return FaceRecord(
    image_path=image_path, landmarks=landmarks, box=box, subset=subset, attributes=attributes
  )


def read_wflw_list(
  list_path: str | os.PathLike,
  images_dir: str | os.PathLike,
  subset: str,
  *,
  box_source: str = "landmarks",
  check_images: bool = True,
  skip_bad: bool = False,
  max_outside: float = DEFAULT_MAX_OUTSIDE,
) -> list[FaceRecord]:
  """Read one WFLW list file (or a file in the same format) into FaceRecords.

  ``box_source`` is "landmarks" (tight box of the 98 points) or "official"
  (the rect). With ``check_images`` each image must exist and its header is
  read to reject landmarks beyond ``max_outside`` times the image size outside
  it. ``attributes`` holds the six flags; ``subset`` is given by the caller.
  """
  list_path, images_dir = os.fspath(list_path), os.fspath(images_dir)
  if box_source not in BOX_SOURCES:
    raise ValueError(f"unknown box_source {box_source!r}; choose from {BOX_SOURCES}")
  with open(list_path, encoding="utf-8") as file:
    lines = [(number, line) for number, line in enumerate(file, 1) if line.strip()]
  if not lines:
    raise AnnotationError(f"{list_path}: empty annotation list")
  faces = []
  for number, line in lines:
    source = f"{list_path}, line {number}"
    build = functools.partial(
      _read_face,
      line,
      source,
      images_dir,
      subset,
      box_source=box_source,
      check_images=check_images,
      max_outside=max_outside,
    )
    faces.append((source, build))
  return collect_faces(
    f"WFLW {subset}", list_path, faces, skip_bad=skip_bad, bad_face_errors=_BAD_FACE_ERRORS
  )


def read_wflw(
  root: str | os.PathLike,
  split: str,
  *,
  box_source: str = "landmarks",
  check_images: bool = True,
  skip_bad: bool = False,
  max_outside: float = DEFAULT_MAX_OUTSIDE,
) -> list[FaceRecord]:
  """Read the WFLW "train" or "test" split from the official layout under ``root``.

  Records keep the list's order; ``subset`` is the split name. A list with a
  different number of faces than the release (7,500 / 2,500) warns
  "found N of M" (DatasetSizeWarning).
  """
  if split not in SPLIT_SIZES:
    raise ValueError(f"unknown WFLW split {split!r}; choose from {sorted(SPLIT_SIZES)}")
  root = os.fspath(root)
  list_path = os.path.join(root, LIST_DIR, f"list_98pt_rect_attr_{split}.txt")
  if not os.path.isfile(list_path):
    raise FileNotFoundError(f"WFLW annotation list not found: {list_path}")
  images_dir = os.path.join(root, IMAGES_DIR)
  if check_images and not os.path.isdir(images_dir):
    raise FileNotFoundError(f"WFLW image folder not found: {images_dir}")
  with open(list_path, encoding="utf-8") as file:
    faces = sum(1 for line in file if line.strip())
  warn_count(f"WFLW {split}", faces, SPLIT_SIZES[split], list_path)
  return read_wflw_list(
    list_path,
    images_dir,
    split,
    box_source=box_source,
    check_images=check_images,
    skip_bad=skip_bad,
    max_outside=max_outside,
  )


def wflw_subsets(records: list[FaceRecord]) -> dict[str, list[FaceRecord]]:
  """Split WFLW test records into the evaluation subsets of Table VI.

  Returns:
    {"full": all records, "pose": ..., "expression": ..., "illumination": ...,
    "makeup": ..., "occlusion": ..., "blur": ...}; a face belongs to every
    subset whose flag is 1 (subsets overlap), in the input order.
  """
  subsets = {"full": list(records)}
  for name in ATTRIBUTE_NAMES:
    subsets[name] = []
  for record in records:
    if not record.attributes or not set(ATTRIBUTE_NAMES) <= set(record.attributes):
      raise ValueError(f"{record.source}: record has no WFLW attribute flags")
    for name in ATTRIBUTE_NAMES:
      if record.attributes[name]:
        subsets[name].append(record)
  return subsets
