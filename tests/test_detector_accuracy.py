"""detector_evaluation: the same faces scored with ground-truth boxes and with Haar boxes."""

import numpy as np
import pytest
from PIL import Image

from msm_jax.data import records as records_lib
from msm_jax.eval import detector_accuracy
from msm_jax.inference import prediction
from tests import tiny_models

BATCH = 2


@pytest.fixture(scope="module")
def model():
  return tiny_models.tiny_pretrained()


def _hand_nme(pred, gt):
  """Inter-ocular NME of one face, outer eye corners 36 and 45 of the 68-point scheme."""
  return np.linalg.norm(pred - gt, axis=1).mean() / np.linalg.norm(gt[36] - gt[45])


def test_ground_truth_and_detector_rows_match_hand_computed_nme(model, tmp_path):
  face = tiny_models.detectable_face(model.calibration.cascade)
  Image.fromarray(face["image"]).save(tmp_path / "face.png")
  Image.fromarray(np.full((200, 220, 3), 128, np.uint8)).save(tmp_path / "blank.png")
  blank_landmarks = face["landmarks"] * 0.5 + 20  # a face the detector cannot find
  records = [
    records_lib.FaceRecord(str(tmp_path / "face.png"), face["landmarks"], face["box"], "t"),
    records_lib.FaceRecord(
      str(tmp_path / "blank.png"),
      blank_landmarks,
      np.concatenate([blank_landmarks.min(0), blank_landmarks.max(0)]),
      "t",
    ),
  ]

  results = detector_accuracy.evaluate_with_detector(model, records, batch_size=BATCH)

  # Reference: the Python API called directly, NME by hand.
  gt_boxes = [np.concatenate([r.landmarks.min(0), r.landmarks.max(0)])[None] for r in records]
  given = prediction.predict_images(
    model,
    [str(tmp_path / "face.png"), str(tmp_path / "blank.png")],
    boxes=gt_boxes,
    batch_size=BATCH,
  )
  expected_gt = np.mean(
    [
      _hand_nme(result.faces[0].landmarks, record.landmarks)
      for result, record in zip(given, records)
    ]
  )
  [found] = prediction.predict_images(model, [str(tmp_path / "face.png")], batch_size=BATCH)
  expected_detector = _hand_nme(found.faces[0].landmarks, face["landmarks"])

  assert results["faces"] == 2 and results["detected"] == 1
  assert results["detection_rate"] == pytest.approx(0.5)
  assert results["ground_truth_boxes"]["count"] == 2
  assert results["ground_truth_boxes"]["nme_inter_ocular"] == pytest.approx(
    100 * expected_gt, rel=1e-4
  )
  assert results["detector_boxes"]["count"] == 1
  assert results["detector_boxes"]["nme_inter_ocular"] == pytest.approx(
    100 * expected_detector, rel=1e-4
  )
  table = detector_accuracy.markdown(results)
  assert "Detected 1 of 2 faces (50.0 %)" in table and "| Haar detector (calibrated) | 1 |" in table


def test_no_detection_at_all_leaves_the_detector_row_out(model, tmp_path):
  Image.fromarray(np.full((120, 120, 3), 90, np.uint8)).save(tmp_path / "blank.png")
  points = np.stack(np.meshgrid(np.linspace(30, 90, 17), np.linspace(30, 90, 4)), -1)
  points = points.reshape(-1, 2)[:68].astype(np.float32)
  record = records_lib.FaceRecord(
    str(tmp_path / "blank.png"), points, np.array([30, 30, 90, 90], np.float32), "t"
  )
  results = detector_accuracy.evaluate_with_detector(model, [record], batch_size=BATCH)
  assert results["detected"] == 0 and "detector_boxes" not in results
  assert "Haar" not in detector_accuracy.markdown(results)
