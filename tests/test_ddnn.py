"""DDNN (Table II): shapes, parameter count by hand, the two-channel logit reading."""

import jax
import jax.numpy as jnp
import numpy as np

from msm_jax.models.ddnn import DDNN


def _count(tree):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def test_full_size_parameter_count_from_table_two():
  variables = jax.eval_shape(lambda: DDNN().init(jax.random.key(0), jnp.zeros((1, 128, 128, 3))))
  features = [3, 32, 64, 128, 256, 512, 1024]
  # Conv1 with bias; Conv2-6 without bias, followed by BatchNorm (scale + bias); Conv7 2x2.
  expected = 4 * 4 * 3 * 32 + 32
  expected += sum(16 * cin * cout + 2 * cout for cin, cout in zip(features[1:-1], features[2:]))
  expected += 2 * 2 * 1024 * 2 + 2
  assert _count(variables["params"]) == expected == 11_187_618


def test_logit_is_real_minus_fake_channel():
  model = DDNN(width_multiplier=0.125)
  images = jax.random.uniform(jax.random.key(1), (2, 128, 128, 3))
  variables = model.init(jax.random.key(0), images)
  logits = model.apply(variables, images)
  assert logits.shape == (2,)
  # Recompute the last layer by hand from the features it sees.
  _, features = model.apply(
    variables, images, capture_intermediates=True, mutable=["intermediates"]
  )
  two = features["intermediates"]["conv7"]["__call__"][0].reshape(2, 2)
  np.testing.assert_allclose(np.asarray(logits), np.asarray(two[:, 1] - two[:, 0]), rtol=1e-6)
