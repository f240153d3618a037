"""Tests for msm_jax.core.geometry: theta <-> pixel matrices, affine algebra, point-set fits,
crops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msm_jax.core import geometry
from msm_jax.core.sampler import warp


def random_affine(rng, batch_shape=()):
  """Well-conditioned random [..., 2, 3] affine maps."""
  linear = np.eye(2) + 0.3 * rng.standard_normal(batch_shape + (2, 2))
  shift = rng.uniform(-5, 5, batch_shape + (2, 1))
  return np.concatenate([linear, shift], axis=-1)


def similarity(scale, angle, shift):
  cos, sin = scale * np.cos(angle), scale * np.sin(angle)
  return np.array([[cos, -sin, shift[0]], [sin, cos, shift[1]], [0.0, 0.0, 1.0]])


def test_pixel_normalised_matrices_hand_values():
  to_normalised = geometry.pixel_to_normalised_matrix(2, 4)
  # Width 4: the left edge x=-0.5 -> -1, pixel 0's centre -> (2*0+1)/4-1 = -0.75,
  # the right edge x=3.5 -> +1. Height 2: y=0 -> -0.5, y=1.5 -> +1.
  points = np.array([[-0.5, 1.5], [0.0, 0.0], [3.5, -0.5]])
  expected = np.array([[-1.0, 1.0], [-0.75, -0.5], [1.0, -1.0]])
  np.testing.assert_allclose(geometry.apply_affine(points, to_normalised), expected)
  to_pixels = geometry.normalised_to_pixel_matrix(2, 4)
  np.testing.assert_allclose(to_pixels @ to_normalised, np.eye(3), atol=1e-15)


def test_identity_theta_between_different_sizes_hand_computed():
  # Identity theta from a 2x2 output onto a 4 (H) x 8 (W) input: normalised coords
  # are shared, so output pixel centre (0, 0) at u = v = -0.5 lands on input
  # x = ((-0.5 + 1) * 8 - 1) / 2 = 1.5, y = ((-0.5 + 1) * 4 - 1) / 2 = 0.5, and
  # output centre (1, 1) (u = v = 0.5) on x = 5.5, y = 2.5: x_in = 4 x_out + 1.5,
  # y_in = 2 y_out + 0.5. The output's corner (-0.5, -0.5) hits the input's (-0.5, -0.5),
  # and (1.5, 1.5) the input's (7.5, 3.5).
  matrix = geometry.theta_to_pixel_matrix(np.eye(2, 3), in_hw=(4, 8), out_hw=(2, 2))
  np.testing.assert_allclose(matrix, [[4.0, 0.0, 1.5], [0.0, 2.0, 0.5], [0.0, 0.0, 1.0]])
  corners = np.array([[0.0, 0.0], [1.0, 1.0], [-0.5, -0.5], [1.5, 1.5]])
  np.testing.assert_allclose(
    geometry.apply_affine(corners, matrix), [[1.5, 0.5], [5.5, 2.5], [-0.5, -0.5], [7.5, 3.5]]
  )


def test_theta_pixel_round_trip_numpy_and_jax():
  theta = random_affine(np.random.default_rng(0), (3, 2))
  matrix = geometry.theta_to_pixel_matrix(theta, (30, 40), (16, 12))
  assert matrix.shape == (3, 2, 3, 3) and isinstance(matrix, np.ndarray)
  np.testing.assert_allclose(
    geometry.pixel_matrix_to_theta(matrix, (30, 40), (16, 12)), theta, atol=1e-12
  )

  @jax.jit
  def round_trip(theta):
    return geometry.pixel_matrix_to_theta(
      geometry.theta_to_pixel_matrix(theta, (30, 40), (16, 12)), (30, 40), (16, 12)
    )

  jax_theta = jnp.asarray(theta, jnp.float32)
  result = round_trip(jax_theta)
  assert isinstance(result, jax.Array) and result.dtype == jnp.float32
  np.testing.assert_allclose(result, theta, atol=1e-5)


def test_pixel_matrix_agrees_with_the_sampler():
  # The pixel matrix says output pixel (i, j) reads input position M (j, i); an
  # integer shift of the input makes that read exact: out[i, j] == image[i + 2, j + 1].
  image = np.random.default_rng(1).random((1, 7, 9, 1)).astype(np.float32)
  shift = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 2.0], [0.0, 0.0, 1.0]])
  theta = geometry.pixel_matrix_to_theta(shift, in_hw=(7, 9), out_hw=(4, 5))
  warped = np.asarray(warp(image, theta[None].astype(np.float32), (4, 5)))
  np.testing.assert_allclose(warped, image[:, 2:6, 1:6], atol=1e-5)


def test_invert_affine_matches_linalg_inverse():
  matrices = random_affine(np.random.default_rng(2), (5,))
  inverse = geometry.invert_affine(matrices)
  assert inverse.shape == (5, 2, 3)
  expected = np.linalg.inv(geometry.to_homogeneous(matrices))
  np.testing.assert_allclose(geometry.to_homogeneous(inverse), expected, atol=1e-12)
  square = geometry.invert_affine(geometry.to_homogeneous(matrices))
  np.testing.assert_allclose(square, expected, atol=1e-12)
  np.testing.assert_allclose(
    geometry.compose(matrices, inverse), np.tile(np.eye(2, 3), (5, 1, 1)), atol=1e-12
  )
  np.testing.assert_allclose(
    geometry.compose(square, matrices), np.tile(np.eye(3), (5, 1, 1)), atol=1e-12
  )


def test_compose_is_outer_after_inner():
  rng = np.random.default_rng(3)
  outer, inner = random_affine(rng, (4,)), random_affine(rng, (4,))
  points = rng.uniform(-10, 10, (4, 6, 2))
  chained = geometry.apply_affine(geometry.apply_affine(points, inner), outer)
  np.testing.assert_allclose(
    geometry.apply_affine(points, geometry.compose(outer, inner)), chained, atol=1e-10
  )
  # apply_affine itself against an explicit per-point formula.
  x, y = points[0, 2]
  m = outer[0]
  np.testing.assert_allclose(
    geometry.apply_affine(points, outer)[0, 2],
    [m[0, 0] * x + m[0, 1] * y + m[0, 2], m[1, 0] * x + m[1, 1] * y + m[1, 2]],
  )


def lstsq_similarity(src, dst, weights):
  """Independent reference: solve for (a, b, tx, ty) with np.linalg.lstsq."""
  rows_x = np.stack([src[:, 0], -src[:, 1], np.ones(len(src)), np.zeros(len(src))], 1)
  rows_y = np.stack([src[:, 1], src[:, 0], np.zeros(len(src)), np.ones(len(src))], 1)
  design = np.concatenate([rows_x, rows_y]) * np.sqrt(np.tile(weights, 2))[:, None]
  target = np.concatenate([dst[:, 0], dst[:, 1]]) * np.sqrt(np.tile(weights, 2))
  a, b, tx, ty = np.linalg.lstsq(design, target, rcond=None)[0]
  return np.array([[a, -b, tx], [b, a, ty], [0.0, 0.0, 1.0]])


def test_similarity_recovers_known_transform_from_noisy_points():
  rng = np.random.default_rng(4)
  true = similarity(1.3, np.deg2rad(25.0), (12.0, -7.0))
  src = rng.uniform(0, 100, (68, 2))
  noise_sigma = 0.5
  dst = geometry.apply_affine(src, true) + rng.normal(0, noise_sigma, (68, 2))
  fitted = geometry.estimate_similarity(src, dst)
  # The least-squares a = s cos, b = s sin have standard deviation
  # sigma / sqrt(sum |src - mean|^2) = 0.5 / sqrt(68 * 2 * 100^2 / 12) ~ 1.5e-3;
  # the shift's error is dominated by that times |mean src| ~ 70: ~0.1 px.
  # Tolerances are ~5 standard deviations.
  np.testing.assert_allclose(fitted[:2, :2], true[:2, :2], atol=8e-3)
  np.testing.assert_allclose(fitted[:2, 2], true[:2, 2], atol=0.5)
  np.testing.assert_allclose(fitted, lstsq_similarity(src, dst, np.ones(68)), atol=1e-9)


def test_similarity_never_reflects():
  rng = np.random.default_rng(5)
  src = rng.uniform(-1, 1, (10, 2))
  mirrored = src * np.array([-1.0, 1.0])
  fitted = geometry.estimate_similarity(src, mirrored)
  assert np.linalg.det(fitted[:2, :2]) >= 0
  np.testing.assert_allclose(fitted, lstsq_similarity(src, mirrored, np.ones(10)), atol=1e-12)


def test_affine_exact_on_noise_free_points():
  rng = np.random.default_rng(6)
  true = geometry.to_homogeneous(random_affine(rng, (3,)))
  src = rng.uniform(-50, 50, (3, 5, 2))
  fitted = geometry.estimate_affine(src, geometry.apply_affine(src, true))
  np.testing.assert_allclose(fitted, true, atol=1e-10)


@pytest.mark.parametrize("estimate", [geometry.estimate_similarity, geometry.estimate_affine])
def test_zero_weight_outlier_is_ignored(estimate):
  rng = np.random.default_rng(7)
  src = rng.uniform(0, 10, (8, 2))
  dst = geometry.apply_affine(src, similarity(0.8, 0.3, (1.0, 2.0))) + rng.normal(0, 0.1, (8, 2))
  with_outlier_src = np.concatenate([src, [[5.0, 5.0]]])
  with_outlier_dst = np.concatenate([dst, [[500.0, -300.0]]])
  weights = np.concatenate([np.ones(8), [0.0]])
  np.testing.assert_allclose(
    estimate(with_outlier_src, with_outlier_dst, weights), estimate(src, dst), atol=1e-10
  )
  # With weight 1 the outlier drags the fit far away, so the test above can fail.
  dragged = estimate(with_outlier_src, with_outlier_dst)
  assert np.abs(dragged - estimate(src, dst)).max() > 1.0


def test_weighted_similarity_matches_weighted_lstsq():
  rng = np.random.default_rng(8)
  src, dst = rng.uniform(0, 10, (12, 2)), rng.uniform(0, 10, (12, 2))
  weights = rng.uniform(0.1, 3.0, 12)
  np.testing.assert_allclose(
    geometry.estimate_similarity(src, dst, weights), lstsq_similarity(src, dst, weights), atol=1e-10
  )


def test_numpy_and_jax_paths_agree():
  rng = np.random.default_rng(9)
  src = rng.uniform(0, 10, (2, 7, 2))
  dst = rng.uniform(0, 10, (2, 7, 2))
  weights = rng.uniform(0.1, 1.0, (2, 7))
  boxes = np.array([[3.0, 4.0, 40.0, 45.0], [-2.0, 0.5, 20.0, 22.0]])
  theta = random_affine(rng, (2,))
  cases = [
    (lambda s, d, w: geometry.estimate_similarity(s, d, w), (src, dst, weights)),
    (lambda s, d, w: geometry.estimate_affine(s, d, w), (src, dst, weights)),
    (geometry.invert_affine, (theta,)),
    (lambda t: geometry.theta_to_pixel_matrix(t, (20, 30), (8, 8)), (theta,)),
    (lambda b: geometry.crop_theta(b, (50, 60), 16), (boxes,)),
    (lambda p, m: geometry.apply_affine(p, m), (src, theta)),
  ]
  for function, args in cases:
    expected = function(*args)
    assert isinstance(expected, np.ndarray)
    result = jax.jit(function)(*(jnp.asarray(arg, jnp.float32) for arg in args))
    assert isinstance(result, jax.Array)
    np.testing.assert_allclose(result, expected, rtol=1e-4, atol=1e-4)


def test_degenerate_fits_raise():
  point = np.zeros((1, 2))
  with pytest.raises(ValueError, match="at least 2 points"):
    geometry.estimate_similarity(point, point)
  with pytest.raises(ValueError, match="at least 3 points"):
    geometry.estimate_affine(np.zeros((2, 2)), np.zeros((2, 2)))
  src = np.random.default_rng(10).random((5, 2))
  with pytest.raises(ValueError, match="all zero"):
    geometry.estimate_similarity(src, src, np.zeros(5))
  with pytest.raises(ValueError, match="coincide"):
    geometry.estimate_similarity(np.full((4, 2), 3.0), src[:4])
  collinear = np.stack([np.arange(5.0), 2 * np.arange(5.0) + 1], axis=1)
  with pytest.raises(ValueError, match="collinear"):
    geometry.estimate_affine(collinear, src)
  with pytest.raises(ValueError, match="weights"):
    geometry.estimate_affine(src, src, np.ones(4))


def test_crop_matrix_box_edges_hand_computed():
  # Box x in [10, 30], y in [20, 60] onto an 8x8 crop: scale 8/20 = 0.4 in x and
  # 8/40 = 0.2 in y; the box's left/top edge goes to the crop edge -0.5 and the
  # right/bottom edge to 7.5.
  matrix = geometry.crop_matrix(np.array([10.0, 20.0, 30.0, 60.0]), 8)
  np.testing.assert_allclose(matrix, [[0.4, 0.0, -4.5], [0.0, 0.2, -4.5], [0.0, 0.0, 1.0]])
  np.testing.assert_allclose(
    geometry.apply_affine(np.array([[10.0, 20.0], [30.0, 60.0]]), matrix),
    [[-0.5, -0.5], [7.5, 7.5]],
  )


def test_crop_theta_of_whole_image_is_identity():
  # The whole 12x12 image spans pixel edges [-0.5, 11.5].
  theta = geometry.crop_theta(np.array([-0.5, -0.5, 11.5, 11.5]), (12, 12), 12)
  np.testing.assert_allclose(theta, np.eye(2, 3), atol=1e-12)


def test_crop_theta_crops_pixel_aligned_box_and_moves_landmarks():
  rng = np.random.default_rng(11)
  images = rng.random((2, 20, 24, 3)).astype(np.float32)
  # Boxes whose edges lie on pixel edges: crop rows 3..10 / cols 5..12 of image 0 and,
  # at half resolution, rows 4..19 / cols 2..17 of image 1 (2x2 pixel blocks).
  boxes = np.array([[4.5, 2.5, 12.5, 10.5], [1.5, 3.5, 17.5, 19.5]])
  theta = geometry.crop_theta(boxes, (20, 24), 8).astype(np.float32)
  crops = np.asarray(warp(images, theta, (8, 8)))
  np.testing.assert_allclose(crops[0], images[0, 3:11, 5:13], atol=1e-5)
  # At half resolution each crop pixel's centre falls on the corner of a 2x2 block,
  # so bilinear sampling averages the block.
  block_means = images[1, 4:20, 2:18].reshape(8, 2, 8, 2, 3).mean(axis=(1, 3))
  np.testing.assert_allclose(crops[1], block_means, atol=1e-5)
  # A landmark on image pixel (row 6, col 9) moves to crop pixel (3, 4) in crop 0.
  landmark = geometry.apply_affine(np.array([[9.0, 6.0]]), geometry.crop_matrix(boxes[0], 8))
  np.testing.assert_allclose(landmark, [[4.0, 3.0]], atol=1e-12)


def test_bad_shapes_raise():
  with pytest.raises(ValueError, match="theta"):
    geometry.theta_to_pixel_matrix(np.eye(3), (4, 4), (4, 4))
  with pytest.raises(ValueError, match="in_hw"):
    geometry.theta_to_pixel_matrix(np.eye(2, 3), (4, 0), (4, 4))
  with pytest.raises(ValueError, match="boxes"):
    geometry.crop_matrix(np.array([5.0, 5.0, 1.0, 9.0]), 8)
  with pytest.raises(ValueError, match="points"):
    geometry.apply_affine(np.zeros((4, 3)), np.eye(2, 3))
