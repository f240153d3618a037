"""Tests for msm_jax.core.sampler: the ST-GAN affine grid + bilinear sampler (Eq. 2)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from msm_jax.core.sampler import affine_grid, warp


def reference_warp(images, theta, out_shape, padding):
  """Loop-per-output-pixel NumPy bilinear sampler, written from PyTorch's definition.

  For output pixel (i, j): normalised (u, v) at its centre, (xs, ys) = theta @ (u, v, 1),
  pixel position ((xs + 1) W - 1) / 2, optionally clamped to [0, W-1] ("border"),
  then the four neighbours with bilinear weights; a neighbour outside the image adds 0.
  """
  batch, height, width, channels = images.shape
  out_h, out_w = out_shape
  out = np.zeros((batch, out_h, out_w, channels), np.float64)
  for b in range(batch):
    for i in range(out_h):
      for j in range(out_w):
        u = (2 * j + 1) / out_w - 1
        v = (2 * i + 1) / out_h - 1
        xs = theta[b, 0, 0] * u + theta[b, 0, 1] * v + theta[b, 0, 2]
        ys = theta[b, 1, 0] * u + theta[b, 1, 1] * v + theta[b, 1, 2]
        px = ((xs + 1) * width - 1) / 2
        py = ((ys + 1) * height - 1) / 2
        if padding == "border":
          px = min(max(px, 0.0), width - 1.0)
          py = min(max(py, 0.0), height - 1.0)
        left, top = math.floor(px), math.floor(py)
        fx, fy = px - left, py - top
        for row, col, weight in (
          (top, left, (1 - fy) * (1 - fx)),
          (top, left + 1, (1 - fy) * fx),
          (top + 1, left, fy * (1 - fx)),
          (top + 1, left + 1, fy * fx),
        ):
          if 0 <= row < height and 0 <= col < width:
            out[b, i, j] += weight * images[b, row, col]
  return out


def random_thetas(rng, batch):
  """Rotations/scales/shifts; the larger ones sample well outside the image."""
  angles = rng.uniform(-0.8, 0.8, batch)
  scales = rng.uniform(0.5, 1.6, batch)
  shifts = rng.uniform(-0.7, 0.7, (batch, 2))
  theta = np.zeros((batch, 2, 3))
  theta[:, 0, 0] = scales * np.cos(angles)
  theta[:, 0, 1] = -scales * np.sin(angles)
  theta[:, 1, 0] = scales * np.sin(angles)
  theta[:, 1, 1] = scales * np.cos(angles) * rng.uniform(0.8, 1.2, batch)
  theta[:, :, 2] = shifts
  return theta


@pytest.mark.parametrize("padding", ["zeros", "border"])
@pytest.mark.parametrize("out_shape", [(6, 5), (4, 9)])
def test_matches_loop_reference(padding, out_shape):
  rng = np.random.default_rng(0)
  images = rng.random((4, 5, 7, 2)).astype(np.float32)
  theta = random_thetas(rng, 4).astype(np.float32)
  theta[0] = [[1.7, 0.2, 0.9], [0.1, 1.5, -0.8]]  # mostly outside the image
  expected = reference_warp(images.astype(np.float64), theta.astype(np.float64), out_shape, padding)
  warped = jax.jit(warp, static_argnums=(2, 3))(images, theta, out_shape, padding)
  assert warped.shape == (4, *out_shape, 2)
  np.testing.assert_allclose(np.asarray(warped), expected, atol=1e-5)
  # The case must really exercise padding: some outputs sample outside the image.
  grid = np.asarray(affine_grid(theta, out_shape))
  assert np.any(np.abs(grid) > 1)


@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_integer_images_are_sampled_as_their_float_values(padding):
  # The taps of a uint8 image are gathered as integers and converted one by one: the same
  # values as converting the whole image first, in float32.
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, (3, 9, 11, 3), dtype=np.uint8)
  theta = random_thetas(rng, 3).astype(np.float32)
  warped = jax.jit(warp, static_argnums=(2, 3))(images, theta, (7, 8), padding)
  assert warped.dtype == jnp.float32
  expected = reference_warp(images.astype(np.float64), theta.astype(np.float64), (7, 8), padding)
  np.testing.assert_allclose(np.asarray(warped), expected, atol=255 * 1e-5)


def test_hand_computed_upsampling():
  # 2x2 image [[1, 2], [3, 4]], identity theta, 4x4 output. Output column j has
  # u = (2j + 1)/4 - 1 = -0.75, -0.25, 0.25, 0.75, i.e. input pixel x = u + 0.5 =
  # -0.25, 0.25, 0.75, 1.25. Along a row [a, b] that gives
  #   x=-0.25: 0.75 a (left tap at x=-1 is outside, contributes 0)
  #   x= 0.25: 0.75 a + 0.25 b;  x=0.75: 0.25 a + 0.75 b;  x=1.25: 0.75 b
  # Rows: [1, 2] -> [0.75, 1.25, 1.75, 1.5]; [3, 4] -> [2.25, 3.25, 3.75, 3.0].
  # The same weights down the columns:
  #   out0 = 0.75 r0, out1 = 0.75 r0 + 0.25 r1, out2 = 0.25 r0 + 0.75 r1, out3 = 0.75 r1.
  expected = np.array(
    [
      [0.5625, 0.9375, 1.3125, 1.125],
      [1.125, 1.75, 2.25, 1.875],
      [1.875, 2.75, 3.25, 2.625],
      [1.6875, 2.4375, 2.8125, 2.25],
    ]
  )
  image = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)[None, :, :, None]
  identity = np.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], np.float32)
  warped = warp(image, identity, (4, 4))
  np.testing.assert_allclose(np.asarray(warped)[0, :, :, 0], expected, atol=1e-6)
  # With border padding the edge taps repeat instead: the corner is pixel 1 itself.
  bordered = np.asarray(warp(image, identity, (4, 4), padding="border"))[0, :, :, 0]
  np.testing.assert_allclose(bordered[0], [1.0, 1.25, 1.75, 2.0], atol=1e-6)


def test_identity_theta_reproduces_image():
  images = np.random.default_rng(1).random((2, 9, 11, 3)).astype(np.float32)
  identity = np.tile(np.eye(2, 3, dtype=np.float32), (2, 1, 1))
  np.testing.assert_allclose(np.asarray(warp(images, identity, (9, 11))), images, atol=1e-6)


def test_integer_translation_shifts_pixels():
  images = np.random.default_rng(2).random((1, 6, 8, 1)).astype(np.float32)
  shift_x, shift_y = 3, -2
  # A normalised shift of 2k/W moves the sampling position by k input pixels,
  # so output (i, j) reads input (i + shift_y, j + shift_x).
  theta = np.array([[[1.0, 0.0, 2 * shift_x / 8], [0.0, 1.0, 2 * shift_y / 6]]], np.float32)
  expected = np.zeros_like(images)
  expected[:, 2:, :5] = images[:, :4, 3:]
  np.testing.assert_allclose(np.asarray(warp(images, theta, (6, 8))), expected, atol=1e-6)


def test_border_padding_clamps_to_edge_pixels():
  images = np.random.default_rng(3).random((1, 4, 5, 2)).astype(np.float32)
  # Shift far to the left: every sampling position has x < 0, y unchanged.
  theta = np.array([[[1.0, 0.0, -5.0], [0.0, 1.0, 0.0]]], np.float32)
  bordered = np.asarray(warp(images, theta, (4, 3), padding="border"))
  np.testing.assert_allclose(bordered, np.repeat(images[:, :, :1], 3, axis=2), atol=1e-6)
  zeros = np.asarray(warp(images, theta, (4, 3), padding="zeros"))
  np.testing.assert_array_equal(zeros, 0.0)


def test_affine_grid_formula():
  theta = np.array([[[0.5, -0.2, 0.1], [0.3, 1.1, -0.4]]], np.float32)
  grid = np.asarray(affine_grid(theta, (3, 4)))
  u = (2 * np.arange(4) + 1) / 4 - 1
  v = (2 * np.arange(3) + 1) / 3 - 1
  uu, vv = np.meshgrid(u, v)  # [3, 4], uu varies along columns
  expected_x = 0.5 * uu - 0.2 * vv + 0.1
  expected_y = 0.3 * uu + 1.1 * vv - 0.4
  np.testing.assert_allclose(grid[0], np.stack([expected_x, expected_y], -1), atol=1e-6)


def _fractional_distance_to_kink(images, theta, out_shape):
  """Smallest distance of any sampling position to a pixel-centre line (a kink)."""
  grid = np.asarray(affine_grid(np.asarray(theta, np.float64), out_shape))
  height, width = images.shape[1:3]
  px = ((grid[..., 0] + 1) * width - 1) / 2
  py = ((grid[..., 1] + 1) * height - 1) / 2
  frac = np.concatenate([px.ravel() % 1, py.ravel() % 1])
  return np.minimum(frac, 1 - frac).min()


@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_gradients_match_finite_differences(padding):
  rng = np.random.default_rng(4)
  with jax.enable_x64(True):
    images = jnp.asarray(rng.random((2, 5, 6, 2)))
    # Zeros: the first theta samples partly outside (x beyond the right edge).
    # Border: all samples stay strictly inside the clamp range, whose ends are
    # kinks too.
    first_shift = 0.68 if padding == "zeros" else 0.23
    theta = jnp.asarray(
      [
        [[0.66, -0.02, first_shift], [0.03, 0.82, -0.03]],
        [[0.84, 0.03, -0.23], [-0.01, 0.79, -0.06]],
      ]
    )
    out_shape = (4, 3)
    grid = np.asarray(affine_grid(theta, out_shape))
    assert np.any(np.abs(grid) > 1) == (padding == "zeros")
    # check_grads perturbs by ~1e-4, moving samples by < 1e-3 pixel; keep every
    # sample further than that from the pixel-centre lines where the weights kink.
    assert _fractional_distance_to_kink(images, theta, out_shape) > 0.05
    check_grads(
      lambda x: warp(x, theta, out_shape, padding), (images,), order=1, modes=("fwd", "rev")
    )
    check_grads(
      lambda t: warp(images, t, out_shape, padding), (theta,), order=1, modes=("fwd", "rev")
    )


def test_rejects_bad_input():
  images = np.zeros((2, 4, 4, 3), np.float32)
  theta = np.tile(np.eye(2, 3, dtype=np.float32), (2, 1, 1))
  with pytest.raises(ValueError, match="padding"):
    warp(images, theta, (4, 4), padding="reflection")
  with pytest.raises(ValueError, match="batch"):
    warp(images, theta[:1], (4, 4))
  with pytest.raises(ValueError, match="theta"):
    warp(images, theta[:, :, :2], (4, 4))
  with pytest.raises(ValueError, match="images"):
    warp(images[0], theta, (4, 4))
  with pytest.raises(ValueError, match="out_shape"):
    warp(images, theta, (4, 0))


def test_matches_pytorch_grid_sample():
  torch = pytest.importorskip("torch")
  functional = torch.nn.functional
  rng = np.random.default_rng(5)
  images = rng.random((3, 7, 9, 2)).astype(np.float32)
  theta = random_thetas(rng, 3).astype(np.float32)
  for padding in ("zeros", "border"):
    grid = functional.affine_grid(torch.from_numpy(theta), (3, 2, 5, 8), align_corners=False)
    expected = (
      functional.grid_sample(
        torch.from_numpy(images).permute(0, 3, 1, 2),
        grid,
        mode="bilinear",
        padding_mode=padding,
        align_corners=False,
      )
      .permute(0, 2, 3, 1)
      .numpy()
    )
    warped = np.asarray(warp(images, theta, (5, 8), padding))
    np.testing.assert_allclose(warped, expected, atol=1e-5)
