"""Face boxes for `predict.py`: a face detector, calibrated to the training crops.

Two detectors, both shipped inside their pip wheels with their models (nothing to
download): dlib's HOG + linear SVM frontal-face detector (`dlib-bin`; "dlib_hog"), and
OpenCV's Haar cascades (`opencv-python-headless` 4.x; "haarcascade_*.xml"). On the 201
validation faces of `configs/300w_subset.py` dlib's finds 195 (97.0 %), the default Haar
cascade 184 (91.5 %). A package lists the detectors to try in order (the first that finds a
face in the image wins), each with its own calibration.

Algorithm 2 (line 1) starts from a face box and crops it to 128x128. The model was trained on
crops made from the *landmark box* (the tight box around the 68 points) grown by
`config.data.box_margin` (1.25) and squared about its centre (`data/augment.face_crop_matrix`).
A Haar box sits differently on a face: it is square, on 300-W about 16 % larger than the
landmark box's long side, and centred 14 % of its side higher (it reaches above the brows and
stops short of the chin). The
*calibration* maps one to the other with three numbers fitted on matched pairs (Haar box,
landmark box) of annotated faces:

    landmark-box centre = Haar centre + centre_offset * Haar side     (offset: 2 fractions)
    landmark-box side   = side_ratio * Haar side                       (side: max(w, h))

Medians, not means: a few bad matches (a Haar box on a neighbour's face, a half-found profile)
must not move them. `calibrated_face_box` returns the square landmark-like box; the caller
grows it by box_margin exactly as in training.

The cascade files ship inside the opencv-python(-headless) 4.x wheels (`cv2.data`); the 5.x
wheels dropped them, hence the pinned 4.x version.

    python -m msm_jax.train.detector_calibration --data_root ../shared/data/300w_subset \
        --out calibration.json
fits the calibration on a 300-W folder and prints the detection rate and residual spread.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np

DLIB_HOG = "dlib_hog"  # dlib's HOG detector (dlib-bin), in place of a cascade file name
DEFAULT_CASCADE = "haarcascade_frontalface_default.xml"  # found 89 % of 300-W faces, alt2 86 %
CASCADES = ("haarcascade_frontalface_default.xml", "haarcascade_frontalface_alt2.xml")
DETECTION_MAX_SIDE = 1024  # larger photos are searched downscaled (speed; boxes scaled back)
MIN_FACE_FRACTION = 0.05  # smallest face searched, as a fraction of the shorter image side
MIN_NEIGHBOURS = 5  # OpenCV's detection-quality knob: overlapping hits needed to report a face
MATCH_MIN_IOU = 0.3  # a Haar box and a landmark box of one face overlap less than two boxes
# of one kind would: they cover different parts of the face


def is_detector_name(name: str) -> bool:
  """Whether ``name`` is dlib's detector or a bare Haar cascade file name. `load_cascade` joins
  the name to OpenCV's cascade folder: a path ("/etc/passwd", "../x.xml", "sub/x.xml") would
  leave it, and OpenCV fails on a file that is no cascade with a SystemError."""
  if name == DLIB_HOG:
    return True
  return (
    name.endswith(".xml")
    and name != ".xml"
    and ".." not in name
    and not any(character in name for character in "/\\:\0")
  )


@dataclasses.dataclass(frozen=True)
class DetectorCalibration:
  """Detector box -> landmark-box convention (see the module docstring).

  centre_offset: (dx, dy), landmark-box centre minus detector-box centre, in detector sides.
  side_ratio: landmark-box side (max of width, height) / detector-box side.
  cascade: the detector the numbers were fitted for: "dlib_hog", or the file name of a Haar
    cascade in OpenCV's cascade folder (`is_detector_name`).
  statistics: how the fit went (pairs, detection rate, residual spread); informational.
  """

  centre_offset: tuple[float, float]
  side_ratio: float
  cascade: str = DEFAULT_CASCADE
  statistics: dict = dataclasses.field(default_factory=dict)

  def to_dict(self) -> dict:
    return {
      "centre_offset": [float(v) for v in self.centre_offset],
      "side_ratio": float(self.side_ratio),
      "cascade": self.cascade,
      "statistics": self.statistics,
    }

  @classmethod
  def from_dict(cls, data: dict, source: str = "calibration") -> DetectorCalibration:
    """Validates a `to_dict` dict; errors name `source` (e.g. the config.json path)."""
    try:
      offset = tuple(float(v) for v in data["centre_offset"])
      ratio = float(data["side_ratio"])
      cascade = str(data.get("cascade", DEFAULT_CASCADE))
    except (KeyError, TypeError, ValueError) as error:
      raise ValueError(
        f"{source}: detector calibration needs 'centre_offset' [dx, dy] and "
        f"'side_ratio' numbers ({type(error).__name__}: {error})"
      ) from None
    if (
      len(offset) != 2 or not np.all(np.isfinite(offset)) or not (np.isfinite(ratio) and ratio > 0)
    ):
      raise ValueError(
        f"{source}: bad detector calibration: centre_offset={offset}, "
        f"side_ratio={ratio} (want 2 finite numbers and a positive ratio)"
      )
    if not is_detector_name(cascade):
      raise ValueError(
        f"{source}: cascade {cascade!r} is not a detector: want {DLIB_HOG!r} or the file name "
        f"of an OpenCV Haar cascade (e.g. {DEFAULT_CASCADE!r}), without a folder"
      )
    return cls(offset, ratio, cascade, dict(data.get("statistics", {})))


# Fitted on the 300-W training subset (1,207 faces) with the command in the module docstring
# (haarcascade_frontalface_default: 89.2 % of the faces found; alt2 found 86.1 %).
DEFAULT_CALIBRATION = DetectorCalibration(
  centre_offset=(0.0042, 0.1408),
  side_ratio=0.8594,
  cascade="haarcascade_frontalface_default.xml",
  statistics={
    "faces": 1207,
    "pairs": 1076,
    "detection_rate": 0.8915,
    "other_detections": 209,
    "min_iou": 0.3,
    "centre_x_median_abs": 0.0552,
    "centre_x_p90_abs": 0.1453,
    "centre_y_median_abs": 0.028,
    "centre_y_p90_abs": 0.0727,
    "log_side_median_abs": 0.0588,
    "log_side_p90_abs": 0.1593,
    "seconds_per_image": 0.1525,
  },
)


# dlib's HOG box, fitted on the 1,811 training faces of configs/300w_subset.py (its validation
# images left out): `python -m msm_jax.train.detector_calibration --config configs/300w_subset.py
# --cascades dlib_hog --out calibration.json`.
DLIB_CALIBRATION = DetectorCalibration(
  centre_offset=(-0.0349, 0.0733),
  side_ratio=1.0157,
  cascade=DLIB_HOG,
  statistics={
    "pairs": 1731,
    "centre_x_median_abs": 0.0809,
    "centre_x_p90_abs": 0.2102,
    "centre_y_median_abs": 0.0049,
    "centre_y_p90_abs": 0.1032,
    "log_side_median_abs": 0.0041,
    "log_side_p90_abs": 0.1745,
    "faces": 1811,
    "detection_rate": 0.9558,
    "other_detections": 194,
    "min_iou": 0.3,
    "seconds_per_image": 0.0174,
  },
)

# What a package made without calibrations tries, in order: dlib's detector finds more faces
# (97.0 % of the validation faces against 91.5 %); the Haar cascade catches some it misses.
DEFAULT_CALIBRATIONS = (DLIB_CALIBRATION, DEFAULT_CALIBRATION)


@functools.lru_cache(maxsize=4)
def load_cascade(name: str = DEFAULT_CASCADE):
  """The OpenCV cascade classifier shipped in the cv2 wheel, loaded once per process."""
  import cv2  # imported here: only detection needs OpenCV

  path = os.path.join(cv2.data.haarcascades, name)
  if not os.path.isfile(path):
    raise FileNotFoundError(
      f"Haar cascade {path} not found: install opencv-python-headless "
      f"4.x (the 5.x wheels no longer ship cascade files)"
    )
  classifier = cv2.CascadeClassifier(path)
  if classifier.empty():
    raise ValueError(f"Haar cascade {path} could not be loaded (corrupt file?)")
  return classifier


@functools.lru_cache(maxsize=1)
def _dlib_detector():
  try:
    import dlib
  except ImportError:
    raise ImportError(
      "the 'dlib_hog' face detector needs dlib: pip install dlib-bin (requirements.txt)"
    ) from None
  return dlib.get_frontal_face_detector()


def detector_available(name: str) -> bool:
  """Whether this installation can run the detector ``name``."""
  if name != DLIB_HOG:
    return True
  try:
    _dlib_detector()
  except ImportError:
    return False
  return True


def _dlib_faces(image: np.ndarray, max_side: int) -> np.ndarray:
  """dlib HOG boxes [N, 4] (x0, y0, x1, y1) pixel edges, largest first."""
  from PIL import Image

  height, width = image.shape[:2]
  scale = min(1.0, max_side / max(height, width))
  searched = image
  if scale < 1.0:
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    searched = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
  rects = _dlib_detector()(np.ascontiguousarray(searched), 0)
  # dlib's rectangle spans pixels left..right inclusive: edges left - 0.5 .. right + 0.5.
  edges = np.array(
    [[r.left() - 0.5, r.top() - 0.5, r.right() + 0.5, r.bottom() + 0.5] for r in rects], np.float64
  ).reshape(-1, 4)
  edges = (edges + 0.5) * np.array([width / searched.shape[1], height / searched.shape[0]] * 2)
  edges -= 0.5
  areas = (edges[:, 2] - edges[:, 0]) * (edges[:, 3] - edges[:, 1])
  return edges[np.argsort(-areas, kind="stable")].astype(np.float32)


def detect_faces(
  image: np.ndarray, cascade: str = DEFAULT_CASCADE, max_side: int = DETECTION_MAX_SIDE
) -> np.ndarray:
  """Face boxes, largest first.

  Args:
    image: [H, W, 3] uint8 RGB.
    cascade: the detector: "dlib_hog", or a Haar cascade file name in `cv2.data.haarcascades`.
    max_side: images with a longer side are searched at this size (boxes are scaled back).
  Returns:
    [N, 4] float32 (x0, y0, x1, y1) box edges in image pixels (integers are pixel centres,
    so OpenCV's rectangle (x, y, w, h) covers [x - 0.5, x + w - 0.5]); N may be 0.
  """
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
    raise ValueError(
      f"detect_faces: image must be [H, W, 3] uint8, got {image.dtype} {image.shape}"
    )
  if cascade == DLIB_HOG:
    return _dlib_faces(image, max_side)
  import cv2

  height, width = image.shape[:2]
  scale = min(1.0, max_side / max(height, width))
  gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
  if scale < 1.0:
    gray = cv2.resize(
      gray,
      (max(1, round(width * scale)), max(1, round(height * scale))),
      interpolation=cv2.INTER_AREA,
    )
  gray = cv2.equalizeHist(gray)  # the cascades were trained on contrast-normalised windows
  min_side = max(20, int(MIN_FACE_FRACTION * min(gray.shape)))
  rects = load_cascade(cascade).detectMultiScale(
    gray, scaleFactor=1.1, minNeighbors=MIN_NEIGHBOURS, minSize=(min_side, min_side)
  )
  rects = np.asarray(rects, np.float64).reshape(-1, 4)
  # Back to the full image: pixel edges scale, in the pixel-centre convention edge = x - 0.5.
  edges = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)
  edges = edges * np.array([width / gray.shape[1], height / gray.shape[0]] * 2) - 0.5
  order = np.argsort(-(rects[:, 2] * rects[:, 3]), kind="stable")
  return edges[order].astype(np.float32)


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
  """Intersection over union of every pair: [N, 4] x [M, 4] -> [N, M]."""
  a = np.asarray(boxes_a, np.float64).reshape(-1, 1, 4)
  b = np.asarray(boxes_b, np.float64).reshape(1, -1, 4)
  overlap = np.clip(
    np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None
  ) * np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
  area = lambda box: (box[..., 2] - box[..., 0]) * (box[..., 3] - box[..., 1])
  return overlap / (area(a) + area(b) - overlap)


def match_boxes(
  detections: np.ndarray, references: np.ndarray, min_iou: float = MATCH_MIN_IOU
) -> list[tuple[int, int]]:
  """Greedy one-to-one matching by IoU (best pair first); pairs below `min_iou` are dropped.

  Returns (detection index, reference index) pairs.
  """
  if len(detections) == 0 or len(references) == 0:
    return []
  iou = box_iou(detections, references)
  pairs = []
  for flat in np.argsort(-iou, axis=None, kind="stable"):
    d, r = np.unravel_index(flat, iou.shape)
    if iou[d, r] < min_iou:
      break
    if all(d != pd and r != pr for pd, pr in pairs):
      pairs.append((int(d), int(r)))
  return pairs


def _centre_and_side(boxes: np.ndarray, side: str) -> tuple[np.ndarray, np.ndarray]:
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
  # Haar boxes are squares; sqrt(w h) keeps a slightly non-square one's scale.
  sides = np.sqrt(width * height) if side == "geometric" else np.maximum(width, height)
  return (boxes[:, :2] + boxes[:, 2:]) / 2, sides


def calibrate(
  haar_boxes: np.ndarray, landmark_boxes: np.ndarray, cascade: str = DEFAULT_CASCADE
) -> DetectorCalibration:
  """Median centre offset and side ratio from matched pairs.

  Args:
    haar_boxes: [N, 4] detector boxes (x0, y0, x1, y1).
    landmark_boxes: [N, 4] the same faces' tight landmark boxes.
  Returns:
    the calibration, with the residual spread after it in `statistics`.
  """
  haar_boxes, landmark_boxes = np.asarray(haar_boxes), np.asarray(landmark_boxes)
  if (
    haar_boxes.shape != landmark_boxes.shape
    or haar_boxes.ndim != 2
    or (haar_boxes.shape[1] != 4)
    or len(haar_boxes) == 0
  ):
    raise ValueError(
      f"calibrate: want two [N, 4] box arrays with N >= 1, got "
      f"{haar_boxes.shape} and {landmark_boxes.shape}"
    )
  haar_centre, haar_side = _centre_and_side(haar_boxes, "geometric")
  landmark_centre, landmark_side = _centre_and_side(landmark_boxes, "max")
  offset = np.median((landmark_centre - haar_centre) / haar_side[:, None], axis=0)
  ratio = float(np.median(landmark_side / haar_side))
  calibration = DetectorCalibration((float(offset[0]), float(offset[1])), ratio, cascade)
  return dataclasses.replace(
    calibration, statistics=calibration_residuals(haar_boxes, landmark_boxes, calibration)
  )


def calibrated_face_box(haar_box: np.ndarray, calibration: DetectorCalibration) -> np.ndarray:
  """[..., 4] Haar boxes -> [..., 4] square landmark-like boxes (same side as the landmark
  box's longer side; grow by box_margin afterwards, as in training)."""
  haar_box = np.asarray(haar_box, np.float64)
  centre, side = _centre_and_side(haar_box, "geometric")
  centre = centre + np.asarray(calibration.centre_offset) * side[:, None]
  half = (calibration.side_ratio * side / 2)[:, None]
  return np.concatenate([centre - half, centre + half], axis=1).reshape(haar_box.shape)


def calibration_residuals(haar_boxes, landmark_boxes, calibration) -> dict:
  """What is left after the calibration, in landmark-box sides: centre error per axis and
  the log side ratio (median absolute value and 90th percentile)."""
  predicted = calibrated_face_box(np.asarray(haar_boxes).reshape(-1, 4), calibration)
  predicted_centre, predicted_side = _centre_and_side(predicted, "max")
  landmark_centre, landmark_side = _centre_and_side(landmark_boxes, "max")
  centre_error = np.abs(predicted_centre - landmark_centre) / landmark_side[:, None]
  scale_error = np.abs(np.log(predicted_side / landmark_side))
  stats = {"pairs": int(len(predicted))}
  for name, values in (
    ("centre_x", centre_error[:, 0]),
    ("centre_y", centre_error[:, 1]),
    ("log_side", scale_error),
  ):
    stats[f"{name}_median_abs"] = round(float(np.median(values)), 4)
    stats[f"{name}_p90_abs"] = round(float(np.percentile(values, 90)), 4)
  return stats
