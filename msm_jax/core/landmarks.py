"""Landmark schemes: which index is which part of the face, for 68, 98 and 29 points.

Everything in MSM that needs to know *what* a landmark is goes through a
:class:`LandmarkScheme`:

* the NME normalisers of Sec. IV-B, Eq. 12: outer eye corners (inter-ocular) and
  pupils / eye centres (inter-pupil);
* the canonical pose of ST-GAN and of the shape dictionary (Sec. III-A, Sec. IV-C:
  "affine transformation is performed with the ground truth coordinates of the
  pupil and the coordinates of the midpoint"): pupils and mouth centre;
* the two groups of reliability thresholds K of Sec. IV-G / Table IX: landmarks on
  the face *contour* (K = 0.4 in the paper) and on the inner facial *features*
  (K = 0.6);
* horizontal-flip augmentation (Sec. IV-C): the left/right permutation.

Schemes (0-based indices, as everywhere in msm-jax):

* ``300w`` -- 68-point iBUG / 300-W (also Menpo semi-frontal and COFW-68, the
  re-annotation of COFW that the paper evaluates on, Sec. IV-A): jaw 0-16, brows
  17-26, nose 27-35, eyes 36-41 / 42-47, mouth 48-67.
* ``wflw`` -- 98-point WFLW: contour 0-32, brows 33-50, nose 51-59, eyes 60-67 /
  68-75, mouth 76-95, annotated pupils 96 / 97.
* ``cofw`` -- 29-point COFW (RCPR layout, Burgos-Artizzu et al. 2013): brows 0-7,
  eye corners 8-11, eyelids 12-15, pupils 16 / 17, nose 18-21, mouth 22-27,
  chin 28. Its inter-ocular pair (8, 9) is the one HRNet-facial's ``compute_nme``
  uses.

Side convention: every left/right pair in a scheme (eyes, eye corners, pupils) is
ordered by *image* side: first the eye on the image's left (smaller x in an
upright frontal face, i.e. the subject's right eye), then the one on the image's
right. All three datasets list that side first.

The functions take ``[..., L, 2]`` landmark arrays ``(x, y)`` in 0-based
pixel-centre coordinates (see ``msm_jax/__init__.py``), numpy or jax: numpy in
gives numpy out, jax in gives jax out, and all of them are jit-able (the scheme is
a hashable constant, closed over or passed as a static argument).
"""

from __future__ import annotations

import dataclasses
from typing import Union

import jax
import jax.numpy as jnp
import numpy as np

ArrayLike = Union[np.ndarray, jax.Array]


@dataclasses.dataclass(frozen=True)
class LandmarkScheme:
  """Which landmark index is which part of the face, for one annotation scheme.

  All indices are 0-based; every pair is ordered (image-left, image-right).

  Attributes:
    name: canonical short name ("300w", "wflw", "cofw").
    num_points: L, the number of landmarks.
    outer_eye_corners: the two outer eye corners (inter-ocular normaliser).
    eye_contours: the points on each eye's contour (corners and eyelids).
    pupil_indices: the annotated pupils, or None when the scheme has none and the
      pupil is the mean of the eye's contour points (300-W).
    mouth_indices: the points whose mean is the mouth centre.
    contour_indices: the face-contour group of Table IX (low threshold K).
    feature_indices: the inner-facial-feature group of Table IX (high K).
    flip_permutation: ``flipped[i] = mirrored[flip_permutation[i]]``; an
      involution (left/right swap, centre-line points fixed).
  """

  name: str
  num_points: int
  outer_eye_corners: tuple[int, int]
  eye_contours: tuple[tuple[int, ...], tuple[int, ...]]
  pupil_indices: tuple[int, int] | None
  mouth_indices: tuple[int, ...]
  contour_indices: tuple[int, ...]
  feature_indices: tuple[int, ...]
  flip_permutation: tuple[int, ...]

  def __post_init__(self):
    # A wrong index table silently corrupts every metric and augmentation
    # downstream, so the tables are checked once, here, when they are built.
    num = self.num_points
    groups = {
      "outer_eye_corners": self.outer_eye_corners,
      "eye_contours[0]": self.eye_contours[0],
      "eye_contours[1]": self.eye_contours[1],
      "pupil_indices": self.pupil_indices or (),
      "mouth_indices": self.mouth_indices,
      "contour_indices": self.contour_indices,
      "feature_indices": self.feature_indices,
    }
    for field, indices in groups.items():
      if any(not 0 <= i < num for i in indices):
        raise ValueError(
          f"LandmarkScheme {self.name!r}: {field} has an index outside [0, {num}): {indices}"
        )
    regions = self.contour_indices + self.feature_indices
    if sorted(regions) != list(range(num)):
      raise ValueError(
        f"LandmarkScheme {self.name!r}: contour_indices and "
        f"feature_indices must partition range({num})"
      )
    perm = self.flip_permutation
    if sorted(perm) != list(range(num)):
      raise ValueError(
        f"LandmarkScheme {self.name!r}: flip_permutation is not a permutation of range({num})"
      )
    if any(perm[perm[i]] != i for i in range(num)):
      raise ValueError(
        f"LandmarkScheme {self.name!r}: flip_permutation is not "
        "an involution (flipping twice must be the identity)"
      )


def _permutation_from_pairs(num_points: int, pairs) -> tuple[int, ...]:
  """Flip permutation swapping each (a, b) of ``pairs``; other points map to themselves."""
  perm = list(range(num_points))
  for a, b in pairs:
    perm[a], perm[b] = b, a
  return tuple(perm)


def _span(start: int, stop: int) -> tuple[int, ...]:
  return tuple(range(start, stop))


def _zip_reversed(left, right):
  """Pairs a left run of indices with a right run listed in the mirrored order."""
  return list(zip(left, reversed(right)))


# 68-point iBUG / 300-W. Mirror pairs: jaw k <-> 16-k; brows 17-21 <-> 26-22; nose
# wings 31,32 <-> 35,34; eyes: the left eye runs clockwise from its outer corner
# (36), the right eye clockwise from its inner corner (42), so 36<->45, 37<->44,
# 38<->43, 39<->42, 40<->47, 41<->46; lips run clockwise from the left corner.
_PAIRS_68 = (
  _zip_reversed(range(0, 8), range(9, 17))
  + _zip_reversed(range(17, 22), range(22, 27))
  + [(31, 35), (32, 34)]
  + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]
  + [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]
  + [(60, 64), (61, 63), (65, 67)]
)

SCHEME_300W = LandmarkScheme(
  name="300w",
  num_points=68,
  outer_eye_corners=(36, 45),
  eye_contours=(_span(36, 42), _span(42, 48)),
  pupil_indices=None,
  mouth_indices=_span(48, 68),
  contour_indices=_span(0, 17),
  feature_indices=_span(17, 68),
  flip_permutation=_permutation_from_pairs(68, _PAIRS_68),
)

# 98-point WFLW. Contour k <-> 32-k; each brow is an upper run (33-37 / 42-46)
# then a lower run back (38-41 / 47-50); eyes have 8 points, the left clockwise
# from its outer corner (60), the right clockwise from its inner corner (68);
# lips clockwise from the left corner; 96 / 97 are the annotated pupils.
_PAIRS_98 = (
  _zip_reversed(range(0, 16), range(17, 33))
  + _zip_reversed(range(33, 38), range(42, 47))
  + _zip_reversed(range(38, 42), range(47, 51))
  + [(55, 59), (56, 58)]
  + [(60, 72), (61, 71), (62, 70), (63, 69), (64, 68), (65, 75), (66, 74), (67, 73)]
  + [(76, 82), (77, 81), (78, 80), (83, 87), (84, 86)]
  + [(88, 92), (89, 91), (93, 95)]
  + [(96, 97)]
)

SCHEME_WFLW = LandmarkScheme(
  name="wflw",
  num_points=98,
  outer_eye_corners=(60, 72),
  eye_contours=(_span(60, 68), _span(68, 76)),
  # WFLW annotates the pupils; using them (rather than the eye-contour mean)
  # follows the paper's "ground truth coordinates of the pupil" (Sec. IV-C).
  pupil_indices=(96, 97),
  mouth_indices=_span(76, 96),
  contour_indices=_span(0, 33),
  feature_indices=_span(33, 98),
  flip_permutation=_permutation_from_pairs(98, _PAIRS_98),
)

# 29-point COFW (RCPR). Left/right points alternate: brow outer 0/1, brow inner
# 2/3, brow top 4/6 and bottom 5/7, eye outer 8/9, eye inner 10/11, eye top 12/14
# and bottom 13/15, pupils 16/17, nose wings 18/19, mouth corners 22/23. On the
# centre line: nose tip 20, nose bottom 21, lips 24-27, chin 28.
_PAIRS_29 = [
  (0, 1),
  (2, 3),
  (4, 6),
  (5, 7),
  (8, 9),
  (10, 11),
  (12, 14),
  (13, 15),
  (16, 17),
  (18, 19),
  (22, 23),
]

SCHEME_COFW = LandmarkScheme(
  name="cofw",
  num_points=29,
  outer_eye_corners=(8, 9),
  eye_contours=((8, 12, 10, 13), (9, 14, 11, 15)),
  pupil_indices=(16, 17),
  mouth_indices=_span(22, 28),
  # COFW-29 has no jaw line; the chin is its only face-contour point, so it is
  # the whole contour group of Table IX (threshold 0.4), everything else is a
  # facial feature (threshold 0.6).
  contour_indices=(28,),
  feature_indices=_span(0, 28),
  flip_permutation=_permutation_from_pairs(29, _PAIRS_29),
)

_SCHEMES_BY_NAME = {
  "300w": SCHEME_300W,
  "ibug": SCHEME_300W,
  "ibug68": SCHEME_300W,
  "300w68": SCHEME_300W,
  "68": SCHEME_300W,
  "cofw68": SCHEME_300W,
  "wflw": SCHEME_WFLW,
  "wflw98": SCHEME_WFLW,
  "98": SCHEME_WFLW,
  "cofw": SCHEME_COFW,
  "cofw29": SCHEME_COFW,
  "29": SCHEME_COFW,
}


def get_scheme(name_or_num_points: str | int | LandmarkScheme) -> LandmarkScheme:
  """Returns the landmark scheme for a dataset name or a number of points.

  Args:
    name_or_num_points: "300w" / "300-W" / "ibug68" / 68, "wflw" / 98, "cofw" /
      29 (case, "-", "_" and spaces ignored), or a LandmarkScheme (returned
      as is). "cofw68" is the 68-point COFW re-annotation the paper evaluates
      on; it uses the 300-W scheme.

  Raises:
    ValueError: for any other name or number.
  """
  if isinstance(name_or_num_points, LandmarkScheme):
    return name_or_num_points
  if isinstance(name_or_num_points, (int, np.integer)) and not isinstance(name_or_num_points, bool):
    key = str(int(name_or_num_points))
  elif isinstance(name_or_num_points, str):
    key = "".join(ch for ch in name_or_num_points.lower() if ch not in "-_ ")
  else:
    key = None
  if key not in _SCHEMES_BY_NAME:
    raise ValueError(
      f"get_scheme: unknown landmark scheme {name_or_num_points!r}; expected one "
      f"of 68 / '300w' / 'ibug68', 98 / 'wflw', 29 / 'cofw' (or 'cofw68')"
    )
  return _SCHEMES_BY_NAME[key]


def _as_landmarks(shapes, scheme: LandmarkScheme, caller: str):
  """Returns (array namespace, shapes as an array of it), checking [..., L, 2]."""
  xp = jnp if isinstance(shapes, jax.Array) else np
  shapes = xp.asarray(shapes)
  if shapes.ndim < 2 or shapes.shape[-2:] != (scheme.num_points, 2):
    raise ValueError(
      f"{caller}: shapes must be [..., {scheme.num_points}, 2] for "
      f"the {scheme.name!r} scheme, got {tuple(shapes.shape)}"
    )
  return xp, shapes


def pupils(shapes: ArrayLike, scheme: LandmarkScheme) -> ArrayLike:
  """Pupil (eye-centre) positions, the inter-pupil normaliser of Eq. 12.

  Annotated pupils where the scheme has them (WFLW, COFW), else the mean of each
  eye's contour points (300-W).

  Args:
    shapes: [..., L, 2] float landmarks (x, y).
    scheme: the LandmarkScheme of ``shapes``.

  Returns:
    [..., 2, 2]: (image-left pupil, image-right pupil), each (x, y).
  """
  xp, shapes = _as_landmarks(shapes, scheme, "pupils")
  if scheme.pupil_indices is not None:
    return shapes[..., np.asarray(scheme.pupil_indices), :]
  centres = [xp.mean(shapes[..., np.asarray(eye), :], axis=-2) for eye in scheme.eye_contours]
  return xp.stack(centres, axis=-2)


def outer_eye_corners(shapes: ArrayLike, scheme: LandmarkScheme) -> ArrayLike:
  """Outer eye corners, the inter-ocular normaliser of Eq. 12.

  Args:
    shapes: [..., L, 2] float landmarks (x, y).
    scheme: the LandmarkScheme of ``shapes``.

  Returns:
    [..., 2, 2]: (image-left eye's outer corner, image-right eye's outer corner).
  """
  _, shapes = _as_landmarks(shapes, scheme, "outer_eye_corners")
  return shapes[..., np.asarray(scheme.outer_eye_corners), :]


def mouth_centre(shapes: ArrayLike, scheme: LandmarkScheme) -> ArrayLike:
  """Mean of the mouth points, the third anchor of the canonical face pose.

  Args:
    shapes: [..., L, 2] float landmarks (x, y).
    scheme: the LandmarkScheme of ``shapes``.

  Returns:
    [..., 2]: (x, y) of the mouth centre.
  """
  xp, shapes = _as_landmarks(shapes, scheme, "mouth_centre")
  return xp.mean(shapes[..., np.asarray(scheme.mouth_indices), :], axis=-2)


def flip_landmarks(shapes: ArrayLike, image_width, scheme: LandmarkScheme) -> ArrayLike:
  """Landmarks of the horizontally flipped image (``image[:, ::-1]``).

  With pixel-centre coordinates, column j of a width-W image becomes column
  W - 1 - j, so x' = W - 1 - x (the mirror line is x = (W - 1) / 2, the image's
  vertical centre line). Then left and right points swap names, so the result is
  permuted by ``scheme.flip_permutation``. Flipping twice is the identity.

  Args:
    shapes: [..., L, 2] float landmarks (x, y).
    image_width: W, a scalar or an array of shape [...] (one width per face).
    scheme: the LandmarkScheme of ``shapes``.

  Returns:
    [..., L, 2] landmarks of the flipped image, same dtype as ``shapes``
    (float inputs).
  """
  xp, shapes = _as_landmarks(shapes, scheme, "flip_landmarks")
  width = xp.asarray(image_width)
  if width.ndim > shapes.ndim - 2:
    raise ValueError(
      f"flip_landmarks: image_width must be a scalar or have shape "
      f"{tuple(shapes.shape[:-2])}, got {tuple(width.shape)}"
    )
  mirrored_x = (width[..., None] - 1) - shapes[..., 0]
  mirrored = xp.stack([mirrored_x, shapes[..., 1]], axis=-1).astype(shapes.dtype)
  return mirrored[..., np.asarray(scheme.flip_permutation), :]


def region_thresholds(
  scheme: LandmarkScheme, contour_threshold: float, feature_threshold: float
) -> np.ndarray:
  """Per-landmark reliability threshold K (Sec. IV-G, Table IX).

  The paper uses contour 0.4 and facial features 0.6; the values live in the
  configs, not here.

  Args:
    scheme: the LandmarkScheme.
    contour_threshold: K for ``scheme.contour_indices``.
    feature_threshold: K for ``scheme.feature_indices``.

  Returns:
    [L] float32 numpy array (a constant; pass through ``jnp.asarray`` as needed).
  """
  thresholds = np.full(scheme.num_points, feature_threshold, dtype=np.float32)
  thresholds[np.asarray(scheme.contour_indices)] = contour_threshold
  return thresholds
