"""GDNN (Table I): shapes, parameter count by hand, identity start."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msm_jax.models.gdnn import GDNN
from tests import float_checks


def _count(tree):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def test_full_size_parameter_count_from_table_one():
  variables = jax.eval_shape(lambda: GDNN().init(jax.random.key(0), jnp.zeros((1, 128, 128, 3))))
  # Conv1-Conv10 without bias (BatchNorm follows), k*k*cin*cout, plus BN scale+bias 2*cout;
  # Conv11: 1*1*32*6 + 6.
  layers = [
    (3, 3, 8),
    (3, 8, 16),
    (3, 16, 16),
    (3, 16, 32),
    (3, 32, 32),
    (3, 32, 64),
    (3, 64, 64),
    (3, 64, 128),
    (3, 128, 128),
    (4, 128, 32),
  ]
  expected = sum(k * k * cin * cout + 2 * cout for k, cin, cout in layers) + 32 * 6 + 6
  assert _count(variables["params"]) == expected == 360_750
  assert _count(variables["batch_stats"]) == 2 * sum(cout for _, _, cout in layers)


def test_untrained_generator_outputs_the_identity_for_any_face():
  model = GDNN(width_multiplier=0.25)
  images = jax.random.uniform(jax.random.key(1), (3, 128, 128, 3))
  variables = model.init(jax.random.key(0), images)
  theta = model.apply(variables, images)
  assert theta.shape == (3, 2, 3) and theta.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(theta), np.broadcast_to(np.eye(2, 3), (3, 2, 3)))

  # ... and it is trainable: the gradient of a theta loss reaches every conv.
  def loss(params):
    out, _ = model.apply(
      {**variables, "params": params}, images, train=True, mutable=["batch_stats"]
    )
    return jnp.sum((out - 2.0) ** 2)

  grads = jax.grad(loss)(variables["params"])
  assert float(jnp.abs(grads["conv11"]["kernel"]).max()) > 0


def test_wrong_input_size_is_named():
  with pytest.raises(ValueError, match="128, 128"):
    GDNN().init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))


def test_eval_mode_gradients_match_finite_differences():
  """theta as a function of the GDNN's parameters and of the image."""
  float_checks.check_eval_mode_gradients(
    GDNN(width_multiplier=0.125, dtype=jnp.float64), (1, 128, 128, 3)
  )
