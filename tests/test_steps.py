"""The jitted update steps: one real step of each stage, and data parallelism.

The 4-device test runs in a subprocess because the number of CPU devices is fixed when JAX
starts (XLA_FLAGS=--xla_force_host_platform_device_count=4 must precede the import).
"""

import functools
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from msm_jax.models.hourglass import StackedHourglass
from msm_jax.train import losses, parallel, steps
from msm_jax.train.state import init_model_state, new_train_state

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_hourglass():
  return StackedHourglass(num_landmarks=5, width=8, num_stacks=2, depth=2, stem_widths=(4, 4, 8))


def _batch(rng, batch_size=4, size=32):
  return {
    "images": rng.integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8),
    "landmarks": rng.uniform(4, size - 4, (batch_size, 5, 2)).astype(np.float32),
    "visible": np.ones((batch_size, 5), bool),
  }


def _tiny_step(module, optimizer, mesh, **options):
  """The hourglass step on 32-pixel crops and 16-pixel maps, sigma 1, the cross-entropy
  unless ``options`` say otherwise."""
  settings = dict(loss_name="softmax_cross_entropy", sigma=1.0, crop_size=32, heatmap_size=16)
  return steps.make_hourglass_step(module, optimizer, mesh=mesh, **{**settings, **options})


def _hand_written_loss(module, model_state, batch, targets):
  """params -> the hourglass step's loss written out: training-mode forward, spatial-softmax
  cross-entropy against ``targets``."""

  def loss_of(params):
    out, _ = module.apply(
      {"params": params, "batch_stats": model_state.batch_stats},
      batch["images"].astype(np.float32) / 255.0,
      train=True,
      mutable=["batch_stats"],
    )
    return losses.heatmap_softmax_cross_entropy(out, targets, batch["visible"])

  return loss_of


def test_hourglass_step_equals_a_hand_written_update():
  rng = np.random.default_rng(0)
  module, optimizer = _tiny_hourglass(), optax.sgd(0.1)
  batch = _batch(rng)
  model_state = init_model_state(module, optimizer, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  state = new_train_state(0, {"hourglass": model_state})
  mesh = parallel.data_mesh()
  step = _tiny_step(module, optimizer, mesh)
  # The same update written out by hand: Gaussian targets, forward, loss, SGD.
  from msm_jax.core import heatmaps

  targets = heatmaps.gaussian_heatmaps(
    heatmaps.crop_to_heatmap(batch["landmarks"], 32, 16), (16, 16), 1.0
  )

  loss_of = _hand_written_loss(module, model_state, batch, targets)
  expected_loss, grads = jax.value_and_grad(loss_of)(model_state.params)
  expected = jax.tree.map(lambda p, g: np.asarray(p - 0.1 * g), model_state.params, grads)
  stats_before = np.array(jax.tree.leaves(model_state.batch_stats)[0])
  new_state, metrics = step(parallel.replicate(state, mesh), parallel.shard_batch(batch, mesh))
  assert int(new_state.step) == 1
  np.testing.assert_allclose(float(metrics["loss"]), float(expected_loss), rtol=1e-5)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
    new_state.models["hourglass"].params,
    expected,
  )
  # BatchNorm statistics moved (train mode).
  after = jax.tree.leaves(new_state.models["hourglass"].batch_stats)[0]
  assert not np.allclose(stats_before, after)


def test_heatmap_targets_widen_the_occluded_landmarks():
  from msm_jax.core import heatmaps

  points = jnp.array([[[8.0, 8.0], [5.3, 9.6]]])
  occluded = jnp.array([[False, True]])
  targets = steps.heatmap_targets(points, occluded, 16, 1.5, 3.0)
  rows, columns = np.mgrid[0:16, 0:16]

  def gaussian(x, y, sigma):
    return np.exp(-((columns - x) ** 2 + (rows - y) ** 2) / (2 * sigma**2))

  np.testing.assert_allclose(targets[0, :, :, 0], gaussian(8.0, 8.0, 1.5), atol=1e-6)
  np.testing.assert_allclose(targets[0, :, :, 1], gaussian(5.3, 9.6, 4.5), atol=1e-6)
  # Spread 0, or no occlusion flags: every target is sharp.
  for flags, spread in ((occluded, 0.0), (None, 3.0)):
    sharp = steps.heatmap_targets(points, flags, 16, 1.5, spread)
    np.testing.assert_allclose(sharp[0, :, :, 1], gaussian(5.3, 9.6, 1.5), atol=1e-6)
  with pytest.raises(ValueError, match="occluded_spread"):
    steps.heatmap_targets(points, occluded, 16, 1.5, 0.5)
  # What the spread is for: the mass Eq. 9's 3x3 window holds of the normalised target, on a
  # pixel centre: (sum_{|d|<=1} g(d) / sum_d g(d))^2 with g(d) = exp(-d^2 / 2 s^2), separable.
  # About 0.48 for the sharp map and 0.08 for the 3x wider one, far under K = 0.4 x 0.48.
  centred = steps.heatmap_targets(jnp.array([[[16.0, 16.0], [16.0, 16.0]]]), occluded, 32, 1.5, 3.0)
  distribution = centred / jnp.sum(centred, axis=(1, 2), keepdims=True)
  peaks = jnp.full((1, 2, 2), 16, jnp.int32)
  window_mass = heatmaps.landmark_scores(distribution, peaks, radius=1) * 9
  offsets = np.arange(32) - 16.0
  expected = [
    (
      np.sum(np.exp(-(offsets[15:18] ** 2) / (2 * s**2)))
      / np.sum(np.exp(-(offsets**2) / (2 * s**2)))
    )
    ** 2
    for s in (1.5, 4.5)
  ]
  np.testing.assert_allclose(window_mass[0], expected, rtol=1e-5)
  assert float(window_mass[0, 1] / window_mass[0, 0]) < 0.2


def test_hourglass_step_trains_occluded_landmarks_towards_the_wide_target():
  """With a spread the step's update is the SGD step on the loss against the widened target of
  the occluded landmark; without one, against the sharp target."""
  from msm_jax.core import heatmaps

  rng = np.random.default_rng(2)
  module, optimizer = _tiny_hourglass(), optax.sgd(0.1)
  batch = _batch(rng)
  batch["occluded"] = np.zeros((4, 5), bool)
  batch["occluded"][:, 0] = True
  mesh = parallel.data_mesh()
  points = heatmaps.crop_to_heatmap(batch["landmarks"], 32, 16)
  for spread, target_sigma in ((0.0, 1.0), (3.0, 3.0)):
    model_state = init_model_state(module, optimizer, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    targets = heatmaps.gaussian_heatmaps(points, (16, 16), 1.0)
    wide = heatmaps.gaussian_heatmaps(points, (16, 16), target_sigma)
    targets = targets.at[..., 0].set(wide[..., 0])

    loss_of = _hand_written_loss(module, model_state, batch, targets)
    expected_loss = float(loss_of(model_state.params))
    step = _tiny_step(module, optimizer, mesh, occluded_spread=spread)
    state = parallel.replicate(new_train_state(0, {"hourglass": model_state}), mesh)
    _, metrics = step(state, parallel.shard_batch(batch, mesh))
    np.testing.assert_allclose(float(metrics["loss"]), expected_loss, rtol=1e-5)


def test_the_decoded_landmark_term_adds_its_weight_times_the_decoded_error(monkeypatch):
  """With decoded_weight w the step's loss is the cross-entropy plus w x the decoded term of
  the last stack over the visible, unoccluded landmarks on the map. The term itself is
  replaced by a stand-in whose value says what it was given (test_losses.py checks the
  term on exact maps; a random network's maps are too flat to decode stably across CPUs)."""
  from msm_jax.core import heatmaps

  seen = {}

  def stand_in(logits, points, valid, blur_sigma):
    seen.update(shape=logits.shape, blur_sigma=blur_sigma)
    return jnp.sum(jnp.where(valid, points[..., 0] + 100.0 * points[..., 1], 0.0))

  monkeypatch.setattr(losses, "decoded_landmark_l1", stand_in)
  rng = np.random.default_rng(3)
  module, optimizer = _tiny_hourglass(), optax.sgd(0.1)
  batch = _batch(rng)
  batch["occluded"] = np.zeros((4, 5), bool)
  batch["occluded"][:, 1] = True
  batch["visible"][0, 2] = False
  batch["landmarks"][1, 3] = [40.0, 10.0]  # off the 32-pixel crop, so off the map
  mesh = parallel.data_mesh()
  model_state = init_model_state(module, optimizer, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  points = np.asarray(heatmaps.crop_to_heatmap(batch["landmarks"], 32, 16))
  targets = heatmaps.gaussian_heatmaps(points, (16, 16), 1.0)
  cross_entropy = float(_hand_written_loss(module, model_state, batch, targets)(model_state.params))
  counted = batch["visible"] & ~batch["occluded"]
  counted[1, 3] = False
  expected_term = float(np.sum(np.where(counted, points[..., 0] + 100.0 * points[..., 1], 0.0)))
  step = _tiny_step(module, optimizer, mesh, decoded_weight=0.5)
  state = parallel.replicate(new_train_state(0, {"hourglass": model_state}), mesh)
  _, metrics = step(state, parallel.shard_batch(batch, mesh))
  np.testing.assert_allclose(float(metrics["loss"]), cross_entropy + 0.5 * expected_term, rtol=1e-5)
  assert seen == {"shape": (4, 16, 16, 5), "blur_sigma": 1.0}  # the last stack, the sigma
  with pytest.raises(ValueError, match="decoded_weight needs a loss with logit maps"):
    _tiny_step(module, optimizer, mesh, loss_name="mse", decoded_weight=0.5)


_FOUR_DEVICE_SCRIPT = textwrap.dedent("""
    import os, sys
    # Four CPU devices, on top of whatever other XLA flags the suite runs with.
    flags = [flag for flag in os.environ.get("XLA_FLAGS", "").split()
             if not flag.startswith("--xla_force_host_platform_device_count")]
    os.environ["XLA_FLAGS"] = " ".join(flags + ["--xla_force_host_platform_device_count=4"])
    import jax, jax.numpy as jnp, numpy as np, optax
    sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
    from test_steps import _tiny_hourglass, _batch
    from msm_jax.train import parallel, steps
    from msm_jax.train.state import init_model_state, new_train_state
    assert jax.device_count() == 4
    # SGD: Adam's g / sqrt(v) would turn float-rounding noise in near-zero gradients into
    # full-size steps and hide the comparison.
    module, optimizer = _tiny_hourglass(), optax.sgd(0.01)
    batch = _batch(np.random.default_rng(1), batch_size=8)
    def update(devices, global_batch):
        mesh = jax.sharding.Mesh(np.array(devices), ("data",),
                                 axis_types=(jax.sharding.AxisType.Auto,))
        state = new_train_state(0, {{"hourglass": init_model_state(
            module, optimizer, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))}})
        step = steps.make_hourglass_step(module, optimizer, loss_name="softmax_cross_entropy",
                                         sigma=1.0, crop_size=32, heatmap_size=16, mesh=mesh)
        start = jax.device_get(state.models["hourglass"].params)
        state, metrics = step(parallel.replicate(state, mesh),
                              parallel.shard_batch(global_batch, mesh))
        kernel = state.models["hourglass"].params["stem_conv1"]["kernel"]
        assert kernel.sharding.num_devices == len(devices)
        return start, jax.device_get(state.models["hourglass"].params), float(metrics["loss"])

    start, one, loss_one = update(jax.devices()[:1], batch)
    _, four, loss_four = update(jax.devices(), batch)
    # What BatchNorm statistics per device (the bug this test guards against) would give: with
    # SGD the update is linear in the gradient, so it is the mean of the four quarter-batch
    # updates, each with its own statistics.
    quarters = [update(jax.devices()[:1], {{key: value[k::4] for key, value in batch.items()}})[1]
                for k in range(4)]
    per_device = jax.tree.map(lambda *leaves: np.mean(leaves, axis=0), *quarters)

    def largest(tree):
        return max(float(np.max(np.abs(leaf))) for leaf in jax.tree.leaves(tree))

    difference = lambda a, b: jax.tree.map(lambda x, y: x - y, a, b)
    step_size = largest(difference(one, start))
    four_vs_one = largest(difference(four, one))
    per_device_vs_one = largest(difference(per_device, one))
    print("update", step_size, "4 vs 1", four_vs_one,
          "per-device statistics vs 1", per_device_vs_one)
    # The loss is a float32 mean over the batch's 8 x 16 x 16 map pixels: within 2048 eps.
    assert abs(loss_one - loss_four) <= 8 * 16 * 16 * np.finfo(np.float32).eps * abs(loss_one)
    # The gradients pass through BatchNorm's backward pass, whose centring cancels most of
    # each sum, so their rounding is not bounded by eps x the sum's length; the margin is set
    # between what rounding gives (0.4 % of the update on an AMD EPYC, 4 vs 1 device) and what
    # per-device statistics give (more than the whole update: 2.4x here).
    assert four_vs_one <= 0.05 * step_size, (four_vs_one, step_size)
    assert per_device_vs_one > 0.5 * step_size, (per_device_vs_one, step_size)
    print("EQUAL")
""")


def test_four_devices_give_the_same_update_as_one():
  script = _FOUR_DEVICE_SCRIPT.format(root=ROOT, tests=os.path.join(ROOT, "tests"))
  result = subprocess.run(
    [sys.executable, "-c", script], capture_output=True, text=True, timeout=600
  )
  assert result.returncode == 0 and "EQUAL" in result.stdout, result.stdout + result.stderr


@functools.cache
def _stgan_setup():
  """The ST-GAN step on tiny GDNN / DDNN, a host copy of their fresh state, a fixed batch of 4
  faces and its targets. Cached: both ST-GAN tests share one compilation.

  The adversarial term is off for step 0 only (warm-up 1), which the warm-up test needs and
  which the learning test's 20 steps hardly notice. The images are smooth random blobs (some
  structure for D to judge); the targets share a rotation and shift (what G must learn) with
  a small per-face variation.
  """
  from msm_jax.models.ddnn import DDNN
  from msm_jax.models.gdnn import GDNN

  rng = np.random.default_rng(2)
  generator, discriminator = GDNN(width_multiplier=0.25), DDNN(width_multiplier=0.125)
  g_optimizer, d_optimizer = optax.adam(5e-3), optax.adam(1e-3)
  example = jnp.zeros((1, 128, 128, 3))
  state = new_train_state(
    0,
    {
      "generator": init_model_state(generator, g_optimizer, jax.random.key(1), example),
      "discriminator": init_model_state(discriminator, d_optimizer, jax.random.key(2), example),
    },
  )
  grid = np.stack(np.meshgrid(np.arange(128), np.arange(128)), -1)[None, :, :, None, :]
  centres = rng.uniform(20, 108, (8, 1, 1, 6, 2))
  blobs = np.exp(-np.sum((grid - centres) ** 2, -1) / (2 * 12.0**2))  # [8, 128, 128, 6]
  images = (255 * np.clip(blobs[..., :3] + 0.5 * blobs[..., 3:], 0, 1)).astype(np.uint8)
  angles = 0.3 + rng.uniform(-0.05, 0.05, 4)
  targets = np.stack(
    [
      [[0.9 * np.cos(t), -0.9 * np.sin(t), 0.1], [0.9 * np.sin(t), 0.9 * np.cos(t), -0.15]]
      for t in angles
    ]
  )
  batch = {"fake": images[:4], "real": images[4:], "theta": targets.astype(np.float32)}
  step = steps.make_stgan_step(
    generator,
    discriminator,
    g_optimizer,
    d_optimizer,
    theta_weight=1.0,
    adversarial_weight=0.5,
    mesh=parallel.data_mesh(),
    theta_loss_units="pixels",
    real_label=0.9,
    adversarial_warmup_steps=1,
  )
  return step, jax.device_get(state), batch, targets


def test_stgan_steps_teach_the_generator_theta():
  step, host_state, batch, targets = _stgan_setup()
  mesh = parallel.data_mesh()
  state, batch = parallel.replicate(host_state, mesh), parallel.shard_batch(batch, mesh)
  # The generator starts at the identity, so the starting error is ||I - theta*|| per face.
  start = np.mean(np.linalg.norm((targets - np.eye(2, 3)).reshape(4, -1), axis=1))
  errors = []
  for _ in range(20):
    state, metrics = step(state, batch)
    errors.append(float(metrics["theta_error"]))
  assert int(state.step) == 20
  assert all(np.isfinite(float(value)) for value in metrics.values())
  # Algorithm 1 with a = 1, b = 0.5 and the theta term in pixels: the error falls from 0.43
  # to ~0.013 in 20 steps (measured). With theta_loss_units="normalised" (the unbalanced
  # game) the adversarial gradient steers G: the error falls to 0.27 by step 3, then climbs
  # to ~1.0, and this test fails.
  assert errors[-1] < 0.25 * start, (start, errors)
  assert np.mean(errors[-5:]) < np.mean(errors[:5]), errors
  # D learned too (Algorithm 1, steps 2 and 3).
  assert not np.allclose(
    host_state.models["discriminator"].params["conv7"]["kernel"],
    state.models["discriminator"].params["conv7"]["kernel"],
  )


def test_adversarial_warmup_hides_the_discriminator_from_the_generator():
  # During the warm-up (step 0 here) G's update must not depend on D at all: two different D's
  # give the same new G. From step 1 on it must.
  from msm_jax.models.ddnn import DDNN

  step, host_state, batch, _ = _stgan_setup()
  mesh = parallel.data_mesh()
  other_discriminator = jax.device_get(
    init_model_state(
      DDNN(width_multiplier=0.125), optax.adam(1e-3), jax.random.key(3), jnp.zeros((1, 128, 128, 3))
    )
  )
  other_state = host_state.replace(
    models={"generator": host_state.models["generator"], "discriminator": other_discriminator}
  )
  # Replicated from host copies: the step donates its input, so the states share no buffer.
  states = [parallel.replicate(s, mesh) for s in (host_state, other_state)]
  batch = parallel.shard_batch(batch, mesh)

  def largest_generator_difference():
    a, b = (jax.device_get(s.models["generator"].params) for s in states)
    return max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

  states = [step(s, batch)[0] for s in states]
  assert largest_generator_difference() == 0
  states = [step(s, batch)[0] for s in states]
  assert largest_generator_difference() > 1e-6


def test_theta_loss_scale_converts_normalised_units_to_pixels():
  # The crop spans 2 normalised units: a theta error of 1 moves points by S / 2 pixels.
  assert steps.theta_loss_scale("pixels", 128) == 64.0
  assert steps.theta_loss_scale("normalised", 128) == 1.0
  with pytest.raises(ValueError, match="stgan.theta_loss_units"):
    steps.theta_loss_scale("px", 128)


def test_joint_step_is_sgd_on_the_landmark_heatmap_and_theta_losses():
  """One joint update against the same loss written out from the library's pieces (warp,
  hourglass, DARK decode, pixel matrices), not through `pipeline.run_pass`: SGD on both
  networks, BatchNorm statistics untouched (inference mode)."""
  from msm_jax.core import geometry, heatmaps, sampler
  from msm_jax.inference import pipeline
  from msm_jax.models.gdnn import GDNN

  rng = np.random.default_rng(3)
  num_points, size = 68, 128
  generator = GDNN(width_multiplier=0.125)
  hourglass = StackedHourglass(
    num_landmarks=num_points, width=8, num_stacks=2, depth=2, stem_widths=(4, 4, 8)
  )
  optimizer = optax.sgd(0.05)
  example = jnp.zeros((1, size, size, 3))
  g_state = init_model_state(generator, optimizer, jax.random.key(1), example)
  h_state = init_model_state(hourglass, optimizer, jax.random.key(2), example)
  state = new_train_state(0, {"generator": g_state, "hourglass": h_state})
  batch = {
    "fake": rng.integers(0, 256, (2, size, size, 3), dtype=np.uint8),
    "theta": np.tile(np.array([[0.9, 0.05, 0.02], [-0.05, 0.9, 0.01]], np.float32), (2, 1, 1)),
    "landmarks": rng.uniform(30, 98, (2, num_points, 2)).astype(np.float32),
    "visible": rng.random((2, num_points)) < 0.9,
  }
  options = pipeline.PipelineOptions(use_shape_reconstruction=False, differentiable=True)
  thresholds = jnp.full((num_points,), 0.5)
  weights = dict(landmark_weight=0.7, theta_weight=0.3)
  mesh = parallel.data_mesh()
  step = steps.make_joint_step(
    generator,
    hourglass,
    optimizer,
    optimizer,
    options=options,
    thresholds=thresholds,
    loss_name="softmax_cross_entropy",
    sigma=1.5,
    theta_loss_units="pixels",
    mesh=mesh,
    **weights,
  )

  def loss_of(params):
    crops = batch["fake"].astype(np.float32) / 255.0
    theta = generator.apply({**g_state.variables, "params": params["generator"]}, crops)
    canonical = sampler.warp(crops, theta, (size, size))
    stacks = hourglass.apply({**h_state.variables, "params": params["hourglass"]}, canonical)
    decoded = heatmaps.decode_heatmaps(heatmaps.spatial_softmax(stacks[-1]), "dark", blur_sigma=1.5)
    to_crop = geometry.theta_to_pixel_matrix(theta, (size, size), (size, size))
    final = geometry.apply_affine(heatmaps.heatmap_to_crop(decoded, size, 64), to_crop)
    in_canonical = geometry.apply_affine(
      batch["landmarks"], jax.lax.stop_gradient(geometry.invert_affine(to_crop))
    )
    inside = np.all((in_canonical >= -0.5) & (in_canonical <= size - 0.5), axis=-1)
    targets = heatmaps.gaussian_heatmaps(heatmaps.crop_to_heatmap(in_canonical, size, 64), 64, 1.5)
    heat = losses.heatmap_softmax_cross_entropy(stacks, targets, batch["visible"] & inside)
    errors = jnp.linalg.norm(final - batch["landmarks"], axis=-1)
    landmark = jnp.sum(errors * batch["visible"]) / batch["visible"].sum()
    theta_term = 64.0 * losses.theta_loss(theta, batch["theta"])
    return heat + weights["landmark_weight"] * landmark + weights["theta_weight"] * theta_term

  params = {"generator": g_state.params, "hourglass": h_state.params}
  expected_loss, grads = jax.value_and_grad(loss_of)(params)
  expected = jax.tree.map(lambda p, g: np.asarray(p - 0.05 * g), params, grads)
  stats_before = jax.tree.map(np.array, h_state.batch_stats)
  generator_before = jax.tree.map(np.array, g_state.params)  # the step donates the state
  new_state, metrics = step(parallel.replicate(state, mesh), parallel.shard_batch(batch, mesh))
  # float32: the loss sums ~2 x 68 x 4096 terms; relative rounding ~1e-7 x sqrt(that) < 1e-4.
  np.testing.assert_allclose(float(metrics["loss"]), float(expected_loss), rtol=1e-4)
  for name in ("generator", "hourglass"):
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-3),
      new_state.models[name].params,
      expected[name],
    )
  jax.tree.map(
    np.testing.assert_array_equal, new_state.models["hourglass"].batch_stats, stats_before
  )
  # The update moved both networks.
  moved = jax.tree.map(
    lambda a, b: float(np.abs(np.asarray(a) - b).max()),
    new_state.models["generator"].params,
    generator_before,
  )
  assert max(jax.tree.leaves(moved)) > 1e-6
