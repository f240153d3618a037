"""Affine geometry shared by the ST-GAN warp, the data pipeline and evaluation.

The ST-GAN generator (Sec. III-A) regresses ``theta`` of Eq. 1, which Eq. 2 applies
to normalised *output* grid coordinates to find where to sample the *input* image.
Its training target ``theta*`` (Eq. 5) comes from a point-set fit: a similarity
(or affine) transform between a face's landmarks and the canonical shape. This
module holds those pieces:

* conversions between pixel coordinates and the normalised coordinates of Eq. 2
  (``u = (2 x + 1) / W - 1``, ``align_corners=False``, see ``msm_jax/__init__.py``),
  and between ``theta`` and the equivalent pixel-space matrix;
* closed-form inverse, composition and application of affine maps;
* weighted least-squares similarity / affine fits from point correspondences;
* face-box crops expressed as pixel matrices and as ``theta``.

Every function accepts NumPy arrays (and returns NumPy, so data-loader workers need
not import JAX) or JAX arrays (and returns JAX, jit-able). The array module is picked
from the inputs. All are batched over leading dimensions ``...``. Pixel-space
matrices are ``[..., 3, 3]`` with last row ``(0, 0, 1)``.
"""

import sys

import numpy as np


def _array_module(*arrays):
  """Returns ``jax.numpy`` if any input is a JAX array or tracer, else ``numpy``."""
  # Only consult jax when it is already imported: a NumPy-only worker process
  # never pays for importing it.
  if "jax" in sys.modules:
    import jax

    if any(isinstance(array, jax.Array) for array in arrays):
      return jax.numpy
  return np


def _as_float(array, xp):
  """Converts to a floating array, keeping float32/float64 as they are."""
  array = xp.asarray(array)
  return array.astype(xp.result_type(array.dtype, xp.float32))


def _check_last_dims(array, allowed, name):
  if array.ndim < 2 or tuple(array.shape[-2:]) not in allowed:
    expected = " or ".join(f"[..., {r}, {c}]" for r, c in allowed)
    raise ValueError(f"{name} must have shape {expected}, got {tuple(array.shape)}")


def _is_symbolic(size):
  """True for a ``jax.export`` symbolic dimension (a shape-polymorphic export's H or W)."""
  if "jax" not in sys.modules:
    return False
  from jax import export

  return export.is_symbolic_dim(size)


def _check_hw(hw, name):
  if len(hw) == 2 and any(_is_symbolic(size) for size in hw):
    return tuple(hw)  # known only when the exported function is called: no check here
  if len(hw) != 2 or any(int(size) != size or size <= 0 for size in hw):
    raise ValueError(f"{name} must be (height, width) positive integers, got {hw}")
  return int(hw[0]), int(hw[1])


def _size_matrix(rows, height, width):
  """``[3, 3]`` float64 NumPy; float32 ``jnp`` if a size is symbolic (not known yet)."""
  if _is_symbolic(height) or _is_symbolic(width):
    import jax.numpy as jnp

    return jnp.array(rows, jnp.float32)
  return np.array(rows)


def pixel_to_normalised_matrix(height, width):
  """Pixel -> normalised coordinates, ``u = (2 x + 1) / W - 1`` (same for v, H).

  Returns ``[3, 3]`` float64 NumPy (float32 ``jnp`` for symbolic sizes, as in a
  shape-polymorphic ``jax.export``); pixel ``-0.5`` (the left image edge) maps to
  ``-1`` and ``W - 0.5`` (the right edge) to ``+1``.
  """
  height, width = _check_hw((height, width), "(height, width)")
  return _size_matrix(
    [
      [2.0 / width, 0.0, 1.0 / width - 1.0],
      [0.0, 2.0 / height, 1.0 / height - 1.0],
      [0.0, 0.0, 1.0],
    ],
    height,
    width,
  )


def normalised_to_pixel_matrix(height, width):
  """Normalised -> pixel coordinates, ``x = ((u + 1) W - 1) / 2``. ``[3, 3]`` float64
  (float32 ``jnp`` for symbolic sizes)."""
  height, width = _check_hw((height, width), "(height, width)")
  return _size_matrix(
    [
      [width / 2.0, 0.0, (width - 1.0) / 2.0],
      [0.0, height / 2.0, (height - 1.0) / 2.0],
      [0.0, 0.0, 1.0],
    ],
    height,
    width,
  )


def to_homogeneous(matrix):
  """``[..., 2, 3]`` affine -> ``[..., 3, 3]`` by appending the row ``(0, 0, 1)``.

  A ``[..., 3, 3]`` input is returned unchanged (as a float array).
  """
  xp = _array_module(matrix)
  matrix = _as_float(matrix, xp)
  _check_last_dims(matrix, [(2, 3), (3, 3)], "matrix")
  if matrix.shape[-2] == 3:
    return matrix
  last_row = xp.asarray([0.0, 0.0, 1.0], dtype=matrix.dtype)
  last_row = xp.broadcast_to(last_row, matrix.shape[:-2] + (1, 3))
  return xp.concatenate([matrix, last_row], axis=-2)


def invert_affine(matrix):
  """Closed-form inverse of an affine map; output has the input's shape.

  Args:
    matrix: ``[..., 2, 3]`` or ``[..., 3, 3]`` (last row ``(0, 0, 1)``).
  Singular matrices give inf/nan (no check, so it stays jit-able).
  """
  xp = _array_module(matrix)
  matrix = _as_float(matrix, xp)
  _check_last_dims(matrix, [(2, 3), (3, 3)], "matrix")
  a, b, tx = matrix[..., 0, 0], matrix[..., 0, 1], matrix[..., 0, 2]
  c, d, ty = matrix[..., 1, 0], matrix[..., 1, 1], matrix[..., 1, 2]
  inv_det = 1.0 / (a * d - b * c)
  # [A t]^-1 = [A^-1, -A^-1 t] with the 2x2 adjugate formula for A^-1.
  ia, ib, ic, id_ = d * inv_det, -b * inv_det, -c * inv_det, a * inv_det
  rows = [
    xp.stack([ia, ib, -(ia * tx + ib * ty)], axis=-1),
    xp.stack([ic, id_, -(ic * tx + id_ * ty)], axis=-1),
  ]
  inverse = xp.stack(rows, axis=-2)
  return to_homogeneous(inverse) if matrix.shape[-2] == 3 else inverse


def compose(outer, inner):
  """``outer`` after ``inner``: ``apply(compose(a, b), p) == apply(a, apply(b, p))``.

  Args:
    outer: ``[..., 2, 3]`` or ``[..., 3, 3]``.
    inner: ``[..., 2, 3]`` or ``[..., 3, 3]``; leading dims broadcast.
  Returns:
    The product with ``outer``'s number of rows (2x3 stays 2x3, 3x3 stays 3x3).
  """
  xp = _array_module(outer, inner)
  outer = _as_float(outer, xp)
  _check_last_dims(outer, [(2, 3), (3, 3)], "outer")
  return xp.matmul(outer, to_homogeneous(_as_float(inner, xp)))


def apply_affine(points, matrix):
  """Maps points through an affine matrix.

  Args:
    points: ``[..., L, 2]`` (x, y).
    matrix: ``[..., 2, 3]`` or ``[..., 3, 3]``; leading dims broadcast with points'.
  Returns:
    ``[..., L, 2]``.
  """
  xp = _array_module(points, matrix)
  points = _as_float(points, xp)
  matrix = _as_float(matrix, xp)
  _check_last_dims(matrix, [(2, 3), (3, 3)], "matrix")
  if points.ndim < 2 or points.shape[-1] != 2:
    raise ValueError(f"points must have shape [..., L, 2], got {tuple(points.shape)}")
  linear = matrix[..., :2, :2]
  translation = matrix[..., :2, 2]
  return xp.matmul(points, xp.swapaxes(linear, -1, -2)) + translation[..., None, :]


def theta_to_pixel_matrix(theta, in_hw, out_hw):
  """STN ``theta`` -> the ``[..., 3, 3]`` map from OUTPUT pixels to INPUT pixels.

  Args:
    theta: ``[..., 2, 3]``, normalised output coords -> normalised input coords.
    in_hw: (height, width) of the sampled (input) image.
    out_hw: (height, width) of the warped (output) image.
  """
  xp = _array_module(theta)
  theta = _as_float(theta, xp)
  _check_last_dims(theta, [(2, 3)], "theta")
  to_input_pixels = xp.asarray(normalised_to_pixel_matrix(*_check_hw(in_hw, "in_hw")), theta.dtype)
  from_output_pixels = xp.asarray(
    pixel_to_normalised_matrix(*_check_hw(out_hw, "out_hw")), theta.dtype
  )
  return xp.matmul(to_input_pixels, xp.matmul(to_homogeneous(theta), from_output_pixels))


def pixel_matrix_to_theta(matrix, in_hw, out_hw):
  """Inverse of :func:`theta_to_pixel_matrix`: OUTPUT->INPUT pixel map -> ``theta``.

  Args:
    matrix: ``[..., 2, 3]`` or ``[..., 3, 3]`` mapping output pixels to input pixels.
  Returns:
    theta ``[..., 2, 3]``.
  """
  xp = _array_module(matrix)
  matrix = to_homogeneous(_as_float(matrix, xp))
  to_input_normalised = xp.asarray(
    pixel_to_normalised_matrix(*_check_hw(in_hw, "in_hw")), matrix.dtype
  )
  from_output_normalised = xp.asarray(
    normalised_to_pixel_matrix(*_check_hw(out_hw, "out_hw")), matrix.dtype
  )
  return xp.matmul(to_input_normalised, xp.matmul(matrix, from_output_normalised))[..., :2, :]


def _prepare_fit(src, dst, weights, min_points, name):
  """Shared input handling of the point-set fits.

  Returns the array module, src and dst centred on their weighted means, the weights
  normalised to sum to 1 (so spreads are mean squares, comparable to a tolerance),
  and the two weighted means.
  """
  xp = _array_module(src, dst, weights)
  src = _as_float(src, xp)
  dst = _as_float(dst, xp)
  if src.ndim < 2 or src.shape[-1] != 2 or src.shape != dst.shape:
    raise ValueError(
      f"{name}: src and dst must both be [..., L, 2], got {tuple(src.shape)} and {tuple(dst.shape)}"
    )
  num_points = src.shape[-2]
  if num_points < min_points:
    raise ValueError(f"{name} needs at least {min_points} points, got L={num_points}")
  if weights is None:
    weights = xp.ones(src.shape[:-1], src.dtype)
  weights = _as_float(weights, xp)
  if weights.shape != src.shape[:-1]:
    raise ValueError(
      f"{name}: weights must be [..., L] = {tuple(src.shape[:-1])}, got {tuple(weights.shape)}"
    )
  total = xp.sum(weights, axis=-1)
  if xp is np:
    if np.any(weights < 0):
      raise ValueError(f"{name}: weights must be non-negative")
    if np.any(total <= 0):
      raise ValueError(f"{name}: weights are all zero (for at least one batch item)")
  weights = weights / total[..., None]
  src_mean = xp.sum(weights[..., None] * src, axis=-2)
  dst_mean = xp.sum(weights[..., None] * dst, axis=-2)
  return xp, src - src_mean[..., None, :], dst - dst_mean[..., None, :], weights, src_mean, dst_mean


def _assemble(xp, linear_rows, translation):
  """Stacks a 2x2 linear part (two rows of [..., 2]) and [..., 2] translation to [..., 3, 3]."""
  top = xp.concatenate([linear_rows[0], translation[..., :1]], axis=-1)
  bottom = xp.concatenate([linear_rows[1], translation[..., 1:]], axis=-1)
  return to_homogeneous(xp.stack([top, bottom], axis=-2))


def estimate_similarity(src, dst, weights=None):
  """Weighted least-squares similarity (rotation, uniform scale, shift) src -> dst.

  Minimises ``sum_i w_i |s R src_i + t - dst_i|^2`` over s >= 0, R in SO(2) (no
  reflection). In 2-D this is Umeyama's closed form: with ``s R = [[a, -b], [b, a]]``
  the problem is linear in (a, b, t); after removing weighted means,
  ``a = sum w (x . y) / sum w |x|^2`` and ``b = sum w (x cross y) / sum w |x|^2``.

  Args:
    src, dst: ``[..., L, 2]`` corresponding points, L >= 2.
    weights: optional ``[..., L]`` non-negative; a zero weight ignores that point.
  Returns:
    ``[..., 3, 3]`` pixel matrix with ``apply_affine(src, m) ~ dst``.
  Raises:
    ValueError (NumPy path): fewer than 2 points, negative or all-zero weights, or
    all weighted src points coincide. The JAX path returns non-finite values then.
  """
  xp, src_c, dst_c, weights, src_mean, dst_mean = _prepare_fit(
    src, dst, weights, 2, "estimate_similarity"
  )
  spread = xp.sum(weights * xp.sum(src_c**2, axis=-1), axis=-1)
  if xp is np:
    # Centring leaves rounding noise of about eps * |mean|, so coincident points
    # show a spread of (eps * |mean|)^2 rather than exactly zero.
    rounding = 64 * np.finfo(spread.dtype).eps * np.abs(src_mean).max(axis=-1)
    if np.any(spread <= rounding**2):
      raise ValueError("estimate_similarity: the weighted src points all coincide")
  dot = src_c[..., 0] * dst_c[..., 0] + src_c[..., 1] * dst_c[..., 1]
  cross = src_c[..., 0] * dst_c[..., 1] - src_c[..., 1] * dst_c[..., 0]
  a = xp.sum(weights * dot, axis=-1) / spread
  b = xp.sum(weights * cross, axis=-1) / spread
  linear_rows = (xp.stack([a, -b], axis=-1), xp.stack([b, a], axis=-1))
  # t = mean_dst - sR mean_src, so the weighted means correspond exactly.
  translation = xp.stack(
    [
      dst_mean[..., 0] - (a * src_mean[..., 0] - b * src_mean[..., 1]),
      dst_mean[..., 1] - (b * src_mean[..., 0] + a * src_mean[..., 1]),
    ],
    axis=-1,
  )
  return _assemble(xp, linear_rows, translation)


def estimate_affine(src, dst, weights=None):
  """Weighted least-squares full affine map src -> dst (6 degrees of freedom).

  After removing weighted means, ``A = (sum w y x^T) (sum w x x^T)^-1`` and
  ``t = mean_dst - A mean_src`` (the normal equations, solved in closed form).

  Args:
    src, dst: ``[..., L, 2]`` corresponding points, L >= 3.
    weights: optional ``[..., L]`` non-negative; a zero weight ignores that point.
  Returns:
    ``[..., 3, 3]`` pixel matrix with ``apply_affine(src, m) ~ dst``.
  Raises:
    ValueError (NumPy path): fewer than 3 points, negative or all-zero weights, or
    the weighted src points are collinear. The JAX path returns non-finite values then.
  """
  xp, src_c, dst_c, weights, src_mean, dst_mean = _prepare_fit(
    src, dst, weights, 3, "estimate_affine"
  )

  def weighted_sum(p, q):
    return xp.sum(weights * p * q, axis=-1)

  sxx = weighted_sum(src_c[..., 0], src_c[..., 0])
  sxy = weighted_sum(src_c[..., 0], src_c[..., 1])
  syy = weighted_sum(src_c[..., 1], src_c[..., 1])
  det = sxx * syy - sxy**2
  # det / trace^2 is about (minor / major variance); below a few eps it is rounding.
  if xp is np and np.any(det <= 64 * np.finfo(det.dtype).eps * (sxx + syy) ** 2):
    raise ValueError(
      "estimate_affine: the weighted src points are collinear "
      "(or fewer than 3 have non-zero weight)"
    )
  # Inverse of the 2x2 scatter [[sxx, sxy], [sxy, syy]].
  inv_xx, inv_xy, inv_yy = syy / det, -sxy / det, sxx / det
  linear_rows = []
  for out_axis in range(2):
    cross_x = weighted_sum(dst_c[..., out_axis], src_c[..., 0])
    cross_y = weighted_sum(dst_c[..., out_axis], src_c[..., 1])
    linear_rows.append(
      xp.stack([cross_x * inv_xx + cross_y * inv_xy, cross_x * inv_xy + cross_y * inv_yy], axis=-1)
    )
  translation = dst_mean - xp.sum(xp.stack(linear_rows, axis=-2) * src_mean[..., None, :], axis=-1)
  return _assemble(xp, linear_rows, translation)


def crop_matrix(boxes, out_size):
  """Pixel matrix from image pixels to the pixels of an ``out_size`` square crop.

  Convention (box EDGES, not centres): ``boxes`` are ``(x0, y0, x1, y1)`` in the
  image's landmark coordinates (integers are pixel centres), and the rectangle
  ``[x0, x1] x [y0, y1]`` is the *area* covered by the crop's pixels. So ``x0``
  maps to the crop's left edge ``-0.5`` and ``x1`` to its right edge
  ``out_size - 0.5``: ``crop_x = (x - x0) * out_size / (x1 - x0) - 0.5``. The whole
  image of width W is the box ``(-0.5, ., W - 0.5, .)``. Width and height scale
  independently, so a non-square box is stretched: square boxes first.

  Args:
    boxes: ``[..., 4]`` float ``(x0, y0, x1, y1)`` with ``x1 > x0``, ``y1 > y0``.
    out_size: crop side in pixels (int).
  Returns:
    ``[..., 3, 3]`` mapping image pixel coords to crop pixel coords (apply it to
    landmarks to move them into the crop).
  """
  xp = _array_module(boxes)
  boxes = _as_float(boxes, xp)
  if boxes.ndim < 1 or boxes.shape[-1] != 4:
    raise ValueError(f"boxes must have shape [..., 4], got {tuple(boxes.shape)}")
  if int(out_size) != out_size or out_size <= 0:
    raise ValueError(f"out_size must be a positive integer, got {out_size}")
  x0, y0, x1, y1 = (boxes[..., i] for i in range(4))
  if xp is np and (np.any(x1 <= x0) or np.any(y1 <= y0)):
    raise ValueError("boxes must satisfy x1 > x0 and y1 > y0")
  scale_x = out_size / (x1 - x0)
  scale_y = out_size / (y1 - y0)
  zeros = xp.zeros_like(scale_x)
  linear_rows = (xp.stack([scale_x, zeros], axis=-1), xp.stack([zeros, scale_y], axis=-1))
  translation = xp.stack([-x0 * scale_x - 0.5, -y0 * scale_y - 0.5], axis=-1)
  return _assemble(xp, linear_rows, translation)


def crop_theta(boxes, image_hw, out_size):
  """The STN ``theta`` that crops ``boxes`` (see :func:`crop_matrix`) from an image.

  ``msm_jax.core.sampler.warp(images, crop_theta(boxes, (H, W), S), (S, S))`` returns
  the ``S x S`` crops of ``images [B, H, W, C]``.

  Args:
    boxes: ``[..., 4]`` ``(x0, y0, x1, y1)``, box edges in image pixel coords.
    image_hw: (H, W) of the image being cropped.
    out_size: crop side S.
  Returns:
    theta ``[..., 2, 3]``.
  """
  crop_to_image = invert_affine(crop_matrix(boxes, out_size))
  return pixel_matrix_to_theta(crop_to_image, image_hw, (out_size, out_size))
