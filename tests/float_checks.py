"""Tolerances derived from the maths, so that a test passes on any CPU (kernels, vector widths
and reduction orders differ between CPU makes, XLA flags and device counts).

* A float32 sum of n terms is within about n * eps of the exact sum, relative to the sum of the
  terms' magnitudes (the worst case of sequential summation; tree and blocked orders do better).
* A boolean decided by a float against a threshold (Algorithm 2's `score > K`) can flip when the
  float moves by its rounding error, so booleans are compared only where the float is further
  from the threshold than that error.
"""

import numpy as np

F32_EPS = float(np.finfo(np.float32).eps)  # 1.19e-7


def sum_tolerance(num_terms: int, magnitude: float = 1.0) -> float:
  """Worst-case rounding error of a float32 sum of ``num_terms`` terms of this magnitude."""
  return num_terms * F32_EPS * magnitude


def clear_of_thresholds(scores, thresholds, margin: float) -> np.ndarray:
  """[B, L] bool: where ``scores`` [B, L] are more than ``margin`` from ``thresholds`` [L]."""
  return np.abs(np.asarray(scores) - np.asarray(thresholds)[None]) > margin


def assert_flags_equal_where_clear(got, expected, scores, thresholds, margin: float) -> None:
  """The reliability flags agree wherever the score is clearly on one side of its threshold."""
  clear = clear_of_thresholds(scores, thresholds, margin)
  np.testing.assert_array_equal(np.asarray(got)[clear], np.asarray(expected)[clear])


def thresholds_between(scores, margin: float) -> np.ndarray:
  """[L] thresholds that split the faces' scores [B, L] into reliable and unreliable ones,
  each in the middle of the widest gap between two consecutive sorted scores; a landmark
  whose scores leave no gap wider than 2 * margin (e.g. ties at 1.0) gets 2.0, above every
  score (all unreliable). Every score then lies more than ``margin`` from its threshold."""
  ranked = np.sort(np.asarray(scores, np.float64), axis=0)
  gaps = np.diff(ranked, axis=0)  # [B - 1, L]
  widest = np.argmax(gaps, axis=0)
  columns = np.arange(ranked.shape[1])
  middle = (ranked[widest, columns] + ranked[widest + 1, columns]) / 2
  thresholds = np.where(gaps[widest, columns] > 2 * margin, middle, 2.0)
  assert clear_of_thresholds(scores, thresholds, margin).all()
  return thresholds.astype(np.float32)


def check_eval_mode_gradients(model, image_shape, output=lambda out: out) -> None:
  """`check_grads` (fwd and rev) of ``output(model(image))`` in inference mode w.r.t. the
  parameters and the image, in float64 (``model`` computes in float64): a central difference
  with eps 1e-8 rounds at ~|f| 2e-16 / 1e-8 = 2e-8 relative, and the random direction moves
  pre-activations by ~1e-8, so it crosses no ReLU / max-pool kink of a tiny network; 1e-5
  leaves a wide margin while a wrong gradient is off by O(1)."""
  import jax
  import jax.numpy as jnp
  from jax.test_util import check_grads

  with jax.enable_x64(True):
    images = jnp.asarray(np.random.default_rng(0).random(image_shape))
    variables = model.init(jax.random.key(0), images, train=False)
    variables = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), variables)
    forward = jax.jit(lambda params, x: output(model.apply({**variables, "params": params}, x)))
    check_grads(
      forward,
      (variables["params"], images),
      order=1,
      modes=("fwd", "rev"),
      eps=1e-8,
      atol=1e-5,
      rtol=1e-5,
    )
