"""Tests for msm_jax.data.cofw: COFW-29 (.mat v7.3 and v5) and COFW-68.

The v7.3 fixture mimics what MATLAB writes: an HDF5 file with a 512-byte user
block, the cell array of images as a dataset of object references under
"#refs#", and every array stored with reversed dimensions (column-major).
"""

import h5py
import numpy as np
import pytest
import scipy.io

from msm_jax.data.cofw import read_cofw, read_cofw68, read_cofw_mat
from msm_jax.data.records import AnnotationError, DatasetSizeWarning, SkippedFacesWarning

SHAPES = [(20, 30, 3), (25, 15), (18, 22, 3)]  # H x W (x 3); the second is grayscale


def _images():
  images = []
  for shape in SHAPES:
    y, x = np.mgrid[: shape[0], : shape[1]]
    base = y * 7 + x * 3  # differs along each axis: a transposition would show
    image = base[..., None] + 50 * np.arange(3) if len(shape) == 3 else base
    images.append((image % 256).astype(np.uint8))
  return images


def _phis():
  """N x 87: 29 x, 29 y (1-based), 29 occlusion flags, as in the official files."""
  rows = []
  for face in range(3):
    j = np.arange(29)
    x, y = 2 + 0.375 * j + face, 3 + 0.5 * j
    occluded = (j % (face + 2) == 0).astype(float)
    rows.append(np.concatenate([x, y, occluded]))
  return np.array(rows)


BOXES = np.array([[2.0, 3, 10, 12], [3, 3, 10, 12], [4, 3, 10, 12]])  # x y w h, 1-based


def _write_v73(path, images, phis, boxes, names=("IsT", "phisT", "bboxesT")):
  with h5py.File(path, "w", userblock_size=512) as file:
    references = np.empty((1, len(images)), dtype=h5py.ref_dtype)  # N x 1 cell -> (1, N)
    for index, image in enumerate(images):
      dataset = file.create_dataset(f"#refs#/image{index}", data=np.transpose(image))
      dataset.attrs["MATLAB_class"] = np.bytes_("uint8")
      references[0, index] = dataset.ref
    file.create_dataset(names[0], data=references).attrs["MATLAB_class"] = np.bytes_("cell")
    file.create_dataset(names[1], data=np.transpose(phis))
    file.create_dataset(names[2], data=np.transpose(boxes))


def _write_v5(path, images, phis, boxes):
  cell = np.empty((len(images), 1), dtype=object)
  for index, image in enumerate(images):
    cell[index, 0] = image
  scipy.io.savemat(path, {"IsT": cell, "phisT": phis, "bboxesT": boxes})


def _expected_landmarks(phis, face):
  return np.stack([phis[face, :29], phis[face, 29:58]], axis=1) - 1


@pytest.fixture
def cofw_root(tmp_path):
  _write_v73(tmp_path / "COFW_test_color.mat", _images(), _phis(), BOXES)
  return tmp_path


def test_v73_file_layout_is_what_matlab_writes(cofw_root):
  with h5py.File(cofw_root / "COFW_test_color.mat", "r") as file:
    assert file["phisT"].shape == (87, 3) and file["IsT"].shape == (1, 3)
    assert file[file["IsT"][0, 0]].shape == (3, 30, 20)  # H x W x 3 stored as 3 x W x H
  assert h5py.is_hdf5(cofw_root / "COFW_test_color.mat")


def test_read_cofw_test_exact_values(cofw_root):
  with pytest.warns(DatasetSizeWarning, match="found 3 of 507"):
    records = read_cofw(cofw_root, "test", box_source="official")
  phis = _phis()
  images = _images()
  assert len(records) == 3
  for face, record in enumerate(records):
    np.testing.assert_array_equal(record.landmarks, _expected_landmarks(phis, face))
    np.testing.assert_array_equal(record.occluded, phis[face, 58:] == 1)
    gray_as_rgb = np.stack([images[face]] * 3, -1) if images[face].ndim == 2 else None
    np.testing.assert_array_equal(
      record.image, images[face] if gray_as_rgb is None else gray_as_rgb
    )
    assert record.image_path is None and record.subset == "test"
    assert record.attributes == {"cofw_index": face + 1}
  # Face 1: point 0 in the file is (2, 3) -> (1, 2); box [2 3 10 12] -> [1, 2, 11, 14].
  np.testing.assert_array_equal(records[0].landmarks[0], [1.0, 2.0])
  np.testing.assert_array_equal(records[0].box, [1, 2, 11, 14])
  assert records[1].occluded.tolist()[:4] == [True, False, False, True]


def test_landmark_boxes_by_default(cofw_root):
  with pytest.warns(DatasetSizeWarning):
    record = read_cofw(cofw_root, "test")[2]
  # Face 3: x from 4 to 4 + 0.375 * 28 = 14.5, y from 3 to 17, minus 1.
  np.testing.assert_array_equal(record.box, [3.0, 2.0, 13.5, 16.0])


def test_train_file_uses_the_tr_variables(tmp_path):
  _write_v73(
    tmp_path / "COFW_train_color.mat",
    _images(),
    _phis(),
    BOXES,
    names=("IsTr", "phisTr", "bboxesTr"),
  )
  with pytest.warns(DatasetSizeWarning, match="found 3 of 1345"):
    records = read_cofw(tmp_path, "train")
  np.testing.assert_array_equal(records[1].landmarks, _expected_landmarks(_phis(), 1))
  assert {r.subset for r in records} == {"train"}


def test_v5_grayscale_file_gives_the_same_records(tmp_path, cofw_root):
  _write_v5(tmp_path / "COFW_test.mat", _images(), _phis(), BOXES)
  assert not h5py.is_hdf5(tmp_path / "COFW_test.mat")
  images5, phis5, boxes5 = read_cofw_mat(tmp_path / "COFW_test.mat", "test")
  images73, phis73, boxes73 = read_cofw_mat(cofw_root / "COFW_test_color.mat", "test")
  for a, b in zip(images5, images73):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(phis5, phis73)
  np.testing.assert_array_equal(boxes5, boxes73)


def test_missing_file_lists_the_expected_names(tmp_path):
  with pytest.raises(FileNotFoundError, match="COFW_test_color.mat.*COFW_test.mat"):
    read_cofw(tmp_path, "test")


def test_wrong_phis_shape_is_an_error(tmp_path):
  _write_v73(tmp_path / "COFW_test_color.mat", _images(), _phis()[:, :58], BOXES)
  with pytest.raises(AnnotationError, match=r"phisT has shape \(3, 58\), expected \(3, 87\)"):
    read_cofw(tmp_path, "test")


def test_non_uint8_image_is_an_error(tmp_path):
  images = _images()
  images[1] = images[1].astype(np.float64) / 255
  _write_v73(tmp_path / "COFW_test_color.mat", images, _phis(), BOXES)
  with pytest.raises(AnnotationError, match=r"IsT\{2\}: image is float64"):
    read_cofw(tmp_path, "test")


def test_nan_landmark_raises_or_is_skipped_and_counted(tmp_path):
  phis = _phis()
  phis[1, 40] = np.nan
  _write_v73(tmp_path / "COFW_test_color.mat", _images(), phis, BOXES)
  with pytest.warns(DatasetSizeWarning):
    with pytest.raises(AnnotationError, match="face 2: non-finite coordinate"):
      read_cofw(tmp_path, "test")
    with pytest.warns(SkippedFacesWarning, match="skipped 1 of 3") as caught:
      records = read_cofw(tmp_path, "test", skip_bad=True)
  assert [r.attributes["cofw_index"] for r in records] == [1, 3]
  skipped = [w.message for w in caught if isinstance(w.message, SkippedFacesWarning)][0]
  assert skipped.skipped[0][0].endswith("face 2")


def test_points_far_outside_the_image(tmp_path):
  phis = _phis()
  phis[0, 5] = 100.0  # x of point 5 on a 30-wide image
  _write_v73(tmp_path / "COFW_test_color.mat", _images(), phis, BOXES)
  with pytest.warns(DatasetSizeWarning):
    with pytest.raises(AnnotationError, match="face 1: landmark 5 .* 30x20 image"):
      read_cofw(tmp_path, "test")


def _cofw68_points(face):
  j = np.arange(68)
  return np.stack([1.5 + (j * 7 % 24) * 0.5 + face, 2 + (j * 5 % 30) * 0.5], axis=1)


@pytest.fixture
def cofw68_root(cofw_root):
  annotations = cofw_root / "COFW68_Data" / "test_annotations"
  annotations.mkdir(parents=True)
  for face in range(3):
    occluded = (np.arange(68) % 3 == face).astype(np.uint8)[None, :]  # 1 x 68
    scipy.io.savemat(
      annotations / f"{face + 1}_points.mat", {"Points": _cofw68_points(face), "Occ": occluded}
    )
  scipy.io.savemat(
    cofw_root / "COFW68_Data" / "cofw68_test_bboxes.mat",
    {"bboxes": np.array([[1.0, 2, 12, 14], [2, 2, 11, 20], [3, 1, 15, 15]])},
  )
  return cofw_root


def test_read_cofw68_exact_values(cofw68_root):
  with pytest.warns(DatasetSizeWarning, match="COFW-68: found 3 of 507"):
    records = read_cofw68(cofw68_root, box_source="official")
  assert len(records) == 3
  for face, record in enumerate(records):
    np.testing.assert_array_equal(record.landmarks, _cofw68_points(face) - 1)
    np.testing.assert_array_equal(record.occluded, np.arange(68) % 3 == face)
    assert record.subset == "cofw68" and record.num_landmarks == 68
  # Point 0 of face 1 is (1.5, 2) in the file -> (0.5, 1); box [2 2 11 20] -> [1, 1, 12, 21].
  np.testing.assert_array_equal(records[0].landmarks[0], [0.5, 1.0])
  np.testing.assert_array_equal(records[1].box, [1, 1, 12, 21])
  np.testing.assert_array_equal(records[1].image, np.stack([_images()[1]] * 3, -1))


def test_cofw68_missing_annotation(cofw68_root):
  (cofw68_root / "COFW68_Data" / "test_annotations" / "2_points.mat").unlink()
  with pytest.warns(DatasetSizeWarning, match="found 2 of 507"):
    with pytest.raises(FileNotFoundError, match="2_points.mat: COFW-68 annotation"):
      read_cofw68(cofw68_root)
    with pytest.warns(SkippedFacesWarning, match="skipped 1 of 3"):
      records = read_cofw68(cofw68_root, skip_bad=True)
  assert [r.attributes["cofw_index"] for r in records] == [1, 3]


def test_cofw68_wrong_points_shape(cofw68_root):
  scipy.io.savemat(
    cofw68_root / "COFW68_Data" / "test_annotations" / "3_points.mat",
    {"Points": np.zeros((29, 2)), "Occ": np.zeros((1, 29))},
  )
  with pytest.warns(DatasetSizeWarning):
    with pytest.raises(AnnotationError, match=r"3_points.mat: Points has shape \(29, 2\)"):
      read_cofw68(cofw68_root)


def test_cofw68_needs_its_annotation_folder(cofw_root):
  with pytest.raises(FileNotFoundError, match="test_annotations"):
    read_cofw68(cofw_root)


def test_cofw_is_a_dataset_of_the_configs(cofw_root):
  # --config.data.dataset=cofw trains on COFW_train*.mat and evaluates on COFW_test*.mat,
  # with the occlusion flags (the occluded / visible table of evaluate.py).
  import ml_collections

  from msm_jax.data import datasets

  _write_v73(
    cofw_root / "COFW_train_color.mat",
    _images(),
    _phis(),
    BOXES,
    names=("IsTr", "phisTr", "bboxesTr"),
  )
  config = ml_collections.ConfigDict(
    {
      "seed": 0,
      "data": dict(
        dataset="cofw",
        root=str(cofw_root),
        validation_fraction=0.0,
        validation_list="",
        skip_bad_samples=False,
        eval_splits=("test",),
        eval_dataset="",
        eval_root="",
      ),
    }
  )
  with pytest.warns(DatasetSizeWarning):
    train, validation = datasets.train_and_validation_sources(config)
  assert len(train) == 3 and validation is None
  with pytest.warns(DatasetSizeWarning):
    sources = datasets.eval_sources(config)
  assert list(sources) == ["test"] and len(sources["test"]) == 3
  np.testing.assert_array_equal(sources["test"].records[1].occluded, _phis()[1, 58:] > 0)
  assert datasets.evaluation_dataset(config).occlusion_flags


def test_degenerate_shape_is_refused_or_skipped(tmp_path):
  phis = _phis()
  phis[1, :29], phis[1, 29:58] = 6.0, 7.0  # all 29 points of face 2 at one pixel
  _write_v73(tmp_path / "COFW_test_color.mat", _images(), phis, BOXES)
  with pytest.warns(DatasetSizeWarning):
    with pytest.raises(AnnotationError, match="face 2: all 29 points coincide"):
      read_cofw(tmp_path, "test")
    with pytest.warns(SkippedFacesWarning, match="skipped 1 of 3"):
      records = read_cofw(tmp_path, "test", skip_bad=True)
  assert [r.attributes["cofw_index"] for r in records] == [1, 3]
