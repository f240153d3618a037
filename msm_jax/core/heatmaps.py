"""Heatmap maths of the hourglass stage: Gaussian targets, decoding, landmark scores.

Implements Sec. III-B of the MSM paper and lines 4-10 of Algorithm 2:

* the crop <-> heatmap coordinate mapping (128x128 crop, 64x64 heatmaps),
* Gaussian target heatmaps (the training targets described after Eq. 8),
* decoding a landmark from its heatmap (Eq. 8, plus sub-pixel refinements),
* the landmark score of Eq. 9 (mean heatmap value in a (2r+1)^2 window at the
  predicted location), its per-face normalisation and the reliability mask
  (Algorithm 2, lines 5-10).

All functions are pure ``jnp``, batched and jit-able. Shapes follow the library
conventions (``msm_jax/__init__.py``): heatmaps are ``[B, h, w, L]``, landmarks
``[B, L, 2]`` as ``(x, y)`` with integer values at pixel centres.

Networks trained with a spatial-softmax cross-entropy output logits: pass
``spatial_softmax(logits)`` to the decoders and to ``landmark_scores``. The
log of a softmax of Gaussian-like logits is again a quadratic, so "dark"
decoding stays exact on it, and the per-face normalisation of the scores makes
their absolute scale irrelevant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

DECODING_METHODS = ("argmax", "quarter", "dark", "soft_argmax")
# Measured in tests/test_heatmaps.py (64x64 maps, sigma 1.5): on clean Gaussian maps
# "dark" is exact to ~1e-5 px where argmax errs by 0.38 px and quarter-pixel by
# 0.19 px; with a blur at the training sigma it also stays best under additive noise.
DEFAULT_DECODING_METHOD = "dark"
# A target Gaussian is dropped (all-zero map, invalid mask) once its centre lies
# further than this many sigmas outside the map: the tail left on the map would
# be below exp(-4.5) ~ 1 %.
TARGET_TRUNCATION_SIGMAS = 3.0
# Floor before the log in "dark": keeps zero / negative network outputs finite.
_LOG_FLOOR = 1e-10

# The kind of map each heatmap loss (`config.hourglass.loss`) trains: True where the maps are
# logits of a spatial softmax, so inference applies one before decoding (Eq. 8) and scoring
# (Eq. 9); False where they are decoded as they are. It lives with the maps' maths so that
# inference knows it without the training code; `train.losses.register_heatmap_loss` adds to it.
LOSS_OUTPUTS_LOGITS: dict[str, bool] = {
  "mse": False,
  "softmax_cross_entropy": True,
  "adaptive_wing": False,
}


def loss_outputs_logits(loss_name: str) -> bool:
  """Whether the maps trained by the heatmap loss ``loss_name`` are spatial-softmax logits."""
  if loss_name not in LOSS_OUTPUTS_LOGITS:
    raise ValueError(
      f"config hourglass.loss={loss_name!r}: expected one of {sorted(LOSS_OUTPUTS_LOGITS)}"
    )
  return LOSS_OUTPUTS_LOGITS[loss_name]


def _as_height_width(size: int | Sequence[int], name: str) -> tuple[int, int]:
  """Returns ``(height, width)`` from an int (square) or a ``(height, width)`` pair."""
  if isinstance(size, int) and not isinstance(size, bool):
    size = (size, size)
  if (
    not isinstance(size, Sequence)
    or len(size) != 2
    or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)
  ):
    raise ValueError(
      f"{name} must be a positive int or a (height, width) pair of positive ints, got {size!r}"
    )
  return int(size[0]), int(size[1])


def _as_float(array) -> jax.Array:
  """A floating array: float32, or float64 when x64 is on and the input is float64 (so that
  gradient checks can run in double precision)."""
  array = jnp.asarray(array)
  return array.astype(jnp.result_type(array.dtype, jnp.float32))


def _check_points(points: jax.Array, name: str, ndim: int | None = None) -> jax.Array:
  points = _as_float(points)
  if points.ndim < 1 or points.shape[-1] != 2 or (ndim is not None and points.ndim != ndim):
    expected = "[B, L, 2]" if ndim == 3 else "[..., 2]"
    raise ValueError(f"{name} must have shape {expected} (x, y), got {points.shape}")
  return points


def _check_heatmaps(heatmaps: jax.Array) -> jax.Array:
  heatmaps = _as_float(heatmaps)
  if heatmaps.ndim != 4:
    raise ValueError(f"heatmaps must have shape [B, h, w, L], got {heatmaps.shape}")
  return heatmaps


def _check_positive(value: float, name: str) -> None:
  # Traced values cannot be checked here; Python numbers can and should be.
  if isinstance(value, (int, float)) and not value > 0:
    raise ValueError(f"{name} must be > 0, got {value!r}")


# ----------------------------------------------------------------------------
# Coordinates
# ----------------------------------------------------------------------------


def crop_to_heatmap(
  points: jax.Array, crop_size: int | Sequence[int], heatmap_size: int | Sequence[int]
) -> jax.Array:
  """Maps crop pixel coordinates to heatmap pixel coordinates.

  ``x_hm = (x_crop + 0.5) * w_hm / w_crop - 0.5`` (and the same for y with the
  heights): pixel areas scale, pixel centres sit at integers, so the crop's outer
  edge ``-0.5`` maps to the heatmap's outer edge ``-0.5``. For 128 -> 64, crop
  pixel 0 maps to heatmap -0.25 and crop pixel 1 to heatmap 0.25.

  Args:
    points: ``[..., 2]`` float ``(x, y)`` in crop pixels.
    crop_size: crop side, or ``(height, width)``.
    heatmap_size: heatmap side, or ``(height, width)``.

  Returns:
    ``[..., 2]`` float32 ``(x, y)`` in heatmap pixels.
  """
  points = _check_points(points, "points")
  crop_h, crop_w = _as_height_width(crop_size, "crop_size")
  heatmap_h, heatmap_w = _as_height_width(heatmap_size, "heatmap_size")
  scale = jnp.array([heatmap_w / crop_w, heatmap_h / crop_h], jnp.float32)
  return (points + 0.5) * scale - 0.5


def heatmap_to_crop(
  points: jax.Array, crop_size: int | Sequence[int], heatmap_size: int | Sequence[int]
) -> jax.Array:
  """Inverse of ``crop_to_heatmap``: heatmap pixels ``[..., 2]`` -> crop pixels ``[..., 2]``."""
  points = _check_points(points, "points")
  crop_h, crop_w = _as_height_width(crop_size, "crop_size")
  heatmap_h, heatmap_w = _as_height_width(heatmap_size, "heatmap_size")
  scale = jnp.array([crop_w / heatmap_w, crop_h / heatmap_h], jnp.float32)
  return (points + 0.5) * scale - 0.5


# ----------------------------------------------------------------------------
# Targets
# ----------------------------------------------------------------------------


def heatmap_valid_mask(landmarks: jax.Array, size: int | Sequence[int], sigma: float) -> jax.Array:
  """Which landmarks get a (non-zero) target heatmap.

  A landmark is valid when it is finite and lies within
  ``TARGET_TRUNCATION_SIGMAS * sigma`` of the map's extent ``[-0.5, w - 0.5]``
  (same for y). Use it to mask the heatmap loss of missing / far-away points.

  Args:
    landmarks: ``[..., L, 2]`` float ``(x, y)`` in heatmap pixels (NaN = missing).
    size: heatmap side, or ``(height, width)``.
    sigma: Gaussian standard deviation in heatmap pixels.

  Returns:
    ``[..., L]`` bool.
  """
  landmarks = _check_points(landmarks, "landmarks")
  height, width = _as_height_width(size, "size")
  _check_positive(sigma, "sigma")
  margin = TARGET_TRUNCATION_SIGMAS * sigma
  x, y = landmarks[..., 0], landmarks[..., 1]
  # NaN compares False everywhere, so missing points come out invalid.
  inside_x = (x >= -0.5 - margin) & (x <= width - 0.5 + margin)
  inside_y = (y >= -0.5 - margin) & (y <= height - 0.5 + margin)
  return inside_x & inside_y


def gaussian_heatmaps(landmarks: jax.Array, size: int | Sequence[int], sigma: float) -> jax.Array:
  """Renders one unnormalised Gaussian target per landmark.

  ``H[b, i, j, l] = exp(-((j - x)^2 + (i - y)^2) / (2 sigma^2))`` with
  ``(x, y) = landmarks[b, l]``: the continuous peak is exactly 1 at the sub-pixel
  landmark (so a landmark on a pixel centre gives a pixel of value 1). Landmarks
  that ``heatmap_valid_mask`` rejects (far outside, NaN) give all-zero maps.

  Args:
    landmarks: ``[B, L, 2]`` float ``(x, y)`` in heatmap pixels.
    size: heatmap side, or ``(height, width)``.
    sigma: standard deviation in heatmap pixels (``config.hourglass.sigma``).

  Returns:
    ``[B, h, w, L]`` float32 in ``[0, 1]``.
  """
  landmarks = _check_points(landmarks, "landmarks", ndim=3)
  height, width = _as_height_width(size, "size")
  valid = heatmap_valid_mask(landmarks, (height, width), sigma)
  # Replacing invalid points keeps NaN/inf out of the exponent altogether.
  centres = jnp.where(valid[..., None], landmarks, 0.0)
  inv_two_var = 1.0 / (2.0 * jnp.square(jnp.asarray(sigma, jnp.float32)))
  columns = jnp.arange(width, dtype=jnp.float32)
  rows = jnp.arange(height, dtype=jnp.float32)
  # Separable: exp(-(dx^2 + dy^2) c) = exp(-dx^2 c) exp(-dy^2 c). A broadcast product,
  # not an einsum, so no backend lowers it to a reduced-precision matmul.
  profile_x = jnp.exp(-jnp.square(columns[None, :, None] - centres[:, None, :, 0]) * inv_two_var)
  profile_y = jnp.exp(-jnp.square(rows[None, :, None] - centres[:, None, :, 1]) * inv_two_var)
  profile_y = profile_y * valid[:, None, :]
  return profile_y[:, :, None, :] * profile_x[:, None, :, :]


def spatial_softmax(logits: jax.Array) -> jax.Array:
  """Per-landmark softmax over the h*w pixels: ``[B, h, w, L]`` -> same, sums to 1 per map."""
  logits = _check_heatmaps(logits)
  return jax.nn.softmax(logits, axis=(1, 2))


# ----------------------------------------------------------------------------
# Decoding (Eq. 8)
# ----------------------------------------------------------------------------


def heatmap_argmax(heatmaps: jax.Array) -> jax.Array:
  """Integer location of each heatmap's maximum, Eq. 8 literally.

  This is the ``(X_l, Y_l)`` that the score of Eq. 9 is centred on. Ties (e.g. a
  flat map) resolve to the first pixel in row-major order.

  Args:
    heatmaps: ``[B, h, w, L]`` float.

  Returns:
    ``[B, L, 2]`` int32 ``(x, y)`` = (column, row).
  """
  heatmaps = _check_heatmaps(heatmaps)
  batch, height, width, num_landmarks = heatmaps.shape
  flat = jnp.moveaxis(heatmaps, -1, 1).reshape(batch, num_landmarks, height * width)
  index = jnp.argmax(flat, axis=-1).astype(jnp.int32)
  return jnp.stack([index % width, index // width], axis=-1)


def _values_at(heatmaps: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
  """Reads ``heatmaps[b, y, x, l]`` for integer ``x, y`` of shape ``[B, L, K]``.

  Indices are clamped into the map, so no read is ever out of range; callers mask
  the clamped reads they must not use.
  """
  batch, height, width, num_landmarks = heatmaps.shape
  flat = jnp.moveaxis(heatmaps, -1, 1).reshape(batch, num_landmarks, height * width)
  index = jnp.clip(y, 0, height - 1) * width + jnp.clip(x, 0, width - 1)
  return jnp.take_along_axis(flat, index, axis=-1)


def _neighbourhood(heatmaps: jax.Array, peaks: jax.Array) -> jax.Array:
  """The 3x3 values around each peak: ``[B, L, 3, 3]``, indexed ``[dy + 1, dx + 1]``."""
  offsets = jnp.arange(-1, 2, dtype=jnp.int32)
  x = peaks[..., 0, None, None] + offsets[None, :]  # [B, L, 1, 3]
  y = peaks[..., 1, None, None] + offsets[:, None]  # [B, L, 3, 1]
  x, y = jnp.broadcast_arrays(x, y)
  batch, num_landmarks = peaks.shape[:2]
  values = _values_at(
    heatmaps, x.reshape(batch, num_landmarks, 9), y.reshape(batch, num_landmarks, 9)
  )
  return values.reshape(batch, num_landmarks, 3, 3)


def _interior(peaks: jax.Array, height: int, width: int) -> tuple[jax.Array, jax.Array]:
  """Whether each peak has both neighbours inside the map along x and along y."""
  x, y = peaks[..., 0], peaks[..., 1]
  return (x >= 1) & (x <= width - 2), (y >= 1) & (y <= height - 2)


def _quarter_offsets(heatmaps: jax.Array, peaks: jax.Array) -> jax.Array:
  """Newell / HRNet: a quarter pixel towards the larger neighbour, per axis.

  A peak on the border has only one neighbour along that axis, so nothing tells
  which side of the pixel centre the landmark lies on: no shift there.
  """
  height, width = heatmaps.shape[1:3]
  values = _neighbourhood(heatmaps, peaks)
  interior_x, interior_y = _interior(peaks, height, width)
  shift_x = 0.25 * jnp.sign(values[..., 1, 2] - values[..., 1, 0])
  shift_y = 0.25 * jnp.sign(values[..., 2, 1] - values[..., 0, 1])
  return jnp.stack(
    [jnp.where(interior_x, shift_x, 0.0), jnp.where(interior_y, shift_y, 0.0)], axis=-1
  )


def _gaussian_blur(heatmaps: jax.Array, sigma: float) -> jax.Array:
  """Separable Gaussian blur of ``[B, h, w, L]`` maps, zero outside the map.

  Zero padding treats the world beyond the map as background, which is what a
  heatmap's surroundings are; the kernel is cut at 3 sigma and renormalised.
  """
  radius = max(1, math.ceil(3.0 * sigma))
  taps = jnp.exp(
    -jnp.square(jnp.arange(-radius, radius + 1, dtype=jnp.float32)) / (2.0 * sigma * sigma)
  )
  taps = taps / jnp.sum(taps)
  height, width = heatmaps.shape[1:3]
  padded = jnp.pad(heatmaps, ((0, 0), (radius, radius), (0, 0), (0, 0)))
  heatmaps = sum(taps[k] * padded[:, k : k + height] for k in range(2 * radius + 1))
  padded = jnp.pad(heatmaps, ((0, 0), (0, 0), (radius, radius), (0, 0)))
  return sum(taps[k] * padded[:, :, k : k + width] for k in range(2 * radius + 1))


def _dark_offsets(heatmaps: jax.Array, peaks: jax.Array) -> jax.Array:
  """DARK (Zhang et al. 2020): one Newton step on the log-heatmap at the peak.

  Near its maximum a Gaussian's log is a quadratic, so ``-Hessian^-1 gradient``
  (central differences on the 3x3 neighbourhood) lands on the sub-pixel maximum
  exactly. Axes whose peak sits on the border are not refined (the missing
  neighbour makes the difference one-sided); a log-surface that is not locally
  concave (flat, noisy or negative maps) keeps the integer peak. The step is
  clipped to half a pixel per axis: for an isotropic peak the argmax pixel is the
  one nearest to the true maximum, so a longer step can only be noise.
  """
  height, width = heatmaps.shape[1:3]
  logs = jnp.log(jnp.maximum(_neighbourhood(heatmaps, peaks), _LOG_FLOOR))
  interior_x, interior_y = _interior(peaks, height, width)
  grad_x = 0.5 * (logs[..., 1, 2] - logs[..., 1, 0])
  grad_y = 0.5 * (logs[..., 2, 1] - logs[..., 0, 1])
  hess_xx = logs[..., 1, 2] - 2.0 * logs[..., 1, 1] + logs[..., 1, 0]
  hess_yy = logs[..., 2, 1] - 2.0 * logs[..., 1, 1] + logs[..., 0, 1]
  hess_xy = 0.25 * (logs[..., 2, 2] - logs[..., 2, 0] - logs[..., 0, 2] + logs[..., 0, 0])
  # A border axis becomes a decoupled unit-curvature axis with zero slope: its step is 0
  # and the other axis is refined on its own.
  grad_x = jnp.where(interior_x, grad_x, 0.0)
  grad_y = jnp.where(interior_y, grad_y, 0.0)
  hess_xx = jnp.where(interior_x, hess_xx, -1.0)
  hess_yy = jnp.where(interior_y, hess_yy, -1.0)
  hess_xy = jnp.where(interior_x & interior_y, hess_xy, 0.0)
  determinant = hess_xx * hess_yy - hess_xy * hess_xy
  concave = (hess_xx < 0.0) & (determinant > 1e-12)
  safe_determinant = jnp.where(concave, determinant, 1.0)
  step_x = -(hess_yy * grad_x - hess_xy * grad_y) / safe_determinant
  step_y = -(hess_xx * grad_y - hess_xy * grad_x) / safe_determinant
  step = jnp.stack([step_x, step_y], axis=-1)
  return jnp.clip(jnp.where(concave[..., None], step, 0.0), -0.5, 0.5)


def _soft_argmax(heatmaps: jax.Array, beta: float) -> jax.Array:
  """Expected ``(x, y)`` under ``softmax(beta * heatmaps)`` over each map's pixels."""
  height, width = heatmaps.shape[1:3]
  weights = spatial_softmax(beta * heatmaps)
  expected_x = jnp.einsum(
    "bhwl,w->bl", weights, jnp.arange(width, dtype=jnp.float32), precision=jax.lax.Precision.HIGHEST
  )
  expected_y = jnp.einsum(
    "bhwl,h->bl",
    weights,
    jnp.arange(height, dtype=jnp.float32),
    precision=jax.lax.Precision.HIGHEST,
  )
  return jnp.stack([expected_x, expected_y], axis=-1)


def decode_heatmaps(
  heatmaps: jax.Array,
  method: str = DEFAULT_DECODING_METHOD,
  *,
  blur_sigma: float | None = None,
  softmax_beta: float = 1.0,
) -> jax.Array:
  """Landmark locations from heatmaps (Eq. 8 and its sub-pixel refinements).

  Methods:
    "argmax": the integer location of the maximum, Eq. 8 literally (mean error
      0.38 px on uniformly placed sub-pixel landmarks).
    "quarter": argmax plus a quarter pixel towards the larger neighbour per axis
      (Newell et al. 2016; HRNet).
    "dark": argmax plus a second-order Taylor step on the log-heatmap (DARK,
      Zhang et al. 2020); the default. With ``blur_sigma`` the maps are first
      blurred by a Gaussian of that width (DARK's "distribution modulation") and
      the step starts from the blurred map's maximum. Pass the training sigma
      (``config.hourglass.sigma``): exact on clean maps either way, it cuts the
      error under noise 2-3x (std 0.05: 0.16 -> 0.05 px).
    "soft_argmax": the expected location under ``softmax(softmax_beta * H)`` over
      the whole map (integral regression); meant for logits of a network trained
      with a spatial-softmax loss (``softmax_beta=1``).

  Zero, flat, negative and border-peaked maps decode to finite locations inside
  ``[0, w - 1] x [0, h - 1]``.

  Args:
    heatmaps: ``[B, h, w, L]`` float (network outputs may be negative).
    method: one of ``DECODING_METHODS``.
    blur_sigma: "dark" only: Gaussian pre-blur in heatmap pixels, or None.
    softmax_beta: "soft_argmax" only: inverse temperature.

  Returns:
    ``[B, L, 2]`` float32 ``(x, y)`` in heatmap pixels. The integer location used by
    the score of Eq. 9 is ``heatmap_argmax(heatmaps)``.
  """
  heatmaps = _check_heatmaps(heatmaps)
  if method not in DECODING_METHODS:
    raise ValueError(f"method must be one of {DECODING_METHODS}, got {method!r}")
  if method == "soft_argmax":
    _check_positive(softmax_beta, "softmax_beta")
    return _soft_argmax(heatmaps, softmax_beta)
  if method == "dark" and blur_sigma is not None:
    if not isinstance(blur_sigma, (int, float)) or isinstance(blur_sigma, bool):
      raise ValueError(
        f"blur_sigma must be a Python number (it sets the kernel size), "
        f"got {type(blur_sigma).__name__}"
      )
    _check_positive(blur_sigma, "blur_sigma")
    # The refinement starts from the blurred map's own maximum: under noise the raw
    # argmax is often a pixel off, further than one clipped Newton step can recover
    # (measured: 0.157 -> 0.101 px at noise std 0.1).
    heatmaps = _gaussian_blur(heatmaps, float(blur_sigma))
  peaks = heatmap_argmax(heatmaps)
  locations = peaks.astype(heatmaps.dtype)
  if method == "quarter":
    locations = locations + _quarter_offsets(heatmaps, peaks)
  elif method == "dark":
    locations = locations + _dark_offsets(heatmaps, peaks)
  return locations


# ----------------------------------------------------------------------------
# Scores (Eq. 9) and reliability (Algorithm 2, lines 4-10)
# ----------------------------------------------------------------------------


def landmark_scores(heatmaps: jax.Array, peaks: jax.Array, radius: int) -> jax.Array:
  """Eq. 9: mean heatmap value in the (2r+1)x(2r+1) window centred on each peak.

  Window cells outside the map count as zero and still divide by ``(2r+1)^2``, as
  Eq. 9 is written: a landmark decoded on the border has less evidence, so it
  scores lower rather than borrowing confidence from a smaller window.

  Args:
    heatmaps: ``[B, h, w, L]`` float.
    peaks: ``[B, L, 2]`` int ``(x, y)``, normally ``heatmap_argmax(heatmaps)``.
    radius: r of Eq. 9 (``config.shape.score_radius``), a non-negative int.

  Returns:
    ``[B, L]`` float32.
  """
  heatmaps = _check_heatmaps(heatmaps)
  peaks = jnp.asarray(peaks)
  batch, height, width, num_landmarks = heatmaps.shape
  if peaks.shape != (batch, num_landmarks, 2) or not jnp.issubdtype(peaks.dtype, jnp.integer):
    raise ValueError(
      f"peaks must be int [B, L, 2] = {(batch, num_landmarks, 2)} matching "
      f"the heatmaps, got {peaks.dtype} {peaks.shape}"
    )
  if not isinstance(radius, int) or isinstance(radius, bool) or radius < 0:
    raise ValueError(f"radius must be a non-negative int, got {radius!r}")
  side = 2 * radius + 1
  offsets = jnp.arange(-radius, radius + 1, dtype=jnp.int32)
  x = peaks[..., 0, None, None].astype(jnp.int32) + offsets[None, :]
  y = peaks[..., 1, None, None].astype(jnp.int32) + offsets[:, None]
  x, y = jnp.broadcast_arrays(x, y)  # [B, L, side, side]
  inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
  shape = (batch, num_landmarks, side * side)
  values = _values_at(heatmaps, x.reshape(shape), y.reshape(shape))
  values = jnp.where(inside.reshape(shape), values, 0.0)
  return jnp.sum(values, axis=-1) / (side * side)


def normalise_scores(scores: jax.Array) -> jax.Array:
  """Algorithm 2 line 6: each face's scores divided by that face's best score.

  The paper prints ``w_i = w_i * max_i(w_i)``; we read it as a division. The
  thresholds K of Table IX (0.4 for the contour, 0.6 for facial features) only
  make sense on a [0, 1] scale relative to the best landmark of the face;
  multiplying would make the test depend on the absolute heatmap intensity
  (squared), which varies with the training loss, sigma and the face. A face
  whose best score is <= 0 has no evidence at all: all its scores become 0.

  Args:
    scores: ``[B, L]`` float, Eq. 9 scores.

  Returns:
    ``[B, L]`` float32, at most 1 (to rounding: XLA may divide by multiplying with
    the reciprocal), the best landmark of each face 1.
  """
  scores = _as_float(scores)
  if scores.ndim != 2:
    raise ValueError(f"scores must have shape [B, L], got {scores.shape}")
  face_best = jnp.max(scores, axis=-1, keepdims=True)
  has_evidence = face_best > 0.0
  return jnp.where(has_evidence, scores / jnp.where(has_evidence, face_best, 1.0), 0.0)


def reliable_mask(normalised_scores: jax.Array, thresholds: jax.Array | float) -> jax.Array:
  """Algorithm 2 lines 7-8: ``V_i = 1`` where the normalised score exceeds its threshold.

  Args:
    normalised_scores: ``[B, L]`` float from ``normalise_scores``.
    thresholds: ``[L]`` per-landmark K (Table IX: 0.4 contour, 0.6 features) or a
      scalar T.

  Returns:
    ``[B, L]`` bool, strictly greater than the threshold.
  """
  normalised_scores = _as_float(normalised_scores)
  thresholds = _as_float(thresholds)
  if normalised_scores.ndim != 2:
    raise ValueError(f"normalised_scores must have shape [B, L], got {normalised_scores.shape}")
  if thresholds.ndim > 1 or (
    thresholds.ndim == 1 and thresholds.shape[0] != normalised_scores.shape[1]
  ):
    raise ValueError(
      f"thresholds must be a scalar or [L] = [{normalised_scores.shape[1]}], "
      f"got shape {thresholds.shape}"
    )
  return normalised_scores > thresholds
