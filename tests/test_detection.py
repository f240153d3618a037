"""Haar face boxes and their calibration to the training crop convention."""

import numpy as np
import pytest

from msm_jax.data import synthetic
from msm_jax.inference import detection


def test_calibrated_face_box_hand_computed():
  # Haar box [10, 20, 110, 120]: centre (60, 70), side 100. Offset (0.02, 0.15) moves the
  # centre by (2, 15) to (62, 85); ratio 0.9 gives side 90, half 45 -> [17, 40, 107, 130].
  calibration = detection.DetectorCalibration((0.02, 0.15), 0.9)
  box = detection.calibrated_face_box(np.array([10.0, 20.0, 110.0, 120.0]), calibration)
  np.testing.assert_allclose(box, [17.0, 40.0, 107.0, 130.0], atol=1e-12)
  many = detection.calibrated_face_box(np.array([[10.0, 20.0, 110.0, 120.0]] * 3), calibration)
  assert many.shape == (3, 4)
  np.testing.assert_allclose(many, [[17.0, 40.0, 107.0, 130.0]] * 3, atol=1e-12)


def _synthetic_pairs(rng, count, offset, ratio):
  """Landmark boxes (non-square) and the square Haar boxes a known calibration implies."""
  centre = rng.uniform(100, 400, (count, 2))
  width, height = rng.uniform(60, 200, count), rng.uniform(60, 200, count)
  landmark = np.stack(
    [
      centre[:, 0] - width / 2,
      centre[:, 1] - height / 2,
      centre[:, 0] + width / 2,
      centre[:, 1] + height / 2,
    ],
    1,
  )
  haar_side = np.maximum(width, height) / ratio
  haar_centre = centre - np.asarray(offset) * haar_side[:, None]
  haar = np.concatenate(
    [haar_centre - haar_side[:, None] / 2, haar_centre + haar_side[:, None] / 2], 1
  )
  return haar, landmark


def test_calibrate_recovers_known_offset_and_ratio_despite_outliers():
  rng = np.random.default_rng(0)
  haar, landmark = _synthetic_pairs(rng, 41, offset=(-0.03, 0.12), ratio=0.85)
  # 12 of 41 pairs are bad matches (box on the wrong face, half a face): the medians must
  # not move.
  haar[:8] += rng.uniform(50, 150, (8, 1))
  haar[8:12, 2:] = haar[8:12, :2] + 2.0 * (haar[8:12, 2:] - haar[8:12, :2])
  calibration = detection.calibrate(haar, landmark, cascade="x.xml")
  np.testing.assert_allclose(calibration.centre_offset, (-0.03, 0.12), atol=1e-9)
  assert calibration.side_ratio == pytest.approx(0.85, abs=1e-9)
  assert calibration.cascade == "x.xml"
  assert calibration.statistics["pairs"] == 41
  assert calibration.statistics["centre_y_median_abs"] == pytest.approx(0.0, abs=1e-6)
  # The calibrated boxes of the 29 good pairs have the landmark boxes' centres and long sides.
  boxes = detection.calibrated_face_box(haar[12:], calibration)
  np.testing.assert_allclose(
    (boxes[:, :2] + boxes[:, 2:]) / 2, (landmark[12:, :2] + landmark[12:, 2:]) / 2, atol=1e-6
  )
  np.testing.assert_allclose(
    boxes[:, 2] - boxes[:, 0], np.max(landmark[12:, 2:] - landmark[12:, :2], axis=1), atol=1e-6
  )


def test_calibrate_rejects_mismatched_arrays():
  with pytest.raises(ValueError, match="two \\[N, 4\\] box arrays"):
    detection.calibrate(np.zeros((3, 4)), np.zeros((2, 4)))


def test_box_iou_and_greedy_matching():
  # [0,0,2,2] and [1,1,3,3]: overlap 1, union 4 + 4 - 1 = 7.
  iou = detection.box_iou(np.array([[0, 0, 2, 2]]), np.array([[1, 1, 3, 3], [0, 0, 2, 2]]))
  np.testing.assert_allclose(iou, [[1 / 7, 1.0]])
  detections = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [100, 100, 110, 110]], float)
  references = np.array([[21, 21, 31, 31], [1, 0, 11, 10]], float)
  # detection 0 <-> reference 1 (IoU 90/110), detection 1 <-> reference 0 (81/119);
  # detection 2 overlaps nothing.
  assert sorted(detection.match_boxes(detections, references)) == [(0, 1), (1, 0)]
  assert detection.match_boxes(detections, references, min_iou=0.8) == [(0, 1)]
  assert detection.match_boxes(np.zeros((0, 4)), references) == []


class _FixedCascade:
  """Stands in for cv2.CascadeClassifier: fixed rectangles, records the searched size."""

  def __init__(self, rects):
    self.rects, self.searched = rects, None

  def detectMultiScale(self, gray, **kwargs):  # noqa: N802 (OpenCV's name)
    self.searched = gray.shape
    return np.array(self.rects)


def test_detect_faces_converts_opencv_rectangles(monkeypatch):
  # OpenCV rect (x, y, w, h) = (10, 20, 30, 30) covers pixels 10..39 -> edges 9.5 .. 39.5.
  cascade = _FixedCascade([(10, 20, 30, 30), (50, 5, 40, 40)])
  monkeypatch.setattr(detection, "load_cascade", lambda name: cascade)
  boxes = detection.detect_faces(np.zeros((100, 120, 3), np.uint8))
  assert boxes.dtype == np.float32 and cascade.searched == (100, 120)
  # Largest first: the 40x40 rectangle.
  np.testing.assert_allclose(boxes, [[49.5, 4.5, 89.5, 44.5], [9.5, 19.5, 39.5, 49.5]])


def test_detect_faces_scales_boxes_back_from_a_downscaled_search(monkeypatch):
  # A 2048x1024 image is searched at 1024x512: search edges (10, 20, 40, 50) are image edges
  # (20, 40, 80, 100) in pixel-edge units, i.e. (19.5, 39.5, 79.5, 99.5) in pixel centres.
  cascade = _FixedCascade([(10, 20, 30, 30)])
  monkeypatch.setattr(detection, "load_cascade", lambda name: cascade)
  boxes = detection.detect_faces(np.zeros((1024, 2048, 3), np.uint8), max_side=1024)
  assert cascade.searched == (512, 1024)
  np.testing.assert_allclose(boxes, [[19.5, 39.5, 79.5, 99.5]])


@pytest.mark.parametrize("cascade", [*detection.CASCADES, detection.DLIB_HOG])
def test_real_cascade_finds_a_rendered_face_and_nothing_in_a_blank_image(cascade):
  assert detection.detect_faces(np.full((200, 200, 3), 128, np.uint8), cascade).shape == (0, 4)
  settings = dict(
    image_size=256,
    max_roll_deg=0.0,
    max_yaw_deg=0.0,
    max_pitch_deg=0.0,
    occlusion_prob=0.0,
    blur_prob=0.0,
    max_noise_std=0.0,
    background_clutter=0,
  )
  matched = 0
  for index in range(12):  # frontal synthetic faces: the detectors find a third or more
    face = synthetic.render_face(0, index, settings)
    boxes = detection.detect_faces(face["image"], cascade)
    matched += len(detection.match_boxes(boxes, face["box"][None]))
  assert matched >= 2


def test_calibration_dict_round_trip_and_errors():
  calibration = detection.DetectorCalibration((0.01, 0.2), 0.8, "a.xml", {"pairs": 3})
  assert detection.DetectorCalibration.from_dict(calibration.to_dict()) == calibration
  with pytest.raises(ValueError, match="cfg.json: detector calibration needs"):
    detection.DetectorCalibration.from_dict({"side_ratio": 1.0}, "cfg.json")
  with pytest.raises(ValueError, match="cfg.json: bad detector calibration"):
    detection.DetectorCalibration.from_dict({"centre_offset": [0, 0], "side_ratio": -1}, "cfg.json")


@pytest.mark.parametrize(
  "cascade", ["/etc/passwd", "../../x", "sub/dir.xml", "..\\x.xml", "haarcascade.txt", ".xml", ""]
)
def test_a_calibration_names_a_detector_never_a_path(cascade):
  """A package's cascade is joined to OpenCV's cascade folder: only a bare .xml file name (or
  dlib's detector) stays inside it."""
  data = {"centre_offset": [0.0, 0.1], "side_ratio": 0.9, "cascade": cascade}
  with pytest.raises(ValueError, match=r"cfg.json: cascade .* is not .*dlib_hog.* file name"):
    detection.DetectorCalibration.from_dict(data, "cfg.json")
  for name in ("haarcascade_frontalface_default.xml", detection.DLIB_HOG):
    calibration = detection.DetectorCalibration.from_dict(dict(data, cascade=name), "cfg.json")
    assert calibration.cascade == name
  # No cascade given: OpenCV's default one.
  del data["cascade"]
  assert detection.DetectorCalibration.from_dict(data).cascade == detection.DEFAULT_CASCADE


def test_missing_cascade_file_is_a_clear_error():
  with pytest.raises(FileNotFoundError, match="no_such_cascade.xml not found"):
    detection.load_cascade("no_such_cascade.xml")


def test_detect_faces_rejects_non_rgb_input():
  with pytest.raises(ValueError, match="\\[H, W, 3\\] uint8"):
    detection.detect_faces(np.zeros((10, 10), np.float32))


class _FixedDlib:
  """Stands in for dlib's detector: fixed rectangles (left, top, right, bottom, inclusive)."""

  def __init__(self, rects):
    self.rects, self.searched = rects, None

  def __call__(self, image, upsample):
    self.searched = image.shape[:2]

    class Rect:
      def __init__(self, left, top, right, bottom):
        values = (left, top, right, bottom)
        self.left, self.top, self.right, self.bottom = (lambda v=v: v for v in values)

    return [Rect(*rect) for rect in self.rects]


def test_dlib_boxes_are_pixel_edges_largest_first_and_scaled_back(monkeypatch):
  # dlib's rectangle (10, 20, 39, 49) covers pixels 10..39 x 20..49: edges 9.5 .. 39.5.
  fake = _FixedDlib([(10, 20, 39, 49), (50, 5, 89, 44)])
  monkeypatch.setattr(detection, "_dlib_detector", lambda: fake)
  boxes = detection.detect_faces(np.zeros((100, 120, 3), np.uint8), detection.DLIB_HOG)
  assert fake.searched == (100, 120)
  np.testing.assert_allclose(boxes, [[49.5, 4.5, 89.5, 44.5], [9.5, 19.5, 39.5, 49.5]])
  # Searched at half size: edges double (pixel-edge units), as for the Haar cascades.
  fake = _FixedDlib([(10, 20, 39, 49)])
  monkeypatch.setattr(detection, "_dlib_detector", lambda: fake)
  boxes = detection.detect_faces(np.zeros((1024, 2048, 3), np.uint8), detection.DLIB_HOG, 1024)
  assert fake.searched == (512, 1024)
  np.testing.assert_allclose(boxes, [[19.5, 39.5, 79.5, 99.5]])
