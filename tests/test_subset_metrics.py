"""Tests for msm_jax.eval.subset_metrics: per-subset metrics, Table IX sweep, mean-shape row.

Golden numbers are worked out by hand in the comments; precision / recall are
also checked against scikit-learn.
"""

import warnings

import numpy as np
import pytest
from sklearn.metrics import precision_recall_fscore_support

from msm_jax.core import geometry
from msm_jax.eval import subset_metrics
from msm_jax.eval.subset_metrics import SubsetPredictions


def _face_68():
  """A 68-point face with inter-ocular distance 80 and inter-pupil distance 60.

  Left eye 36-41 centred on (50, 50), outer corner 36 = (40, 50); the right eye is
  the left one shifted by 60 px in x: centre (110, 50), outer corner 45 = (120, 50).
  """
  face = np.random.default_rng(0).uniform(30, 130, size=(68, 2))
  face[36:42] = [(40, 50), (46, 46), (54, 46), (60, 50), (54, 54), (46, 54)]
  face[42:48] = face[36:42] + (60, 0)
  return face


def _three_faces():
  """Every landmark of face i is off by a fixed vector: 5 px, 1.6 px, 10 px."""
  gt = np.stack([_face_68()] * 3)
  pred = gt + np.array([(3.0, 4.0), (0.0, 1.6), (6.0, 8.0)])[:, None, :]
  return SubsetPredictions("challenge", pred, gt)


def test_golden_nme_failure_rate_and_auc():
  got = subset_metrics.subset_metrics(_three_faces(), "300w", failure_threshold=0.08)
  # Inter-ocular (d = 80): 5/80 = 0.0625, 1.6/80 = 0.02, 10/80 = 0.125;
  # mean = 0.2075 / 3 -> 6.91667 %.
  assert got["nme_inter_ocular"] == pytest.approx(100 * 0.2075 / 3, abs=1e-12)
  # Inter-pupil (d = 60): (5 + 1.6 + 10) / 60 / 3 = 16.6 / 180 -> 9.2222 %.
  assert got["nme_inter_pupil"] == pytest.approx(100 * 16.6 / 180, abs=1e-12)
  # Only 0.125 >= 0.08 fails: 1 of 3 -> 33.33 %.
  assert got["failure_rate"] == pytest.approx(100 / 3, abs=1e-12)
  # AUC = mean(max(0, 1 - e / 0.08)) = (0.21875 + 0.75 + 0) / 3 = 0.3229167.
  assert got["auc"] == pytest.approx(0.96875 / 3, abs=1e-12)
  assert got["count"] == 3
  assert got["failure_threshold"] == 0.08 and got["failure_norm"] == "inter_ocular"
  assert "nme_occluded_inter_ocular" not in got  # no occlusion flags given


def test_failure_rate_follows_the_failure_norm():
  # Inter-pupil NMEs 0.0833, 0.0267, 0.1667: two of three are >= 0.08.
  # AUC: (0 + (1 - 0.02667 / 0.08) + 0) / 3 = (2 / 3) / 3.
  got = subset_metrics.subset_metrics(
    _three_faces(), "300w", norms=("inter_pupil",), failure_norm="inter_pupil"
  )
  assert got["failure_rate"] == pytest.approx(200 / 3, abs=1e-12)
  assert got["auc"] == pytest.approx((1 - (1.6 / 60) / 0.08) / 3, abs=1e-12)
  assert "nme_inter_ocular" not in got


def test_occluded_and_visible_nme_hand_computed():
  gt = np.stack([_face_68(), _face_68()])
  pred = gt.copy()
  pred[0, 0:17] += (0.0, 8.0)  # face 0: the 17 jaw points off by 8 px = 0.1 d_io
  pred[1] += (0.0, 4.0)  # face 1: every point off by 4 px = 0.05 d_io
  occluded = np.zeros((2, 68), bool)
  occluded[0, 0:17] = True  # face 1 has no occluded landmark
  scores = np.where(occluded, 0.2, 0.9)
  subset = SubsetPredictions("test", pred, gt, occluded=occluded, scores=scores)
  got = subset_metrics.subset_metrics(subset, "300w", norms=("inter_ocular",))
  # Occluded: face 0 -> 0.1, face 1 -> NaN (skipped) => 10 %.
  assert got["nme_occluded_inter_ocular"] == pytest.approx(10.0, abs=1e-12)
  # Visible: face 0 -> 0 (its 51 visible points are exact), face 1 -> 0.05 => 2.5 %.
  assert got["nme_visible_inter_ocular"] == pytest.approx(2.5, abs=1e-12)
  # All points: face 0 -> 17 * 8 / 68 / 80 = 0.025, face 1 -> 0.05 => 3.75 %.
  assert got["nme_inter_ocular"] == pytest.approx(3.75, abs=1e-12)
  assert got["occluded_fraction"] == pytest.approx(17 / 136)
  assert got["mean_score_occluded"] == pytest.approx(0.2)
  assert got["mean_score_visible"] == pytest.approx(0.9)
  assert "unreliable_precision" not in got  # no reliability mask given


def test_nothing_occluded_gives_nan_without_warnings():
  gt = np.stack([_face_68()])
  subset = SubsetPredictions("test", gt + 1.0, gt, occluded=np.zeros((1, 68), bool))
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    got = subset_metrics.subset_metrics(subset, "300w")
  assert np.isnan(got["nme_occluded_inter_ocular"])
  assert got["nme_visible_inter_ocular"] == pytest.approx(100 * np.sqrt(2) / 80)


# Hand-made 2 x 4 pair. unreliable = not reliable:
#   occluded   = [[1 1 1 0], [0 1 1 0]]
#   unreliable = [[1 1 0 0], [1 0 0 0]]
# TP (unreliable & occluded) = (0,0), (0,1)        -> 2
# FP (unreliable & visible)  = (1,0)               -> 1
# FN (reliable & occluded)   = (0,2), (1,1), (1,2) -> 3
# precision = 2 / 3, recall = 2 / 5, F1 = 2 * (2/3) * (2/5) / (2/3 + 2/5) = 1 / 2.
_OCCLUDED = np.array([[1, 1, 1, 0], [0, 1, 1, 0]], bool)
_RELIABLE = np.array([[0, 0, 1, 1], [0, 1, 1, 1]], bool)


def test_precision_recall_of_unreliable_hand_counted():
  got = subset_metrics.unreliable_as_occlusion_detector(_OCCLUDED, _RELIABLE)
  assert (
    got["unreliable_true_positives"],
    got["unreliable_false_positives"],
    got["unreliable_false_negatives"],
  ) == (2, 1, 3)
  assert got["unreliable_precision"] == pytest.approx(2 / 3)
  assert got["unreliable_recall"] == pytest.approx(2 / 5)
  assert got["unreliable_f1"] == pytest.approx(1 / 2)
  precision, recall, f1, _ = precision_recall_fscore_support(
    _OCCLUDED.ravel(), ~_RELIABLE.ravel(), average="binary"
  )
  assert (
    got["unreliable_precision"],
    got["unreliable_recall"],
    got["unreliable_f1"],
  ) == pytest.approx((precision, recall, f1))


def test_subset_metrics_reports_the_same_precision_recall():
  # Embed the 2 x 4 pair in 68-point masks; the other points are reliable and
  # visible (true negatives), which leave precision and recall unchanged.
  occluded = np.zeros((2, 68), bool)
  reliable = np.ones((2, 68), bool)
  occluded[:, :4], reliable[:, :4] = _OCCLUDED, _RELIABLE
  gt = np.stack([_face_68(), _face_68()])
  subset = SubsetPredictions("test", gt, gt, occluded=occluded, reliable=reliable)
  got = subset_metrics.subset_metrics(subset, "300w")
  assert got["unreliable_precision"] == pytest.approx(2 / 3)
  assert got["unreliable_recall"] == pytest.approx(2 / 5)
  assert got["nme_occluded_inter_ocular"] == 0.0


def test_precision_is_nan_when_nothing_is_flagged():
  got = subset_metrics.unreliable_as_occlusion_detector(_OCCLUDED, np.ones((2, 4), bool))
  assert np.isnan(got["unreliable_precision"]) and np.isnan(got["unreliable_f1"])
  assert got["unreliable_recall"] == 0.0


def test_threshold_sweep_calls_each_pair_and_reports_its_nme():
  gt = np.stack([_face_68()])
  calls = []

  def predict_with_thresholds(contour, feature):
    calls.append((contour, feature))
    # Error of 10 * contour + feature px in x: (0.4, 0.6) -> 4.6 px -> 4.6 / 80.
    return SubsetPredictions("test", gt + (10 * contour + feature, 0.0), gt)

  sweep = subset_metrics.threshold_sweep(predict_with_thresholds, "300w")
  assert calls == list(subset_metrics.TABLE_IX_THRESHOLD_PAIRS)
  assert len(calls) == 12 and calls[0] == (0.3, 0.4) and calls[-1] == (0.5, 0.7)
  assert list(sweep) == [subset_metrics.threshold_pair_label(*p) for p in calls]
  row = sweep["0.4 / 0.6"]["test"]
  assert row["nme_inter_ocular"] == pytest.approx(100 * 4.6 / 80)
  assert row["nme_inter_pupil"] == pytest.approx(100 * 4.6 / 60)
  assert sweep["0.5 / 0.7"]["test"]["nme_inter_ocular"] == pytest.approx(100 * 5.7 / 80)


def test_threshold_sweep_rejects_bad_callables_and_pairs():
  gt = np.stack([_face_68()])
  with pytest.raises(TypeError, match=r"returned ndarray"):
    subset_metrics.threshold_sweep(lambda c, f: gt, "300w")
  with pytest.raises(ValueError, match="listed twice"):
    subset_metrics.threshold_sweep(
      lambda c, f: SubsetPredictions("t", gt, gt), "300w", pairs=[(0.4, 0.6), (0.4, 0.6)]
    )


def test_mean_shape_baseline_hand_computed():
  # Two training shapes of 2 points in a 64 crop; their mean is (10, 20), (30, 40).
  train = np.array([[[8.0, 18.0], [28.0, 44.0]], [[12.0, 22.0], [32.0, 36.0]]])
  # Test face 0: crop pixel == image pixel. Test face 1: crop of the box
  # (100, 200)-(228, 328) at 128 px, i.e. image = crop + (100.5, 200.5).
  boxes = np.array([[-0.5, -0.5, 127.5, 127.5], [100.0, 200.0, 228.0, 328.0]])
  crop_to_image = geometry.invert_affine(geometry.crop_matrix(boxes, 128))
  got = subset_metrics.mean_shape_baseline(train, 64, crop_to_image, test_crop_size=128)
  # 64 -> 128 crop through u = (2x + 1) / 64 - 1 and x' = ((u + 1) 128 - 1) / 2:
  # x' = 2 x + 0.5, so (10, 20) -> (20.5, 40.5) and (30, 40) -> (60.5, 80.5).
  np.testing.assert_allclose(got[0], [[20.5, 40.5], [60.5, 80.5]], atol=1e-9)
  np.testing.assert_allclose(got[1], [[121.0, 241.0], [161.0, 281.0]], atol=1e-9)
  # Same crop size: the mean shape itself, moved by each face's matrix.
  same = subset_metrics.mean_shape_baseline(train, 64, np.eye(3)[None])
  np.testing.assert_allclose(same[0], [[10.0, 20.0], [30.0, 40.0]], atol=1e-9)


def test_bad_inputs_name_the_problem():
  gt = np.stack([_face_68()])
  with pytest.raises(ValueError, match="pred must have gt's shape"):
    SubsetPredictions("common", gt[:, :60], gt)
  with pytest.raises(ValueError, match=r"'common': occluded must be \[N, L\]"):
    SubsetPredictions("common", gt, gt, occluded=np.zeros((1, 29), bool))
  with pytest.raises(ValueError, match="reliable must be boolean"):
    SubsetPredictions("common", gt, gt, reliable=np.full((1, 68), 0.7))
  with pytest.raises(ValueError, match="boxes must be"):
    SubsetPredictions("common", gt, gt, boxes=np.zeros((2, 4)))
  with pytest.raises(ValueError, match="'300w' scheme"):
    subset_metrics.subset_metrics(SubsetPredictions("c", gt[:, :29], gt[:, :29]), "300w")
  with pytest.raises(ValueError, match="crop_to_image must be"):
    subset_metrics.mean_shape_baseline(gt, 128, np.eye(3))
  with pytest.raises(ValueError, match="train_landmarks_in_crop"):
    subset_metrics.mean_shape_baseline(gt[0], 128, np.eye(3)[None])


def test_precision_is_undefined_where_nothing_is_occluded():
  """Flags on a clean face detect no occluder: no precision (not 0), recall undefined too."""
  clean = np.zeros((2, 4), bool)
  got = subset_metrics.unreliable_as_occlusion_detector(clean, np.array([[1, 0, 1, 1]] * 2, bool))
  assert np.isnan(got["unreliable_precision"]) and np.isnan(got["unreliable_recall"])
  assert got["unreliable_false_positives"] == 2
