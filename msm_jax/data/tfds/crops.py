"""The stored crop of a prepared face: the window of the photo every training crop of that face
can sample, at the finest scale a training crop needs (docs/tfds.md).

A training crop (``augment.augment_face``) is the square of side q = margin x the box's longer
side around the box centre (``augment.face_crop_matrix``), moved by the augmentation: rotation
a, zoom z in [1 - s, 1 + s], shift up to t S (``augment.random_augmentation_matrix``; a flip is
symmetric about the crop centre). Its pixel centres lie within (S - 1) / 2 of the crop centre,
so in the photo it samples points within

    q (1/2 + t) (cos a + sin a) / (1 - s)          (a <= 45 degrees; sqrt(2) beyond)

of the square's centre along x and along y (``CropSpec.reach`` x q). The stored crop is the
square around every box of the face (the landmarks' and the record's) out to that reach, plus
``BORDER_PIXELS`` for the bilinear neighbours. Its scale (stored pixels per photo pixel) is
min(1, (1 + s) S / q): never finer than the photo, never coarser than the most zoomed-in
training crop. At scale 1 the window is cut without resampling (a whole-pixel shift of the
photo), so a training crop taken from it equals the one taken from the photo; below 1 it is
resampled once more (``augment.warp_image``), a bilinear interpolation of the photo's.

Everything a stored face keeps is in the stored crop's pixels, with ``crop_to_image`` (stored
crop -> photo pixels), so the input pipeline's transforms run on it unchanged: every crop they
draw is a similarity of one drawn from the photo.

NumPy and PIL only (runs per face while a dataset is built).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from msm_jax.core import geometry
from msm_jax.data import augment
from msm_jax.data.records import box_from_landmarks

# Stored pixels kept beyond the farthest point a training crop samples: its bilinear neighbour,
# and one more for the float rounding of the matrices that place the sample.
BORDER_PIXELS = 2
# Rounding slack when a config's reach is compared with the one the crops were built for.
_RELATIVE_SLACK = 1e-9


def rotation_spread(degrees: float) -> float:
  """How much a rotation by up to ``degrees`` widens a square's extent along x (and y)."""
  angle = math.radians(min(abs(float(degrees)), 45.0))
  return math.cos(angle) + math.sin(angle)


@dataclasses.dataclass(frozen=True)
class CropSpec:
  """What the stored crops of a prepared dataset serve.

  Attributes:
    crop_size: S, the largest training crop side (``config.data.crop_size``).
    box_margin: q / the box's longer side (``config.data.box_margin``).
    rotation_degrees, scale, translation: the largest rotation, zoom and shift of a training
      crop (``config.augment``, its schedule and ``config.stgan.perturb_*``).
  """

  crop_size: int = 256
  box_margin: float = 1.25
  rotation_degrees: float = 30.0
  scale: float = 0.2
  translation: float = 0.1

  def __post_init__(self):
    checks = (
      ("crop_size", float(self.crop_size).is_integer() and self.crop_size >= 1, "an integer >= 1"),
      ("box_margin", math.isfinite(self.box_margin) and self.box_margin > 0, "a number > 0"),
      ("rotation_degrees", 0 <= self.rotation_degrees < math.inf, "a number >= 0"),
      ("scale", 0 <= self.scale < 1, "a number in [0, 1)"),
      ("translation", 0 <= self.translation < math.inf, "a number >= 0"),
    )
    for field, valid, allowed in checks:
      if not valid:
        raise ValueError(f"crop {field}={getattr(self, field)!r}: expected {allowed}")

  @property
  def reach(self) -> float:
    """How far a training crop samples from its square's centre, in square sides (x or y)."""
    return (0.5 + self.translation) * rotation_spread(self.rotation_degrees) / (1.0 - self.scale)

  @property
  def half_extent(self) -> float:
    """The same distance in the box's longer sides: what the stored crop must cover."""
    return self.box_margin * self.reach

  @property
  def finest_pixels_per_square(self) -> float:
    """Training crop pixels per square side at the largest zoom: the stored crop's scale."""
    return (1.0 + self.scale) * self.crop_size

  @property
  def finest_pixels_per_box(self) -> float:
    """The same per box side: what the stored crop's resolution must reach."""
    return self.finest_pixels_per_square / self.box_margin

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


def config_spec(config) -> CropSpec:
  """What a training config asks of the stored crops: its crop, and the largest augmentation
  of the hourglass (the values and every scheduled knot) and of the ST-GAN's I_fake."""
  schedule = dict(config.augment.get("schedule", None) or {})

  def largest(field: str, perturbation: str) -> float:
    knots = [float(value) for _, value in schedule.get(field, ())]
    return max([float(config.augment[field]), float(config.stgan[perturbation]), *knots])

  return CropSpec(
    crop_size=int(config.data.crop_size),
    box_margin=float(config.data.box_margin),
    rotation_degrees=largest("rotation_degrees", "perturb_rotation_degrees"),
    scale=largest("scale", "perturb_scale"),
    translation=largest("translation", "perturb_translation"),
  )


def check_serves(built: CropSpec, wanted: CropSpec, what: str) -> None:
  """Raise ValueError (one line, naming the config fields) unless crops built for ``built``
  cover every training crop of ``wanted`` at its resolution."""
  slack = 1.0 + _RELATIVE_SLACK
  if wanted.half_extent > built.half_extent * slack:
    raise ValueError(
      f"config data.box_margin={wanted.box_margin:g} with augmentation up to "
      f"{wanted.rotation_degrees:g} degrees, scale {wanted.scale:g}, translation "
      f"{wanted.translation:g} samples {wanted.half_extent:.3f} box sides from the face centre; "
      f"{what} covers {built.half_extent:.3f} (built for {built.to_dict()})"
    )
  if wanted.finest_pixels_per_box > built.finest_pixels_per_box * slack:
    raise ValueError(
      f"config data.crop_size={wanted.crop_size} at zoom 1 + augment.scale={wanted.scale:g} with "
      f"data.box_margin={wanted.box_margin:g} needs {wanted.finest_pixels_per_box:.1f} pixels per "
      f"box side; {what} stores {built.finest_pixels_per_box:.1f} (built for {built.to_dict()})"
    )


def stored_window(boxes, spec: CropSpec) -> tuple[np.ndarray, int]:
  """Where a face's stored crop lies in its photo.

  Args:
    boxes: [K, 4] (x0, y0, x1, y1) photo pixels: every box a training crop may start from.
    spec: what the crops serve.
  Returns:
    ([3, 3] float64 photo -> stored crop pixels: a scale and a shift, the stored side). At
    scale 1 the shift is whole pixels.
  """
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  extents = boxes[:, 2:] - boxes[:, :2]
  if not np.isfinite(boxes).all() or (extents <= 0).any():
    raise ValueError(f"face boxes must be finite with x1 > x0 and y1 > y0, got {boxes.tolist()}")
  centres = (boxes[:, :2] + boxes[:, 2:]) / 2
  squares = spec.box_margin * extents.max(axis=1)
  reach = spec.reach * squares[:, None]
  low, high = (centres - reach).min(axis=0), (centres + reach).max(axis=0)
  scale = min(1.0, spec.finest_pixels_per_square / squares.min())
  matrix = np.eye(3)
  if scale == 1.0:
    origin = np.floor(low) - BORDER_PIXELS
    side = int((np.ceil(high) + BORDER_PIXELS - origin).max()) + 1
    matrix[:2, 2] = -origin
    return matrix, side
  side = int(np.ceil((high - low).max() * scale)) + 2 * BORDER_PIXELS + 1
  matrix[:2, :2] *= scale
  matrix[:2, 2] = (side - 1) / 2 - scale * (low + high) / 2
  return matrix, side


def _whole_pixel_shift(matrix: np.ndarray) -> bool:
  return bool(
    np.array_equal(matrix[:2, :2], np.eye(2))
    and np.array_equal(matrix[:2, 2], np.round(matrix[:2, 2]))
  )


def cut_window(image: np.ndarray, matrix: np.ndarray, side: int) -> np.ndarray:
  """The stored crop: [side, side, 3] uint8, zeros outside the photo (the samplers' padding).

  A whole-pixel shift copies the photo's pixels; any other matrix resamples them
  (``augment.warp_image``: bilinear, the training crops' own sampler).
  """
  if not _whole_pixel_shift(matrix):
    return augment.warp_image(image, matrix, side)
  height, width = image.shape[:2]
  x0, y0 = (-int(value) for value in matrix[:2, 2])
  crop = np.zeros((side, side, 3), np.uint8)
  left, top = max(x0, 0), max(y0, 0)
  right, bottom = min(x0 + side, width), min(y0 + side, height)
  if right > left and bottom > top:
    crop[top - y0 : bottom - y0, left - x0 : right - x0] = image[top:bottom, left:right]
  return crop


def stored_face(image: np.ndarray, landmarks, box, spec: CropSpec) -> dict:
  """One face of a photo as a prepared dataset keeps it.

  Args:
    image: [H, W, 3] uint8, the photo.
    landmarks: [L, 2] photo pixels.
    box: [4] the record's face box, photo pixels.
    spec: what the crops serve.
  Returns:
    dict with image [side, side, 3] uint8; landmarks [L, 2] float32 and box [4] float32 in its
    pixels; crop_to_image [3, 3] float64, stored crop -> photo pixels.
  """
  landmarks = np.asarray(landmarks, np.float64)
  box = np.asarray(box, np.float64)
  matrix, side = stored_window(np.stack([box_from_landmarks(landmarks), box]), spec)
  corners = geometry.apply_affine(box.reshape(2, 2), matrix)  # a scale and a shift: still a box
  return {
    "image": cut_window(image, matrix, side),
    "landmarks": geometry.apply_affine(landmarks, matrix).astype(np.float32),
    "box": corners.reshape(4).astype(np.float32),
    "crop_to_image": geometry.invert_affine(matrix),
  }
