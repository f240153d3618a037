"""The image's motion between two frames against similarities applied by hand.

The frames are smooth noise (Gaussian-filtered, so every window has texture in both
directions) moved by a known similarity with OpenCV's bilinear warp, whose positions are
rounded to 1/32 pixel: the warped frame is the exact one sampled up to 1/64 pixel off per
axis. Lucas-Kanade stops when a step is below 0.01 pixel and the similarity is fitted to
tens of points: a shift is carried to within a few hundredths of a pixel. A turn or a zoom
also deforms each window, which Lucas-Kanade takes for a shift: the pixels at its edge (r =
WINDOW / 2) move r (|angle| + |scale - 1|) apart from its centre. That moves the window's
estimate only through the texture's asymmetry, which averages out to a small share of it.
The bound: 0.05 px plus a tenth of that edge motion. A convention slip (pixel centres at
half-integers: 0.5 px) or a motion left out or read backwards (pixels) breaks it.
"""

import math

import cv2
import numpy as np
import pytest
from scipy import ndimage

from msm_jax.inference import image_motion

HW = (240, 320)


def bound(degrees: float, scale: float) -> float:
  """Pixels (module docstring)."""
  edge_motion = image_motion.WINDOW / 2 * (abs(math.radians(degrees)) + abs(scale - 1))
  return 0.05 + 0.1 * edge_motion


def texture(seed: int) -> np.ndarray:
  noise = ndimage.gaussian_filter(np.random.default_rng(seed).uniform(0, 255, HW), 2.0)
  return np.round((noise - noise.min()) / np.ptp(noise) * 255).astype(np.uint8)


def similarity(degrees: float, scale: float, shift, about) -> np.ndarray:
  """[3, 3] turning by ``degrees`` and scaling about the point ``about``, then shifting."""
  angle = math.radians(degrees)
  turn = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
  matrix = np.eye(3)
  matrix[:2, :2] = turn
  matrix[:2, 2] = np.asarray(about) - turn @ np.asarray(about) + np.asarray(shift)
  return matrix


def moved(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
  """The frame whose pixel ``matrix @ p`` shows what ``image`` shows at p."""
  return cv2.warpAffine(
    image, matrix[:2], HW[::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
  )


def face_points() -> np.ndarray:
  """A 9 x 8 grid over the middle of the frame, where a face would be."""
  xs, ys = np.meshgrid(np.linspace(110, 210, 9), np.linspace(70, 170, 8))
  return np.stack([xs.ravel(), ys.ravel()], -1)


def carried(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
  return points @ matrix[:2, :2].T + matrix[:2, 2]


@pytest.mark.parametrize(
  "degrees, scale, shift",
  [(0.0, 1.0, (3.4, -1.7)), (4.0, 1.03, (-2.0, 1.5)), (-8.0, 1.06, (20.0, 8.0))],
)
@pytest.mark.parametrize("seed", [0, 8])
def test_a_known_similarity_is_recovered(degrees, scale, shift, seed):
  previous = texture(seed)
  truth = similarity(degrees, scale, shift, about=(160.0, 120.0))
  points = face_points()
  found = image_motion.similarity_between(previous, moved(previous, truth), points)
  assert found is not None
  error = np.linalg.norm(carried(found, points) - carried(truth, points), axis=-1)
  assert error.max() <= bound(degrees, scale), error.max()


def test_points_on_a_moving_occluder_do_not_pull_the_face():
  # A patch of other texture over a third of the points, moving 8 px right and 5 px down
  # while the face moves 2 px left: the points under it follow it, and disagree.
  previous, patch = texture(1), texture(2)
  truth = similarity(3.0, 1.02, (-2.0, 0.0), about=(160.0, 120.0))
  current = moved(previous, truth)
  previous = previous.copy()
  previous[60:180, 100:140] = patch[60:180, 100:140]
  current[65:185, 108:148] = patch[60:180, 100:140]
  points = face_points()
  # Under the patch in either frame, or within a window's reach (10 px) of it.
  covered = points[:, 0] < 160
  assert covered.mean() < 0.5
  found = image_motion.similarity_between(previous, current, points)
  assert found is not None
  clear = ~covered
  error = np.linalg.norm(carried(found, points[clear]) - carried(truth, points[clear]), axis=-1)
  assert error.max() <= bound(3.0, 1.02), error.max()


def test_a_cut_or_too_few_points_give_no_motion():
  points = face_points()
  assert image_motion.similarity_between(texture(3), texture(4), points) is None
  # A flat frame: nothing to follow.
  flat = np.full(HW, 128, np.uint8)
  assert image_motion.similarity_between(flat, flat, points) is None
  still = texture(5)
  assert image_motion.similarity_between(still, still, points[:5]) is None
  bad = points.copy()
  bad[0] = np.nan
  assert image_motion.similarity_between(still, still, bad) is None
  # The same frame twice: no motion, exactly.
  found = image_motion.similarity_between(still, still, points)
  np.testing.assert_allclose(found, np.eye(3), atol=1e-3)


def test_grey_is_the_luminance_of_rgb():
  rng = np.random.default_rng(6)
  frame = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
  expected = frame.astype(np.float64) @ np.array([0.299, 0.587, 0.114])  # ITU-R BT.601
  assert np.abs(image_motion.grey(frame) - expected).max() <= 0.5 + 1e-6
