"""Golden numbers for the MSM losses (Eq. 3-5 and the heatmap losses)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msm_jax.train import losses


def test_discriminator_loss_at_chance_is_two_log_two():
  # D(x) = sigmoid(0) = 1/2 on everything: -log(1/2) - log(1 - 1/2) = 2 log 2.
  zeros = jnp.zeros(4)
  assert float(losses.discriminator_loss(zeros, zeros)) == pytest.approx(2 * math.log(2), rel=1e-6)


def test_discriminator_terms_match_probability_form():
  real = np.array([2.0, -1.0, 0.5])
  fake = np.array([-3.0, 0.2, 1.0])
  sigmoid = lambda z: 1 / (1 + np.exp(-z))
  expected_real = -np.mean(np.log(sigmoid(real)))
  expected_fake = -np.mean(np.log(1 - sigmoid(fake)))
  assert float(losses.discriminator_real_loss(real)) == pytest.approx(expected_real, rel=1e-5)
  assert float(losses.discriminator_fake_loss(fake)) == pytest.approx(expected_fake, rel=1e-5)


def test_adversarial_loss_literal_and_non_saturating():
  fake = np.array([-2.0, 1.0])
  sigmoid = 1 / (1 + np.exp(-fake))
  assert float(losses.adversarial_loss(fake, non_saturating=False)) == pytest.approx(
    np.mean(np.log(1 - sigmoid)), rel=1e-5
  )
  assert float(losses.adversarial_loss(fake)) == pytest.approx(-np.mean(np.log(sigmoid)), rel=1e-5)


def test_generator_loss_combines_eq5_terms():
  theta = jnp.zeros((2, 2, 3))
  target = jnp.zeros((2, 2, 3)).at[0, 0, 0].set(3.0).at[0, 1, 1].set(4.0)
  # Per-face Frobenius norms 5 and 0: mean 2.5. Fake logits 0: non-saturating L_A = log 2.
  value = losses.generator_loss(
    theta, target, jnp.zeros(2), theta_weight=1.0, adversarial_weight=0.5
  )
  assert float(value) == pytest.approx(2.5 + 0.5 * math.log(2), rel=1e-5)
  grads = jax.grad(losses.theta_loss)(target, target)
  assert np.all(np.isfinite(grads))


def test_heatmap_mse_sums_over_stacks():
  target = np.zeros((1, 2, 2, 1), np.float32)
  stacks = np.stack([np.ones_like(target), 2 * np.ones_like(target)])
  # Stack 1: mean (1-0)^2 = 1; stack 2: mean (2-0)^2 = 4; sum 5.
  assert float(losses.heatmap_mse_loss(stacks, target)) == pytest.approx(5.0)


def test_softmax_cross_entropy_against_numpy_loop():
  rng = np.random.default_rng(0)
  stacks = rng.normal(size=(2, 3, 4, 5, 6)).astype(np.float32)
  target = rng.uniform(size=(3, 4, 5, 6)).astype(np.float32)
  target[1, :, :, 2] = 0.0  # an empty target is left out of the mean
  expected = 0.0
  for s in range(2):
    total, count = 0.0, 0
    for b in range(3):
      for point in range(6):
        t = target[b, :, :, point].ravel().astype(np.float64)
        if t.sum() <= 1e-6:
          continue
        z = stacks[s, b, :, :, point].ravel().astype(np.float64)
        log_p = z - np.log(np.sum(np.exp(z - z.max()))) - z.max()
        total += -np.sum(t / t.sum() * log_p)
        count += 1
    expected += total / count
  value = losses.heatmap_softmax_cross_entropy(stacks, target)
  assert float(value) == pytest.approx(expected, rel=1e-5)


def test_unknown_heatmap_loss_is_named():
  with pytest.raises(ValueError, match="hourglass.loss='l1'"):
    losses.heatmap_loss("l1")


def test_one_sided_label_smoothing_is_cross_entropy_with_a_soft_target():
  logits = np.array([2.0, -1.0, 0.5])
  probability = 1 / (1 + np.exp(-logits))
  # Cross-entropy against the target 0.9: -(0.9 log D + 0.1 log(1 - D)), averaged.
  expected = -np.mean(0.9 * np.log(probability) + 0.1 * np.log(1 - probability))
  assert float(losses.discriminator_real_loss(logits, 0.9)) == pytest.approx(expected, rel=1e-5)
  # Its minimum over the logit sits where D = 0.9, not at an infinite logit.
  gradient = jax.grad(lambda z: losses.discriminator_real_loss(z, 0.9))(
    jnp.array([math.log(0.9 / 0.1)])
  )
  assert abs(float(gradient[0])) < 1e-6


def test_a_registered_loss_trains_and_sets_the_decoding():
  import optax

  from msm_jax.inference import pipeline
  from msm_jax.models.hourglass import StackedHourglass
  from msm_jax.train import parallel, steps
  from msm_jax.train.state import init_model_state, new_train_state
  from tests import tiny_models

  def mean_absolute_map(stacks, target, visible=None):  # a loss on probability-like maps
    return jnp.mean(jnp.abs(stacks - target[None]))

  losses.register_heatmap_loss("toy_l1", losses.HeatmapLoss(mean_absolute_map, False))
  try:
    config = tiny_models.tiny_config()
    config.hourglass.loss = "toy_l1"  # --config.hourglass.loss=toy_l1
    # Its maps are not logits: inference decodes them as they are.
    assert pipeline.options_from_config(config).heatmaps_are_logits is False
    config.hourglass.loss = "softmax_cross_entropy"
    assert pipeline.options_from_config(config).heatmaps_are_logits is True

    module = StackedHourglass(
      num_landmarks=3, width=8, num_stacks=1, depth=1, stem_widths=(4, 4, 8)
    )
    optimizer = optax.sgd(0.0)
    model = init_model_state(module, optimizer, jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
    rng = np.random.default_rng(0)
    batch = {
      "images": rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8),
      "landmarks": rng.uniform(3, 13, (2, 3, 2)).astype(np.float32),
      "visible": np.ones((2, 3), bool),
    }
    # The step donates (reuses) the state's buffers: keep a host copy for the reference.
    variables = jax.device_get({"params": model.params, "batch_stats": model.batch_stats})
    mesh = parallel.data_mesh()
    step = steps.make_hourglass_step(
      module, optimizer, loss_name="toy_l1", sigma=1.0, crop_size=16, heatmap_size=8, mesh=mesh
    )
    _, metrics = step(
      parallel.replicate(new_train_state(0, {"hourglass": model}), mesh),
      parallel.shard_batch(batch, mesh),
    )
    # The step's loss is the registered function on the training-mode forward pass.
    from msm_jax.core import heatmaps

    targets = heatmaps.gaussian_heatmaps(
      heatmaps.crop_to_heatmap(batch["landmarks"], 16, 8), (8, 8), 1.0
    )
    stacks, _ = module.apply(
      variables, batch["images"].astype(np.float32) / 255.0, train=True, mutable=["batch_stats"]
    )
    expected = mean_absolute_map(stacks, targets)
    np.testing.assert_allclose(float(metrics["loss"]), float(expected), rtol=1e-5)
  finally:
    del losses.HEATMAP_LOSSES["toy_l1"]


def _log_gaussians(points, size=32, sigma=1.5):
  """[1, size, size, L] logits whose spatial softmax is a Gaussian at each point (heatmap
  pixels): what a perfect network trained with the cross-entropy outputs."""
  ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
  d2 = (xs[..., None] - points[:, 0]) ** 2 + (ys[..., None] - points[:, 1]) ** 2
  return jnp.asarray((-d2 / (2 * sigma**2))[None], jnp.float32)


def test_decoded_landmark_l1_is_zero_on_exact_maps_and_the_offset_elsewhere():
  points = np.array([[10.3, 12.6], [20.0, 7.25], [5.5, 25.1]])
  logits = _log_gaussians(points)
  valid = jnp.array([[True, True, False]])
  # DARK is exact on log-Gaussians (blurred, still Gaussians): float32 rounding only.
  exact = losses.decoded_landmark_l1(logits, jnp.asarray(points[None], jnp.float32), valid, 1.5)
  assert float(exact) < 1e-3
  # Moved by (0.3, -0.2): |0.3| + |0.2| per valid landmark; the invalid one, moved far, counts
  # for nothing.
  moved = points + [[0.3, -0.2], [0.3, -0.2], [9.0, 9.0]]
  error = losses.decoded_landmark_l1(logits, jnp.asarray(moved[None], jnp.float32), valid, 1.5)
  np.testing.assert_allclose(float(error), 0.5, atol=2e-3)


def test_decoded_landmark_l1_gradient_moves_the_decoded_peak_to_the_truth():
  points = np.array([[10.3, 12.6], [20.0, 7.25]])
  truth = jnp.asarray((points + [[0.25, 0.15], [-0.2, 0.3]])[None], jnp.float32)
  valid = jnp.ones((1, 2), bool)
  logits = _log_gaussians(points)
  loss_of = lambda maps: losses.decoded_landmark_l1(maps, truth, valid, 1.5)  # noqa: E731
  before = float(loss_of(logits))
  for _ in range(20):
    logits = logits - 2.0 * jax.grad(loss_of)(logits)
  # Initially 0.45 per landmark; plain gradient descent on the maps removes most of it.
  assert before == pytest.approx(0.45, abs=2e-3)
  assert float(loss_of(logits)) < 0.5 * before


def _adaptive_wing_by_hand(error, target):
  """Eq. 6-7 of Wang et al. (ICCV 2019) with omega 14, theta 0.5, epsilon 1, alpha 2.1."""
  omega, theta, epsilon, alpha = 14.0, 0.5, 1.0, 2.1
  power = alpha - target
  if error < theta:
    return omega * math.log(1.0 + (error / epsilon) ** power)
  a = omega * (1.0 / (1.0 + (theta / epsilon) ** power)) * power
  a *= (theta / epsilon) ** (power - 1.0) * (1.0 / epsilon)
  c = theta * a - omega * math.log(1.0 + (theta / epsilon) ** power)
  return a * error - c


@pytest.mark.parametrize("error, target", [(0.2, 1.0), (0.05, 0.0), (0.9, 0.0), (1.7, 0.6)])
def test_adaptive_wing_matches_the_papers_formula(error, target):
  got = losses.adaptive_wing(jnp.float32(error), jnp.float32(target), **losses.ADAPTIVE_WING)
  assert float(got) == pytest.approx(_adaptive_wing_by_hand(error, target), rel=1e-5)


@pytest.mark.parametrize("target", [0.0, 0.3, 1.0])
def test_adaptive_wing_is_smooth_where_its_pieces_meet(target):
  """The line above theta meets the curve below it with the same value and slope."""
  theta = losses.ADAPTIVE_WING["theta"]
  loss = lambda e: losses.adaptive_wing(e, jnp.float32(target), **losses.ADAPTIVE_WING)  # noqa: E731
  below, above = jnp.float32(theta - 1e-4), jnp.float32(theta + 1e-4)
  assert float(loss(above)) == pytest.approx(float(loss(below)), abs=1e-2)
  assert float(jax.grad(loss)(above)) == pytest.approx(float(jax.grad(loss)(below)), rel=1e-2)


def test_the_weighted_loss_map_covers_the_dilated_foreground():
  target = np.full((1, 7, 7, 2), 0.1, np.float32)
  target[0, 3, 4, 0] = 1.0  # landmark 0's peak; landmark 1 all background
  weights = np.asarray(losses.weighted_loss_map(jnp.asarray(target)))
  expected = np.ones((7, 7))
  expected[2:5, 3:6] = 1.0 + losses.LOSS_MAP_WEIGHT
  np.testing.assert_array_equal(weights[0, :, :, 0], expected)
  np.testing.assert_array_equal(weights[0, :, :, 1], np.ones((7, 7)))


def test_adaptive_wing_heatmap_loss_against_a_loop_and_zero_at_the_target():
  rng = np.random.default_rng(0)
  target = rng.uniform(0, 1, (2, 5, 5, 3)).astype(np.float32) ** 4
  stacks = rng.normal(0, 0.5, (2, 2, 5, 5, 3)).astype(np.float32)
  visible = np.array([[True, False, True], [True, True, True]])
  weights = np.asarray(losses.weighted_loss_map(jnp.asarray(target))) * visible[:, None, None]
  expected = 0.0
  for stack in range(2):
    total = sum(
      _adaptive_wing_by_hand(abs(float(stacks[stack][index] - target[index])), float(target[index]))
      * weights[index]
      for index in np.ndindex(target.shape)
    )
    expected += total / np.count_nonzero(weights)
  got = losses.heatmap_loss("adaptive_wing").fn(
    jnp.asarray(stacks), jnp.asarray(target), jnp.asarray(visible)
  )
  assert float(got) == pytest.approx(expected, rel=1e-4)
  exact = jnp.asarray(np.stack([target, target]))
  value, gradient = jax.value_and_grad(
    lambda maps: losses.heatmap_adaptive_wing_loss(maps, jnp.asarray(target))
  )(exact)
  assert float(value) == pytest.approx(0.0, abs=1e-6)
  assert np.all(np.isfinite(np.asarray(gradient)))
  assert not losses.heatmap_loss("adaptive_wing").outputs_logits
