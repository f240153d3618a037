"""Tests for msm_jax.core.shape_dictionary: canonical frame, k-means dictionary, files, Eq. 11.

The reconstruction is checked against an independent per-face reference: NumPy float64
neighbours (stable argsort of direct masked distances) and scikit-learn's
``Ridge(alpha=60, fit_intercept=False)``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.linear_model import Ridge

from msm_jax.core import shape_dictionary as sd

# Mean of the 1,207 300-W training shapes of 300w_subset in the default canonical frame
# (pupils at (46, 44) and (82, 44)), rounded to pixels: a realistic 68-point face.
TEMPLATE = np.array(
  [
    23,
    45,
    23,
    56,
    24,
    67,
    26,
    78,
    31,
    87,
    37,
    96,
    46,
    103,
    54,
    108,
    64,
    110,
    74,
    108,
    83,
    102,
    90,
    95,
    97,
    87,
    101,
    77,
    104,
    67,
    105,
    56,
    106,
    45,
    30,
    37,
    35,
    32,
    43,
    30,
    50,
    31,
    57,
    34,
    71,
    34,
    78,
    31,
    85,
    30,
    93,
    32,
    97,
    37,
    64,
    43,
    64,
    50,
    64,
    56,
    64,
    63,
    55,
    69,
    60,
    70,
    64,
    71,
    68,
    70,
    72,
    69,
    39,
    44,
    43,
    41,
    49,
    42,
    53,
    45,
    49,
    46,
    43,
    46,
    74,
    45,
    79,
    41,
    85,
    42,
    89,
    44,
    85,
    46,
    80,
    46,
    48,
    82,
    54,
    79,
    60,
    78,
    64,
    79,
    68,
    78,
    74,
    79,
    80,
    82,
    74,
    88,
    68,
    90,
    64,
    91,
    60,
    90,
    54,
    88,
    50,
    82,
    60,
    81,
    64,
    82,
    68,
    81,
    77,
    82,
    68,
    85,
    64,
    85,
    60,
    85,
  ],
  float,
).reshape(68, 2)
# Standard deviations (px) of the leading PCA modes of those canonical shapes.
MODE_SIZES = np.array([34, 32, 18, 17, 10, 9, 8, 7], float)
FRAME = 128.0  # tolerances below are relative to this coordinate scale


def realistic_faces(rng, count):
  """[count, 68, 2] float64: the template plus 8 random shape modes and 0.7 px noise."""
  modes = np.linalg.qr(np.random.default_rng(0).normal(size=(136, len(MODE_SIZES))))[0].T
  weights = rng.normal(size=(count, len(MODE_SIZES))) * MODE_SIZES
  shapes = TEMPLATE + (weights @ modes).reshape(count, 68, 2)
  return shapes + rng.normal(size=shapes.shape) * 0.7


def reference_reconstruct(shapes, reliable, dictionary, k, replace="unreliable"):
  """Per face, float64: (final [B, L, 2], neighbour index lists, sklearn coefficients)."""
  flat_dictionary = dictionary.reshape(len(dictionary), -1).astype(np.float64)
  finals, neighbour_sets, coefficients = [], [], []
  for shape, mask in zip(shapes.astype(np.float64), reliable):
    if not mask.any():  # documented fallback: the dictionary's mean shape
      finals.append(dictionary.astype(np.float64).mean(axis=0))
      neighbour_sets.append(None)
      coefficients.append(None)
      continue
    coordinates = np.repeat(mask, 2)
    query = shape.reshape(-1)
    distances = (((query - flat_dictionary) ** 2) * coordinates).sum(axis=1)
    neighbours = np.argsort(distances, kind="stable")[:k]
    ridge = Ridge(alpha=60.0, fit_intercept=False, solver="cholesky")
    ridge.fit(flat_dictionary[neighbours][:, coordinates].T, query[coordinates])
    fitted = (ridge.coef_ @ flat_dictionary[neighbours]).reshape(-1, 2)
    finals.append(np.where(mask[:, None], shape, fitted) if replace == "unreliable" else fitted)
    neighbour_sets.append(neighbours)
    coefficients.append(ridge.coef_)
  return np.stack(finals), neighbour_sets, coefficients


@pytest.fixture(scope="module")
def problem():
  """N = 500 exemplars, 40 faces (two chunks of 32, the second padded), mixed masks."""
  rng = np.random.default_rng(1)
  dictionary = realistic_faces(rng, 500)
  shapes = realistic_faces(rng, 40)
  reliable = rng.random((40, 68)) < rng.uniform(0.2, 1.0, size=(40, 1))
  reliable[0] = True  # every landmark reliable
  reliable[1] = False  # none reliable
  reliable[2] = False
  reliable[2, [36, 45]] = True  # 4 reliable coordinates for k = 100 coefficients
  return shapes, reliable, dictionary


# ---------------------------------------------------------------------------------------
# Canonical frame.


def test_canonical_similarity_hand_computed():
  # Level pupils 20 px apart -> scale 36 / 20 = 1.8, no rotation; translation puts
  # (10, 20) on (46, 44): 46 - 1.8 * 10 = 28, 44 - 1.8 * 20 = 8.
  matrix = sd.canonical_similarity(np.array([[10.0, 20.0], [30.0, 20.0]]))
  np.testing.assert_allclose(matrix, [[1.8, 0, 28], [0, 1.8, 8], [0, 0, 1]], atol=1e-12)
  # Right pupil straight below the left one: a = 36 / (10 i) = -3.6 i, a rotation by
  # -90 degrees: (x, y) -> (3.6 y + 46, -3.6 x + 44).
  matrix = sd.canonical_similarity(np.array([[0.0, 0.0], [0.0, 10.0]]))
  np.testing.assert_allclose(matrix, [[0, 3.6, 46], [-3.6, 0, 44], [0, 0, 1]], atol=1e-12)


def test_canonical_similarity_matches_two_point_linear_solve():
  rng = np.random.default_rng(0)
  pupils = rng.uniform(0, 300, size=(5, 2, 2))
  targets = np.array([[40.0, 50.0], [90.0, 47.0]])
  matrix = sd.canonical_similarity(pupils, tuple(targets[0]), tuple(targets[1]))
  for face in range(5):
    # Independent: x' = a x - b y + tx, y' = b x + a y + ty from 4 equations.
    rows, values = [], []
    for (x, y), (u, v) in zip(pupils[face], targets):
      rows += [[x, -y, 1, 0], [y, x, 0, 1]]
      values += [u, v]
    a, b, tx, ty = np.linalg.solve(np.array(rows), np.array(values))
    np.testing.assert_allclose(
      matrix[face], [[a, -b, tx], [b, a, ty], [0, 0, 1]], rtol=1e-9, atol=1e-9
    )


def test_canonicalise_puts_pupils_and_midpoint_on_targets_and_round_trips():
  rng = np.random.default_rng(2)
  shapes = realistic_faces(rng, 6) * rng.uniform(0.5, 3, (6, 1, 1))
  shapes = shapes + rng.uniform(-50, 200, (6, 1, 2))
  pupils = np.stack([shapes[:, 36:42].mean(1), shapes[:, 42:48].mean(1)], axis=1)
  canonical, matrix = sd.canonicalise(shapes, pupils)
  assert canonical.shape == shapes.shape and matrix.shape == (6, 3, 3)
  canonical_pupils = np.stack([canonical[:, 36:42].mean(1), canonical[:, 42:48].mean(1)], 1)
  np.testing.assert_allclose(
    canonical_pupils,
    np.broadcast_to([sd.LEFT_PUPIL_TARGET, sd.RIGHT_PUPIL_TARGET], (6, 2, 2)),
    atol=1e-9,
  )
  np.testing.assert_allclose(
    canonical_pupils.mean(1), np.broadcast_to([64.0, 44.0], (6, 2)), atol=1e-9
  )
  np.testing.assert_allclose(sd.uncanonicalise(canonical, matrix), shapes, atol=1e-9)
  # JAX in, JAX out, float32, jit-able.
  jax_canonical, _ = jax.jit(sd.canonicalise)(
    jnp.asarray(shapes, jnp.float32), jnp.asarray(pupils, jnp.float32)
  )
  assert isinstance(jax_canonical, jax.Array) and jax_canonical.dtype == jnp.float32
  np.testing.assert_allclose(jax_canonical, canonical, atol=1e-3)


def test_canonical_similarity_bad_input():
  with pytest.raises(ValueError, match="pupils must be"):
    sd.canonical_similarity(np.zeros((3, 2)))
  with np.errstate(divide="ignore", invalid="ignore"):
    coincident = sd.canonical_similarity(np.array([[5.0, 5.0], [5.0, 5.0]]))
  assert not np.all(np.isfinite(coincident))  # documented: inf/nan, no exception


# ---------------------------------------------------------------------------------------
# Dictionary: k-means and files.


def test_build_dictionary_rows_are_sklearn_cluster_centres():
  shapes = realistic_faces(np.random.default_rng(3), 120)
  dictionary = sd.build_dictionary(shapes, size=15, seed=4, n_init=2)
  expected = KMeans(n_clusters=15, random_state=4, n_init=2).fit(shapes.reshape(120, -1))
  assert dictionary.shape == (15, 68, 2) and dictionary.dtype == np.float32
  np.testing.assert_allclose(dictionary.reshape(15, -1), expected.cluster_centers_, atol=1e-4)
  # Centres are the means of their members (the k-means fixed point).
  labels = expected.labels_
  np.testing.assert_allclose(dictionary[3], shapes[labels == 3].mean(0), atol=1e-3)


def test_build_dictionary_rejects_bad_input():
  shapes = realistic_faces(np.random.default_rng(3), 10)
  with pytest.raises(ValueError, match="N_train=10"):
    sd.build_dictionary(shapes, size=11)
  with pytest.raises(ValueError, match="canonical_shapes must be"):
    sd.build_dictionary(shapes.reshape(10, -1), size=5)
  shapes[4, 7, 1] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    sd.build_dictionary(shapes, size=5)


def test_save_load_round_trip(tmp_path):
  dictionary = realistic_faces(np.random.default_rng(5), 7).astype(np.float32)
  path = str(tmp_path / "dictionary.npz")
  meta = {"scheme": "300w", "seed": 3, "left_pupil": sd.LEFT_PUPIL_TARGET}
  sd.save_dictionary(path, dictionary, meta)
  loaded, loaded_meta = sd.load_dictionary(path, num_points=68)
  np.testing.assert_array_equal(loaded, dictionary)
  assert loaded.dtype == np.float32
  assert loaded_meta["scheme"] == "300w" and loaded_meta["seed"] == 3
  np.testing.assert_array_equal(loaded_meta["left_pupil"], [46.0, 44.0])


def test_save_and_load_errors_name_the_file(tmp_path):
  good = realistic_faces(np.random.default_rng(5), 4).astype(np.float32)
  with pytest.raises(FileNotFoundError, match="missing.npz"):
    sd.load_dictionary(str(tmp_path / "missing.npz"))
  text = tmp_path / "text.npz"
  text.write_text("not a zip")
  with pytest.raises(ValueError, match="text.npz"):
    sd.load_dictionary(str(text))
  cases = {
    "pickled.npz": {"dictionary": np.array([good], dtype=object)},
    "no_key.npz": {"shapes": good},
    "flat.npz": {"dictionary": good.reshape(4, -1)},
    "nan.npz": {"dictionary": np.where(np.arange(68)[:, None] == 3, np.nan, good)},
    "ints.npz": {"dictionary": good.astype(np.int32)},
  }
  for name, arrays in cases.items():
    np.savez(tmp_path / name, **arrays)
    with pytest.raises(ValueError, match=name):
      sd.load_dictionary(str(tmp_path / name))
  sd.save_dictionary(str(tmp_path / "good.npz"), good)
  with pytest.raises(ValueError, match="68 points per shape, expected 98"):
    sd.load_dictionary(str(tmp_path / "good.npz"), num_points=98)
  with pytest.raises(ValueError, match="pickle"):
    sd.save_dictionary(str(tmp_path / "bad_meta.npz"), good, {"config": {"a": 1}})


# ---------------------------------------------------------------------------------------
# Reconstruction, Eq. 11.


@pytest.mark.parametrize("replace", ["unreliable", "all"])
def test_reconstruct_float32_matches_float64_sklearn_reference(problem, replace):
  shapes, reliable, dictionary = problem
  final, info = sd.reconstruct(
    jnp.asarray(shapes, jnp.float32),
    jnp.asarray(reliable),
    jnp.asarray(dictionary, jnp.float32),
    k=100,
    replace=replace,
  )
  expected, neighbour_sets, _ = reference_reconstruct(shapes, reliable, dictionary, 100, replace)
  assert final.dtype == jnp.float32 and final.shape == (40, 68, 2)
  # Same neighbour sets as the float64 reference (the order within the set may differ
  # only between exact ties, which these random shapes do not have).
  for face, neighbours in enumerate(neighbour_sets):
    if neighbours is not None:
      np.testing.assert_array_equal(info["neighbours"][face], neighbours)
  # Measured max error 2e-4 px = 1.6e-6 of the frame; the bar is 1e-4 of the frame.
  np.testing.assert_allclose(final, expected, atol=1e-4 * FRAME, rtol=0)
  np.testing.assert_array_equal(info["fallback"], ~reliable.any(axis=1))


def test_reconstruct_float64_matches_sklearn_coefficients(problem):
  shapes, reliable, dictionary = problem
  with jax.enable_x64(True):
    final, info = sd.reconstruct(
      jnp.asarray(shapes, jnp.float64),
      jnp.asarray(reliable),
      jnp.asarray(dictionary, jnp.float64),
      k=100,
    )
    assert final.dtype == jnp.float64
    final, coefficients = np.asarray(final), np.asarray(info["coefficients"])
  expected, _, expected_coefficients = reference_reconstruct(shapes, reliable, dictionary, 100)
  np.testing.assert_allclose(final, expected, atol=1e-9 * FRAME, rtol=0)
  for face, alpha in enumerate(expected_coefficients):
    if alpha is not None:
      np.testing.assert_allclose(
        coefficients[face], alpha, rtol=1e-7, atol=1e-9 * np.abs(alpha).max()
      )


def test_reconstruct_edge_cases(problem):
  shapes, reliable, dictionary = problem
  final, info = sd.reconstruct(
    jnp.asarray(shapes, jnp.float32),
    jnp.asarray(reliable),
    jnp.asarray(dictionary, jnp.float32),
    k=100,
    replace="unreliable",
  )
  final, fitted = np.asarray(final), np.asarray(info["reconstruction"])
  # Unreliable landmarks are ignored whatever they hold, NaN included.
  garbage = np.where(reliable[..., None], shapes, np.nan)
  garbage[:, ::2] = np.where(reliable[:, ::2, None], shapes[:, ::2], 1e30)
  from_garbage, _ = sd.reconstruct(
    jnp.asarray(garbage, jnp.float32),
    jnp.asarray(reliable),
    jnp.asarray(dictionary, jnp.float32),
    k=100,
    replace="unreliable",
  )
  np.testing.assert_array_equal(from_garbage, final)
  # All reliable: the input comes back bit for bit.
  np.testing.assert_array_equal(final[0], shapes[0].astype(np.float32))
  # None reliable: the dictionary's mean shape, whatever the input.
  np.testing.assert_allclose(final[1], dictionary.mean(0), atol=1e-4)
  assert info["fallback"][1] and not info["fallback"][0]
  # Two reliable landmarks (4 coordinates, 100 coefficients): ridge keeps it well posed;
  # the fit stays within the range the dictionary spans at every landmark, and at
  # these magnitudes it is close to a weighted mean (coefficients sum to 0.98 here).
  assert np.all(np.isfinite(fitted[2]))
  assert np.all(fitted[2] > dictionary.min(0) - 1) and np.all(fitted[2] < dictionary.max(0) + 1)
  assert abs(float(np.sum(info["coefficients"][2])) - 1.0) < 0.05
  np.testing.assert_array_equal(final[2, [36, 45]], shapes[2, [36, 45]].astype(np.float32))


def test_direct_differences_rank_sub_pixel_neighbours_in_float32():
  # 20 exemplars at distances 0.01 ... 0.2 px per coordinate from a face at ~64 px
  # magnitudes: squared distances 136 eps^2 = 0.0136 ... 5.4. The expansion
  # |q|^2 - 2 q.d + |d|^2 rounds at ~5.6e5 * 6e-8 = 0.03 and would scramble the
  # nearest; direct differences rank them exactly (order reversed by construction).
  rng = np.random.default_rng(6)
  offsets = np.linspace(0.2, 0.01, 20)
  signs = rng.choice([-1.0, 1.0], size=(20, 68, 2))
  dictionary = (TEMPLATE + offsets[:, None, None] * signs).astype(np.float32)
  _, info = sd.reconstruct(
    jnp.asarray(TEMPLATE[None], jnp.float32), jnp.ones((1, 68), bool), jnp.asarray(dictionary), k=5
  )
  np.testing.assert_array_equal(info["neighbours"][0], [19, 18, 17, 16, 15])


def test_reconstruct_is_jittable_with_traced_lambda():
  rng = np.random.default_rng(7)
  dictionary = jnp.asarray(realistic_faces(rng, 30), jnp.float32)
  shapes = jnp.asarray(realistic_faces(rng, 3), jnp.float32)
  reliable = jnp.asarray(rng.random((3, 68)) < 0.5)
  outer = jax.jit(lambda s, r, d, lam: sd.reconstruct(s, r, d, k=8, ridge_lambda=lam)[0])
  np.testing.assert_allclose(
    outer(shapes, reliable, dictionary, 60.0),
    sd.reconstruct(shapes, reliable, dictionary, k=8)[0],
    atol=1e-5,
  )
  # A larger lambda shrinks the fit towards the origin: a different, finite answer.
  shrunk = outer(shapes, reliable, dictionary, 1e7)
  assert np.all(np.isfinite(shrunk))
  assert np.abs(np.asarray(shrunk - outer(shapes, reliable, dictionary, 60.0))).max() > 1.0


def test_reconstruct_rejects_bad_arguments():
  shapes = jnp.zeros((2, 68, 2))
  reliable = jnp.ones((2, 68), bool)
  dictionary = jnp.zeros((10, 68, 2))
  with pytest.raises(ValueError, match="bool mask"):
    sd.reconstruct(shapes, jnp.ones((2, 68)), dictionary, k=3)
  with pytest.raises(ValueError, match=r"k must be in \[1, N=10\]"):
    sd.reconstruct(shapes, reliable, dictionary, k=11)
  with pytest.raises(ValueError, match="replace must be"):
    sd.reconstruct(shapes, reliable, dictionary, k=3, replace="some")
  with pytest.raises(ValueError, match="dictionary must be"):
    sd.reconstruct(shapes, reliable, jnp.zeros((10, 98, 2)), k=3)
  with pytest.raises(ValueError, match="reliable must be"):
    sd.reconstruct(shapes, reliable[:, :60], dictionary, k=3)


# ---------------------------------------------------------------------------------------
# The soft-weighted repair of the differentiable pipeline.


def test_weighted_reconstruct_matches_sklearn_with_sample_weights(problem):
  """Neighbours from the hard mask, the ridge fit weighting each coordinate's residual by
  w^2 (sklearn's sample_weight), the output w * shape + (1 - w) * fit."""
  shapes, reliable, dictionary = problem
  faces = slice(3, 8)
  shapes, reliable = shapes[faces], reliable[faces]
  weights = np.where(reliable, 0.7, 0.2) + np.random.default_rng(5).uniform(0, 0.1, reliable.shape)
  with jax.enable_x64(True):
    final, info = sd.reconstruct(
      jnp.asarray(shapes),
      jnp.asarray(reliable),
      jnp.asarray(dictionary),
      k=100,
      weights=jnp.asarray(weights),
    )
    final, neighbours = np.asarray(final), np.asarray(info["neighbours"])
  _, expected_neighbours, _ = reference_reconstruct(shapes, reliable, dictionary, 100)
  flat_dictionary = dictionary.reshape(len(dictionary), -1)
  for face in range(len(shapes)):
    np.testing.assert_array_equal(np.sort(neighbours[face]), np.sort(expected_neighbours[face]))
    basis = flat_dictionary[expected_neighbours[face]]  # [k, 2L]
    ridge = Ridge(alpha=60.0, fit_intercept=False, solver="cholesky")
    ridge.fit(basis.T, shapes[face].reshape(-1), sample_weight=np.repeat(weights[face], 2) ** 2)
    fitted = (ridge.coef_ @ basis).reshape(-1, 2)
    expected = weights[face, :, None] * shapes[face] + (1 - weights[face, :, None]) * fitted
    np.testing.assert_allclose(final[face], expected, atol=1e-9 * FRAME, rtol=0)


def test_weighted_reconstruct_with_the_mask_as_weights_is_the_exact_repair(problem):
  shapes, reliable, dictionary = problem
  arguments = (jnp.asarray(shapes, jnp.float32), jnp.asarray(reliable), jnp.asarray(dictionary))
  exact, _ = sd.reconstruct(*arguments, k=100)
  weighted, _ = sd.reconstruct(*arguments, k=100, weights=jnp.asarray(reliable, jnp.float32))
  # The same float32 operations on the same values; only the blend's arithmetic differs.
  np.testing.assert_allclose(weighted, exact, atol=1e-6 * FRAME, rtol=0)


def test_weighted_reconstruct_gradients_match_finite_differences(problem):
  from jax.test_util import check_grads

  shapes, reliable, dictionary = problem
  shapes, reliable = shapes[3:5], reliable[3:5]
  weights = np.where(reliable, 0.8, 0.3)
  with jax.enable_x64(True):

    def repaired(points, soft):
      final, _ = sd.reconstruct(
        points, jnp.asarray(reliable), jnp.asarray(dictionary), k=100, weights=soft
      )
      return final

    # float64 central differences (eps 1e-6, |f| ~ 100 px: rounding ~1e-8) of a smooth map:
    # the neighbour set does not change under so small a step.
    check_grads(
      repaired,
      (jnp.asarray(shapes), jnp.asarray(weights)),
      order=1,
      modes=("fwd", "rev"),
      eps=1e-6,
      atol=1e-5,
      rtol=1e-5,
    )
