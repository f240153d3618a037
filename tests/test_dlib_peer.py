"""The dlib peer (msm_jax/eval/dlib_peer.py): its box conventions against hand-computed boxes and
the detector calibration they invert, and a tiny regression-tree model trained on rendered faces
against the mean shape it starts from."""

import numpy as np
import pytest

from msm_jax.core import landmarks, metrics
from msm_jax.data.records import box_from_landmarks
from msm_jax.eval import dlib_peer, robustness
from msm_jax.inference import detection
from tests import tiny_models

dlib = pytest.importorskip("dlib")


def test_square_box_keeps_the_centre_and_the_longer_side():
  np.testing.assert_allclose(dlib_peer.square_box([10.0, 20.0, 30.0, 60.0]), [0, 20, 40, 60])
  np.testing.assert_allclose(dlib_peer.square_box([[0.0, 0.0, 8.0, 2.0]]), [[0.0, -3.0, 8.0, 5.0]])


def test_hog_box_inverts_the_detector_calibration():
  calibration = detection.DetectorCalibration((-0.05, 0.1), 1.2, detection.DLIB_HOG)
  landmark_box = np.array([[40.0, 50.0, 100.0, 130.0]])
  hog = dlib_peer.hog_box_from_landmark_box(landmark_box, calibration)
  # By hand: square (30, 50, 110, 130), side 80 -> HOG side 80 / 1.2; centre (70, 90) minus
  # the offset times that side.
  side = 80 / 1.2
  centre = np.array([70.0 + 0.05 * side, 90.0 - 0.1 * side])
  np.testing.assert_allclose(hog, [[*(centre - side / 2), *(centre + side / 2)]], atol=1e-9)
  np.testing.assert_allclose(
    detection.calibrated_face_box(hog, calibration), dlib_peer.square_box(landmark_box), atol=1e-9
  )


class _CornerPredictor:
  """Stands in for a dlib shape predictor: 'landmarks' at the rectangle's corners."""

  def __call__(self, image, rect):
    corners = [(rect.left(), rect.top()), (rect.right(), rect.bottom())]
    return dlib.full_object_detection(rect, [dlib.point(x, y) for x, y in corners])


def test_given_boxes_reach_the_predictor_in_its_convention():
  image, box = np.zeros((80, 80, 3), np.uint8), np.array([10.0, 20.0, 30.0, 60.0])
  face = robustness.Face(image, box, np.zeros((2, 2), np.float32))
  peer = dlib_peer.Peer(given=(_CornerPredictor(), dlib_peer.square_box), detected=None)
  predicted = dlib_peer.predict_condition(peer, [face])["predicted"]
  # The square (0, 20, 40, 60) in pixel edges is dlib's inclusive rectangle (0, 20)-(39, 59).
  np.testing.assert_array_equal(predicted[0], [[0, 20], [39, 59]])


def test_a_trained_model_beats_its_mean_shape_on_its_training_faces():
  records = tiny_models.face_records(count=12)
  options = dlib.shape_predictor_training_options()
  options.num_trees_per_cascade_level, options.cascade_depth, options.oversampling_amount = 20, 4, 5
  predictor, used = dlib_peer.train_predictor(records, options)
  assert used == len(records)
  scheme = landmarks.get_scheme("300w")
  windows = [robustness.face_window(record.image, record.landmarks) for record in records]
  truth = np.stack([points for _, points in windows])
  faces = [
    robustness.Face(window, box_from_landmarks(points), points) for window, points in windows
  ]
  peer = dlib_peer.Peer(given=(predictor, dlib_peer.square_box), detected=None)
  predicted = dlib_peer.predict_condition(peer, faces)
  # The mean shape (what the cascade starts from) placed in each face's square box.
  boxes = dlib_peer.square_box(np.stack([face.box for face in faces]))
  unit = (truth - boxes[:, None, :2]) / (boxes[:, None, 2:] - boxes[:, None, :2])
  mean_shape = boxes[:, None, :2] + unit.mean(0) * (boxes[:, None, 2:] - boxes[:, None, :2])
  trained_nme = metrics.nme(predicted["predicted"], truth, scheme, "inter_ocular").mean()
  mean_nme = metrics.nme(mean_shape.astype(np.float32), truth, scheme, "inter_ocular").mean()
  assert trained_nme < 0.5 * mean_nme, (trained_nme, mean_nme)


def test_detector_training_boxes_are_dlibs_own_and_missing_faces_are_left_out():
  face = tiny_models.detectable_face(detection.DLIB_HOG)
  window, points = robustness.face_window(face["image"], face["landmarks"])
  box = dlib_peer.training_box(window, points, "detector")
  found = detection.detect_faces(window, detection.DLIB_HOG)
  assert any(np.array_equal(box, candidate) for candidate in found)
  assert detection.box_iou(box, box_from_landmarks(points))[0, 0] >= detection.MATCH_MIN_IOU
  blank = np.zeros_like(window)
  assert dlib_peer.training_box(blank, points, "detector") is None
  np.testing.assert_allclose(
    dlib_peer.training_box(blank, points, "landmark"),
    dlib_peer.square_box(box_from_landmarks(points)),
  )


def test_both_found_nme_averages_over_the_faces_every_method_found():
  scheme = landmarks.get_scheme("300w")
  rng = np.random.default_rng(0)
  truth = rng.uniform(0, 100, (3, 68, 2)).astype(np.float32)
  a = truth + rng.normal(0, 1, truth.shape).astype(np.float32)
  b = truth + rng.normal(0, 2, truth.shape).astype(np.float32)
  a[0], b[2] = np.nan, np.nan  # a missed face 0, b missed face 2: only face 1 is in both
  both, nme = dlib_peer.both_found_nme({"a": a, "b": b}, truth, scheme)
  np.testing.assert_array_equal(both, [False, True, False])
  # Face 1 by hand: mean point error over the outer-eye-corner distance (points 37, 46).
  ocular = np.linalg.norm(truth[1, 36] - truth[1, 45])
  for name, predicted in (("a", a), ("b", b)):
    expected = 100 * np.linalg.norm(predicted[1] - truth[1], axis=-1).mean() / ocular
    np.testing.assert_allclose(nme[name], expected, rtol=1e-5)
  b[1] = np.nan
  assert dlib_peer.both_found_nme({"a": a, "b": b}, truth, scheme)[1] == {"a": None, "b": None}


def test_paired_difference_is_the_mean_and_standard_error_of_per_face_gaps():
  """Every landmark of a face off by one vector: that face's NME is the vector's length over
  its outer-eye-corner distance, so the per-face gaps are known exactly."""
  scheme = landmarks.get_scheme("300w")
  rng = np.random.default_rng(1)
  truth = rng.uniform(0, 100, (4, 68, 2)).astype(np.float32)
  ocular = np.linalg.norm(truth[:, 36] - truth[:, 45], axis=-1)
  shift_a, shift_b = np.array([1.0, 2.0, 0.5, 3.0]), np.array([2.0, 0.5, 1.5, 1.0])
  a = truth + np.stack([shift_a, 0 * shift_a], -1)[:, None].astype(np.float32)
  b = truth + np.stack([0 * shift_b, shift_b], -1)[:, None].astype(np.float32)
  b[3] = np.nan  # b missed face 3
  gaps = 100 * (shift_a[:3] - shift_b[:3]) / ocular[:3]
  both, _ = dlib_peer.both_found_nme({"a": a, "b": b}, truth, scheme)
  mean, error = dlib_peer.paired_difference(a, b, truth, both, scheme)
  np.testing.assert_allclose(mean, gaps.mean(), rtol=1e-4)
  np.testing.assert_allclose(error, gaps.std(ddof=1) / np.sqrt(3), rtol=1e-4)
  one_face = np.array([True, False, False, False])  # no spread to speak of
  assert dlib_peer.paired_difference(a, b, truth, one_face, scheme) == (None, None)


def test_both_found_table_shows_the_paired_difference():
  row = dict(faces=201, both_found=195, nme_both_found=2.9)
  table = {
    "detector": {
      "dlib": row,
      "msm-jax": dict(
        row,
        nme_both_found=2.98,
        nme_both_found_contour=5.28,
        nme_both_found_features=2.22,
        paired_difference=0.08,
        paired_difference_se=0.05,
      ),
    },
    "rotated 15": {
      "dlib": row,
      "msm-jax": dict(row, paired_difference=None, paired_difference_se=None),
    },
  }
  lines = dlib_peer.both_found_markdown(table).splitlines()
  assert lines[0] == (
    "| condition | faces found by both | dlib NME % (contour / features) "
    "| msm-jax NME % (contour / features) | msm-jax - dlib, paired |"
  )
  assert lines[2] == "| detector | 195/201 | 2.90 | 2.98 (5.28 / 2.22) | +0.08 +- 0.05 |"
  assert lines[3] == "| rotated 15 | 195/201 | 2.90 | 2.90 | - |"


def test_region_nme_splits_the_contour_from_the_features():
  """Contour landmarks off by 3 px, the others by 1 px: each group's NME is its shift over
  the outer-eye-corner distance; faces outside the selection do not count."""
  scheme = landmarks.get_scheme("300w")
  rng = np.random.default_rng(2)
  truth = rng.uniform(0, 100, (3, 68, 2)).astype(np.float32)
  predicted = truth.copy()
  predicted[:, :17, 0] += 3.0  # 300-W's contour: points 1-17
  predicted[:, 17:, 1] += 1.0
  predicted[2] += 50.0  # not selected
  faces = np.array([True, True, False])
  ocular = np.linalg.norm(truth[:2, 36] - truth[:2, 45], axis=-1)
  got = dlib_peer.region_nme(predicted, truth, faces, scheme)
  np.testing.assert_allclose(got["contour"], 100 * np.mean(3.0 / ocular), rtol=1e-4)
  np.testing.assert_allclose(got["features"], 100 * np.mean(1.0 / ocular), rtol=1e-4)
