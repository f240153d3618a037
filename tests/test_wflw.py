"""Tests for msm_jax.data.wflw on a 2-line list in the official layout."""

import os

import numpy as np
import pytest
from PIL import Image

from msm_jax.data.records import (
  AnnotationError,
  DatasetSizeWarning,
  FaceRecord,
  SkippedFacesWarning,
)
from msm_jax.data.wflw import (
  ATTRIBUTE_NAMES,
  parse_wflw_line,
  read_wflw,
  read_wflw_list,
  wflw_subsets,
)

WIDTH, HEIGHT = 80, 100


def _points(offset: float) -> np.ndarray:
  """Point i at (10 + 0.25 i + offset, 20 + 0.5 i): x and y always differ."""
  index = np.arange(98)
  return np.stack([10.0 + 0.25 * index + offset, 20.0 + 0.5 * index], axis=1)


def _line(points, rect, flags, image):
  coordinates = " ".join(f"{value:g}" for value in points.reshape(-1))  # x0 y0 x1 y1 ...
  return f"{coordinates} {' '.join(map(str, rect))} {' '.join(map(str, flags))} {image}"


@pytest.fixture
def wflw_root(tmp_path):
  root = tmp_path / "WFLW"
  lists = root / "WFLW_annotations" / "list_98pt_rect_attr_train_test"
  lists.mkdir(parents=True)
  for relative in ("1--Handshaking/a.jpg", "2--Demonstration/b.jpg"):
    (root / "WFLW_images" / relative).parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (WIDTH, HEIGHT)).save(root / "WFLW_images" / relative)
  lines = [
    _line(_points(0.0), [5, 6, 60, 70], [1, 0, 0, 1, 0, 1], "1--Handshaking/a.jpg"),
    _line(_points(1.5), [8, 9, 50, 75], [0, 1, 0, 1, 1, 0], "2--Demonstration/b.jpg"),
  ]
  (lists / "list_98pt_rect_attr_test.txt").write_text("\n".join(lines) + "\n")
  return root, lines


def test_read_wflw_parses_exact_values_without_shift(wflw_root):
  root, _ = wflw_root
  with pytest.warns(DatasetSizeWarning, match="found 2 of 2500"):
    records = read_wflw(root, "test", box_source="official")
  assert len(records) == 2
  first, second = records
  # Interleaved x0 y0 x1 y1 ...: point 0 is (10, 20), point 97 is (34.25, 68.5).
  np.testing.assert_array_equal(first.landmarks[0], [10.0, 20.0])
  np.testing.assert_array_equal(first.landmarks[97], [34.25, 68.5])
  np.testing.assert_array_equal(first.landmarks, _points(0.0))
  np.testing.assert_array_equal(second.landmarks, _points(1.5))
  np.testing.assert_array_equal(first.box, [5, 6, 60, 70])
  assert first.attributes == {
    "pose": 1,
    "expression": 0,
    "illumination": 0,
    "makeup": 1,
    "occlusion": 0,
    "blur": 1,
  }
  assert first.image_path == os.path.join(root, "WFLW_images", "1--Handshaking", "a.jpg")
  assert {r.subset for r in records} == {"test"}


def test_landmark_boxes_are_the_default(wflw_root):
  root, _ = wflw_root
  with pytest.warns(DatasetSizeWarning):
    records = read_wflw(root, "test")
  # x from 10 + 1.5 to 34.25 + 1.5, y from 20 to 68.5.
  np.testing.assert_array_equal(records[1].box, [11.5, 20.0, 35.75, 68.5])


def test_wflw_subsets_follow_the_flags(wflw_root):
  root, _ = wflw_root
  with pytest.warns(DatasetSizeWarning):
    records = read_wflw(root, "test")
  subsets = wflw_subsets(records)
  assert set(subsets) == {"full", *ATTRIBUTE_NAMES}
  names = {key: [r.image_path[-5:] for r in value] for key, value in subsets.items()}
  assert names == {
    "full": ["a.jpg", "b.jpg"],
    "pose": ["a.jpg"],
    "expression": ["b.jpg"],
    "illumination": [],
    "makeup": ["a.jpg", "b.jpg"],
    "occlusion": ["b.jpg"],
    "blur": ["a.jpg"],
  }


def test_subsets_need_attribute_flags():
  bare = FaceRecord(image_path="x.jpg", landmarks=_points(0), box=[0, 0, 1, 1], subset="t")
  with pytest.raises(ValueError, match="x.jpg: record has no WFLW attribute flags"):
    wflw_subsets([bare])


@pytest.mark.parametrize(
  "mutate, message",
  [
    (lambda parts: parts[:150], "150 fields, expected 207"),
    (lambda parts: parts[:7] + ["x7"] + parts[8:], "not a number"),
    (lambda parts: parts[:200] + ["2"] + parts[201:], r"flags must be 0 or 1"),
    (lambda parts: parts[:3] + ["nan"] + parts[4:], r"non-finite coordinate .* \(3,\)"),
    (lambda parts: parts[:196] + ["60", "6", "5", "70"] + parts[200:], "rect"),
  ],
)
def test_malformed_lines_name_file_and_line(wflw_root, mutate, message):
  root, lines = wflw_root
  parts = lines[1].split()
  list_path = root / "WFLW_annotations" / "list_98pt_rect_attr_train_test" / "bad.txt"
  list_path.write_text(lines[0] + "\n" + " ".join(mutate(parts)) + "\n")
  with pytest.raises(AnnotationError, match=rf"bad.txt, line 2: .*{message}"):
    read_wflw_list(list_path, root / "WFLW_images", "test")


def test_missing_image_raises_or_is_skipped_and_counted(wflw_root):
  root, lines = wflw_root
  os.remove(root / "WFLW_images" / "2--Demonstration" / "b.jpg")
  with pytest.warns(DatasetSizeWarning), pytest.raises(FileNotFoundError, match="b.jpg"):
    read_wflw(root, "test")
  with pytest.warns(SkippedFacesWarning, match="skipped 1 of 2") as caught:
    with pytest.warns(DatasetSizeWarning):
      records = read_wflw(root, "test", skip_bad=True)
  assert len(records) == 1
  skipped = [w.message for w in caught if isinstance(w.message, SkippedFacesWarning)]
  assert skipped[0].skipped[0][0].endswith("list_98pt_rect_attr_test.txt, line 2")
  with pytest.warns(DatasetSizeWarning):  # without image checks the list alone is read
    assert len(read_wflw(root, "test", check_images=False)) == 2


def test_points_far_outside_the_image(wflw_root):
  root, lines = wflw_root
  far = _points(0.0)
  far[50] = (WIDTH * 2.0, 30.0)
  list_path = root / "WFLW_annotations" / "list_98pt_rect_attr_train_test" / "far.txt"
  list_path.write_text(_line(far, [5, 6, 60, 70], [0] * 6, "1--Handshaking/a.jpg") + "\n")
  with pytest.raises(AnnotationError, match="far.txt, line 1: landmark 50 .* 80x100"):
    read_wflw_list(list_path, root / "WFLW_images", "test")


def test_parse_line_keeps_coordinate_order():
  points = _points(0.0)
  landmarks, rect, flags, image = parse_wflw_line(
    _line(points, [1, 2, 3, 4], [0, 0, 1, 0, 0, 0], "x/y.jpg"), "inline"
  )
  # If the reader took 98 x values then 98 y values, point 1 would be (20, 10.25).
  np.testing.assert_array_equal(landmarks[1], [10.25, 20.5])
  assert image == "x/y.jpg" and flags["illumination"] == 1 and rect.tolist() == [1, 2, 3, 4]


def test_missing_list_and_unknown_split(tmp_path):
  with pytest.raises(FileNotFoundError, match="list_98pt_rect_attr_train.txt"):
    read_wflw(tmp_path, "train")
  with pytest.raises(ValueError, match="unknown WFLW split"):
    read_wflw(tmp_path, "val")


def test_degenerate_shape_is_refused_or_skipped(wflw_root):
  root, lines = wflw_root
  flat = _points(0.0)
  flat[72] = flat[60]  # the outer eye corners of the 98-point scheme
  list_path = root / "WFLW_annotations" / "list_98pt_rect_attr_train_test" / "flat.txt"
  list_path.write_text(
    lines[0] + "\n" + _line(flat, [5, 6, 60, 70], [0] * 6, "2--Demonstration/b.jpg") + "\n"
  )
  message = "flat.txt, line 2: the eye corners coincide: inter-ocular distance 0"
  with pytest.raises(AnnotationError, match=message):
    read_wflw_list(list_path, root / "WFLW_images", "test")
  with pytest.warns(SkippedFacesWarning, match="WFLW test: skipped 1 of 2"):
    records = read_wflw_list(list_path, root / "WFLW_images", "test", skip_bad=True)
  assert [r.image_path[-5:] for r in records] == ["a.jpg"]
