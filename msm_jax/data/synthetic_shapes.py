"""Shape model of the synthetic faces: a parametric 68-point face, its pose, 98/29-pt layouts.

The default data set of msm-jax (``synthetic.py``) draws faces whose landmarks are known exactly.
This module owns the geometry: the neutral frontal face in the iBUG/300-W 68-point layout, its
variation (face shape, expression), its pose (yaw/pitch squash, roll, scale, shift) and the
curves the renderer fills and strokes. The renderer draws every feature from the curves below,
so each landmark lies on a drawn edge. The same curves give the denser WFLW layout (98 points)
and the COFW layout (29 points), which the paper evaluates on (Sec. IV-A, IV-E, IV-F).

Canonical face frame (before pose): x to the image right, y down, unit = the face half-width,
origin between the eyes on the eye line. The image-left eye (landmarks 36-41) has x < 0.

So that every machine gives the same bytes, array maths here is +, -, *, / and sqrt only,
which IEEE 754 rounds the same everywhere. Trigonometry is scalar or in tables built once.
There are no vectorised sin/cos/pow (their SIMD versions round differently on different
CPUs) and no BLAS products (their summation order depends on the CPU).
"""

import dataclasses
import functools
import math

import numpy as np

NUM_LANDMARKS_68 = 68
# Neutral frontal extent of the landmarks (brow top to chin) in face units; maps a requested
# face size in pixels to pixels per unit.
CANONICAL_FACE_HEIGHT = 1.95
# The canonical point placed at the requested face centre in the image.
FACE_CENTRE = (0.0, 0.52)
# Brow thickness at the inner end, as a fraction of the outer-eye-corner distance (36-45).
# map_68_to_98 puts WFLW's lower brow edge here. The renderer draws brows with this thickness,
# so the mapping is exact for synthetic faces.
BROW_THICKNESS = 0.08
# Thickness profile along a brow, from outer end (17 / 26) to inner end (21 / 22).
_BROW_TAPER = np.array([0.55, 0.7, 0.85, 1.0, 1.0])
# Yaw/pitch squash gains: shift of the face middle per unit sin(angle), in half-widths. The
# squash is monotonic (so features never cross the outline) while gain * sin(angle) < 0.5.
YAW_GAIN, PITCH_GAIN, PROTRUSION_GAIN = 0.8, 0.6, 0.6
MAX_YAW_DEG = math.degrees(math.asin(0.49 / YAW_GAIN))
MAX_PITCH_DEG = math.degrees(math.asin(0.49 / PITCH_GAIN))

# How far each landmark stands out of the face surface (the nose): it shifts further under yaw.
_PROTRUSION = np.zeros(NUM_LANDMARKS_68)
_PROTRUSION[27:36] = [0.1, 0.2, 0.3, 0.42, 0.16, 0.2, 0.24, 0.2, 0.16]


def cos_sin_table(n: int, start: float, stop: float) -> tuple[np.ndarray, np.ndarray]:
  """cos and sin of n angles in [start, stop], computed once with math (not vectorised)."""
  angles = [start + (stop - start) * i / (n - 1) for i in range(n)]
  return (np.array([math.cos(a) for a in angles]), np.array([math.sin(a) for a in angles]))


_JAW_COS, _JAW_SIN = cos_sin_table(97, 0.0, math.pi)
_FOREHEAD_COS, _FOREHEAD_SIN = cos_sin_table(26, 0.0, math.pi)


# ----------------------------------------------------------------------------------------------
# Uniform Catmull-Rom splines: the curves through the landmarks that the renderer draws.


@functools.lru_cache(maxsize=None)
def _stencil(num_points: int, params: tuple[float, ...], closed: bool):
  """Control-point indices [M, 4] into the padded array and weights [M, 4] for params t."""
  num_segments = num_points if closed else num_points - 1
  t = np.asarray(params, dtype=np.float64)
  segment = np.minimum(np.floor(t), num_segments - 1).astype(np.int64)
  u = (t - segment)[:, None]
  u2, u3 = u * u, u * u * u
  weights = 0.5 * np.concatenate(
    [-u3 + 2 * u2 - u, 3 * u3 - 5 * u2 + 2, -3 * u3 + 4 * u2 + u, u3 - u2], axis=1
  )
  # Padded array: one phantom point before and two after, so segment k uses rows k .. k+3.
  return segment[:, None] + np.arange(4)[None, :], weights


def spline(points: np.ndarray, params, closed: bool) -> np.ndarray:
  """Catmull-Rom curve through `points` evaluated at parameters `params`.

  points: [..., K, 2]; params: M floats, control point k sits at t = k (closed curves wrap at
  t = K). Returns [..., M, 2]. At integer t the curve returns the control point bit-exactly.
  """
  points = np.asarray(points, dtype=np.float64)
  if closed:
    padded = np.concatenate([points[..., -1:, :], points, points[..., :2, :]], axis=-2)
  else:
    before = 2 * points[..., :1, :] - points[..., 1:2, :]
    after = 2 * points[..., -1:, :] - points[..., -2:-1, :]
    padded = np.concatenate([before, points, after, after], axis=-2)
  params = params if isinstance(params, tuple) else tuple(float(t) for t in params)
  index, weight = _stencil(points.shape[-2], params, closed)
  # Four explicit products summed left to right: the same rounding on every machine.
  out = padded[..., index[:, 0], :] * weight[:, 0:1]
  for j in range(1, 4):
    out = out + padded[..., index[:, j], :] * weight[:, j : j + 1]
  return out


@functools.lru_cache(maxsize=None)
def dense_params(num_points: int, per_segment: int, closed: bool) -> tuple[float, ...]:
  """Parameters sampling every segment `per_segment` times (open curves include the end)."""
  num_segments = num_points if closed else num_points - 1
  count = num_segments * per_segment + (0 if closed else 1)
  return tuple(i / per_segment for i in range(count))


# ----------------------------------------------------------------------------------------------
# Curves of each feature, from (posed) 68-point landmarks [..., 68, 2].

# Eye contours in drawing order: image-left eye from its outer corner, image-right from inner.
EYE_CONTOURS = (np.arange(36, 42), np.arange(42, 48))
# Brows from the end where WFLW's brow contour starts (image-left: outer; image-right: inner).
BROWS = (np.arange(17, 22), np.arange(22, 27))


def inter_ocular(landmarks: np.ndarray) -> np.ndarray:
  """Outer-eye-corner distance ||p36 - p45||: [..., 68, 2] -> [...]."""
  d = landmarks[..., 36, :] - landmarks[..., 45, :]
  return np.sqrt(d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1])


def eye_centres(landmarks: np.ndarray) -> np.ndarray:
  """Pupils (iris centres) = mean of each eye's six points: [..., 68, 2] -> [..., 2, 2]."""
  return np.stack([landmarks[..., idx, :].mean(axis=-2) for idx in EYE_CONTOURS], axis=-2)


def brow_lower_edge(landmarks: np.ndarray, side: int) -> np.ndarray:
  """Lower brow edge under brow points 4, 3, 2, 1 of `side` (WFLW 38-41 / 47-50 order).

  Each brow point moves along its normal (pointing towards the eye) by
  BROW_THICKNESS * inter-ocular * taper. Returns [..., 4, 2], inner end first for the
  image-left brow and outer end first for the image-right brow, as WFLW orders them.
  """
  brow = landmarks[..., BROWS[side], :]
  taper = _BROW_TAPER if side == 0 else _BROW_TAPER[::-1]
  tangent = np.concatenate(
    [
      brow[..., 1:2, :] - brow[..., :1, :],
      brow[..., 2:, :] - brow[..., :-2, :],
      brow[..., -1:, :] - brow[..., -2:-1, :],
    ],
    axis=-2,
  )
  normal = np.stack([-tangent[..., 1], tangent[..., 0]], axis=-1)
  normal = normal / np.sqrt((normal * normal).sum(-1, keepdims=True))
  towards_eye = landmarks[..., EYE_CONTOURS[side], :].mean(axis=-2, keepdims=True) - brow
  normal = np.where((normal * towards_eye).sum(-1, keepdims=True) < 0, -normal, normal)
  thickness = (BROW_THICKNESS * inter_ocular(landmarks))[..., None, None] * taper[:, None]
  lower = brow + normal * thickness
  return lower[..., [4, 3, 2, 1], :] if side == 0 else lower[..., [3, 2, 1, 0], :]


def brow_outline(landmarks: np.ndarray, side: int, per_segment: int = 3) -> np.ndarray:
  """Closed brow polygon [..., M, 2]: the upper edge through the five brow points, then the
  lower edge from brow_lower_edge. The outer end is a point, the inner end blunt."""
  upper = landmarks[..., BROWS[side], :]
  lower = brow_lower_edge(landmarks, side)
  top = spline(upper, dense_params(5, per_segment, False), False)
  if side == 0:  # top: outer 17 -> inner 21; bottom: under 21 -> under 18 -> outer tip 17
    path = np.concatenate([lower, upper[..., :1, :]], axis=-2)
    bottom = spline(path, dense_params(5, per_segment, False), False)[..., :-1, :]
  else:  # top: inner 22 -> outer 26; bottom: outer tip 26 -> under 25 -> under 22
    path = np.concatenate([upper[..., -1:, :], lower], axis=-2)
    bottom = spline(path, dense_params(5, per_segment, False), False)[..., 1:, :]
  return np.concatenate([top, bottom], axis=-2)


def eye_outline(landmarks: np.ndarray, side: int, per_segment: int = 4) -> np.ndarray:
  """Closed almond through the six eye points; corners are contour points: [..., 6*ps, 2]."""
  return spline(landmarks[..., EYE_CONTOURS[side], :], dense_params(6, per_segment, True), True)


def jaw_curve(landmarks: np.ndarray, per_segment: int = 4) -> np.ndarray:
  """Open spline through the 17 jaw points: [..., 16*ps+1, 2]."""
  return spline(landmarks[..., 0:17, :], dense_params(17, per_segment, False), False)


def lip_outline(landmarks: np.ndarray, inner: bool, per_segment: int = 3) -> np.ndarray:
  """Closed outer (48-59) or inner (60-67) lip contour."""
  idx = slice(60, 68) if inner else slice(48, 60)
  pts = landmarks[..., idx, :]
  return spline(pts, dense_params(pts.shape[-2], per_segment, True), True)


# ----------------------------------------------------------------------------------------------
# WFLW (98) and COFW (29) layouts.

# Quarter points of each lid: WFLW's 8-point eyes from the 6-point contour (t in contour steps).
_WFLW_EYE_PARAMS = (0.0, 0.75, 1.5, 2.25, 3.0, 3.75, 4.5, 5.25)
# COFW's 29 points picked from the 98-point layout (0-based), in COFW order (see map_68_to_29).
COFW_FROM_WFLW = np.array(
  [
    33,
    46,
    37,
    42,
    35,
    40,
    44,
    48,
    60,
    72,
    64,
    68,
    62,
    66,
    70,
    74,
    96,
    97,
    55,
    59,
    54,
    57,
    76,
    82,
    79,
    90,
    94,
    85,
    16,
  ]
)


def map_68_to_98(landmarks) -> np.ndarray:
  """68-point iBUG landmarks -> 98-point WFLW layout: [..., 68, 2] -> [..., 98, 2] float64.

  WFLW (Wu et al., CVPR 2018), 0-based, image-left side first as in the 68-point scheme:
    0-32  face contour: even k = 68-pt jaw point k/2; odd k = jaw spline at t = (k-1)/2 + 1/2.
    33-37 image-left brow top, outer -> inner = 68-pt 17-21;
    38-41 its lower edge, inner -> outer: under 21, 20, 19, 18 (brow_lower_edge).
    42-46 image-right brow top, inner -> outer = 68-pt 22-26;
    47-50 its lower edge, outer -> inner: under 25, 24, 23, 22.
    51-54 nose bridge = 27-30;  55-59 nose bottom = 31-35.
    60-67 image-left eye: 60 outer corner = 36, 61-63 upper lid, 64 inner corner = 39,
          65-67 lower lid (inner -> outer); lids at quarter steps of the closed eye spline
          through 36-41 (t = 0.75, 1.5, 2.25 and 3.75, 4.5, 5.25).
    68-75 image-right eye: 68 inner corner = 42, 69-71 upper, 72 outer corner = 45, 73-75 lower.
    76-87 outer lip = 48-59;  88-95 inner lip = 60-67.
    96, 97 pupils (image-left, image-right) = mean of each eye's six points.
  Points shared with the 68 layout are copied bit-exactly. The interpolated ones lie on the
  curves the synthetic renderer draws, so they are exact for synthetic faces and a smooth
  approximation for real ones.
  """
  lm = np.asarray(landmarks, dtype=np.float64)
  if lm.shape[-2:] != (68, 2):
    raise ValueError(f"map_68_to_98: landmarks must have shape [..., 68, 2], got {lm.shape}")
  contour = spline(lm[..., 0:17, :], tuple(k / 2 for k in range(33)), False)
  eyes = [spline(lm[..., idx, :], _WFLW_EYE_PARAMS, True) for idx in EYE_CONTOURS]
  parts = [
    contour,
    lm[..., 17:22, :],
    brow_lower_edge(lm, 0),
    lm[..., 22:27, :],
    brow_lower_edge(lm, 1),
    lm[..., 27:36, :],
    eyes[0],
    eyes[1],
    lm[..., 48:68, :],
    eye_centres(lm),
  ]
  return np.concatenate(parts, axis=-2)


def map_68_to_29(landmarks) -> np.ndarray:
  """68-point iBUG landmarks -> 29-point COFW layout: [..., 68, 2] -> [..., 29, 2] float64.

  COFW (Burgos-Artizzu et al., ICCV 2013), 0-based; pairs list the image-left point first:
    0, 1 brow outer ends (68: 17, 26)       2, 3 brow inner ends (21, 22)
    4, 5 image-left brow top / bottom middle (19, lower edge under 19)
    6, 7 image-right brow top / bottom middle (24, lower edge under 24)
    8, 9 eye outer corners (36, 45)         10, 11 eye inner corners (39, 42)
    12, 13 image-left eye top / bottom lid middle   14, 15 image-right eye top / bottom
    16, 17 pupils                           18, 19 nose wings (31, 35)
    20 nose tip (30)   21 nose bottom (33)  22, 23 mouth corners (48, 54)
    24 upper lip top (51)  25 upper lip bottom (62)  26 lower lip top (66)
    27 lower lip bottom (57)  28 chin (8)
  Non-68 points come from map_68_to_98 (COFW_FROM_WFLW lists the picks). This order agrees
  with the COFW flip pairs used by HRNet-facial / MMPose and with COFW's inter-ocular
  normaliser (points 8, 9).
  """
  return map_68_to_98(landmarks)[..., COFW_FROM_WFLW, :]


# ----------------------------------------------------------------------------------------------
# The parametric face.

# Neutral values of the shape parameters; sampled ranges follow in SHAPE_RANGES.
NEUTRAL = dict(
  width=1.0,
  height=1.0,
  jaw_square=0.4,
  chin_taper=0.2,
  eye_spacing=1.0,
  eye_size=1.0,
  eye_open=1.0,
  eye_tilt=0.02,
  brow_height=0.0,
  brow_arch=1.0,
  nose_length=1.0,
  nose_width=1.0,
  mouth_width=1.0,
  lip_thickness=1.0,
  mouth_open=0.0,
  smile=0.0,
  brow_raise=0.0,
)
SHAPE_RANGES = dict(
  width=(0.88, 1.1),
  height=(0.9, 1.12),
  jaw_square=(0.0, 0.8),
  chin_taper=(0.05, 0.35),
  eye_spacing=(0.92, 1.08),
  eye_size=(0.85, 1.15),
  eye_open=(0.6, 1.25),
  eye_tilt=(-0.02, 0.05),
  brow_height=(-0.05, 0.06),
  brow_arch=(0.5, 1.5),
  nose_length=(0.85, 1.15),
  nose_width=(0.8, 1.25),
  mouth_width=(0.85, 1.15),
  lip_thickness=(0.7, 1.3),
)


def sample_shape_params(
  rng: np.random.Generator,
  max_mouth_open: float,
  max_smile: float,
  max_brow_raise: float,
  mouth_open_prob: float,
) -> dict:
  """Draws one face's shape and expression. Always draws the same count of numbers, so the
  rest of the face's random stream does not depend on these settings."""
  u = rng.random(len(SHAPE_RANGES) + 5)
  params = {k: lo + (hi - lo) * u[i] for i, (k, (lo, hi)) in enumerate(SHAPE_RANGES.items())}
  e = u[len(SHAPE_RANGES) :]
  params["mouth_open"] = max_mouth_open * e[1] if e[0] < mouth_open_prob else 0.0
  params["smile"] = max_smile * e[2] if e[3] < 0.5 else 0.0
  params["brow_raise"] = max_brow_raise * e[4]
  return params


@dataclasses.dataclass(frozen=True)
class FaceShape:
  """One face in the canonical frame (see module docstring); arrays are float64.

  landmarks: [68, 2]; forehead: [M, 2] outline over the top of the head from the jaw's right
  end (landmark 16) to its left end (landmark 0), both excluded; neck: [4, 2];
  half_width, top, chin: the face's extent used by the pose squash.
  """

  landmarks: np.ndarray
  forehead: np.ndarray
  neck: np.ndarray
  half_width: float
  top: float
  chin: float


def jaw_outline(p: dict, jaw_top: float, chin: float) -> tuple[np.ndarray, np.ndarray]:
  """Dense lower face outline (x, y) [97 each], left to right: a circle blended with a
  square (jaw_square), narrowed towards the chin (chin_taper)."""
  cx, cy = -_JAW_COS, _JAW_SIN
  corner = np.maximum(np.abs(cx), cy)
  x = (1 - p["jaw_square"]) * cx + p["jaw_square"] * cx / corner
  y = (1 - p["jaw_square"]) * cy + p["jaw_square"] * cy / corner
  x = x * (1 - p["chin_taper"] * y * y)
  return p["width"] * x, jaw_top + (chin - jaw_top) * y


def _jaw(p: dict, jaw_top: float, chin: float) -> np.ndarray:
  """17 jaw points equally spaced (by arc length) along jaw_outline."""
  curve_x, curve_y = jaw_outline(p, jaw_top, chin)
  dx, dy = np.diff(curve_x), np.diff(curve_y)
  step = np.sqrt(dx * dx + dy * dy)
  arc = np.concatenate([[0.0], np.cumsum(step)])
  targets = arc[-1] * np.arange(17) / 16
  return np.stack([np.interp(targets, arc, curve_x), np.interp(targets, arc, curve_y)], axis=1)


def face_shape(params: dict) -> FaceShape:
  """Canonical 68 landmarks of a face with the given shape/expression parameters (NEUTRAL
  gives the symmetric neutral frontal mean shape)."""
  p = {**NEUTRAL, **params}
  lm = np.zeros((68, 2))
  jaw_top, chin = 0.02, 1.5 * p["height"]
  mouth_opening = 0.32 * p["mouth_open"]
  lm[0:9] = _jaw(p, jaw_top, chin)[0:9]
  lm[8, 0] = 0.0
  drop = (lm[0:9, 1] - jaw_top) / (chin - jaw_top)  # 0 at the temples, 1 at the chin
  lm[0:9, 1] += mouth_opening * drop * drop

  # Image-left brow (17 outer -> 21 inner); the image-right brow mirrors it (22 inner -> 26).
  brow_x = np.array([-0.9, -0.73, -0.54, -0.35, -0.17]) * (0.5 + 0.5 * p["eye_spacing"])
  brow_y = (
    -0.32
    - p["brow_height"]
    + p["brow_arch"] * np.array([0.06, -0.03, -0.07, -0.07, -0.03])
    - p["brow_raise"] * np.array([0.05, 0.07, 0.09, 0.11, 0.12])
  )
  lm[17:22] = np.stack([brow_x, brow_y], axis=1)

  # Image-left eye: 36 outer corner, 37-38 upper lid, 39 inner corner, 40-41 lower lid.
  centre, half = 0.43 * p["eye_spacing"], 0.205 * p["eye_size"]
  outer, inner = np.array([-(centre + half), -p["eye_tilt"]]), np.array([-(centre - half), 0.0])
  upper = 0.095 * p["eye_size"] * p["eye_open"]
  lower = 0.06 * p["eye_size"] * p["eye_open"] * (1 - 0.3 * p["smile"])
  third, two_thirds = outer + (inner - outer) / 3, outer + 2 * (inner - outer) / 3
  lm[36:42] = [
    outer,
    third - [0, 0.95 * upper],
    two_thirds - [0, upper],
    inner,
    two_thirds + [0, lower],
    third + [0, lower],
  ]

  length, nose_w = p["nose_length"], p["nose_width"]
  lm[27:31] = [[0, -0.02], [0, 0.15 * length], [0, 0.31 * length], [0, 0.47 * length]]
  lm[31:33] = [[-0.17 * nose_w, 0.5 * length], [-0.085 * nose_w, 0.535 * length]]
  lm[33] = [0, 0.55 * length]

  # Mouth, left half and centre line; corners 48 / 60, top 51 / 62, bottom 57 / 66.
  mouth_y = 0.55 * length + 0.33 * (chin - 0.55 * length)
  mw, lip, smile = 0.35 * p["mouth_width"], p["lip_thickness"], p["smile"]
  lm[48:52] = [[-mw, 0], [-0.62 * mw, -0.085 * lip], [-0.25 * mw, -0.125 * lip], [0, -0.105 * lip]]
  lm[57:60] = [[0, 0.15 * lip], [-0.27 * mw, 0.14 * lip], [-0.62 * mw, 0.1 * lip]]
  lm[60:63] = [[-0.8 * mw, 0], [-0.35 * mw, -0.02 * lip], [0, -0.015 * lip]]
  lm[66:68] = [[0, -0.015 * lip], [-0.35 * mw, -0.02 * lip]]
  lm[48:68, 1] += mouth_y
  # Expression: the lower lip drops with the jaw, smiling lifts and widens the corners.
  lm[[57, 58, 59, 66, 67], 1] += mouth_opening
  lm[[49, 50, 51, 61, 62], 1] -= 0.05 * mouth_opening
  lm[[48, 60], 1] += 0.45 * mouth_opening
  lm[48, 0] *= 1 - 0.1 * p["mouth_open"]
  lm[60, 0] *= 1 - 0.15 * p["mouth_open"]
  lm[[48, 60], 1] -= 0.07 * smile
  lm[[48, 60], 0] *= 1 + 0.12 * smile
  lm[[49, 59], 1] -= 0.035 * smile
  lm[[49, 59], 0] *= 1 + 0.06 * smile
  lm[[61, 67], 1] -= 0.03 * smile
  lm[58, 1] -= 0.01 * smile

  # Mirror the left half onto the right half (image-right brow, eye, nose, mouth).
  mirror = {16 - k: k for k in range(8)}
  mirror |= {
    22: 21,
    23: 20,
    24: 19,
    25: 18,
    26: 17,
    42: 39,
    43: 38,
    44: 37,
    45: 36,
    46: 41,
    47: 40,
    34: 32,
    35: 31,
    52: 50,
    53: 49,
    54: 48,
    55: 59,
    56: 58,
    63: 61,
    64: 60,
    65: 67,
  }
  for right, left in mirror.items():
    lm[right] = [-lm[left, 0], lm[left, 1]]

  top = jaw_top - 1.45
  forehead = np.stack([p["width"] * _FOREHEAD_COS, jaw_top - 1.45 * _FOREHEAD_SIN], axis=1)[1:-1]
  neck = np.array([[-0.5, 1.0], [-0.55, 4.0], [0.55, 4.0], [0.5, 1.0]]) * [p["width"], 1.0]
  return FaceShape(lm, forehead, neck, p["width"], top, chin + mouth_opening)


def mean_shape() -> np.ndarray:
  """The neutral frontal mean shape in the canonical frame: [68, 2] float64."""
  return face_shape({}).landmarks


# ----------------------------------------------------------------------------------------------
# Pose.


@dataclasses.dataclass(frozen=True)
class Pose:
  """yaw, pitch, roll in radians; pixels_per_unit; centre = image position of FACE_CENTRE."""

  yaw: float
  pitch: float
  roll: float
  pixels_per_unit: float
  centre: tuple[float, float]


def _squash(coord: np.ndarray, middle: float, half: float, amount: float) -> np.ndarray:
  """Monotonic bump shift: the face middle moves by amount*half, the outline stays put."""
  v = (coord - middle) / half
  return coord + amount * half * np.maximum(1 - v * v, 0.0)


def apply_pose(points: np.ndarray, shape: FaceShape, pose: Pose, protrusion=None) -> np.ndarray:
  """Canonical points [N, 2] -> image pixel coordinates [N, 2] (0-based pixel centres).

  Yaw: an asymmetric horizontal squash. The face middle shifts towards the far side, so the
  far jaw line comes closer to the features and the near side widens. The nose (protrusion
  [N]) shifts further. Pitch does the same vertically. Then roll, scale and shift.
  """
  protrusion = np.zeros(len(points)) if protrusion is None else protrusion
  sin_yaw, sin_pitch = math.sin(pose.yaw), math.sin(pose.pitch)
  x = _squash(points[:, 0], 0.0, shape.half_width, YAW_GAIN * sin_yaw)
  x = x + PROTRUSION_GAIN * sin_yaw * protrusion
  middle, half = 0.5 * (shape.top + shape.chin), 0.5 * (shape.chin - shape.top)
  y = _squash(points[:, 1], middle, half, PITCH_GAIN * sin_pitch)
  y = y + PROTRUSION_GAIN * sin_pitch * protrusion
  cos_r, sin_r = math.cos(pose.roll), math.sin(pose.roll)
  dx, dy = (x - FACE_CENTRE[0]) * pose.pixels_per_unit, (y - FACE_CENTRE[1]) * pose.pixels_per_unit
  return np.stack(
    [pose.centre[0] + cos_r * dx - sin_r * dy, pose.centre[1] + sin_r * dx + cos_r * dy], axis=1
  )


def pose_landmarks(shape: FaceShape, pose: Pose) -> np.ndarray:
  """The face's 68 landmarks in the image: [68, 2] float64."""
  return apply_pose(shape.landmarks, shape, pose, _PROTRUSION)
