"""Tests for msm_jax/core/heatmaps.py: targets, decoding (Eq. 8), scores (Eq. 9), Algorithm 2
lines 4-10.

References are independent of the module: closed forms by hand, NumPy loops, SciPy.
Run with ``-s`` to see the measured decoding errors.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

from msm_jax.core import heatmaps as hm

SIGMA = 1.5  # config.hourglass.sigma
SIZE = 64  # config.data.heatmap_size
METHODS = ("argmax", "quarter", "dark", "soft_argmax")


def _numpy_gaussian(landmarks, height, width, sigma):
  """Closed form, one pixel at a time."""
  batch, num_landmarks, _ = landmarks.shape
  out = np.zeros((batch, height, width, num_landmarks), np.float64)
  for b in range(batch):
    for point in range(num_landmarks):
      x, y = landmarks[b, point]
      for i in range(height):
        for j in range(width):
          out[b, i, j, point] = math.exp(-((j - x) ** 2 + (i - y) ** 2) / (2 * sigma**2))
  return out


def _random_centres(rng, batch, num_landmarks, margin=4.0):
  return rng.uniform(margin, SIZE - 1 - margin, size=(batch, num_landmarks, 2)).astype(np.float32)


def _mean_error(decoded, truth):
  return float(np.mean(np.linalg.norm(np.asarray(decoded, np.float64) - truth, axis=-1)))


# ---------------------------------------------------------------- coordinates


def test_crop_to_heatmap_hand_values():
  # 128 -> 64: x_hm = (x + 0.5) / 2 - 0.5.
  crop = np.array([[0.0, 1.0], [-0.5, 127.5], [63.5, 127.0]], np.float32)
  expected = np.array([[-0.25, 0.25], [-0.5, 63.5], [31.5, 63.25]], np.float32)
  np.testing.assert_allclose(hm.crop_to_heatmap(crop, 128, 64), expected, atol=1e-6)
  # Heatmap pixel 0 covers crop pixels 0 and 1, whose centres average to 0.5.
  np.testing.assert_allclose(hm.heatmap_to_crop(np.zeros((1, 2)), 128, 64), [[0.5, 0.5]])
  # Non-square: crop (h=100, w=200) -> heatmap (50, 50); x scales by 1/4, y by 1/2.
  # x: (10 + 0.5) / 4 - 0.5 = 2.125;  y: (10 + 0.5) / 2 - 0.5 = 4.75.
  np.testing.assert_allclose(
    hm.crop_to_heatmap([[10.0, 10.0]], (100, 200), (50, 50)), [[2.125, 4.75]], atol=1e-6
  )


def test_crop_heatmap_round_trip():
  points = np.random.default_rng(0).uniform(-10, 140, size=(3, 68, 2)).astype(np.float32)
  there = hm.crop_to_heatmap(points, 128, 64)
  np.testing.assert_allclose(hm.heatmap_to_crop(there, 128, 64), points, atol=1e-4)


# ---------------------------------------------------------------- targets


def test_gaussian_matches_closed_form():
  # Non-square map, an on-pixel landmark, sub-pixel ones and one slightly outside the map.
  landmarks = np.array(
    [[[3.0, 2.0], [1.3, 3.6], [-1.2, 0.4]], [[6.49, 4.1], [0.0, 0.0], [2.5, -2.0]]], np.float32
  )
  ours = np.asarray(hm.gaussian_heatmaps(landmarks, (5, 7), 1.3))
  assert ours.shape == (2, 5, 7, 3) and ours.dtype == np.float32
  np.testing.assert_allclose(ours, _numpy_gaussian(landmarks, 5, 7, 1.3), rtol=1e-5, atol=1e-7)
  assert ours[0, 2, 3, 0] == 1.0  # an on-pixel landmark peaks at exactly 1
  # By hand: pixel (row 4, col 2) for the landmark (1.3, 3.6): d^2 = 0.49 + 0.16 = 0.65.
  assert ours[0, 4, 2, 1] == pytest.approx(math.exp(-0.65 / (2 * 1.3**2)), rel=1e-6)


def test_far_and_missing_landmarks_give_zero_maps():
  # Margin 3 * 1.5 = 4.5 beyond the map edge -0.5: x = -5.0 is still valid, -5.01 is not.
  landmarks = np.array(
    [[[-5.0, 3.0], [-5.01, 3.0], [3.0, 12.5 + 4.5], [3.0, 17.01], [np.nan, 2.0], [-40.0, 80.0]]],
    np.float32,
  )
  mask = np.asarray(hm.heatmap_valid_mask(landmarks, (13, 9), SIGMA))
  np.testing.assert_array_equal(mask, [[True, False, True, False, False, False]])
  maps = np.asarray(hm.gaussian_heatmaps(landmarks, (13, 9), SIGMA))
  assert np.all(np.isfinite(maps))
  np.testing.assert_array_equal(maps[..., ~mask[0]], 0.0)
  valid_reference = _numpy_gaussian(landmarks[:, mask[0]], 13, 9, SIGMA)
  np.testing.assert_allclose(maps[..., mask[0]], valid_reference, rtol=1e-5, atol=1e-12)
  assert maps[0, 3, 0, 0] > 0  # the tail of a valid off-map landmark is kept


def test_spatial_softmax_matches_scipy():
  logits = np.random.default_rng(1).normal(size=(2, 4, 5, 3)).astype(np.float32)
  expected = scipy.special.softmax(logits, axis=(1, 2))
  np.testing.assert_allclose(hm.spatial_softmax(logits), expected, rtol=1e-5)


# ---------------------------------------------------------------- decoding


def test_argmax_returns_column_row():
  maps = np.zeros((1, 4, 6, 2), np.float32)
  maps[0, 3, 1, 0] = 2.0  # row 3, column 1
  maps[0, 0, 5, 1] = 0.5  # row 0, column 5
  maps[0, 2, 2, 1] = -1.0
  peaks = hm.heatmap_argmax(maps)
  assert peaks.dtype == jnp.int32
  np.testing.assert_array_equal(peaks, [[[1, 3], [5, 0]]])


def test_quarter_hand_case():
  # Peak at (x=2, y=2); right neighbour 0.8 > left 0.5, upper 0.7 > lower 0.6:
  # x -> 2 + 0.25, y -> 2 - 0.25.
  maps = np.zeros((1, 5, 5, 1), np.float32)
  maps[0, 2, 2, 0], maps[0, 2, 3, 0], maps[0, 2, 1, 0] = 1.0, 0.8, 0.5
  maps[0, 1, 2, 0], maps[0, 3, 2, 0] = 0.7, 0.6
  np.testing.assert_allclose(hm.decode_heatmaps(maps, "quarter"), [[[2.25, 1.75]]])


def test_dark_is_exact_on_a_gaussian():
  # log of a Gaussian is a quadratic: one Newton step lands on the centre.
  landmarks = np.array([[[10.3, 20.7], [33.49, 5.51], [40.0, 41.0]]], np.float32)
  maps = hm.gaussian_heatmaps(landmarks, SIZE, SIGMA)
  np.testing.assert_allclose(hm.decode_heatmaps(maps, "dark"), landmarks, atol=1e-4)


def test_dark_uses_the_cross_derivative():
  # A correlated Gaussian (covariance [[2, 1.2], [1.2, 1.5]], rendered with NumPy) has a
  # quadratic log with an xy term: the Newton step is exact only with d2/dxdy included.
  precision = np.linalg.inv(np.array([[2.0, 1.2], [1.2, 1.5]]))
  centres = np.array([[10.2, 12.3], [20.4, 30.1], [40.1, 8.35]])
  rows, columns = np.mgrid[0:48, 0:48]
  maps = np.zeros((1, 48, 48, 3), np.float32)
  for point, (x, y) in enumerate(centres):
    d = np.stack([columns - x, rows - y], axis=-1)
    maps[0, ..., point] = np.exp(-0.5 * np.einsum("hwi,ij,hwj->hw", d, precision, d))
  np.testing.assert_allclose(hm.decode_heatmaps(maps, "dark")[0], centres, atol=1e-3)


def test_dark_follows_a_shifted_gaussian_to_first_order():
  """The derivative the differentiable pipeline relies on: moving a Gaussian map's centre by
  d moves DARK's decoded point by d (the step is exact on log-quadratics), so the gradient
  of the decoded point along that change of the map values is the identity."""
  with jax.enable_x64(True):
    centres = jnp.asarray([[[10.3, 20.7], [33.2, 15.6]]])

    def decoded_from_centres(points):
      return hm.decode_heatmaps(hm.gaussian_heatmaps(points, SIZE, SIGMA), "dark")

    jacobian = jax.jacfwd(decoded_from_centres)(centres).reshape(4, 4)
    np.testing.assert_allclose(jacobian, np.eye(4), atol=1e-9)


@pytest.mark.parametrize("method, blur", [("dark", None), ("dark", 1.5), ("soft_argmax", None)])
def test_decoding_gradients_match_finite_differences(method, blur):
  """Eq. 8 relaxed (the integer peak fixed, the sub-pixel step a smooth function of the map
  values): check_grads in float64 on noisy Gaussians whose steps stay inside the clip."""
  from jax.test_util import check_grads

  rng = np.random.default_rng(7)
  with jax.enable_x64(True):
    centres = np.array([[[10.3, 20.7], [33.2, 15.6], [21.8, 40.4]]])
    maps = np.asarray(hm.gaussian_heatmaps(jnp.asarray(centres), SIZE, SIGMA))
    maps = jnp.asarray(maps + 0.01 * rng.random(maps.shape))
    decode = lambda values: hm.decode_heatmaps(values, method, blur_sigma=blur)  # noqa: E731
    # |f| ~ 40 px: float64 rounding ~40 x 2e-16 / 1e-6 = 1e-8, far inside 1e-6.
    check_grads(decode, (maps,), order=1, modes=("fwd", "rev"), eps=1e-6, atol=1e-6, rtol=1e-6)
    tangent = jnp.asarray(rng.normal(size=maps.shape))
    assert float(jnp.abs(jax.jvp(decode, (maps,), (tangent,))[1]).max()) > 1e-3


def test_score_gradients_match_finite_differences():
  """Eq. 9's scores, normalised by the face's best, as functions of the map values."""
  from jax.test_util import check_grads

  rng = np.random.default_rng(8)
  with jax.enable_x64(True):
    centres = np.array([[[10.3, 20.7], [33.2, 15.6], [21.8, 40.4]]])
    maps = np.asarray(hm.gaussian_heatmaps(jnp.asarray(centres), SIZE, SIGMA))
    maps = jnp.asarray(maps * np.array([1.0, 0.6, 0.3]) + 0.01 * rng.random(maps.shape))
    peaks = hm.heatmap_argmax(maps)
    scores = lambda values: hm.normalise_scores(hm.landmark_scores(values, peaks, 1))  # noqa: E731
    check_grads(scores, (maps,), order=1, modes=("fwd", "rev"), eps=1e-6, atol=1e-8, rtol=1e-6)


def test_decoding_accuracy_on_clean_maps():
  rng = np.random.default_rng(2)
  centres = _random_centres(rng, 4, 64)
  maps = hm.gaussian_heatmaps(centres, SIZE, SIGMA)
  errors = {
    method: _mean_error(hm.decode_heatmaps(maps, method), centres)
    for method in ("argmax", "quarter", "dark")
  }
  errors["dark+blur"] = _mean_error(hm.decode_heatmaps(maps, "dark", blur_sigma=SIGMA), centres)
  # soft_argmax is for logits of a spatial-softmax network: the log of the target.
  errors["soft_argmax(log)"] = _mean_error(
    hm.decode_heatmaps(jnp.log(maps), "soft_argmax"), centres
  )
  print(
    "\nmean decoding error, clean 64x64 maps, sigma 1.5 (px):",
    {k: round(v, 5) for k, v in errors.items()},
  )
  # Uniform sub-pixel offsets: E|offset| over [-0.5, 0.5]^2 = 0.3826 for argmax; quarter
  # halves the per-axis error (0.25 -> 0.125), i.e. ~0.19.
  assert 0.34 < errors["argmax"] < 0.42
  assert errors["quarter"] < 0.7 * errors["argmax"]
  assert errors["dark"] < 1e-3
  assert errors["dark+blur"] < 1e-2
  assert errors["soft_argmax(log)"] < 1e-2


def test_decoding_accuracy_with_noise():
  rng = np.random.default_rng(3)
  centres = _random_centres(rng, 4, 64)
  maps = hm.gaussian_heatmaps(centres, SIZE, SIGMA)
  noisy = maps + 0.05 * rng.standard_normal(maps.shape).astype(np.float32)
  errors = {
    method: _mean_error(hm.decode_heatmaps(noisy, method), centres)
    for method in ("argmax", "quarter", "dark")
  }
  errors["dark+blur"] = _mean_error(hm.decode_heatmaps(noisy, "dark", blur_sigma=SIGMA), centres)
  print("\nmean decoding error, noise std 0.05 (px):", {k: round(v, 4) for k, v in errors.items()})
  assert errors["quarter"] < 0.8 * errors["argmax"]
  assert errors["dark"] < errors["quarter"]
  assert errors["dark+blur"] < 0.5 * errors["dark"]
  assert errors["dark+blur"] < 0.1


def test_border_flat_and_negative_maps_decode_finitely():
  height, width = 9, 11
  landmarks = np.array([[[0.0, 0.0], [10.0, 8.0], [-0.4, 4.2], [5.3, 8.45]]], np.float32)
  peaked = np.asarray(hm.gaussian_heatmaps(landmarks, (height, width), SIGMA))
  zeros = np.zeros((1, height, width, 2), np.float32)
  flat_negative = np.full((1, height, width, 2), -0.3, np.float32)
  negative_with_peak = peaked[..., :2] - 0.6  # neighbours of the peak are < 0
  maps = np.concatenate([peaked, zeros, flat_negative, negative_with_peak], axis=-1)
  for method in METHODS:
    for blur in (None, SIGMA):
      decoded = np.asarray(hm.decode_heatmaps(maps, method, blur_sigma=blur))
      assert np.all(np.isfinite(decoded)), (method, blur)
      assert np.all(decoded >= 0) and np.all(decoded[..., 0] <= width - 1), (method, blur)
      assert np.all(decoded[..., 1] <= height - 1), (method, blur)
  for method in ("argmax", "quarter", "dark"):
    decoded = np.asarray(hm.decode_heatmaps(maps, method))
    # Corners stay on their pixel; a border axis is not refined (no second neighbour).
    np.testing.assert_allclose(decoded[0, :2], [[0.0, 0.0], [10.0, 8.0]], atol=1e-6)
    assert decoded[0, 2, 0] == 0.0 and decoded[0, 3, 1] == 8.0
    np.testing.assert_allclose(decoded[0, 4:8], 0.0)  # flat maps: the first pixel
  dark = np.asarray(hm.decode_heatmaps(maps, "dark"))
  # The interior axis of a border peak is still refined exactly.
  assert dark[0, 2, 1] == pytest.approx(4.2, abs=1e-4)
  assert dark[0, 3, 0] == pytest.approx(5.3, abs=1e-4)


# ---------------------------------------------------------------- scores


def _numpy_scores(maps, peaks, radius):
  """Eq. 9 with explicit loops; out-of-map cells contribute 0."""
  batch, height, width, num_landmarks = maps.shape
  out = np.zeros((batch, num_landmarks))
  for b in range(batch):
    for point in range(num_landmarks):
      x, y = peaks[b, point]
      total = 0.0
      for k in range(x - radius, x + radius + 1):
        for t in range(y - radius, y + radius + 1):
          if 0 <= k < width and 0 <= t < height:
            total += maps[b, t, k, point]
      out[b, point] = total / (2 * radius + 1) ** 2
  return out


@pytest.mark.parametrize("radius", [0, 1, 2])
def test_landmark_scores_match_numpy_loop(radius):
  rng = np.random.default_rng(4)
  maps = rng.normal(size=(2, 6, 7, 5)).astype(np.float32)
  peaks = np.array(
    [[[0, 0], [6, 5], [3, 2], [6, 0], [1, 4]], [[2, 3], [0, 5], [5, 1], [3, 3], [6, 2]]], np.int32
  )
  np.testing.assert_allclose(
    hm.landmark_scores(maps, peaks, radius),
    _numpy_scores(maps, peaks, radius),
    rtol=1e-5,
    atol=1e-6,
  )


def test_landmark_score_hand_case():
  # A map of ones, r = 1: 9 cells inside -> 1; at a corner 4 of 9 cells are inside -> 4/9.
  maps = np.ones((1, 5, 5, 2), np.float32)
  scores = hm.landmark_scores(maps, np.array([[[2, 2], [0, 4]]], np.int32), 1)
  np.testing.assert_allclose(scores, [[1.0, 4.0 / 9.0]], rtol=1e-6)


def test_normalise_scores_hand_values():
  scores = np.array(
    [[0.2, 0.5, 0.1, -0.05], [0.0, 0.0, 0.0, 0.0], [-1.0, -2.0, -0.5, -3.0]], np.float32
  )
  # Row 0 divided by its best, 0.5; rows without a positive score become all zero.
  expected = [[0.4, 1.0, 0.2, -0.1], [0.0] * 4, [0.0] * 4]
  normalised = np.asarray(hm.normalise_scores(scores))
  assert np.all(np.isfinite(normalised))
  np.testing.assert_allclose(normalised, expected, rtol=1e-6)


def test_reliable_mask_is_strict_and_per_landmark():
  normalised = np.array([[0.41, 0.4, 0.6, 0.61], [1.0, 0.0, 0.59, 0.9]], np.float32)
  thresholds = np.array([0.4, 0.4, 0.6, 0.6], np.float32)  # contour, contour, feature, feature
  np.testing.assert_array_equal(
    hm.reliable_mask(normalised, thresholds),
    [[True, False, False, True], [True, False, False, True]],
  )
  np.testing.assert_array_equal(
    hm.reliable_mask(normalised, 0.5), [[False, False, True, True], [True, False, True, True]]
  )


# ---------------------------------------------------------------- jit and errors


def test_everything_works_under_jit():
  rng = np.random.default_rng(5)
  centres = _random_centres(rng, 2, 3)
  sigma = jnp.float32(SIGMA)  # traced sigma is allowed for targets
  render = jax.jit(lambda points, s: hm.gaussian_heatmaps(points, SIZE, s))
  maps = render(centres, sigma)
  np.testing.assert_allclose(maps, hm.gaussian_heatmaps(centres, SIZE, SIGMA), atol=1e-6)

  @jax.jit
  def algorithm_2_lines_3_to_10(maps):
    locations = hm.decode_heatmaps(maps, "dark", blur_sigma=SIGMA)
    peaks = hm.heatmap_argmax(maps)
    scores = hm.normalise_scores(hm.landmark_scores(maps, peaks, 1))
    return hm.heatmap_to_crop(locations, 128, SIZE), scores, hm.reliable_mask(scores, 0.5)

  crop_points, scores, reliable = algorithm_2_lines_3_to_10(maps)
  np.testing.assert_allclose(crop_points, hm.heatmap_to_crop(centres, 128, SIZE), atol=2e-2)
  eager_scores = hm.normalise_scores(hm.landmark_scores(maps, hm.heatmap_argmax(maps), 1))
  np.testing.assert_allclose(scores, eager_scores, rtol=1e-6)
  # Clean peaks differ only by their sub-pixel offsets: all within 10 % of the best.
  assert (
    np.all(reliable) and np.all(scores > 0.9) and np.allclose(scores.max(axis=-1), 1.0, atol=1e-6)
  )
  for method in METHODS:
    jitted = jax.jit(lambda m, method=method: hm.decode_heatmaps(m, method))
    np.testing.assert_allclose(jitted(maps), hm.decode_heatmaps(maps, method), atol=1e-5)
  np.testing.assert_allclose(
    jax.jit(hm.crop_to_heatmap, static_argnums=(1, 2))(centres, 128, 64),
    hm.crop_to_heatmap(centres, 128, 64),
  )


@pytest.mark.parametrize(
  "call, message",
  [
    (lambda: hm.crop_to_heatmap(np.zeros((3, 3)), 128, 64), "points"),
    (lambda: hm.crop_to_heatmap(np.zeros((3, 2)), 0, 64), "crop_size"),
    (lambda: hm.gaussian_heatmaps(np.zeros((4, 2)), 64, SIGMA), "landmarks"),
    (lambda: hm.gaussian_heatmaps(np.zeros((1, 4, 2)), (64, 64, 1), SIGMA), "size"),
    (lambda: hm.gaussian_heatmaps(np.zeros((1, 4, 2)), 64, 0.0), "sigma"),
    (lambda: hm.decode_heatmaps(np.zeros((8, 8, 4)), "dark"), "heatmaps"),
    (lambda: hm.decode_heatmaps(np.zeros((1, 8, 8, 4)), "centroid"), "method"),
    (lambda: hm.decode_heatmaps(np.zeros((1, 8, 8, 4)), "dark", blur_sigma=-1.0), "blur_sigma"),
    (lambda: hm.landmark_scores(np.zeros((1, 8, 8, 4)), np.zeros((1, 3, 2), np.int32), 1), "peaks"),
    (lambda: hm.landmark_scores(np.zeros((1, 8, 8, 4)), np.zeros((1, 4, 2)), 1), "peaks"),
    (
      lambda: hm.landmark_scores(np.zeros((1, 8, 8, 4)), np.zeros((1, 4, 2), np.int32), -1),
      "radius",
    ),
    (lambda: hm.normalise_scores(np.zeros(4)), "scores"),
    (lambda: hm.reliable_mask(np.zeros((2, 4)), np.zeros(3)), "thresholds"),
  ],
)
def test_bad_input_raises_clear_errors(call, message):
  with pytest.raises(ValueError, match=message):
    call()
