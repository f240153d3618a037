"""Exemplar shape dictionary: the third MSM stage, shape repair (Sec. III-C).

Landmarks that the hourglass locates with a low score (occluded, cluttered) are
replaced using the ones it is sure of (Eq. 10-11, Algorithm 2 lines 11-13):

1. Canonical frame (Sec. IV-C): a similarity puts the two pupils on fixed positions
   in a 128 x 128 frame, so dictionary and query shapes differ by expression, pose
   and identity only, not by where the face sits. ``canonicalise``.
2. Dictionary (Sec. III-C, IV-C): k-means (N = 500) over the canonical training
   shapes; the cluster centres are the exemplars ``D_S``. ``build_dictionary``,
   stored as plain arrays with ``save_dictionary`` / ``load_dictionary``.
3. Reconstruction (Eq. 11): the k = 100 exemplars nearest to the face on its
   *reliable* landmarks only, a ridge fit (lambda = 60) of the reliable coordinates
   on theirs, and the fitted combination ``D_k alpha`` at every landmark.
   ``reconstruct``: pure jnp, batched over faces, jit-able.

Shapes are ``[..., L, 2]`` (x, y) pixel coordinates of the canonical frame (see
``msm_jax/__init__.py``); the frame is only a coordinate system, points outside
``[0, 128)`` are not clipped.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from msm_jax import files
from msm_jax.core import geometry

# Pupil targets of the 128 x 128 canonical frame: 36 px apart on the line y = 44. With them the
# mean 300-W training face spans x 23..106, y 30..110 (brow top to chin), and 92 % of
# the 1,207 faces of 300w_subset (profiles included) lie entirely inside the frame;
# pupils 40 px apart at y = 52 leave the chin of the mean face at y = 125 (59 %).
LEFT_PUPIL_TARGET = (46.0, 44.0)
RIGHT_PUPIL_TARGET = (82.0, 44.0)
REPLACE_MODES = ("unreliable", "all")
_CHUNK_SIZE = 32  # faces per pass of reconstruct (see there)


def canonical_similarity(pupils, left_target=LEFT_PUPIL_TARGET, right_target=RIGHT_PUPIL_TARGET):
  """The similarity that puts the two pupils on ``left_target`` / ``right_target``.

  The paper maps "the pupils and their midpoint" (Sec. IV-C); a similarity maps
  midpoints to midpoints, so the two pupils determine it exactly. In complex
  numbers ``z -> a z + b`` with ``a = (t1 - t0) / (p1 - p0)`` and
  ``b = t0 - a p0``; ``a = c + i s`` is the matrix ``[[c, -s], [s, c]]``.

  Args:
    pupils: [..., 2, 2] (image-left pupil, image-right pupil), each (x, y), as
      ``msm_jax.core.landmarks.pupils`` returns them. NumPy in gives NumPy out, JAX in
      gives JAX out (jit-able).
    left_target, right_target: (x, y) where the image-left / image-right pupil land.

  Returns:
    [..., 3, 3] pixel matrix (last row 0, 0, 1). Coincident pupils give inf/nan.
  """
  xp = jnp if isinstance(pupils, jax.Array) else np
  pupils = xp.asarray(pupils)
  pupils = pupils.astype(xp.result_type(pupils.dtype, xp.float32))
  if pupils.ndim < 2 or pupils.shape[-2:] != (2, 2):
    raise ValueError(f"pupils must be [..., 2, 2], got {tuple(pupils.shape)}")
  (t0x, t0y), (t1x, t1y) = left_target, right_target
  p0x, p0y = pupils[..., 0, 0], pupils[..., 0, 1]
  dpx, dpy = pupils[..., 1, 0] - p0x, pupils[..., 1, 1] - p0y
  dtx, dty = t1x - t0x, t1y - t0y
  inv_norm = 1.0 / (dpx * dpx + dpy * dpy)
  # a = dt / dp = dt * conj(dp) / |dp|^2
  cos_scale = (dtx * dpx + dty * dpy) * inv_norm
  sin_scale = (dty * dpx - dtx * dpy) * inv_norm
  shift_x = t0x - (cos_scale * p0x - sin_scale * p0y)
  shift_y = t0y - (sin_scale * p0x + cos_scale * p0y)
  zeros, ones = xp.zeros_like(p0x), xp.ones_like(p0x)
  rows = [
    xp.stack([cos_scale, -sin_scale, shift_x], axis=-1),
    xp.stack([sin_scale, cos_scale, shift_y], axis=-1),
    xp.stack([zeros, zeros, ones], axis=-1),
  ]
  return xp.stack(rows, axis=-2)


def canonicalise(shapes, pupils, left_target=LEFT_PUPIL_TARGET, right_target=RIGHT_PUPIL_TARGET):
  """Maps shapes into the canonical frame of ``canonical_similarity``.

  Args:
    shapes: [..., L, 2] (x, y) landmarks.
    pupils: [..., 2, 2] the same faces' pupils (image-left, image-right).
    left_target, right_target: see ``canonical_similarity``.

  Returns:
    (canonical_shapes [..., L, 2], matrix [..., 3, 3]); ``uncanonicalise`` with
    the same matrix maps back.
  """
  matrix = canonical_similarity(pupils, left_target, right_target)
  return geometry.apply_affine(shapes, matrix), matrix


def uncanonicalise(canonical_shapes, matrix):
  """Inverse of ``canonicalise``: [..., L, 2] canonical -> original coordinates."""
  return geometry.apply_affine(canonical_shapes, geometry.invert_affine(matrix))


def build_dictionary(canonical_shapes, size=500, seed=0, n_init=4):
  """k-means exemplar dictionary of canonical training shapes (Sec. III-C, IV-C).

  scikit-learn ``KMeans(n_clusters=size, random_state=seed, n_init=n_init)`` on the
  flattened shapes; the cluster centres are the dictionary. The paper does not say
  how many restarts; 4 costs ~1 s for 3,148 shapes and N = 500.

  Args:
    canonical_shapes: [N_train, L, 2] canonical training shapes (``canonicalise``).
    size: N, the number of exemplars (500 in Sec. IV-C). Must not exceed N_train:
      k-means cannot make more centres than shapes, and a silently smaller
      dictionary would break the ``k <= N`` contract of ``reconstruct``.
    seed: k-means++ initialisation seed.
    n_init: k-means restarts; the run with the lowest inertia is kept.

  Returns:
    [size, L, 2] float32 NumPy array of cluster centres.
  """
  from sklearn.cluster import KMeans  # only the offline dictionary build needs it

  shapes = np.asarray(canonical_shapes)
  if shapes.ndim != 3 or shapes.shape[-1] != 2:
    raise ValueError(f"canonical_shapes must be [N_train, L, 2], got {shapes.shape}")
  if not np.all(np.isfinite(shapes)):
    raise ValueError("canonical_shapes contains NaN or inf")
  if not 1 <= size <= len(shapes):
    raise ValueError(
      f"dictionary size must be in [1, N_train={len(shapes)}], got "
      f"{size}; pass size={len(shapes)} to keep every training shape"
    )
  kmeans = KMeans(n_clusters=size, random_state=seed, n_init=n_init)
  kmeans.fit(shapes.reshape(len(shapes), -1).astype(np.float64))
  return kmeans.cluster_centers_.reshape(size, *shapes.shape[1:]).astype(np.float32)


_META_PREFIX = "meta_"


def save_dictionary(path, dictionary, meta=None):
  """Writes a dictionary and its metadata as plain arrays (``np.savez``, no pickle).

  Args:
    path: file path (NumPy appends ``.npz`` if missing).
    dictionary: [N, L, 2] float array.
    meta: optional {name: number, string or numeric array}, e.g. the scheme name,
      the pupil targets, the k-means seed. Values must not need pickling.
  """
  dictionary = np.asarray(dictionary)
  _check_dictionary(dictionary, path)
  arrays = {"dictionary": dictionary}
  for name, value in (meta or {}).items():
    value = np.asarray(value)
    if value.dtype == object:
      raise ValueError(f"meta[{name!r}] cannot be stored without pickle: {value!r}")
    arrays[_META_PREFIX + name] = value
  path = os.fspath(path)
  with files.atomic_write(path if path.endswith(".npz") else path + ".npz", "wb") as file:
    np.savez(file, **arrays)


def load_dictionary(path, num_points=None):
  """Reads a file of ``save_dictionary`` and validates it.

  Args:
    path: the ``.npz`` file.
    num_points: expected L (e.g. the scheme's number of landmarks), or None.

  Returns:
    (dictionary [N, L, 2] as stored, meta dict: 0-d arrays become Python scalars).

  Raises:
    FileNotFoundError if ``path`` does not exist; ValueError naming the file if it
    is not a dictionary file, needs pickle, or holds a malformed dictionary.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"shape dictionary file not found: {path}")
  try:
    with np.load(path, allow_pickle=False) as archive:
      arrays = {name: archive[name] for name in archive.files}
  except (ValueError, OSError) as error:
    raise ValueError(f"{path}: not a readable shape dictionary .npz ({error})") from error
  if "dictionary" not in arrays:
    raise ValueError(f"{path}: no 'dictionary' array (found {sorted(arrays)})")
  dictionary = arrays.pop("dictionary")
  _check_dictionary(dictionary, path)
  if num_points is not None and dictionary.shape[1] != num_points:
    raise ValueError(
      f"{path}: dictionary has {dictionary.shape[1]} points per shape, expected {num_points}"
    )
  meta = {
    name[len(_META_PREFIX) :]: value.item() if value.ndim == 0 else value
    for name, value in arrays.items()
    if name.startswith(_META_PREFIX)
  }
  return dictionary, meta


def _check_dictionary(dictionary, source):
  if dictionary.ndim != 3 or dictionary.shape[-1] != 2 or dictionary.shape[0] < 1:
    raise ValueError(
      f"{source}: dictionary must be [N, L, 2] with N >= 1, got shape {dictionary.shape}"
    )
  if not np.issubdtype(dictionary.dtype, np.floating):
    raise ValueError(f"{source}: dictionary must be floating point, got {dictionary.dtype}")
  if not np.all(np.isfinite(dictionary)):
    raise ValueError(f"{source}: dictionary contains NaN or inf")


def _masked_squared_distances(shapes, reliable, dictionary):
  """Eq. 11's search metric: sum over reliable landmarks of squared distances.

  Direct differences, not |q|^2 - 2 q.d + |d|^2: in float32 that expansion loses
  the small distances under the ~64^2 magnitudes and picked a different neighbour
  set for 2.7 % of faces (docs/cpu_notes.md). The Python loop over
  landmarks unrolls into one fused elementwise pass over the [B, N] output: 8 us
  per face on XLA:CPU, against 20-45 us for a reduction over a [B, N, 2L] tensor.

  Args: shapes [B, L, 2], reliable [B, L] float 0/1, dictionary [N, L, 2].
  Returns: [B, N].
  """
  # Coordinate-major [2L, N] dictionary and [B, 2L] shapes: each term of the loop
  # reads whole rows (2.5x faster on XLA:CPU than indexing [N, L, 2] directly).
  by_coordinate = jnp.transpose(dictionary, (1, 2, 0)).reshape(-1, dictionary.shape[0])
  flat_shapes = shapes.reshape(shapes.shape[0], -1)
  distances = jnp.zeros((shapes.shape[0], dictionary.shape[0]), shapes.dtype)
  for landmark in range(shapes.shape[1]):
    dx = flat_shapes[:, 2 * landmark, None] - by_coordinate[None, 2 * landmark]
    dy = flat_shapes[:, 2 * landmark + 1, None] - by_coordinate[None, 2 * landmark + 1]
    distances = distances + reliable[:, landmark, None] * (dx * dx + dy * dy)
  return distances


def _mean_householder(neighbours):
  """Reflects the neighbour set: row 0 becomes sqrt(k) x their mean, rows 1.. sum to 0.

  H = I - 2 v v^T / |v|^2 with v = 1/sqrt(k) - e_0 is orthogonal and symmetric, so
  the ridge problem in alpha' = H alpha is the same problem (|alpha'| = |alpha|) on
  H N. Why: the raw Gram A^T A is dominated by the common offset of all shapes
  (entries ~136 x 64^2), and float32 rounding at that scale swamps lambda = 60
  (0.04 px error vs float64 on realistic faces). After the reflection the offset
  lives in one row and column; the other rows are zero-sum combinations of the
  size of the differences between neighbours and keep their precision (2e-4 px).

  Args: neighbours [B, k, C]. Returns: (H neighbours [B, k, C], v [k], 2 / |v|^2).
  """
  k = neighbours.shape[1]
  v = jnp.full((k,), 1.0 / np.sqrt(k), neighbours.dtype).at[0].add(-1.0)
  scale = 2.0 / jnp.sum(v * v)
  # v^T N as a reduction over k: an einsum here made XLA transpose all of N first.
  projection = jnp.sum(neighbours, axis=1) / np.sqrt(k) - neighbours[:, 0]
  return neighbours - scale * v[None, :, None] * projection[:, None, :], v, scale


def _ridge_coefficients(neighbours, coordinate_mask, targets, ridge_lambda):
  """Eq. 11's coefficients: ridge of the reliable coordinates on the neighbours'.

  alpha = (A^T A + lambda I)^-1 A^T b, A = [2L, k] neighbour coordinates with the
  unreliable rows zeroed (they then add nothing to A^T A or A^T b), b the face's
  reliable coordinates. Solved in the k x k (primal) form: with static shapes the
  dual system A A^T + lambda I cannot shrink to the 2R reliable rows; it stays
  2L x 2L (136 x 136 for 68 points), 3.7 MFLOP to form against 2.7 MFLOP for the
  100 x 100 Gram, and a larger Cholesky.

  One LAPACK Cholesky of the bordered matrix [[G, r], [r^T, c]] gives both the
  factor L of G and y = L^-1 r in its last row, saving one of the two triangular
  solves (each costs ~10 us per face in XLA:CPU's per-matrix LAPACK calls).

  Args: neighbours [B, k, 2L], coordinate_mask [B, 2L] 0/1, targets [B, 2L] with
  the unreliable coordinates zeroed.
  Returns: alpha [B, k].
  """
  batch, k, _ = neighbours.shape
  reflected, v, scale = _mean_householder(neighbours)
  design = reflected * coordinate_mask[:, None, :]  # A'^T: [B, k, 2L]
  gram = jnp.einsum("bic,bjc->bij", design, design)
  gram = gram + ridge_lambda * jnp.eye(k, dtype=gram.dtype)
  rhs = jnp.einsum("bic,bc->bi", design, targets)
  # r^T (G + lambda I)^-1 r <= |b|^2, so this corner keeps the bordered matrix
  # positive definite (its Schur complement is >= lambda).
  corner = jnp.sum(targets * targets, axis=1) + ridge_lambda
  bordered = jnp.concatenate(
    [
      jnp.concatenate([gram, jnp.zeros((batch, k, 1), gram.dtype)], axis=2),
      jnp.concatenate([rhs, corner[:, None]], axis=1)[:, None, :],
    ],
    axis=1,
  )
  factor = lax.linalg.cholesky(bordered, symmetrize_input=False)
  reflected_alpha = lax.linalg.triangular_solve(
    factor[:, :k, :k], factor[:, k, :k, None], left_side=True, lower=True, transpose_a=True
  )[..., 0]
  return reflected_alpha - scale * v * jnp.einsum("k,bk->b", v, reflected_alpha)[:, None]


@functools.partial(jax.jit, static_argnames=("k", "replace"))
def reconstruct(
  shapes, reliable, dictionary, k=100, ridge_lambda=60.0, replace="unreliable", weights=None
):
  """Exemplar-based shape reconstruction, Eq. 11 and Algorithm 2 lines 11-13.

  For each face: the k dictionary shapes nearest on its reliable landmarks
  (``V* S`` vs ``V* D_S``), the ridge coefficients alpha fitting its reliable
  coordinates from theirs (no intercept), and ``D_k alpha`` at all landmarks.

  Precision follows the inputs: float32 by default; float64 when x64 is enabled
  and ``shapes`` or ``dictionary`` is float64. In float32 the neighbours are the
  float64 ones and the shapes agree to ~2e-4 px on realistic faces (tests).

  Edge cases:
    * every landmark reliable: with ``replace="unreliable"`` the output equals the
      input exactly.
    * no landmark reliable: Eq. 11 is empty (all distances tie, alpha = 0 gives
      the origin), so the face becomes the dictionary's mean shape, the average
      canonical face; ``info["fallback"]`` marks these faces.
    * fewer reliable coordinates than neighbours (2R < k): the ridge term keeps
      the system positive definite. At canonical-frame magnitudes (~64 px)
      lambda = 60 barely shrinks alpha, so the fit stays near a weighted mean of
      the neighbours rather than collapsing to the origin.

  Args:
    shapes: [B, L, 2] canonical-frame landmarks (``canonicalise``).
    reliable: [B, L] bool, True where the landmark's score passed its threshold.
    dictionary: [N, L, 2] exemplars (``build_dictionary``); N >= k.
    k: number of neighbours (static; 100 in Sec. IV-C).
    ridge_lambda: ridge regularisation (60 in Sec. IV-C); traced, so changing it
      does not recompile.
    replace: "unreliable" keeps the reliable landmarks and replaces the others
      with the reconstruction; "all" returns the paper's literal ``S_F = D_S
      alpha`` for every landmark (static).
    weights: None (the exact repair), or [B, L] soft reliability in [0, 1] (the
      differentiable relaxation): the neighbours are still searched on ``reliable``,
      the ridge fit weights each coordinate's residual by ``weights**2`` and
      "unreliable" returns ``weights * shapes + (1 - weights) * D_k alpha``. With
      weights equal to ``reliable`` (0/1) this is the exact repair. The shapes must be
      finite.

  Returns:
    (final_shapes [B, L, 2], info) with info = {"neighbours": [B, k] int32
    dictionary rows, "coefficients": [B, k] alpha, "reconstruction": [B, L, 2]
    ``D_k alpha`` (the mean shape for fallback faces), "fallback": [B] bool}.
  """
  _check_reconstruct_args(shapes, reliable, dictionary, k, replace, weights)
  dtype = jnp.result_type(shapes.dtype, dictionary.dtype, jnp.float32)
  shapes, dictionary = shapes.astype(dtype), dictionary.astype(dtype)
  batch = shapes.shape[0]
  fit_weights = reliable.astype(dtype) if weights is None else weights.astype(dtype)
  if batch <= _CHUNK_SIZE:
    fitted, info = _fit_chunk(shapes, reliable, fit_weights, dictionary, k, ridge_lambda)
  else:
    # Chunks of 32 faces keep each chunk's [32, k, 2L] neighbours and [32, k, k]
    # Gram in the L2 cache: ~1.4x faster per face than one [256, ...] pass.
    num_chunks = -(-batch // _CHUNK_SIZE)
    padding = num_chunks * _CHUNK_SIZE - batch

    def split(array):  # padded faces have no reliable landmark: harmless fallback
      array = jnp.pad(array, [(0, padding)] + [(0, 0)] * (array.ndim - 1))
      return array.reshape(num_chunks, _CHUNK_SIZE, *array.shape[1:])

    fitted, info = lax.map(
      lambda chunk: _fit_chunk(*chunk, dictionary, k, ridge_lambda),
      (split(shapes), split(reliable), split(fit_weights)),
    )
    fitted, info = jax.tree.map(
      lambda array: array.reshape(num_chunks * _CHUNK_SIZE, *array.shape[2:])[:batch],
      (fitted, info),
    )
  if replace == "unreliable" and weights is None:
    final = jnp.where(reliable[..., None], shapes, fitted)
  elif replace == "unreliable":
    final = fit_weights[..., None] * shapes + (1.0 - fit_weights[..., None]) * fitted
  else:
    final = fitted
  return final, {**info, "reconstruction": fitted}


def _fit_chunk(shapes, reliable, fit_weights, dictionary, k, ridge_lambda):
  """``reconstruct`` for one chunk of faces: (D_k alpha [B, L, 2], info) (see there);
  fit_weights [B, L] weight the ridge fit (the reliable mask as 0/1 in the exact repair)."""
  batch, num_points, _ = shapes.shape
  landmark_mask = reliable.astype(shapes.dtype)
  # Unreliable coordinates may be anything (even NaN): zero them so that masking by
  # multiplication cannot turn them into NaN (0 * NaN). Soft weights use every coordinate.
  search_shapes = jnp.where(reliable[..., None], shapes, 0.0)
  shapes = jnp.where(fit_weights[..., None] > 0, shapes, 0.0)
  distances = _masked_squared_distances(search_shapes, landmark_mask, dictionary)
  # Ties (e.g. no reliable landmark) resolve to the lowest index, as a stable sort.
  _, neighbours_idx = lax.top_k(-distances, k)
  flat_dictionary = dictionary.reshape(dictionary.shape[0], 2 * num_points)
  neighbours = flat_dictionary[neighbours_idx]  # [B, k, 2L]
  coordinate_mask = jnp.repeat(fit_weights, 2, axis=1)
  targets = shapes.reshape(batch, 2 * num_points) * coordinate_mask
  alpha = _ridge_coefficients(neighbours, coordinate_mask, targets, ridge_lambda)
  fitted = jnp.einsum("bk,bkc->bc", alpha, neighbours).reshape(batch, num_points, 2)
  fallback = ~jnp.any(reliable, axis=1)
  fitted = jnp.where(fallback[:, None, None], jnp.mean(dictionary, axis=0), fitted)
  info = {
    "neighbours": neighbours_idx.astype(jnp.int32),
    "coefficients": alpha,
    "fallback": fallback,
  }
  return fitted, info


def _check_reconstruct_args(shapes, reliable, dictionary, k, replace, weights=None):
  """Static checks, so bad input fails with a message instead of a JAX traceback."""
  if shapes.ndim != 3 or shapes.shape[-1] != 2:
    raise ValueError(f"reconstruct: shapes must be [B, L, 2], got {shapes.shape}")
  if reliable.shape != shapes.shape[:2]:
    raise ValueError(
      f"reconstruct: reliable must be [B, L] = {shapes.shape[:2]}, got {reliable.shape}"
    )
  if reliable.dtype != jnp.bool_:
    raise ValueError(
      f"reconstruct: reliable must be a bool mask, got {reliable.dtype} "
      "(threshold the scores first)"
    )
  if weights is not None and weights.shape != reliable.shape:
    raise ValueError(f"reconstruct: weights must be [B, L] = {reliable.shape}, got {weights.shape}")
  if dictionary.ndim != 3 or dictionary.shape[1:] != shapes.shape[1:]:
    raise ValueError(
      f"reconstruct: dictionary must be [N, {shapes.shape[1]}, 2] like "
      f"the shapes, got {dictionary.shape}"
    )
  if not 1 <= k <= dictionary.shape[0]:
    raise ValueError(f"reconstruct: k must be in [1, N={dictionary.shape[0]}], got {k}")
  if replace not in REPLACE_MODES:
    raise ValueError(f"reconstruct: replace must be one of {REPLACE_MODES}, got {replace!r}")
