"""Affine grid generator and bilinear sampler of the ST-GAN generator (Sec. III-A).

The GDNN regresses ``theta`` (Eq. 1); the grid generator maps every output pixel's
normalised coordinates through ``theta`` (Eq. 2) to a sampling position in the input
image, and the sampler reads the input there with bilinear interpolation. The warp is
differentiable in both the image and ``theta``, which is what lets the generator loss
(Eq. 5, via the adversarial term Eq. 4) train the localisation network.

Semantics are exactly PyTorch's::

    F.grid_sample(x, F.affine_grid(theta, size, align_corners=False),
                  mode="bilinear", padding_mode="zeros" | "border", align_corners=False)

(see ``msm_jax/__init__.py``: ``u = (2 x + 1) / W - 1``). Everything is pure ``jnp``,
batched and jit-able; the four bilinear taps are gathered with flat indices, so the
image gradient is a single scatter-add per tap.
"""

import jax.numpy as jnp

_PADDING_MODES = ("zeros", "border")


def _check_theta(theta, name="theta"):
  if theta.ndim != 3 or theta.shape[1:] != (2, 3):
    raise ValueError(f"{name} must have shape [B, 2, 3], got {tuple(theta.shape)}")


def _check_out_shape(out_shape):
  if len(out_shape) != 2 or any(int(size) != size or size <= 0 for size in out_shape):
    raise ValueError(f"out_shape must be (height, width) positive integers, got {out_shape}")
  return int(out_shape[0]), int(out_shape[1])


def affine_grid(theta, out_shape):
  """Sampling positions in normalised input coordinates, like ``F.affine_grid``.

  Args:
    theta: ``[B, 2, 3]`` float, normalised output coords -> normalised input coords.
    out_shape: ``(h, w)`` of the output.
  Returns:
    ``[B, h, w, 2]`` float, ``(u, v)`` = normalised input ``(x, y)`` for each output
    pixel (align_corners=False: output pixel j sits at ``(2 j + 1) / w - 1``).
  """
  theta = jnp.asarray(theta)
  _check_theta(theta)
  height, width = _check_out_shape(out_shape)
  dtype = jnp.result_type(theta.dtype, jnp.float32)
  u = (2.0 * jnp.arange(width, dtype=dtype) + 1.0) / width - 1.0
  v = (2.0 * jnp.arange(height, dtype=dtype) + 1.0) / height - 1.0
  theta = theta.astype(dtype)
  # grid[b, i, j, k] = theta[b, k, 0] * u[j] + theta[b, k, 1] * v[i] + theta[b, k, 2]
  return (
    theta[:, None, None, :, 0] * u[None, None, :, None]
    + theta[:, None, None, :, 1] * v[None, :, None, None]
    + theta[:, None, None, :, 2]
  )


def warp(images, theta, out_shape, padding="zeros"):
  """Warps images by ``theta`` with bilinear sampling (Eq. 2), batched and jit-able.

  Equal (to float32 rounding, well within 1e-5 on [0, 1] images) to PyTorch's
  ``F.grid_sample(x, F.affine_grid(theta, size, align_corners=False),
  mode='bilinear', padding_mode=padding, align_corners=False)``:
  ``padding="zeros"`` makes each of the four taps that falls outside the image
  contribute 0 individually; ``padding="border"`` first clamps the sampling position
  to the outermost pixel centres (``[0, W - 1]``), which repeats edge pixels.
  Differentiable w.r.t. ``images`` and ``theta`` (the bilinear weights carry the
  ``theta`` gradient; it is piecewise linear with kinks at pixel-centre crossings).

  Args:
    images: ``[B, H, W, C]`` float, or integer (uint8): the four taps are gathered as they
      are and converted one by one, so a large image is never converted whole.
    theta: ``[B, 2, 3]`` float, normalised output coords -> normalised input coords.
    out_shape: ``(h, w)`` static output size.
    padding: ``"zeros"`` or ``"border"``.
  Returns:
    ``[B, h, w, C]`` in the dtype of ``images`` (promoted to at least float32).
  """
  images = jnp.asarray(images)
  theta = jnp.asarray(theta)
  if images.ndim != 4:
    raise ValueError(f"images must have shape [B, H, W, C], got {tuple(images.shape)}")
  _check_theta(theta)
  if theta.shape[0] != images.shape[0]:
    raise ValueError(f"theta batch {theta.shape[0]} != images batch {images.shape[0]}")
  if padding not in _PADDING_MODES:
    raise ValueError(f"padding must be one of {_PADDING_MODES}, got {padding!r}")
  out_height, out_width = _check_out_shape(out_shape)
  batch, in_height, in_width, channels = images.shape
  dtype = jnp.result_type(images.dtype, theta.dtype, jnp.float32)

  grid = affine_grid(theta.astype(dtype), (out_height, out_width))
  grid = grid.reshape(batch, out_height * out_width, 2)
  # Normalised -> input pixel coordinates (align_corners=False).
  x = ((grid[..., 0] + 1.0) * in_width - 1.0) * 0.5
  y = ((grid[..., 1] + 1.0) * in_height - 1.0) * 0.5
  if padding == "border":
    x = jnp.clip(x, 0.0, in_width - 1.0)
    y = jnp.clip(y, 0.0, in_height - 1.0)

  # floor carries no gradient, so d/dtheta flows only through the fractional weights.
  x_left = jnp.floor(x)
  y_top = jnp.floor(y)
  weight_right = x - x_left
  weight_bottom = y - y_top
  x_left = x_left.astype(jnp.int32)
  y_top = y_top.astype(jnp.int32)

  flat_images = images.reshape(batch, in_height * in_width, channels)
  taps = (
    (y_top, x_left, (1.0 - weight_bottom) * (1.0 - weight_right)),
    (y_top, x_left + 1, (1.0 - weight_bottom) * weight_right),
    (y_top + 1, x_left, weight_bottom * (1.0 - weight_right)),
    (y_top + 1, x_left + 1, weight_bottom * weight_right),
  )
  output = jnp.zeros((batch, out_height * out_width, channels), dtype)
  for tap_y, tap_x, weight in taps:
    inside = (tap_x >= 0) & (tap_x < in_width) & (tap_y >= 0) & (tap_y < in_height)
    # Out-of-image taps read a clamped (valid) index and get weight 0, which is
    # PyTorch's zeros padding per tap (and a no-op for "border", where only
    # zero-weight taps can fall outside after the clamp).
    flat_index = jnp.clip(tap_y, 0, in_height - 1) * in_width + jnp.clip(tap_x, 0, in_width - 1)
    values = jnp.take_along_axis(
      flat_images,
      flat_index[..., None],
      axis=1,
      mode="promise_in_bounds",
      wrap_negative_indices=False,
    ).astype(dtype)
    output = output + jnp.where(inside, weight, 0.0)[..., None] * values
  return output.reshape(batch, out_height, out_width, channels)
