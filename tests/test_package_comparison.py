"""package_comparison: the paired differences of two packages' per-face NME, by hand."""

import numpy as np
import pytest

from msm_jax.core import landmarks
from msm_jax.eval import package_comparison

SCHEME = landmarks.get_scheme("300w")


def _faces(count=4):
  """Faces of different sizes: a ring of 68 points, the outer eye corners (36, 45) on it."""
  angles = np.linspace(0, 2 * np.pi, 68, endpoint=False)
  ring = np.stack([np.cos(angles), np.sin(angles)], -1)
  return np.stack([100 + (20 + 10 * k) * ring for k in range(count)])


def _run(predicted, reliable=None):
  reliable = np.ones(predicted.shape[:2], bool) if reliable is None else reliable
  return {"predicted": predicted, "reliable": reliable}


def test_compare_hand_computed_regions_missing_faces_and_flags():
  truth = _faces()
  interocular = np.linalg.norm(truth[:, 36] - truth[:, 45], axis=-1)
  contour = np.zeros(68, bool)
  contour[list(SCHEME.contour_indices)] = True
  model = truth.copy()
  model[:, contour] += [1.0, 0.0]  # one pixel off on the contour only
  baseline = truth.copy()
  baseline[3] = np.nan  # the baseline missed face 3
  occluded = np.zeros((4, 68), bool)
  occluded[:, :3] = True  # three contour landmarks hidden on every face
  model_reliable = ~occluded.copy()
  model_reliable[:, 50] = False  # one false alarm per face
  row = package_comparison.compare(
    _run(model, model_reliable), _run(baseline), truth, occluded, SCHEME
  )
  assert (row["faces"], row["both_found"]) == (4, 3)
  per_face = 100 / interocular[:3]  # the contour's NME: one pixel over the distance
  expected = {
    "contour": per_face,
    "features": np.zeros(3),
    "face": per_face * contour.sum() / 68,
    "hidden": per_face,
  }
  for region, values in expected.items():
    got = row[region]
    assert got["baseline"] == 0.0
    assert got["model"] == pytest.approx(values.mean()) == pytest.approx(got["difference"])
    assert got["standard_error"] == pytest.approx(values.std(ddof=1) / np.sqrt(3))
  # Model: 3 hidden found of 3, 1 false alarm of 4 flagged per face; the baseline flags none.
  assert row["flags"]["model"] == [pytest.approx(0.75), 1.0]
  assert row["flags"]["baseline"] == [None, 0.0]


def test_compare_without_faces_found_and_without_occlusion():
  truth = _faces(2)
  row = package_comparison.compare(
    _run(truth), _run(np.full_like(truth, np.nan)), truth, None, SCHEME
  )
  assert row == {"faces": 2, "both_found": 0}
  row = package_comparison.compare(_run(truth + 0.5), _run(truth), truth, None, SCHEME)
  assert "hidden" not in row and "flags" not in row
  assert row["face"]["difference"] > 0


def test_markdown_shows_each_region_with_its_paired_difference():
  truth = _faces()
  row = package_comparison.compare(_run(truth + 1.0), _run(truth), truth, None, SCHEME)
  table = package_comparison.markdown({"landmark box": row})
  line = table.splitlines()[-1]
  face = row["face"]
  assert line.startswith("| landmark box | 4/4 | ")
  assert f"{face['model']:.2f} / 0.00 (+{face['difference']:.2f} +- " in line
