"""One annotated face, as every dataset reader returns it (Sec. IV-A datasets).

The readers (``w300.py``, ``wflw.py``, ``cofw.py``) turn each official layout into
a list of :class:`FaceRecord`, already in the library's conventions (see
``msm_jax/__init__.py``): landmarks are ``(x, y)`` float32 in 0-based pixel
coordinates whose integer values are pixel centres, for the image *as stored*
(EXIF orientation not applied). Whatever a dataset's own convention is (300-W's
and COFW's 1-based MATLAB coordinates), the reader converts it once, on read.

Bad input is reported the same way by every reader: an :class:`AnnotationError`
(a ``ValueError``) or ``FileNotFoundError`` whose message names the file, or,
with ``skip_bad=True``, the face is left out and counted in one
:class:`SkippedFacesWarning`. Every reader builds its records through
:func:`collect_faces`, which does that and refuses the shapes no metric can
normalise (:func:`check_face_shape`: all points at one spot, or the outer eye
corners of the face's landmark scheme at one spot, an inter-ocular distance of 0).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from msm_jax.core.landmarks import get_scheme, outer_eye_corners

# Points closer than this (pixels) coincide: no annotation is that precise, and an NME
# normalised by such a distance is meaningless (by 0, Eq. 12 fails outright).
COINCIDENT_PX = 1e-3


class AnnotationError(ValueError):
  """An annotation file (or one face in it) is malformed; the message names the file."""


# What a face that cannot be used raises; ``skip_bad=True`` leaves such a face out. A reader
# that also decodes image headers adds ``images.ImageReadError``.
BAD_FACE_ERRORS = (AnnotationError, FileNotFoundError)


class SkippedFacesWarning(UserWarning):
  """Issued once per read when ``skip_bad=True`` left faces out.

  ``skipped`` holds ``(source, reason)`` pairs, one per face left out, so a
  caller can count or log them: ``len(warning.skipped)``.
  """

  def __init__(self, message: str, skipped: Sequence[tuple[str, str]]):
    super().__init__(message)
    self.skipped = list(skipped)


class DatasetSizeWarning(UserWarning):
  """The folder holds a different number of faces than the official release."""


def _frozen_array(value: Any, dtype: Any, name: str, shape_ok, shape_text: str) -> np.ndarray:
  array = np.array(value, dtype=dtype)  # copy: a record never aliases caller memory
  if not shape_ok(array.shape):
    raise ValueError(f"FaceRecord.{name} must be {shape_text}, got shape {array.shape}")
  array.setflags(write=False)
  return array


@dataclasses.dataclass(frozen=True, eq=False)
class FaceRecord:
  """One face of a dataset.

  Attributes:
    image_path: the image file, or None when the pixels live in ``image``.
    landmarks: [L, 2] float32, (x, y) 0-based pixel-centre coordinates in the
      stored pixel grid of the image.
    box: [4] float32 (x0, y0, x1, y1) face box in the same coordinates.
    subset: where the face comes from, e.g. "helen/trainset", "ibug", "test".
    occluded: [L] bool, True where the dataset marks a landmark occluded
      (COFW), else None.
    attributes: dataset-specific extras (WFLW's six 0/1 flags), else None.
    image: [H, W, 3] uint8 pixels for datasets that ship images inside an
      annotation file (COFW's .mat), else None.
  Arrays are copied and made read-only so a record is truly immutable.
  Records compare by identity (``eq=False``): array equality is ambiguous.
  """

  image_path: str | None
  landmarks: np.ndarray
  box: np.ndarray
  subset: str
  occluded: np.ndarray | None = None
  attributes: dict | None = None
  image: np.ndarray | None = None

  def __post_init__(self):
    if self.image_path is None and self.image is None:
      raise ValueError("FaceRecord needs an image_path or an image")
    landmarks = _frozen_array(
      self.landmarks,
      np.float32,
      "landmarks",
      lambda s: len(s) == 2 and s[1] == 2 and s[0] > 0,
      "[L, 2] with L > 0",
    )
    object.__setattr__(self, "landmarks", landmarks)
    object.__setattr__(
      self,
      "box",
      _frozen_array(self.box, np.float32, "box", lambda s: s == (4,), "[4] (x0, y0, x1, y1)"),
    )
    if self.occluded is not None:
      object.__setattr__(
        self,
        "occluded",
        _frozen_array(
          self.occluded,
          bool,
          "occluded",
          lambda s: s == (landmarks.shape[0],),
          f"[{landmarks.shape[0]}] bool",
        ),
      )
    if self.image is not None:
      image = np.asarray(self.image)
      if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
          f"FaceRecord.image must be [H, W, 3] uint8, got {image.dtype} {image.shape}"
        )
      object.__setattr__(self, "image", _frozen_array(image, np.uint8, "image", lambda s: True, ""))

  @property
  def num_landmarks(self) -> int:
    return int(self.landmarks.shape[0])

  @property
  def source(self) -> str:
    """A short human-readable origin for messages: the image path or the subset."""
    return self.image_path if self.image_path is not None else self.subset


def box_from_landmarks(landmarks: np.ndarray) -> np.ndarray:
  """Tight box around the landmarks.

  Args:
    landmarks: [L, 2] (x, y).
  Returns:
    [4] float32 (x_min, y_min, x_max, y_max).
  """
  points = np.asarray(landmarks, dtype=np.float64)
  if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] == 0:
    raise ValueError(f"landmarks must be [L, 2] with L > 0, got shape {points.shape}")
  if not np.all(np.isfinite(points)):
    raise ValueError("landmarks contain NaN or inf; cannot build a box")
  return np.concatenate([points.min(axis=0), points.max(axis=0)]).astype(np.float32)


def check_finite(points: np.ndarray, source: str) -> None:
  """Raise AnnotationError naming ``source`` if ``points`` holds NaN or inf."""
  bad = ~np.isfinite(np.asarray(points, dtype=np.float64))
  if bad.any():
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    raise AnnotationError(f"{source}: non-finite coordinate (NaN or inf) at index {first}")


def check_inside_image(
  landmarks: np.ndarray, width: int, height: int, max_outside: float, source: str
) -> None:
  """Reject landmarks far outside the image: a sign of a wrong pairing or scale.

  A landmark may lie outside the image (faces cut by the border are annotated
  where the face would be), but by at most ``max_outside`` times the image's
  width (for x) or height (for y) beyond its edges ``[-0.5, W - 0.5]``.
  """
  points = np.asarray(landmarks, dtype=np.float64)
  low = np.array([-0.5 - max_outside * width, -0.5 - max_outside * height])
  high = np.array([width - 0.5 + max_outside * width, height - 0.5 + max_outside * height])
  outside = np.any((points < low) | (points > high), axis=1)
  if outside.any():
    index = int(np.argmax(outside))
    x, y = points[index]
    raise AnnotationError(
      f"{source}: landmark {index} at ({x:.1f}, {y:.1f}) lies far outside the "
      f"{width}x{height} image (allowed margin {max_outside:g} of the image size); "
      "wrong image, wrong scale, or wrong annotation file?"
    )


def check_face_shape(landmarks: np.ndarray, source: str) -> None:
  """Refuse a shape that no metric can normalise, naming ``source``.

  Raises AnnotationError when all points coincide, or when the outer eye corners
  coincide (inter-ocular distance 0, the NME normaliser of Eq. 12) for a point
  count with a landmark scheme (68, 98, 29; see ``msm_jax/core/landmarks.py``).
  Any other point count gets the first check only.

  Args:
    landmarks: [L, 2] (x, y).
    source: the file (and line or face) the shape comes from, for the message.
  """
  points = np.asarray(landmarks, dtype=np.float64)
  if points.shape[0] > 1 and np.ptp(points, axis=0).max() < COINCIDENT_PX:
    raise AnnotationError(f"{source}: all {points.shape[0]} points coincide")
  try:
    scheme = get_scheme(points.shape[0])
  except ValueError:
    return
  left, right = outer_eye_corners(points, scheme)
  if np.linalg.norm(right - left) < COINCIDENT_PX:
    raise AnnotationError(f"{source}: the eye corners coincide: inter-ocular distance 0")


def collect_faces(
  dataset: str,
  where: str,
  faces: Iterable[tuple[str, Callable[[], FaceRecord | None]]],
  *,
  skip_bad: bool,
  bad_face_errors: tuple[type[Exception], ...] = BAD_FACE_ERRORS,
) -> list[FaceRecord]:
  """Build every face of a read, refusing or skipping the bad ones: the tail of every reader.

  Each record built is checked with :func:`check_face_shape`. A face whose build
  raises one of ``bad_face_errors`` (or fails that check) raises, or with
  ``skip_bad`` is left out and counted in one SkippedFacesWarning naming
  ``dataset``.

  Args:
    dataset: the read's name in the warning, e.g. "WFLW test".
    where: the folder or file read, named when no usable face is left.
    faces: (source, build) per face, in order: ``build()`` returns the face's
      FaceRecord, or None for a face the dataset leaves out on purpose (not a
      bad face, not counted); ``source`` names the face in messages.
    skip_bad: leave bad faces out instead of raising.
    bad_face_errors: what a bad face raises.
  Returns:
    The records, in the order of ``faces``.
  Raises:
    The first bad face's error without ``skip_bad``; AnnotationError when no
    usable face is left.
  """
  records, skipped = [], []
  for source, build in faces:
    try:
      record = build()
      if record is None:
        continue
      check_face_shape(record.landmarks, source)
      records.append(record)
    except bad_face_errors as error:
      if not skip_bad:
        raise
      skipped.append((source, str(error)))
  report_skipped(dataset, skipped, len(records) + len(skipped))
  if not records:
    raise AnnotationError(f"{where}: no usable faces (all were skipped as bad)")
  return records


def warn_count(dataset: str, found: int, expected: int, where: str) -> None:
  """Warn with "found N of M" when a folder holds part of (or more than) a split."""
  if found != expected:
    warnings.warn(
      f"{dataset}: found {found} of {expected} faces in {where}", DatasetSizeWarning, stacklevel=3
    )


def report_skipped(dataset: str, skipped: Sequence[tuple[str, str]], total: int) -> None:
  """Issue one SkippedFacesWarning listing what ``skip_bad=True`` left out."""
  if not skipped:
    return
  examples = "; ".join(reason for _, reason in skipped[:3])
  more = f" (and {len(skipped) - 3} more)" if len(skipped) > 3 else ""
  warnings.warn(
    SkippedFacesWarning(
      f"{dataset}: skipped {len(skipped)} of {total} faces: {examples}{more}", skipped
    ),
    stacklevel=4,  # the caller of the reader that called collect_faces
  )
