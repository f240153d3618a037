"""Tests for msm_jax.data.records: the degenerate-shape check and collect_faces, the tail
that every reader (w300, wflw, cofw) builds its records through."""

import warnings

import numpy as np
import pytest

from msm_jax.core.landmarks import get_scheme
from msm_jax.data.records import (
  AnnotationError,
  FaceRecord,
  SkippedFacesWarning,
  box_from_landmarks,
  check_face_shape,
  collect_faces,
)


def _spread(count: int) -> np.ndarray:
  """Points that differ pairwise in x and in y."""
  index = np.arange(count, dtype=np.float64)
  return np.stack([3.0 + 0.5 * index, 100.0 - 0.25 * index], axis=1)


@pytest.mark.parametrize("count", [68, 98, 29])
def test_check_face_shape_uses_each_schemes_eye_corners(count):
  points = _spread(count)
  check_face_shape(points, "ok.pts")  # a spread shape passes
  left, right = get_scheme(count).outer_eye_corners
  points[right] = points[left]
  with pytest.raises(AnnotationError, match="bad: the eye corners coincide: inter-ocular"):
    check_face_shape(points, "bad")
  points[:] = (4.0, 5.0)
  with pytest.raises(AnnotationError, match=f"bad: all {count} points coincide"):
    check_face_shape(points, "bad")


def test_check_face_shape_other_counts_and_tolerance():
  points = _spread(10)
  points[1] = points[0]
  check_face_shape(points, "custom")  # no scheme for 10 points: only "all coincide" applies
  with pytest.raises(AnnotationError, match="all 10 points coincide"):
    check_face_shape(np.full((10, 2), 7.0), "custom")
  points = _spread(68)
  points[45] = points[36] + 1e-4  # far below any annotation's precision
  with pytest.raises(AnnotationError, match="inter-ocular distance 0"):
    check_face_shape(points, "near")
  points[45] = points[36] + 0.5  # close, but a real (tiny) face
  check_face_shape(points, "small")


def _record(points, name):
  return FaceRecord(image_path=name, landmarks=points, box=box_from_landmarks(points), subset="s")


def _raise(error):
  raise error


def test_collect_faces_skips_counts_and_leaves_out_none():
  good = _spread(68)
  faces = [
    ("a", lambda: _record(good, "a.jpg")),
    ("b", lambda: _raise(FileNotFoundError("b: image not found"))),
    ("c", lambda: None),  # left out on purpose: not a bad face, not counted
    ("d", lambda: _record(np.full((68, 2), 3.0), "d.jpg")),
  ]
  with pytest.raises(FileNotFoundError, match="b: image not found"):
    collect_faces("Demo", "demo/", faces, skip_bad=False)
  with pytest.warns(SkippedFacesWarning, match="Demo: skipped 2 of 3 faces") as caught:
    records = collect_faces("Demo", "demo/", faces, skip_bad=True)
  assert [r.image_path for r in records] == ["a.jpg"]
  assert caught[0].message.skipped == [
    ("b", "b: image not found"),
    ("d", "d: all 68 points coincide"),
  ]
  # An error the reader does not call a bad face is never skipped.
  with pytest.raises(ValueError, match="bug"):
    collect_faces("Demo", "demo/", [("e", lambda: _raise(ValueError("bug")))], skip_bad=True)


def test_collect_faces_with_no_usable_face_names_where():
  faces = [("x", lambda: _raise(AnnotationError("x: broken")))]
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", SkippedFacesWarning)
    with pytest.raises(AnnotationError, match="demo/: no usable faces"):
      collect_faces("Demo", "demo/", faces, skip_bad=True)
