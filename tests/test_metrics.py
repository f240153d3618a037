"""Tests for msm_jax.core.metrics: NME (Eq. 12), failure rate, AUC and CED.

Golden numbers are worked out in the comments; NME is also checked against a
direct per-face, per-landmark loop and AUC against two other integrations of
the CED (sum of rectangles from the sorted errors, and a fine trapezoid rule).
"""

import jax.numpy as jnp
import numpy as np
import pytest

from msm_jax.core import metrics
from msm_jax.core.landmarks import SCHEME_300W, SCHEME_COFW, SCHEME_WFLW


def _face_68():
  """A 68-point face whose eye geometry is known by hand.

  Left eye 36-41 = (40, 50), (46, 46), (54, 46), (60, 50), (54, 54), (46, 54):
  centre (50, 50). The right eye is the left one shifted by 60 in x: centre
  (110, 50), outer corner 45 = 39 + 60 -> (120, 50). So inter-pupil = 60 and
  inter-ocular = |(120, 50) - (40, 50)| = 80.
  """
  rng = np.random.default_rng(0)
  face = rng.uniform(30, 130, size=(68, 2))
  face[36:42] = [(40, 50), (46, 46), (54, 46), (60, 50), (54, 54), (46, 54)]
  face[42:48] = face[36:42] + (60, 0)
  return face


def _nme_loop(pred, gt, left_index, right_index):
  """Eq. 12 summand written as plain loops, normalised by two gt points."""
  values = []
  for face_pred, face_gt in zip(pred, gt):
    d = np.hypot(*(face_gt[right_index] - face_gt[left_index]))
    total = 0.0
    for p, g in zip(face_pred, face_gt):
      total += np.hypot(p[0] - g[0], p[1] - g[1])
    values.append(total / len(face_gt) / d)
  return np.array(values)


def test_inter_ocular_vs_inter_pupil_on_constructed_face():
  gt = _face_68()[None]
  pred = gt + (3.0, 4.0)  # every landmark is off by exactly 5 px
  # 5 / 80 = 0.0625 inter-ocular; 5 / 60 = 0.08333 inter-pupil.
  np.testing.assert_allclose(metrics.nme(pred, gt, SCHEME_300W), [0.0625])
  np.testing.assert_allclose(metrics.nme(pred, gt, SCHEME_300W, "inter_pupil"), [5 / 60])
  np.testing.assert_allclose(metrics.normalising_distance(gt, 68), [80.0])
  np.testing.assert_allclose(metrics.normalising_distance(gt, 68, "inter_pupil"), [60.0])


@pytest.mark.parametrize(
  "scheme,left,right",
  [(SCHEME_300W, 36, 45), (SCHEME_WFLW, 60, 72), (SCHEME_COFW, 8, 9)],
  ids=["300w", "wflw", "cofw"],
)
def test_inter_ocular_nme_matches_direct_loop(scheme, left, right):
  rng = np.random.default_rng(1)
  gt = rng.uniform(0, 128, size=(5, scheme.num_points, 2))
  pred = gt + rng.normal(0, 3, size=gt.shape)
  np.testing.assert_allclose(
    metrics.nme(pred, gt, scheme), _nme_loop(pred, gt, left, right), rtol=1e-12
  )


@pytest.mark.parametrize(
  "scheme,left,right", [(SCHEME_WFLW, 96, 97), (SCHEME_COFW, 16, 17)], ids=["wflw", "cofw"]
)
def test_inter_pupil_nme_uses_annotated_pupils(scheme, left, right):
  rng = np.random.default_rng(2)
  gt = rng.uniform(0, 128, size=(4, scheme.num_points, 2))
  pred = gt + rng.normal(0, 3, size=gt.shape)
  np.testing.assert_allclose(
    metrics.nme(pred, gt, scheme, "inter_pupil"), _nme_loop(pred, gt, left, right), rtol=1e-12
  )


def test_box_nme():
  gt = np.zeros((2, 29, 2))
  gt[:, 9, 0] = 1.0  # a non-zero inter-ocular distance; unused by "box"
  pred = gt.copy()
  pred[0, :10] += (6.0, 8.0)  # 10 landmarks off by 10 px, 19 exact
  pred[1] += (0.0, 2.0)  # all 29 off by 2 px
  boxes = np.array(
    [
      [10, 20, 50, 110],  # w = 40, h = 90 -> sqrt(3600) = 60
      [0, 0, 25, 16],
    ]
  )  # w = 25, h = 16 -> sqrt(400) = 20
  # Face 0: mean error 10 * 10 / 29 px, / 60. Face 1: 2 px / 20.
  np.testing.assert_allclose(
    metrics.nme(pred, gt, "cofw", "box", boxes=boxes), [100 / 29 / 60, 0.1]
  )


def test_mask_averages_over_selected_landmarks_only():
  gt = np.stack([_face_68(), _face_68(), _face_68()])
  pred = gt.copy()
  pred[:, 0:17] += (0.0, 8.0)  # jaw off by 8 px = 0.1 inter-ocular; rest exact
  occluded = np.zeros((3, 68), bool)
  occluded[0, 0:17] = True  # face 0: only jaw points selected -> 0.1
  occluded[1, 10:20] = True  # face 1: 7 jaw points of 10 -> 0.07
  # face 2: nothing selected -> NaN
  got = metrics.nme(pred, gt, SCHEME_300W, mask=occluded)
  np.testing.assert_allclose(got[:2], [0.1, 0.07])
  assert np.isnan(got[2])
  # The complementary mask of face 0 sees no error; no mask: 17 * 0.1 / 68.
  np.testing.assert_allclose(metrics.nme(pred[:1], gt[:1], SCHEME_300W, mask=~occluded[:1]), [0.0])
  np.testing.assert_allclose(metrics.nme(pred, gt, SCHEME_300W), [0.025] * 3)


def test_nme_accepts_jax_arrays():
  rng = np.random.default_rng(3)
  gt = rng.uniform(0, 100, size=(3, 98, 2)).astype(np.float32)
  pred = gt + rng.normal(0, 2, size=gt.shape).astype(np.float32)
  np.testing.assert_allclose(
    metrics.nme(jnp.asarray(pred), jnp.asarray(gt), 98), metrics.nme(pred, gt, 98), rtol=1e-12
  )


def test_nme_errors_are_clear():
  gt = np.stack([_face_68(), _face_68()])
  with pytest.raises(ValueError, match="pred and gt"):
    metrics.nme(gt[:, :60], gt, SCHEME_300W)
  with pytest.raises(ValueError, match="'300w' scheme"):
    metrics.nme(gt[:, :29], gt[:, :29], SCHEME_300W)
  with pytest.raises(ValueError, match="unknown norm"):
    metrics.nme(gt, gt, SCHEME_300W, norm="diagonal")
  with pytest.raises(ValueError, match="needs boxes"):
    metrics.nme(gt, gt, SCHEME_300W, norm="box")
  with pytest.raises(ValueError, match="boxes must be"):
    metrics.nme(gt, gt, SCHEME_300W, norm="box", boxes=np.ones((3, 4)))
  with pytest.raises(ValueError, match="non-positive width"):
    metrics.nme(gt, gt, SCHEME_300W, norm="box", boxes=[[0, 0, 5, 5], [5, 0, 5, 9]])
  with pytest.raises(ValueError, match="mask must be"):
    metrics.nme(gt, gt, SCHEME_300W, mask=np.ones((2, 29), bool))
  with pytest.raises(ValueError, match="NaN"):
    metrics.nme(np.full_like(gt, np.nan), gt, SCHEME_300W)
  collapsed = gt.copy()
  collapsed[1, 45] = collapsed[1, 36]
  with pytest.raises(ValueError, match=r"inter_ocular normaliser is zero for faces \[1\]"):
    metrics.nme(gt, collapsed, SCHEME_300W)


def test_failure_rate_counts_threshold_as_failure():
  # 0.08 itself fails ("0.08 or greater", Sec. IV-B); 0.1 fails; 2 of 4.
  nmes = np.array([0.02, 0.08, 0.1, 0.05])
  assert metrics.failure_rate(nmes, 0.08) == 0.5
  assert metrics.failure_rate(nmes, 0.1) == 0.25
  assert metrics.failure_rate(jnp.asarray([0.01, 0.2]), 0.08) == 0.5


def test_auc_golden_three_faces():
  # Errors 0.02, 0.04, 0.10 with threshold 0.08. The CED is 0 on [0, 0.02),
  # 1/3 on [0.02, 0.04), 2/3 on [0.04, 0.08] (the 0.10 face never counts):
  # area = 1/3 * 0.02 + 2/3 * 0.04 = 0.1 / 3; AUC = (0.1 / 3) / 0.08 = 5 / 12.
  assert metrics.auc([0.02, 0.04, 0.10], 0.08) == pytest.approx(5 / 12, abs=1e-15)
  # Two faces at 0.02 and one at 0.06, threshold 0.1: CED 2/3 on [0.02, 0.06),
  # 1 on [0.06, 0.1]: area = 2/3 * 0.04 + 0.04 = 0.2 / 3 -> AUC = 2 / 3.
  assert metrics.auc([0.02, 0.02, 0.06], 0.1) == pytest.approx(2 / 3, abs=1e-15)
  assert metrics.auc([0.0, 0.0], 0.08) == 1.0
  assert metrics.auc([0.08, 0.3], 0.08) == 0.0


def _auc_by_rectangles(nmes, threshold):
  """CED area from the sorted errors: after the k-th error the height is k / N."""
  edges = np.concatenate([np.minimum(np.sort(nmes), threshold), [threshold]])
  area = 0.0
  for k in range(1, len(edges)):
    area += (k / len(nmes)) * (edges[k] - edges[k - 1])
  return area / threshold


def _auc_by_fine_trapezoid(nmes, threshold, num=400_001):
  grid = np.linspace(0.0, threshold, num)
  ced = np.searchsorted(np.sort(nmes), grid, side="right") / len(nmes)
  return np.sum((ced[1:] + ced[:-1]) / 2 * np.diff(grid)) / threshold


@pytest.mark.parametrize("threshold", [0.08, 0.1])
def test_auc_matches_two_other_integrations(threshold):
  rng = np.random.default_rng(4)
  nmes = rng.gamma(shape=4.0, scale=0.012, size=300)  # mean 0.048, some > 0.1
  exact = metrics.auc(nmes, threshold)
  assert exact == pytest.approx(_auc_by_rectangles(nmes, threshold), abs=1e-12)
  # Each of the 300 steps can cost at most one grid cell (2.5e-7 of 1).
  assert exact == pytest.approx(_auc_by_fine_trapezoid(nmes, threshold), abs=1e-6)


def test_ced_curve_values():
  # Same three faces as the AUC golden test, sampled at 0, 0.02, ..., 0.08.
  x, y = metrics.ced_curve([0.02, 0.04, 0.10], 0.08, num_points=5)
  np.testing.assert_allclose(x, [0.0, 0.02, 0.04, 0.06, 0.08])
  np.testing.assert_allclose(y, [0.0, 1 / 3, 2 / 3, 2 / 3, 2 / 3])
  # The trapezoid of a fine sampling approaches the exact AUC.
  rng = np.random.default_rng(5)
  nmes = rng.uniform(0.0, 0.12, size=50)
  x, y = metrics.ced_curve(nmes, 0.08, num_points=100_001)
  area = np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)) / 0.08
  assert area == pytest.approx(metrics.auc(nmes, 0.08), abs=1e-4)


def test_curve_metrics_reject_bad_input():
  with pytest.raises(ValueError, match="empty"):
    metrics.auc([], 0.08)
  with pytest.raises(ValueError, match="threshold"):
    metrics.failure_rate([0.1], 0.0)
  with pytest.raises(ValueError, match="NaN"):
    metrics.auc([0.1, np.nan], 0.08)
  with pytest.raises(ValueError, match="non-negative"):
    metrics.ced_curve([-0.1], 0.08)
  with pytest.raises(ValueError, match="1 dimensions"):
    metrics.failure_rate(np.zeros((2, 2)), 0.08)
  with pytest.raises(ValueError, match="num_points"):
    metrics.ced_curve([0.1], 0.08, num_points=1)
