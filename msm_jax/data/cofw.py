"""Readers for COFW (Burgos-Artizzu et al., ICCV 2013) and its 68-point test set.

Sec. IV-A 3 / Table V: the paper trains on 300-W and tests on the 507 COFW test
faces re-annotated with 68 points by Ghiasi & Fowlkes ("COFW-68").

COFW (29 points), official files (RCPR release, ``COFW_color.zip``):

    COFW_train_color.mat   IsTr (1,345 x 1 cell), phisTr (1,345 x 87), bboxesTr (1,345 x 4)
    COFW_test_color.mat    IsT  (507 x 1),   phisT  (507 x 87),   bboxesT  (507 x 4)

MATLAB v7.3 files, i.e. HDF5 (read with h5py): every array is stored with its
dimensions reversed (column-major), so ``phisTr`` is a (87, N) dataset and an
H x W x 3 image a (3, W, H) one; the cell array is a dataset of object
references to the images. Each row of ``phis`` is 29 x, 29 y, then 29
occlusion flags (1 = occluded); ``bboxes`` rows are ``[x y w h]``. The older
grayscale ``COFW_train.mat`` / ``COFW_test.mat`` (same variables) are used when
the colour files are absent; MATLAB v5 files are read with scipy. Layout as
used by RCPR's ``demoRCPR.m`` (``load(testFile,'phisT','IsT','bboxesT')``),
HRNet-facial's ``cofw.py`` and PIPNet's ``preprocess.py``.

COFW-68 (``golnazghiasi/cofw68-benchmark``): ``COFW68_Data/test_annotations/
<i>_points.mat`` for i = 1..507 (MATLAB v5: ``Points`` 68 x 2 (x, y), ``Occ``
1 x 68, 1 = occluded) and ``COFW68_Data/cofw68_test_bboxes.mat`` (``bboxes``
507 x 4, ``[x y w h]``, drawn with MATLAB's ``rectangle('Position', ...)`` in
its ``VisualizeAnnotations.m``). The images are the COFW test images, in order.
Note: the annotations are ``.mat`` files, not ``.pts``.

All COFW coordinates are MATLAB 1-based (annotated and drawn with ``imshow``):
points and box corners are shifted by -1 on read; widths/heights are kept.
"""

from __future__ import annotations

import functools
import os

import h5py
import numpy as np
import scipy.io

from msm_jax.data.records import (
  AnnotationError,
  FaceRecord,
  box_from_landmarks,
  check_finite,
  check_inside_image,
  collect_faces,
  warn_count,
)

POINTS_COFW = 29
POINTS_COFW68 = 68
SPLIT_SIZES = {"train": 1345, "test": 507}
SPLIT_FILES = {
  "train": ("COFW_train_color.mat", "COFW_train.mat"),
  "test": ("COFW_test_color.mat", "COFW_test.mat"),
}
SPLIT_VARIABLES = {"train": ("IsTr", "phisTr", "bboxesTr"), "test": ("IsT", "phisT", "bboxesT")}
COFW68_DIR = "COFW68_Data"
BOX_SOURCES = ("landmarks", "official")
DEFAULT_MAX_OUTSIDE = 0.25


def _as_rgb(image: np.ndarray, source: str) -> np.ndarray:
  if image.dtype != np.uint8:
    raise AnnotationError(f"{source}: image is {image.dtype}, expected uint8")
  if image.ndim == 2:
    return np.repeat(image[:, :, None], 3, axis=2)
  if image.ndim == 3 and image.shape[2] == 3:
    return image
  raise AnnotationError(f"{source}: image has shape {image.shape}, expected H x W (x 3)")


def _read_v73(path: str, names: tuple[str, str, str]):
  images_name, phis_name, boxes_name = names
  with h5py.File(path, "r") as file:
    missing = [name for name in names if name not in file]
    if missing:
      raise AnnotationError(f"{path}: variables {missing} not found (has {sorted(file)})")
    # ravel() of the reversed-dimension reference array is MATLAB's linear order.
    references = file[images_name][()].ravel()
    images = [np.transpose(file[reference][()]) for reference in references]
    phis = np.transpose(file[phis_name][()])
    boxes = np.transpose(file[boxes_name][()])
  return images, phis, boxes


def _read_v5(path: str, names: tuple[str, str, str]):
  try:
    content = scipy.io.loadmat(path, variable_names=list(names))
  except (ValueError, OSError) as error:
    raise AnnotationError(f"{path}: not a readable MATLAB .mat file ({error})") from None
  missing = [name for name in names if name not in content]
  if missing:
    raise AnnotationError(f"{path}: variables {missing} not found")
  images_name, phis_name, boxes_name = names
  images = list(content[images_name].ravel(order="F"))
  return images, content[phis_name], content[boxes_name]


def read_cofw_mat(path: str | os.PathLike, split: str):
  """Read a COFW .mat (v7.3/HDF5 or v5) into MATLAB-shaped arrays.

  Returns:
    (images: list of N [H, W, 3] uint8, phis: [N, 87] float64 1-based,
    bboxes: [N, 4] float64 1-based [x y w h]).
  """
  path = os.fspath(path)
  if split not in SPLIT_VARIABLES:
    raise ValueError(f"unknown COFW split {split!r}; choose from {sorted(SPLIT_VARIABLES)}")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"COFW file not found: {path}")
  names = SPLIT_VARIABLES[split]
  reader = _read_v73 if h5py.is_hdf5(path) else _read_v5
  images, phis, boxes = reader(path, names)
  count = len(images)
  phis = np.asarray(phis, dtype=np.float64)
  boxes = np.asarray(boxes, dtype=np.float64)
  if phis.shape != (count, 3 * POINTS_COFW):
    raise AnnotationError(
      f"{path}: {names[1]} has shape {phis.shape}, expected "
      f"({count}, {3 * POINTS_COFW}) for {count} images"
    )
  if boxes.shape != (count, 4):
    raise AnnotationError(f"{path}: {names[2]} has shape {boxes.shape}, expected ({count}, 4)")
  images = [
    _as_rgb(np.asarray(image), f"{path} {names[0]}{{{index + 1}}}")
    for index, image in enumerate(images)
  ]
  return images, phis, boxes


def _box_from_xywh(xywh: np.ndarray, source: str) -> np.ndarray:
  x, y, width, height = np.asarray(xywh, dtype=np.float64).reshape(4)
  if not np.all(np.isfinite([x, y, width, height])) or width <= 0 or height <= 0:
    raise AnnotationError(f"{source}: box [x y w h] = {[x, y, width, height]} is invalid")
  return np.array([x - 1.0, y - 1.0, x - 1.0 + width, y - 1.0 + height], dtype=np.float32)


def _find_cofw_mat(directories: list[str], split: str) -> str:
  candidates = [os.path.join(d, name) for d in directories for name in SPLIT_FILES[split]]
  for candidate in candidates:
    if os.path.isfile(candidate):
      return candidate
  raise FileNotFoundError(f"COFW {split} file not found: expected one of {candidates}")


def _make_record(
  image, landmarks, occluded, official_box, box_source, subset, index, max_outside, source
) -> FaceRecord:
  check_finite(landmarks, source)
  check_inside_image(landmarks, image.shape[1], image.shape[0], max_outside, source)
  box = official_box if box_source == "official" else box_from_landmarks(landmarks)
  return FaceRecord(
    image_path=None,
    landmarks=landmarks,
    box=box,
    subset=subset,
    occluded=occluded,
    attributes={"cofw_index": index + 1},
    image=image,
  )


def _cofw_face(image, row, xywh, box_source, split, index, max_outside, source) -> FaceRecord:
  """Face ``index`` of a COFW-29 file from its ``phis`` row and ``bboxes`` row (1-based)."""
  landmarks = np.stack([row[:POINTS_COFW], row[POINTS_COFW : 2 * POINTS_COFW]], 1) - 1.0
  flags = row[2 * POINTS_COFW :]
  check_finite(flags, source)
  official = _box_from_xywh(xywh, source)
  return _make_record(
    image, landmarks, flags > 0.5, official, box_source, split, index, max_outside, source
  )


def _check_box_source(box_source: str) -> None:
  if box_source not in BOX_SOURCES:
    raise ValueError(f"unknown box_source {box_source!r}; choose from {BOX_SOURCES}")


def read_cofw(
  root: str | os.PathLike,
  split: str,
  *,
  box_source: str = "landmarks",
  skip_bad: bool = False,
  max_outside: float = DEFAULT_MAX_OUTSIDE,
) -> list[FaceRecord]:
  """Read COFW-29 "train" (1,345) or "test" (507) from ``root``.

  Records carry the pixels (``image``, ``image_path`` None), 0-based
  landmarks [29, 2], ``occluded`` [29], ``attributes={"cofw_index": i}``
  (1-based position in the file) and ``subset`` = split. ``box_source`` is
  "landmarks" or "official" (bboxes). Bad faces raise, or are skipped and
  counted with ``skip_bad``.
  """
  if split not in SPLIT_SIZES:
    raise ValueError(f"unknown COFW split {split!r}; choose from {sorted(SPLIT_SIZES)}")
  _check_box_source(box_source)
  path = _find_cofw_mat([os.fspath(root)], split)
  images, phis, boxes = read_cofw_mat(path, split)
  warn_count(f"COFW {split}", len(images), SPLIT_SIZES[split], path)
  faces = []
  for index, image in enumerate(images):
    source = f"{path} face {index + 1}"
    build = functools.partial(
      _cofw_face, image, phis[index], boxes[index], box_source, split, index, max_outside, source
    )
    faces.append((source, build))
  return collect_faces(f"COFW {split}", path, faces, skip_bad=skip_bad)


def _read_points_mat(path: str) -> tuple[np.ndarray, np.ndarray]:
  try:
    content = scipy.io.loadmat(path)
  except (ValueError, OSError, NotImplementedError) as error:
    raise AnnotationError(f"{path}: not a readable MATLAB .mat file ({error})") from None
  if "Points" not in content or "Occ" not in content:
    raise AnnotationError(f"{path}: expected variables Points and Occ")
  points = np.asarray(content["Points"], dtype=np.float64)
  occluded = np.asarray(content["Occ"], dtype=np.float64).reshape(-1)
  if points.shape != (POINTS_COFW68, 2):
    raise AnnotationError(f"{path}: Points has shape {points.shape}, expected ({POINTS_COFW68}, 2)")
  if occluded.shape != (POINTS_COFW68,):
    raise AnnotationError(f"{path}: Occ has {occluded.size} values, expected {POINTS_COFW68}")
  check_finite(points, path)
  check_finite(occluded, path)
  return points, occluded > 0.5


def _cofw68_face(image, path, xywh, box_source, index, max_outside) -> FaceRecord:
  """COFW test face ``index`` with its COFW-68 annotation ``path`` (and official box row)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: COFW-68 annotation for test image {index + 1} not found")
  points, occluded = _read_points_mat(path)
  official = None if xywh is None else _box_from_xywh(xywh, path)
  return _make_record(
    image, points - 1.0, occluded, official, box_source, "cofw68", index, max_outside, path
  )


def read_cofw68(
  root: str | os.PathLike,
  *,
  box_source: str = "landmarks",
  skip_bad: bool = False,
  max_outside: float = DEFAULT_MAX_OUTSIDE,
) -> list[FaceRecord]:
  """Read the 507 COFW test faces with the 68-point COFW-68 annotations.

  ``root`` holds ``COFW68_Data/`` (test_annotations/, cofw68_test_bboxes.mat)
  and the COFW test images (``COFW_test_color.mat`` or ``COFW_test.mat``,
  in ``root`` or in ``root/COFW68_Data`` as the benchmark's README puts it).
  Records: landmarks [68, 2] 0-based, ``occluded`` [68], subset "cofw68",
  ``attributes={"cofw_index": i}``. ``box_source`` "official" uses
  cofw68_test_bboxes.mat (the 300-W-style detector boxes of the benchmark).
  """
  _check_box_source(box_source)
  root = os.fspath(root)
  data_dir = os.path.join(root, COFW68_DIR)
  annotations_dir = os.path.join(data_dir, "test_annotations")
  if not os.path.isdir(annotations_dir):
    raise FileNotFoundError(f"COFW-68 annotation folder not found: {annotations_dir}")
  images_path = _find_cofw_mat([root, data_dir], "test")
  images, _, _ = read_cofw_mat(images_path, "test")
  boxes = None
  if box_source == "official":
    boxes_path = os.path.join(data_dir, "cofw68_test_bboxes.mat")
    if not os.path.isfile(boxes_path):
      raise FileNotFoundError(f"COFW-68 boxes not found: {boxes_path}")
    boxes = np.asarray(scipy.io.loadmat(boxes_path).get("bboxes"), dtype=np.float64)
    if boxes.shape != (len(images), 4):
      raise AnnotationError(
        f"{boxes_path}: bboxes has shape {boxes.shape}, expected ({len(images)}, 4)"
      )
  annotated = sum(name.endswith("_points.mat") for name in os.listdir(annotations_dir))
  warn_count("COFW-68", annotated, SPLIT_SIZES["test"], annotations_dir)
  faces = []
  for index, image in enumerate(images):
    path = os.path.join(annotations_dir, f"{index + 1}_points.mat")
    xywh = None if boxes is None else boxes[index]
    faces.append(
      (path, functools.partial(_cofw68_face, image, path, xywh, box_source, index, max_outside))
    )
  return collect_faces("COFW-68", annotations_dir, faces, skip_bad=skip_bad)
