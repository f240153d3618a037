"""The fit of a package's tracking thresholds (`msm_jax.eval.tracking_fit`): Youden's J and the
refine thresholds on hand-computed cases, and what `fit` makes of its samples."""

import math

import numpy as np
import pytest

from msm_jax.data.records import FaceRecord
from msm_jax.eval import tracking_fit
from msm_jax.inference import tracking


def test_youden_threshold_hand_computed():
  # Sorted: 0.01 0.02 (negatives) 0.3 (positive) 0.35 (negative) 0.4 0.5 (positives). Between
  # 0.02 and 0.3: J = 2/3 + 3/3 - 1 = 2/3; between 0.35 and 0.4 also 2/3 (3/3 + 2/3 - 1); the
  # lower one is kept; between 0.3 and 0.35: 2/3 + 2/3 - 1 = 1/3.
  threshold, report = tracking_fit.youden_threshold([0.3, 0.4, 0.5], [0.01, 0.02, 0.35])
  assert threshold == pytest.approx(0.16)
  assert report["youden_j"] == pytest.approx(0.6667, abs=1e-4)
  assert (report["positives_kept"], report["negatives_lost"]) == (1.0, pytest.approx(0.6667, 1e-3))
  separated, report = tracking_fit.youden_threshold([0.3, 0.4], [0.01, 0.05])
  assert separated == pytest.approx(0.175) and report["youden_j"] == 1.0
  with pytest.raises(ValueError, match="lost_below needs faces and frames without one"):
    tracking_fit.youden_threshold([0.3], [])


def test_refine_threshold_hand_computed():
  confidences = [0.3, 0.1, 0.4, 0.2]  # unsorted on purpose
  first = [0.05, 0.10, 0.04, 0.06]
  refined = [0.05, 0.05, 0.04, 0.05]
  # Refining all: mean 0.0475; within 5 %: <= 0.049875. Refining the least confident one
  # (0.1): mean(0.05, 0.06, 0.05, 0.04) = 0.05, too much; the two least: 0.0475. So the
  # threshold is midway between the 2nd and 3rd confidences.
  threshold, report = tracking_fit.refine_threshold(confidences, first, refined, 0.05)
  assert threshold == pytest.approx(0.25)
  assert report["refined_fraction"] == 0.5
  assert report["adaptive_nme_percent"] == pytest.approx(4.75)
  # A first pass as good as the refined one: nothing refined; one never good enough: all.
  assert tracking_fit.refine_threshold([0.2, 0.3], [0.04, 0.04], [0.04, 0.04], 0.0)[0] == 0.0
  assert tracking_fit.refine_threshold([0.2, 0.3], [0.09, 0.08], [0.04, 0.04], 0.0)[0] == math.inf


def test_match_takes_the_nearest_face_only_near_the_truth():
  truth = np.array([[0.0, 0.0], [10.0, 0.0], [5.0, 10.0]])
  near, nearer, far = truth + 3.0, truth + 1.0, truth + 8.0  # the face is 10 wide
  assert tracking_fit.match([(near, "near"), (nearer, "nearer")], truth)[1] == "nearer"
  assert tracking_fit.match([(far, "far")], truth) is None
  assert tracking_fit.match([], truth) is None


def test_fit_makes_the_thresholds_of_its_samples(monkeypatch):
  positives, negatives = [0.3, 0.4, 0.5], [0.01, 0.02]
  tracked = [(0.3, 0.05, 0.05), (0.1, 0.10, 0.05)]  # the unsure one needs refining
  detected = [(0.5, 0.04, 0.04), (0.2, 0.04, 0.04)]  # none does
  seen = {}

  def tracked_samples(model, specs):
    seen["specs"] = specs
    return positives, negatives, tracked

  monkeypatch.setattr(tracking_fit, "tracked_samples", tracked_samples)
  monkeypatch.setattr(tracking_fit, "detected_samples", lambda model, records: detected)
  box = np.array([0.0, 0.0, 2.0, 2.0])
  records = [
    FaceRecord(f"{name}.png", np.eye(2) + index, box, "test") for index, name in enumerate("abc")
  ]
  fitted = tracking_fit.fit(None, records, clip_count=2)
  assert fitted == tracking.TrackingThresholds(
    lost_below=pytest.approx(0.16),
    refine_below=0.2,
    refine_below_detected=0.0,
    fitted=fitted.fitted,
  )
  assert [spec.path for spec in seen["specs"]] == ["a.png", "b.png"]
  assert fitted.fitted["lost"]["youden_j"] == 1.0 and "2 clips" in fitted.fitted["data"]
  monkeypatch.setattr(tracking_fit, "detected_samples", lambda model, records: [])
  with pytest.raises(ValueError, match="needs faces the detector finds"):
    tracking_fit.fit(None, records, clip_count=2)
