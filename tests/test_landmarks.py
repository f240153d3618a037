"""Tests for msm_jax.core.landmarks: scheme tables, pupils / eye corners, flips, thresholds.

The flip permutations are checked against faces built by hand from each
dataset's *semantic* layout (jaw from image-left to image-right, eyes running
clockwise from a given corner, lips clockwise from the left corner, ...), never
from the permutation itself: a wrong pair in a table breaks the mirror symmetry.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msm_jax.core import landmarks
from msm_jax.core.landmarks import SCHEME_300W, SCHEME_COFW, SCHEME_WFLW

ALL_SCHEMES = [SCHEME_300W, SCHEME_WFLW, SCHEME_COFW]
WIDTH = 200
CENTRE_X = (WIDTH - 1) / 2  # mirror line of a width-200 image, pixel-centre coords


def _clockwise_ring(n, centre_x, centre_y, half_width, half_height):
  """n points on an ellipse from its image-left end, clockwise on screen (y down)."""
  angles = 2 * np.pi * np.arange(n) / n
  return np.stack(
    [centre_x - half_width * np.cos(angles), centre_y - half_height * np.sin(angles)], axis=-1
  )


def _jaw(n, top_y=80.0, half_width=75.0, depth=95.0):
  """n points from the image-left temple, down round the chin, to the right one."""
  angles = np.pi * np.arange(n) / (n - 1)
  return np.stack([CENTRE_X - half_width * np.cos(angles), top_y + depth * np.sin(angles)], axis=-1)


def _at(dx_list, y_list):
  """Points at x = CENTRE_X + dx, y."""
  return np.stack([CENTRE_X + np.asarray(dx_list, float), np.asarray(y_list, float)], axis=-1)


def _semantic_face_68():
  """A mirror-symmetric 68-point iBUG face (subject's right side on image left)."""
  face = np.zeros((68, 2))
  face[0:17] = _jaw(17)
  face[17:22] = _at([-60, -48, -36, -24, -12], [70, 64, 62, 63, 66])  # outer->inner
  face[22:27] = _at([12, 24, 36, 48, 60], [66, 63, 62, 64, 70])  # inner->outer
  face[27:31] = _at([0, 0, 0, 0], [75, 85, 95, 105])  # nose bridge, top->tip
  face[31:36] = _at([-14, -7, 0, 7, 14], [112, 115, 117, 115, 112])
  face[36:42] = _clockwise_ring(6, CENTRE_X - 35, 85, 12, 5)  # from outer corner
  face[42:48] = _clockwise_ring(6, CENTRE_X + 35, 85, 12, 5)  # from inner corner
  face[48:60] = _clockwise_ring(12, CENTRE_X, 140, 28, 10)  # outer lips
  face[60:68] = _clockwise_ring(8, CENTRE_X, 140, 18, 4)  # inner lips
  return face


def _semantic_face_98():
  """A mirror-symmetric 98-point WFLW face."""
  face = np.zeros((98, 2))
  face[0:33] = _jaw(33)
  face[33:38] = _at([-70, -58, -46, -34, -22], [72, 66, 64, 65, 68])  # upper, out->in
  face[38:42] = _at([-26, -38, -50, -62], [74, 72, 72, 76])  # lower, in->out
  face[42:47] = _at([22, 34, 46, 58, 70], [68, 65, 64, 66, 72])  # upper, in->out
  face[47:51] = _at([62, 50, 38, 26], [76, 72, 72, 74])  # lower, out->in
  face[51:55] = _at([0, 0, 0, 0], [75, 85, 95, 105])
  face[55:60] = _at([-14, -7, 0, 7, 14], [112, 115, 117, 115, 112])
  face[60:68] = _clockwise_ring(8, CENTRE_X - 35, 85, 12, 5)  # from outer corner
  face[68:76] = _clockwise_ring(8, CENTRE_X + 35, 85, 12, 5)  # from inner corner
  face[76:88] = _clockwise_ring(12, CENTRE_X, 140, 28, 10)
  face[88:96] = _clockwise_ring(8, CENTRE_X, 140, 18, 4)
  face[96:98] = _at([-35, 35], [85, 85])  # pupils
  return face


def _semantic_face_29():
  """A mirror-symmetric 29-point COFW face, point by point from the RCPR layout."""
  return _at(
    [
      -60,
      60,
      -15,
      15,  # brow outer L/R, brow inner L/R
      -38,
      -38,
      38,
      38,  # left brow top, bottom; right brow top, bottom
      -50,
      50,
      -20,
      20,  # eye outer L/R, eye inner L/R
      -35,
      -35,
      35,
      35,  # left eye top, bottom; right eye top, bottom
      -35,
      35,
      -14,
      14,  # pupils L/R, nose wings L/R
      0,
      0,
      -28,
      28,  # nose tip, nose bottom, mouth corners L/R
      0,
      0,
      0,
      0,
      0,
    ],  # upper lip top, bottom, lower lip top, bottom, chin
    [
      70,
      70,
      68,
      68,
      62,
      72,
      62,
      72,
      85,
      85,
      85,
      85,
      80,
      90,
      80,
      90,
      85,
      85,
      115,
      115,
      110,
      120,
      140,
      140,
      132,
      138,
      142,
      150,
      185,
    ],
  )


SEMANTIC_FACES = {"300w": _semantic_face_68, "wflw": _semantic_face_98, "cofw": _semantic_face_29}


@pytest.mark.parametrize(
  "name,num_points",
  [
    ("300w", 68),
    ("300-W", 68),
    ("ibug68", 68),
    (68, 68),
    (np.int64(68), 68),
    ("cofw68", 68),
    ("WFLW", 98),
    (98, 98),
    ("cofw", 29),
    ("COFW_29", 29),
    (29, 29),
  ],
)
def test_get_scheme_aliases(name, num_points):
  scheme = landmarks.get_scheme(name)
  assert scheme.num_points == num_points
  assert landmarks.get_scheme(scheme) is scheme


@pytest.mark.parametrize("bad", ["aflw", 19, 0, True, None, 68.0, ""])
def test_get_scheme_rejects_unknown(bad):
  with pytest.raises(ValueError, match="unknown landmark scheme"):
    landmarks.get_scheme(bad)


@pytest.mark.parametrize("scheme", ALL_SCHEMES, ids=lambda s: s.name)
def test_flip_permutation_is_bijective_involution(scheme):
  perm = np.asarray(scheme.flip_permutation)
  assert sorted(perm.tolist()) == list(range(scheme.num_points))
  np.testing.assert_array_equal(perm[perm], np.arange(scheme.num_points))


@pytest.mark.parametrize("scheme", ALL_SCHEMES, ids=lambda s: s.name)
def test_regions_partition_all_indices(scheme):
  contour, features = set(scheme.contour_indices), set(scheme.feature_indices)
  assert not contour & features
  assert contour | features == set(range(scheme.num_points))


def test_index_tables_match_dataset_definitions():
  # 300-W: jaw 1-17, eyes 37-42 / 43-48, mouth 49-68 in the 1-based .pts files.
  assert SCHEME_300W.contour_indices == tuple(range(0, 17))
  assert SCHEME_300W.eye_contours == (tuple(range(36, 42)), tuple(range(42, 48)))
  assert SCHEME_300W.mouth_indices == tuple(range(48, 68))
  assert SCHEME_300W.outer_eye_corners == (36, 45)
  assert SCHEME_300W.pupil_indices is None
  # WFLW: contour 0-32, inter-ocular 60 / 72, pupils 96 / 97.
  assert SCHEME_WFLW.contour_indices == tuple(range(0, 33))
  assert SCHEME_WFLW.outer_eye_corners == (60, 72)
  assert SCHEME_WFLW.pupil_indices == (96, 97)
  assert SCHEME_WFLW.mouth_indices == tuple(range(76, 96))
  # COFW: inter-ocular 8 / 9 (HRNet compute_nme), pupils 16 / 17, chin 28.
  assert SCHEME_COFW.outer_eye_corners == (8, 9)
  assert SCHEME_COFW.pupil_indices == (16, 17)
  assert SCHEME_COFW.contour_indices == (28,)
  assert SCHEME_COFW.mouth_indices == tuple(range(22, 28))


@pytest.mark.parametrize("scheme", ALL_SCHEMES, ids=lambda s: s.name)
def test_semantic_symmetric_face_is_flip_invariant(scheme):
  face = SEMANTIC_FACES[scheme.name]()
  assert face.shape == (scheme.num_points, 2)
  flipped = landmarks.flip_landmarks(face, WIDTH, scheme)
  np.testing.assert_allclose(flipped, face, atol=1e-9)
  # Without the permutation the mirrored face is not itself: the test has teeth.
  assert not np.allclose(flipped[np.asarray(scheme.flip_permutation)], face)


@pytest.mark.parametrize("scheme", ALL_SCHEMES, ids=lambda s: s.name)
def test_eye_pairs_are_ordered_image_left_first(scheme):
  face = SEMANTIC_FACES[scheme.name]()
  for pair in (landmarks.pupils(face, scheme), landmarks.outer_eye_corners(face, scheme)):
    assert pair[0, 0] < CENTRE_X < pair[1, 0]
  # Eye centres of the semantic faces sit at CENTRE_X -/+ 35, y = 85.
  np.testing.assert_allclose(
    landmarks.pupils(face, scheme), [[CENTRE_X - 35, 85], [CENTRE_X + 35, 85]], atol=1e-9
  )


@pytest.mark.parametrize("scheme", ALL_SCHEMES, ids=lambda s: s.name)
def test_shape_symmetric_by_construction_from_pairs(scheme):
  # The brief's second construction: random offsets for one side of each pair,
  # mirrored onto the other; centre-line points on x = (W - 1) / 2.
  rng = np.random.default_rng(0)
  perm = scheme.flip_permutation
  shape = np.zeros((scheme.num_points, 2))
  for i, j in enumerate(perm):
    if i < j:
      offset, y = rng.uniform(5, 80), rng.uniform(0, WIDTH - 1)
      shape[i], shape[j] = (CENTRE_X - offset, y), (CENTRE_X + offset, y)
    elif i == j:
      shape[i] = (CENTRE_X, rng.uniform(0, WIDTH - 1))
  np.testing.assert_allclose(landmarks.flip_landmarks(shape, WIDTH, scheme), shape, atol=1e-9)


@pytest.mark.parametrize("scheme", ALL_SCHEMES, ids=lambda s: s.name)
def test_flip_twice_is_identity_numpy_and_jax(scheme):
  rng = np.random.default_rng(1)
  shapes = rng.uniform(-0.5, 63.5, size=(2, 3, scheme.num_points, 2)).astype(np.float32)
  twice = landmarks.flip_landmarks(landmarks.flip_landmarks(shapes, 64, scheme), 64, scheme)
  assert isinstance(twice, np.ndarray) and twice.dtype == np.float32
  np.testing.assert_allclose(twice, shapes, atol=1e-5)
  flip = jax.jit(landmarks.flip_landmarks, static_argnums=2)
  twice_jax = flip(flip(jnp.asarray(shapes), 64, scheme), 64, scheme)
  assert isinstance(twice_jax, jax.Array) and twice_jax.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(twice_jax), shapes, atol=1e-5)


def test_flip_matches_flipping_the_image_pixels():
  # A bright pixel at (row 2, column 1) of a 5 x 7 image; landmark 0 marks it.
  image = np.zeros((5, 7))
  image[2, 1] = 1.0
  shape = np.full((68, 2), 3.0)
  shape[0] = (1.0, 2.0)
  flipped_image = image[:, ::-1]
  row, col = np.argwhere(flipped_image == 1.0)[0]
  flipped = landmarks.flip_landmarks(shape, 7, SCHEME_300W)
  # Landmark 0 (right jaw end) is renamed 16 (the left one) after the flip.
  np.testing.assert_allclose(flipped[16], [col, row])
  np.testing.assert_allclose(flipped[16], [7 - 1 - 1.0, 2.0])
  # The image's outer edges (-0.5 and W - 0.5) swap.
  shape[0] = (-0.5, 0.0)
  np.testing.assert_allclose(landmarks.flip_landmarks(shape, 7, SCHEME_300W)[16], [6.5, 0.0])


def test_flip_with_one_width_per_face():
  rng = np.random.default_rng(2)
  shapes = rng.uniform(0, 50, size=(3, 29, 2))
  widths = np.array([60, 80, 100])
  batched = landmarks.flip_landmarks(shapes, widths, SCHEME_COFW)
  for face, width, result in zip(shapes, widths, batched):
    np.testing.assert_allclose(result, landmarks.flip_landmarks(face, int(width), SCHEME_COFW))
  with pytest.raises(ValueError, match="image_width"):
    landmarks.flip_landmarks(shapes, np.ones((3, 2)), SCHEME_COFW)


def test_hand_computed_pupils_corners_and_mouth_68():
  face = np.zeros((68, 2))
  # Left eye 36-41: outer corner, two upper lid, inner corner, two lower lid.
  face[36:42] = [(10, 20), (12, 18), (14, 18), (16, 20), (14, 22), (12, 22)]
  face[42:48] = face[36:42] + (30, 0)
  # Mouth points 48-67 at x = 48..67, y = 100: centre (57.5, 100).
  face[48:68] = np.stack([np.arange(48, 68), np.full(20, 100)], axis=-1)
  # Pupils: left x = (10+12+14+16+14+12)/6 = 13, y = (20+18+18+20+22+22)/6 = 20.
  np.testing.assert_allclose(landmarks.pupils(face, SCHEME_300W), [[13, 20], [43, 20]])
  # Outer corners: 36 = (10, 20) and 45 = 42 + 3 -> (16 + 30, 20) = (46, 20).
  np.testing.assert_allclose(landmarks.outer_eye_corners(face, SCHEME_300W), [[10, 20], [46, 20]])
  np.testing.assert_allclose(landmarks.mouth_centre(face, SCHEME_300W), [57.5, 100])


def test_cofw_uses_annotated_pupils_not_eye_centres():
  face = _semantic_face_29()
  face[16] = (CENTRE_X - 30, 84)  # a pupil off the eye-contour centre
  np.testing.assert_allclose(landmarks.pupils(face, SCHEME_COFW)[0], [CENTRE_X - 30, 84])


def test_batched_jit_matches_numpy():
  rng = np.random.default_rng(3)
  shapes = rng.uniform(0, 100, size=(2, 4, 68, 2)).astype(np.float32)
  for fn, out_shape in (
    (landmarks.pupils, (2, 4, 2, 2)),
    (landmarks.outer_eye_corners, (2, 4, 2, 2)),
    (landmarks.mouth_centre, (2, 4, 2)),
  ):
    expected = fn(shapes, SCHEME_300W)
    got = jax.jit(lambda s, fn=fn: fn(s, SCHEME_300W))(jnp.asarray(shapes))
    assert expected.shape == out_shape and got.shape == out_shape
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-6)
  # One face by hand: the right pupil is the mean of points 42-47.
  np.testing.assert_allclose(
    landmarks.pupils(shapes, SCHEME_300W)[1, 2, 1], shapes[1, 2, 42:48].mean(axis=0), rtol=1e-6
  )


def test_wrong_shapes_raise_value_error():
  with pytest.raises(ValueError, match=r"pupils: shapes must be \[\.\.\., 68, 2\]"):
    landmarks.pupils(np.zeros((2, 98, 2)), SCHEME_300W)
  with pytest.raises(ValueError, match="flip_landmarks"):
    landmarks.flip_landmarks(np.zeros((29, 3)), 10, SCHEME_COFW)
  with pytest.raises(ValueError, match="mouth_centre"):
    landmarks.mouth_centre(jnp.zeros((68,)), SCHEME_300W)


def test_region_thresholds():
  thresholds = landmarks.region_thresholds(
    SCHEME_300W, contour_threshold=0.4, feature_threshold=0.6
  )
  np.testing.assert_allclose(thresholds, [0.4] * 17 + [0.6] * 51)
  assert thresholds.dtype == np.float32
  cofw = landmarks.region_thresholds(SCHEME_COFW, 0.3, 0.7)
  np.testing.assert_allclose(cofw, [0.7] * 28 + [0.3])
  wflw = landmarks.region_thresholds(SCHEME_WFLW, 0.4, 0.6)
  assert np.count_nonzero(wflw == np.float32(0.4)) == 33


def test_scheme_rejects_broken_tables():
  fields = dict(
    name="bad",
    num_points=4,
    outer_eye_corners=(0, 1),
    eye_contours=((0,), (1,)),
    pupil_indices=None,
    mouth_indices=(2, 3),
    contour_indices=(3,),
    feature_indices=(0, 1, 2),
    flip_permutation=(1, 0, 2, 3),
  )
  landmarks.LandmarkScheme(**fields)  # the valid baseline builds
  with pytest.raises(ValueError, match="involution"):
    landmarks.LandmarkScheme(**{**fields, "flip_permutation": (1, 2, 0, 3)})
  with pytest.raises(ValueError, match="not a permutation"):
    landmarks.LandmarkScheme(**{**fields, "flip_permutation": (1, 0, 0, 3)})
  with pytest.raises(ValueError, match="partition"):
    landmarks.LandmarkScheme(**{**fields, "contour_indices": (2, 3)})
  with pytest.raises(ValueError, match="outside"):
    landmarks.LandmarkScheme(**{**fields, "mouth_indices": (2, 4)})
