"""Tests for msm_jax.data.w300 (and the shared FaceRecord in records.py).

Fixtures are tiny 300-W trees written in tmp_path in the official formats;
expected values are the hand-written file values minus 1 (1-based -> 0-based).
"""

import os
import warnings

import numpy as np
import pytest
import scipy.io
from PIL import Image

from msm_jax.data.images import ImageReadError
from msm_jax.data.records import (
  AnnotationError,
  DatasetSizeWarning,
  FaceRecord,
  SkippedFacesWarning,
  box_from_landmarks,
)
from msm_jax.data.w300 import (
  read_300w,
  read_bounding_boxes_mat,
  read_menpo,
  read_pts,
  read_pts_folder,
)

WIDTH, HEIGHT = 40, 30


def _file_points(seed: int, count: int = 68) -> np.ndarray:
  """1-based values as written in the file: x in [5, 35.5], y in [4, 24.25]."""
  index = np.arange(count)
  return np.stack(
    [5.0 + (index * 7 + seed) % 62 * 0.5, 4.0 + (index * 5 + seed) % 82 * 0.25], axis=1
  )


def _write_pts(path, points, header=True):
  lines = [f"{x:g} {y:g}" for x, y in points]
  if header:
    lines = ["version: 1", f"n_points:  {len(points)}", "{"] + lines + ["}"]
  path.write_text("\n".join(lines) + "\n")


def _write_face(folder, name, seed, header=True, extension=".jpg", count=68):
  folder.mkdir(parents=True, exist_ok=True)
  Image.new("RGB", (WIDTH, HEIGHT), (seed, 50, 90)).save(folder / (name + extension))
  points = _file_points(seed, count)
  _write_pts(folder / (name + ".pts"), points, header)
  return points


@pytest.fixture
def w300_root(tmp_path):
  """One face in each of the eight official folders; afw headerless."""
  root = tmp_path / "300W_root"
  faces = {}
  for seed, folder in enumerate(
    [
      "afw",
      "helen/trainset",
      "lfpw/trainset",
      "helen/testset",
      "lfpw/testset",
      "ibug",
      "300W/01_Indoor",
      "300W/02_Outdoor",
    ],
    start=1,
  ):
    extension = ".png" if folder.startswith(("lfpw", "300W")) else ".jpg"
    faces[folder] = _write_face(
      root / folder, f"face_{seed}", seed, header=folder != "afw", extension=extension
    )
  return root, faces


def test_read_pts_headered_converts_to_zero_based(tmp_path):
  points = _file_points(3)
  points[0] = (101.5, 51.25)
  _write_pts(tmp_path / "a.pts", points)
  out = read_pts(tmp_path / "a.pts")
  assert out.dtype == np.float32 and out.shape == (68, 2)
  np.testing.assert_array_equal(out[0], [100.5, 50.25])
  np.testing.assert_array_equal(out, points - 1)


def test_read_pts_headerless(tmp_path):
  points = _file_points(4)
  _write_pts(tmp_path / "b.pts", points, header=False)
  np.testing.assert_array_equal(read_pts(tmp_path / "b.pts"), points - 1)


@pytest.mark.parametrize("header", [True, False])
def test_read_pts_with_a_byte_order_mark(tmp_path, header):
  # Windows editors save UTF-8 with a BOM; it must not hide the header or the first point.
  points, path = _file_points(5), tmp_path / "bom.pts"
  _write_pts(path, points, header)
  path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
  np.testing.assert_array_equal(read_pts(path), points - 1)


@pytest.mark.parametrize(
  "split, folders",
  [
    ("train", ["afw", "helen/trainset", "lfpw/trainset"]),
    ("common", ["helen/testset", "lfpw/testset"]),
    ("challenge", ["ibug"]),
    ("full", ["helen/testset", "ibug", "lfpw/testset"]),
    ("private", ["300W/01_Indoor", "300W/02_Outdoor"]),
  ],
)
def test_read_300w_splits_pick_the_official_folders(w300_root, split, folders):
  root, faces = w300_root
  with pytest.warns(DatasetSizeWarning, match=f"found {len(folders)} of "):
    records = read_300w(root, split)
  assert sorted(record.subset for record in records) == sorted(folders)
  for record in records:
    np.testing.assert_array_equal(record.landmarks, faces[record.subset] - 1)
    assert os.path.isfile(record.image_path)
    assert record.occluded is None and record.image is None


def test_train_split_counts_and_landmark_boxes(w300_root):
  root, faces = w300_root
  with pytest.warns(DatasetSizeWarning, match="found 3 of 3148"):
    records = read_300w(root, "train")
  afw = next(record for record in records if record.subset == "afw")
  expected = faces["afw"] - 1
  np.testing.assert_array_equal(
    afw.box,
    [expected[:, 0].min(), expected[:, 1].min(), expected[:, 0].max(), expected[:, 1].max()],
  )


def _write_boxes_mat(path, entries):
  cells = np.empty((1, len(entries)), dtype=object)  # MATLAB 1 x N cell of structs
  for index, (name, detector, truth) in enumerate(entries):
    cells[0, index] = {
      "imgName": name,
      "bb_detector": np.array([detector], float),
      "bb_ground_truth": np.array([truth], float),
    }
  path.parent.mkdir(parents=True, exist_ok=True)
  scipy.io.savemat(path, {"bounding_boxes": cells})


def test_official_boxes_from_the_bounding_boxes_mat(w300_root):
  root, _ = w300_root
  mats = root / "Bounding Boxes"
  _write_boxes_mat(
    mats / "bounding_boxes_afw.mat",
    [("face_1.jpg", [3, 4, 30, 25], [5.5, 6, 33, 27]), ("other.jpg", [1, 1, 2, 2], [1, 1, 2, 2])],
  )
  _write_boxes_mat(
    mats / "bounding_boxes_helen_trainset.mat", [("face_2.jpg ", [2, 3, 20, 21], [4, 5, 22, 23])]
  )
  _write_boxes_mat(
    mats / "bounding_boxes_lfpw_trainset.mat", [("face_3.png", [7, 8, 27, 28], [9, 10, 29, 29])]
  )
  # The fixture has the layout public loaders index (D-X-Y's load_box):
  raw = scipy.io.loadmat(mats / "bounding_boxes_afw.mat")["bounding_boxes"][0]
  assert raw[0][0][0][0][0] == "face_1.jpg"
  np.testing.assert_array_equal(raw[0][0][0][1][0], [3, 4, 30, 25])

  table = read_bounding_boxes_mat(mats / "bounding_boxes_afw.mat")
  np.testing.assert_array_equal(table["face_1.jpg"]["detector"], [2, 3, 29, 24])
  np.testing.assert_array_equal(table["face_1.jpg"]["ground_truth"], [4.5, 5, 32, 26])
  with pytest.warns(DatasetSizeWarning):
    detector = {r.subset: r.box for r in read_300w(root, "train", box_source="detector")}
    truth = {r.subset: r.box for r in read_300w(root, "train", box_source="ground_truth")}
  np.testing.assert_array_equal(detector["afw"], [2, 3, 29, 24])
  np.testing.assert_array_equal(detector["helen/trainset"], [1, 2, 19, 20])  # name stripped
  np.testing.assert_array_equal(truth["lfpw/trainset"], [8, 9, 28, 28])


def test_official_boxes_missing_mat_is_named(w300_root):
  root, _ = w300_root
  with pytest.raises(FileNotFoundError, match="bounding_boxes_ibug.mat"):
    read_300w(root, "challenge", box_source="detector")


def test_partial_split_and_missing_folders(tmp_path):
  _write_face(tmp_path / "afw", "only", 1)
  with pytest.warns(DatasetSizeWarning, match="found 1 of 3148"):
    assert len(read_300w(tmp_path, "train")) == 1
  with pytest.raises(FileNotFoundError, match="no 300-W faces for split 'challenge'"):
    read_300w(tmp_path, "challenge")
  with pytest.raises(ValueError, match="unknown 300-W split"):
    read_300w(tmp_path, "validation")


def test_empty_folder_is_a_clear_error(tmp_path):
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="no .pts annotation files"):
    read_pts_folder(tmp_path / "empty")
  with pytest.raises(FileNotFoundError, match="folder not found"):
    read_pts_folder(tmp_path / "nowhere")


def test_read_pts_folder_names_the_subset_after_the_folder(tmp_path):
  points = _write_face(tmp_path / "my_faces", "a", 5)
  records = read_pts_folder(tmp_path / "my_faces")
  assert [r.subset for r in records] == ["my_faces"]
  np.testing.assert_array_equal(records[0].landmarks, points - 1)


def test_pts_without_image(tmp_path):
  folder = tmp_path / "faces"
  _write_face(folder, "good", 1)
  _write_pts(folder / "lonely.pts", _file_points(2))
  with pytest.raises(FileNotFoundError, match="lonely.pts: annotation has no image"):
    read_pts_folder(folder)
  with pytest.warns(SkippedFacesWarning, match="skipped 1 of 2") as caught:
    records = read_pts_folder(folder, skip_bad=True)
  assert len(records) == 1 and "lonely.pts" in caught[0].message.skipped[0][0]


def test_image_without_pts(tmp_path):
  folder = tmp_path / "faces"
  _write_face(folder, "good", 1)
  Image.new("RGB", (8, 8)).save(folder / "stray.png")
  with pytest.raises(FileNotFoundError, match="stray.png: image has no annotation file"):
    read_pts_folder(folder)
  with pytest.warns(SkippedFacesWarning, match="skipped 1 of 2"):
    assert len(read_pts_folder(folder, skip_bad=True)) == 1


def test_unreadable_image_is_named_or_skipped(tmp_path):
  folder = tmp_path / "faces"
  _write_face(folder, "good", 1)
  _write_face(folder, "broken", 2)
  (folder / "broken.jpg").write_bytes(b"not a jpeg at all")
  with pytest.raises(ImageReadError, match="broken.jpg"):
    read_pts_folder(folder)
  with pytest.warns(SkippedFacesWarning, match="skipped 1 of 2"):
    assert len(read_pts_folder(folder, skip_bad=True)) == 1


def test_wrong_point_count(tmp_path):
  _write_pts(tmp_path / "short.pts", _file_points(1, count=67))
  with pytest.raises(AnnotationError, match="short.pts: 67 points, expected 68"):
    read_pts(tmp_path / "short.pts")
  text = (tmp_path / "short.pts").read_text().replace("n_points:  67", "n_points:  68")
  (tmp_path / "short.pts").write_text(text)
  with pytest.raises(AnnotationError, match="header says n_points: 68 but 67 point lines"):
    read_pts(tmp_path / "short.pts")


@pytest.mark.parametrize("bad_value", ["nan", "inf", "-inf"])
def test_non_finite_coordinates(tmp_path, bad_value):
  points = _file_points(1).astype(object)
  points[10, 1] = bad_value
  (tmp_path / "bad.pts").write_text("\n".join(f"{x} {y}" for x, y in points))
  with pytest.raises(AnnotationError, match=r"bad.pts: non-finite coordinate .* \(10, 1\)"):
    read_pts(tmp_path / "bad.pts")


def test_malformed_line_names_file_and_line(tmp_path):
  lines = ["version: 1", "n_points: 68", "{"] + ["1 2"] * 67 + ["3,4", "}"]
  (tmp_path / "comma.pts").write_text("\n".join(lines))
  with pytest.raises(AnnotationError, match=r"comma.pts, line 71: expected two numbers"):
    read_pts(tmp_path / "comma.pts")


def test_points_far_outside_the_image(tmp_path):
  folder = tmp_path / "faces"
  _write_face(folder, "good", 1)
  points = _write_face(folder, "shifted", 2)
  points[5] = (WIDTH + 0.5 * WIDTH, 10)  # 1.5 image widths: beyond the 0.25 margin
  _write_pts(folder / "shifted.pts", points)
  with pytest.raises(AnnotationError, match="shifted.pts: landmark 5 .* far outside the 40x30"):
    read_pts_folder(folder)
  with pytest.warns(SkippedFacesWarning, match="skipped 1 of 2"):
    assert [r.image_path.endswith("good.jpg") for r in read_pts_folder(folder, skip_bad=True)] == [
      True
    ]
  assert len(read_pts_folder(folder, max_outside=1.0)) == 2  # a looser margin accepts it


def test_all_bad_faces_skipped_is_still_an_error(tmp_path):
  folder = tmp_path / "faces"
  _write_face(folder, "short", 1, count=30)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", SkippedFacesWarning)
    with pytest.raises(AnnotationError, match="no usable faces"):
      read_pts_folder(folder, skip_bad=True)


def test_read_menpo_keeps_68_point_faces_and_ignores_39_point_profiles(tmp_path):
  frontal = _write_face(tmp_path / "menpo", "semifrontal", 1)
  _write_face(tmp_path / "menpo", "profile", 2, count=39)
  records = read_menpo(tmp_path / "menpo")
  assert [r.subset for r in records] == ["menpo"]
  np.testing.assert_array_equal(records[0].landmarks, frontal - 1)
  with pytest.raises(AnnotationError, match="39 points, expected 68"):
    read_pts_folder(tmp_path / "menpo")
  # --config.data.dataset=menpo: the same faces train (the paper's dictionary source).
  import ml_collections

  from msm_jax.data import datasets

  data = dict(dataset="menpo", root=str(tmp_path / "menpo"), skip_bad_samples=False)
  config = ml_collections.ConfigDict({"data": data})
  [face] = datasets.read_training_records(config)
  np.testing.assert_array_equal(face.landmarks, frontal - 1)


def test_box_from_landmarks_and_record_validation():
  points = np.array([[3.0, 9.0], [-1.5, 4.0], [7.0, 2.5]])
  np.testing.assert_array_equal(box_from_landmarks(points), [-1.5, 2.5, 7.0, 9.0])
  with pytest.raises(ValueError, match="NaN"):
    box_from_landmarks([[0.0, np.nan]])
  record = FaceRecord(
    image_path="x.jpg", landmarks=points, box=[0, 0, 1, 1], subset="s", occluded=[True, False, True]
  )
  assert record.landmarks.dtype == np.float32 and record.num_landmarks == 3
  with pytest.raises(ValueError, match="read-only"):
    record.landmarks[0, 0] = 5.0
  with pytest.raises(ValueError, match=r"occluded must be \[3\] bool"):
    FaceRecord(image_path="x.jpg", landmarks=points, box=[0, 0, 1, 1], subset="s", occluded=[True])
  with pytest.raises(ValueError, match="needs an image_path or an image"):
    FaceRecord(image_path=None, landmarks=points, box=[0, 0, 1, 1], subset="s")


def _degenerate(points, case):
  if case == "all points coincide":
    points[:] = (20.0, 15.0)  # inside the 40x30 image, so only the shape check can catch it
  else:
    points[45] = points[36]  # the outer eye corners of the 68-point scheme
  return points


_DEGENERATE = {
  "all points coincide": "all 68 points coincide",
  "eye corners coincide": "the eye corners coincide: inter-ocular distance 0",
}


@pytest.mark.parametrize("case", list(_DEGENERATE))
def test_degenerate_shapes_are_refused_or_skipped(tmp_path, case):
  # Such a face reads fine but has no inter-ocular distance: evaluate.py's NME divides by it.
  _write_face(tmp_path / "ibug", "good", 1)
  _write_pts(
    tmp_path / "ibug" / "flat.pts", _degenerate(_write_face(tmp_path / "ibug", "flat", 2), case)
  )
  with (
    pytest.warns(DatasetSizeWarning),
    pytest.raises(AnnotationError, match=rf"flat.pts: {_DEGENERATE[case]}"),
  ):
    read_300w(tmp_path, "challenge")
  with pytest.raises(AnnotationError, match=rf"flat.pts: {_DEGENERATE[case]}"):
    read_pts_folder(tmp_path / "ibug")
  with pytest.warns(SkippedFacesWarning, match="skipped 1 of 2") as caught:
    records = read_300w(tmp_path, "challenge", skip_bad=True)
  assert [os.path.basename(r.image_path) for r in records] == ["good.jpg"]
  [skipped] = [w.message for w in caught if isinstance(w.message, SkippedFacesWarning)]
  assert skipped.skipped[0][0].endswith("flat.pts")
  # --config.data.skip_bad_samples=true: evaluate.py's sources hold the good face only.
  import ml_collections

  from msm_jax.data import datasets

  data = dict(dataset="300w", root=str(tmp_path), eval_splits=("challenge",), skip_bad_samples=True)
  with pytest.warns(SkippedFacesWarning, match="skipped 1 of 2"):
    sources = datasets.eval_sources(ml_collections.ConfigDict({"data": data}))
  assert [os.path.basename(r.image_path) for r in sources["challenge"].records] == ["good.jpg"]


def test_a_directory_named_like_a_pts_file_is_refused_or_skipped(tmp_path):
  folder = tmp_path / "ibug"
  _write_face(folder, "good", 1)
  Image.new("RGB", (WIDTH, HEIGHT)).save(folder / "odd.jpg")
  (folder / "odd.pts").mkdir()
  with pytest.raises(AnnotationError, match="odd.pts: is a directory, not a .pts file"):
    read_pts(folder / "odd.pts")
  with pytest.warns(DatasetSizeWarning), pytest.raises(AnnotationError, match="odd.pts: is a dir"):
    read_300w(tmp_path, "challenge")
  with pytest.warns(SkippedFacesWarning, match="skipped 1 of 2"):
    assert len(read_300w(tmp_path, "challenge", skip_bad=True)) == 1
  (folder / "lonely.pts").mkdir()  # no image beside it either: still named as a directory
  with pytest.raises(AnnotationError, match="lonely.pts: is a directory, not a .pts file"):
    read_pts_folder(folder)
  with pytest.warns(SkippedFacesWarning, match="skipped 2 of 3"):
    assert len(read_pts_folder(folder, skip_bad=True)) == 1
