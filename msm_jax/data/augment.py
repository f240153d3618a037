"""Face crops and data augmentation shared by both training stages (Sec. IV-C).

Sec. IV-C trains the ST-GAN and the hourglass on 128 x 128 face crops augmented by
"random flipping, rotation (between +-30 degrees), scaling (between +-10 %) and
colour jittering". Every geometric step here is a ``[3, 3]`` pixel matrix
(``msm_jax.core.geometry``), composed into ONE image -> crop matrix, so the image is
resampled once and the landmarks go through exactly the same map:

    crop pixel = flip @ augmentation @ face_crop  (image pixel)

Photometric steps (colour jitter, random-erasing occlusion) act on the crop.

NumPy, OpenCV and PIL only: this runs per example in Grain worker processes, where
nothing should touch a JAX device or compile.

:func:`warp_image` is OpenCV's ``warpAffine`` (bilinear, zeros outside) on the window of the
image its output samples: OpenCV's pixel centres are integers, as this library's, and an
outside tap weighs zero as in ``msm_jax.core.sampler.warp`` (PyTorch ``grid_sample``,
align_corners=False, zeros padding). It differs from that exact interpolation in two
roundings: each sample position is rounded to 1/32 pixel (OpenCV's ``INTER_TAB_SIZE``), which
moves a value by at most (|df/dx| + |df/dy|) / 64, and the value is rounded to uint8 (1/2).
Exact per-channel float warps cost several times more per crop (`docs/performance.md`, input
pipeline), and the window keeps the cost independent of the photo's size.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
from PIL import Image

from msm_jax.core import geometry

# Random erasing (Zhong et al. 2020, the torchvision defaults): the patch covers
# 2-33 % of the crop with aspect ratio 0.3-3.3 (sampled log-uniformly).
_ERASE_AREA_RANGE = (0.02, 0.33)
_ERASE_ASPECT_RANGE = (0.3, 3.3)
# ITU-R BT.601 luma weights, the grey level used for contrast and saturation.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


@dataclasses.dataclass(frozen=True)
class AugmentOptions:
  """The augmentation of Sec. IV-C; zeros switch a component off.

  Attributes:
    flip: random horizontal flip with probability 1/2.
    rotation_degrees: rotation uniform in [-r, r] about the crop centre.
    scale: zoom factor uniform in [1 - s, 1 + s].
    translation: shift uniform in [-t, t] * crop_size along x and y.
    color_jitter: brightness, contrast and saturation factors uniform in
      [1 - c, 1 + c] each.
    random_erasing: probability of pasting one noise patch (an occluder).
    natural_occluder: probability of pasting one patch of natural texture (a
      window of the same photo, rectangle or ellipse) over 5-35 % of the crop.
  """

  flip: bool = False
  rotation_degrees: float = 0.0
  scale: float = 0.0
  translation: float = 0.0
  color_jitter: float = 0.0
  random_erasing: float = 0.0
  natural_occluder: float = 0.0

  @classmethod
  def from_config(cls, augment_config) -> AugmentOptions:
    """Reads ``config.augment`` (an ml_collections ConfigDict or any object with the fields)."""
    return cls(
      flip=bool(augment_config.flip),
      rotation_degrees=float(augment_config.rotation_degrees),
      scale=float(augment_config.scale),
      translation=float(augment_config.translation),
      color_jitter=float(augment_config.color_jitter),
      random_erasing=float(augment_config.random_erasing),
      natural_occluder=float(augment_config.get("natural_occluder", 0.0)),
    )


# The AugmentOptions fields a schedule may move (the numeric ones).
SCHEDULABLE_FIELDS = (
  "rotation_degrees",
  "scale",
  "translation",
  "color_jitter",
  "random_erasing",
  "natural_occluder",
)


def check_schedule(schedule) -> None:
  """Raise ValueError naming the field unless ``schedule`` maps schedulable fields to
  non-empty sequences of (epoch, value) knots, epochs >= 0 and non-decreasing, values >= 0
  (probabilities <= 1)."""
  for field, knots in dict(schedule).items():
    if field not in SCHEDULABLE_FIELDS:
      raise ValueError(
        f"augment.schedule.{field}: not a schedulable field ({', '.join(SCHEDULABLE_FIELDS)})"
      )
    try:
      pairs = np.asarray(knots, np.float64)
    except (TypeError, ValueError):
      pairs = np.zeros((0, 0))
    if pairs.ndim != 2 or pairs.shape[0] < 1 or pairs.shape[1] != 2 or not np.isfinite(pairs).all():
      raise ValueError(
        f"augment.schedule.{field}={knots!r}: expected (epoch, value) pairs, "
        "e.g. ((40, 30.0), (56, 8.0))"
      )
    epochs, values = pairs[:, 0], pairs[:, 1]
    if (epochs < 0).any() or (np.diff(epochs) < 0).any():
      raise ValueError(
        f"augment.schedule.{field}={knots!r}: epochs must be >= 0 and non-decreasing"
      )
    upper = 1.0 if field in ("random_erasing", "natural_occluder") else np.inf
    if (values < 0).any() or (values > upper).any():
      raise ValueError(f"augment.schedule.{field}={knots!r}: values must lie in [0, {upper}]")


def scheduled_options(options: AugmentOptions, schedule, epoch: float) -> AugmentOptions:
  """``options`` with each scheduled field at ``epoch`` (fractional epochs of training).

  A field's knots ((e0, v0), (e1, v1), ...) give v0 up to e0, straight lines between knots
  and the last value after the last knot; fields without knots keep their value. Schedules
  inside one run take the place of chained fine-tunes (milder jitter late, more occluders).
  """
  changes = {}
  for field, knots in dict(schedule).items():
    pairs = np.asarray(knots, np.float64).reshape(-1, 2)
    changes[field] = float(np.interp(epoch, pairs[:, 0], pairs[:, 1]))
  return dataclasses.replace(options, **changes) if changes else options


def face_crop_matrix(box, crop_size: int, margin: float) -> np.ndarray:
  """Image pixels -> pixels of a ``crop_size`` square crop around a face box.

  The box is grown by ``margin`` about its centre and made square (side =
  ``margin * max(width, height)``, so the whole box stays inside); that square's
  edges become the crop's edges (``geometry.crop_matrix``: a similarity, no
  stretching).

  Args:
    box: [4] (x0, y0, x1, y1), image pixel coordinates, x1 > x0, y1 > y0.
    crop_size: side S of the crop in pixels.
    margin: scale factor of the box (1.25: a quarter of the box around it).
  Returns:
    [3, 3] float64 image -> crop pixel matrix.
  """
  box = np.asarray(box, np.float64)
  if box.shape != (4,) or not np.all(np.isfinite(box)):
    raise ValueError(f"box must be 4 finite numbers (x0, y0, x1, y1), got {box}")
  if box[2] <= box[0] or box[3] <= box[1]:
    raise ValueError(f"box must satisfy x1 > x0 and y1 > y0, got {box}")
  if margin <= 0:
    raise ValueError(f"margin must be positive, got {margin}")
  centre = (box[:2] + box[2:]) / 2
  half_side = margin * max(box[2] - box[0], box[3] - box[1]) / 2
  square = np.concatenate([centre - half_side, centre + half_side])
  return geometry.crop_matrix(square, crop_size)


def random_augmentation_matrix(
  rng: np.random.Generator,
  crop_size: int,
  rotation_degrees: float,
  scale: float,
  translation: float,
) -> np.ndarray:
  """A random similarity of the crop onto itself, about the crop centre.

  ``p' = R(angle) * zoom * (p - c) + c + shift`` with c = ((S - 1) / 2, (S - 1) / 2)
  the centre in pixel-centre coordinates, angle ~ U[-rotation_degrees,
  rotation_degrees], zoom ~ U[1 - scale, 1 + scale] and each shift component
  ~ U[-translation, translation] * S.

  Args:
    rng: the example's generator (draws: angle, zoom, shift x, shift y).
    crop_size: S.
  Returns:
    [3, 3] float64 crop -> crop pixel matrix.
  """
  angle = np.deg2rad(rng.uniform(-rotation_degrees, rotation_degrees))
  zoom = rng.uniform(1.0 - scale, 1.0 + scale)
  shift = rng.uniform(-translation, translation, size=2) * crop_size
  centre = (crop_size - 1) / 2
  cos, sin = zoom * np.cos(angle), zoom * np.sin(angle)
  linear = np.array([[cos, -sin], [sin, cos]])
  matrix = np.eye(3)
  matrix[:2, :2] = linear
  matrix[:2, 2] = centre + shift - linear @ np.array([centre, centre])
  return matrix


def flip_matrix(width: int) -> np.ndarray:
  """Horizontal mirror of a width-W frame: x' = W - 1 - x (column j <-> W - 1 - j).

  Returns:
    [3, 3] float64; the landmarks must also be permuted (left <-> right names).
  """
  return np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def warp_image(image: np.ndarray, matrix: np.ndarray, out_size: int) -> np.ndarray:
  """Resamples an image into an ``out_size`` square: bilinear, pixel-centre convention, zeros
  outside the image (``sampler.warp``'s semantics to the roundings of the module docstring).

  Args:
    image: [H, W, 3] uint8.
    matrix: [3, 3] image pixel -> output pixel (e.g. from :func:`face_crop_matrix`).
    out_size: side of the square output.
  Returns:
    [out_size, out_size, 3] uint8.
  """
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
    raise ValueError(f"image must be [H, W, 3] uint8, got {image.dtype} {image.shape}")
  matrix = np.asarray(matrix, np.float64)
  if matrix.shape != (3, 3) or not np.isfinite(matrix).all() or abs(np.linalg.det(matrix)) < 1e-12:
    raise ValueError(f"matrix must be a finite, non-singular [3, 3] affine map, got {matrix}")
  out_to_image = geometry.invert_affine(matrix)
  height, width = image.shape[:2]

  # Only the window the output samples goes to OpenCV (an image can be many times the crop,
  # and OpenCV's sample positions must fit 16 bits): the footprint of the output's pixel
  # centres, plus a pixel each side for the bilinear neighbours and the position rounding,
  # clipped to the image (beyond it every tap is zero anyway).
  last = out_size - 1.0
  corners = geometry.apply_affine(
    np.array([[0.0, 0.0], [last, 0.0], [0.0, last], [last, last]]), out_to_image
  )
  x_lo = max(int(np.floor(corners[:, 0].min())) - 1, 0)
  y_lo = max(int(np.floor(corners[:, 1].min())) - 1, 0)
  x_hi = min(int(np.ceil(corners[:, 0].max())) + 2, width)
  y_hi = min(int(np.ceil(corners[:, 1].max())) + 2, height)
  if x_hi <= x_lo or y_hi <= y_lo:  # the output misses the image entirely
    return np.zeros((out_size, out_size, 3), np.uint8)
  window_to_out = matrix @ np.array([[1.0, 0.0, x_lo], [0.0, 1.0, y_lo], [0.0, 0.0, 1.0]])
  return cv2.warpAffine(
    np.ascontiguousarray(image[y_lo:y_hi, x_lo:x_hi]),
    window_to_out[:2],
    (out_size, out_size),
    flags=cv2.INTER_LINEAR,
    borderMode=cv2.BORDER_CONSTANT,
    borderValue=(0, 0, 0),
  )


def color_jitter(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
  """Random brightness, contrast and saturation (in that order), each by U[1 - s, 1 + s].

  brightness: ``x * b``; contrast: ``(x - mean grey) * c + mean grey``;
  saturation: ``(x - grey(x)) * a + grey(x)`` per pixel (torchvision's ColorJitter
  definitions, in a fixed order so one draw sequence means one result, and
  clipped once at the end rather than after each step).

  Args:
    image: [..., H, W, 3] uint8; several images (leading dims) get the same
      colour map, with the mean grey taken over all of them.
    rng: draws brightness, contrast, saturation factors, in that order.
    strength: s in [0, 1).
  Returns:
    [..., H, W, 3] uint8.
  """
  brightness, contrast, saturation = rng.uniform(1.0 - strength, 1.0 + strength, size=3)
  pixels = image.astype(np.float32)
  mean_grey = brightness * float(np.mean(pixels @ _LUMA))
  # All three steps are affine maps of the RGB vector, so they compose into one
  # 3 x 3 matrix and an offset (saturation keeps the grey offset: grey(t,t,t) = t).
  to_grey = np.outer(np.ones(3, np.float32), _LUMA)
  colour_map = (
    brightness
    * contrast
    * (saturation * np.eye(3, dtype=np.float32) + (1.0 - saturation) * to_grey)
  )
  pixels = pixels @ colour_map.T.astype(np.float32) + np.float32((1.0 - contrast) * mean_grey)
  return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def _random_patch(rng, size: int, area_range, aspect_range, min_side: int):
  """(top, left, height, width) of a rectangle inside an S x S crop: area a fraction
  U[area_range] of the crop, aspect (height / width) log-uniform in aspect_range.
  Draws area, log aspect, top, left, in that order."""
  area = rng.uniform(*area_range) * size * size
  aspect = np.exp(rng.uniform(*np.log(aspect_range)))
  height = int(np.clip(np.round(np.sqrt(area * aspect)), min_side, size))
  width = int(np.clip(np.round(np.sqrt(area / aspect)), min_side, size))
  top = int(rng.integers(0, size - height + 1))
  left = int(rng.integers(0, size - width + 1))
  return top, left, height, width


def random_erasing(image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator):
  """Pastes one uniform-noise rectangle (a synthetic occluder) into the crop.

  Args:
    image: [S, S, 3] uint8 (not modified).
    landmarks: [L, 2] crop pixel coordinates.
    rng: draws area, log aspect ratio, top-left corner, then the noise.
  Returns:
    (image [S, S, 3] uint8 with the patch, covered [L] bool: landmarks whose
    position lies inside the patch's area).
  """
  top, left, patch_h, patch_w = _random_patch(
    rng, image.shape[0], _ERASE_AREA_RANGE, _ERASE_ASPECT_RANGE, min_side=1
  )
  erased = image.copy()
  erased[top : top + patch_h, left : left + patch_w] = rng.integers(
    0, 256, (patch_h, patch_w, 3), dtype=np.uint8
  )
  # Rows top..top+h-1 cover [top - 0.5, top + h - 0.5] in pixel-centre coordinates.
  x, y = landmarks[:, 0], landmarks[:, 1]
  covered = (
    (x >= left - 0.5) & (x < left + patch_w - 0.5) & (y >= top - 0.5) & (y < top + patch_h - 0.5)
  )
  return erased, covered


# Natural-texture occluders: area fraction of the crop, aspect ratio, and the side of the
# photo window they are cut from (fraction of the photo's shorter side).
_OCCLUDER_AREA_RANGE = (0.05, 0.35)
_OCCLUDER_ASPECT_RANGE = (0.5, 2.0)
_OCCLUDER_WINDOW_RANGE = (0.1, 0.5)


def natural_occluder(
  crop: np.ndarray, landmarks: np.ndarray, photo: np.ndarray, rng: np.random.Generator
):
  """Pastes a patch of natural texture into the crop: a random window of ``photo``
  (background, clothing, hair, other faces), resized to the patch, as a rectangle or an
  ellipse (one half each). Real occluders are textured, unlike random erasing's noise.

  Args:
    crop: [S, S, 3] uint8 (not modified).
    landmarks: [L, 2] crop pixel coordinates.
    photo: [H, W, 3] uint8, the image the texture is cut from.
    rng: draws area, log aspect, position, shape, then the photo window.
  Returns:
    (crop [S, S, 3] uint8 with the patch, covered [L] bool: landmarks under the patch).
  """
  top, left, patch_h, patch_w = _random_patch(
    rng, crop.shape[0], _OCCLUDER_AREA_RANGE, _OCCLUDER_ASPECT_RANGE, min_side=2
  )
  elliptical = rng.uniform() < 0.5
  height, width = photo.shape[:2]
  side = max(2, int(rng.uniform(*_OCCLUDER_WINDOW_RANGE) * min(height, width)))
  y0 = int(rng.integers(0, height - side + 1))
  x0 = int(rng.integers(0, width - side + 1))
  texture = np.asarray(
    Image.fromarray(photo[y0 : y0 + side, x0 : x0 + side]).resize(
      (patch_w, patch_h), Image.Resampling.BILINEAR
    )
  )
  # Pixel (row, column) of the patch is covered when its centre is inside the shape.
  rows = (np.arange(patch_h) + 0.5) / patch_h * 2 - 1
  cols = (np.arange(patch_w) + 0.5) / patch_w * 2 - 1
  mask = (
    (rows[:, None] ** 2 + cols[None, :] ** 2 <= 1.0)
    if elliptical
    else np.ones((patch_h, patch_w), bool)
  )
  occluded_crop = crop.copy()
  window = occluded_crop[top : top + patch_h, left : left + patch_w]
  window[mask] = texture[mask]
  # A landmark is covered when the patch pixel it falls in is covered.
  column = np.floor(landmarks[:, 0] + 0.5).astype(int) - left
  row = np.floor(landmarks[:, 1] + 0.5).astype(int) - top
  inside = (row >= 0) & (row < patch_h) & (column >= 0) & (column < patch_w)
  covered = np.zeros(landmarks.shape[0], bool)
  covered[inside] = mask[row[inside], column[inside]]
  return occluded_crop, covered


def inside_crop(landmarks: np.ndarray, crop_size: int) -> np.ndarray:
  """[L] bool: finite and within the crop's area [-0.5, S - 0.5]^2."""
  with np.errstate(invalid="ignore"):
    return np.all(
      np.isfinite(landmarks) & (landmarks >= -0.5) & (landmarks <= crop_size - 0.5), axis=-1
    )


def augment_face(
  image: np.ndarray,
  landmarks: np.ndarray,
  occluded: np.ndarray | None,
  box,
  rng: np.random.Generator,
  *,
  crop_size: int,
  margin: float,
  options: AugmentOptions,
  flip_permutation,
) -> dict:
  """One augmented hourglass training crop (Sec. IV-C): geometry, then photometry.

  Args:
    image: [H, W, 3] uint8.
    landmarks: [L, 2] image pixel coordinates.
    occluded: [L] bool from the dataset, or None (none marked).
    box: [4] (x0, y0, x1, y1), the box the crop is centred on.
    rng: the example's generator (deterministic per example and epoch).
    crop_size: S, the network input side (128).
    margin: box scale (``config.data.box_margin``).
    options: which augmentations, how strong.
    flip_permutation: [L] the scheme's left/right permutation.
  Returns:
    dict with
      image: [S, S, 3] uint8;
      landmarks: [L, 2] float32 crop pixel coordinates (flipped names swapped);
      visible: [L] bool, inside the crop;
      occluded: [L] bool, marked by the dataset or covered by random erasing;
      matrix: [3, 3] float32, image -> crop pixels (before photometry).
  """
  landmarks = np.asarray(landmarks, np.float64)
  num_points = landmarks.shape[0]
  occluded = np.zeros(num_points, bool) if occluded is None else np.asarray(occluded, bool)
  matrix = random_augmentation_matrix(
    rng, crop_size, options.rotation_degrees, options.scale, options.translation
  ) @ face_crop_matrix(box, crop_size, margin)
  # Drawn even when flipping is off, so switching it never reshuffles the other draws.
  flipped = rng.uniform() < 0.5 and options.flip
  if flipped:
    matrix = flip_matrix(crop_size) @ matrix
  crop = warp_image(image, matrix, crop_size)
  crop_landmarks = geometry.apply_affine(landmarks, matrix)
  if flipped:
    permutation = np.asarray(flip_permutation)
    if permutation.shape != (num_points,):
      raise ValueError(
        f"flip_permutation has {permutation.shape[0]} entries for {num_points} landmarks"
      )
    crop_landmarks = crop_landmarks[permutation]
    occluded = occluded[permutation]
  if options.color_jitter > 0:
    crop = color_jitter(crop, rng, options.color_jitter)
  if options.random_erasing > 0 and rng.uniform() < options.random_erasing:
    crop, covered = random_erasing(crop, crop_landmarks, rng)
    occluded = occluded | covered
  if options.natural_occluder > 0 and rng.uniform() < options.natural_occluder:
    crop, covered = natural_occluder(crop, crop_landmarks, image, rng)
    occluded = occluded | covered
  return {
    "image": crop,
    "landmarks": crop_landmarks.astype(np.float32),
    "visible": inside_crop(crop_landmarks, crop_size),
    "occluded": occluded,
    "matrix": matrix.astype(np.float32),
  }
