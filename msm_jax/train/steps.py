"""The jitted, data-parallel update steps: one per training stage.

Each step is a pure function `(TrainState, batch) -> (TrainState, metrics)` compiled once with
`jax.jit`: the state is donated (updated in place, no second copy of the parameters and Adam
moments), the batch arrives sharded over the mesh axis "data", parameters stay replicated and
GSPMD inserts the gradient all-reduce. Metrics are returned as device arrays; the loop reads
them one step late so the host never waits on the device.

Hourglass (Sec. III-B): Gaussian targets are rendered inside the step from the landmarks, so
the host ships only uint8 images and coordinates.

Joint fine-tuning (not in the paper): the GDNN and the hourglass together, through the
relaxed inference pipeline, on detector-like crops (`make_joint_step`).

ST-GAN (Algorithm 1), all four sub-steps inside one compiled update:
  1. G step on L_G (Eq. 5);
  2. D step on real canonical faces (first term of Eq. 3), masked to the part of the face the
     fake crop covers, so that real and fake differ in pose and not in black borders;
  3. D step on warped faces G(I_fake) (second term of Eq. 3);
  4. G step on the generator's part of Eq. 6: L_G plus the G-dependent term of L_D, i.e.
     a * ||theta - theta*|| + (b + 1) * L_A, against the freshly updated D.

Balance (measured on the synthetic default): with ||theta - theta*|| in theta's own
normalised units the gradient of L_A with respect to theta is ~20x that of the theta term
(the sampler's image gradient sums over every output pixel), so a = 1, b = 0.5 let the
adversarial term alone steer G and theta did not learn. The theta term is therefore measured in
crop pixels (x S/2, `theta_loss_scale`); one-sided label smoothing and a slower D keep D from
saturating (config.stgan, configs/base.py).
"""

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from msm_jax.core import geometry, sampler
from msm_jax.core import heatmaps as heatmap_lib
from msm_jax.inference import pipeline
from msm_jax.train import losses, parallel
from msm_jax.train.state import ModelState, TrainState, apply_gradients


def images_to_float(images: jax.Array, dtype=jnp.float32) -> jax.Array:
  """uint8 [B, H, W, 3] -> float in [0, 1]; float input passes through unchanged."""
  if images.dtype == jnp.uint8:
    return images.astype(dtype) / 255.0
  return images.astype(dtype)


def _apply_train(module, model_state: ModelState, params, inputs):
  """Forward in training mode; returns (outputs, updated BatchNorm statistics)."""
  variables = {"params": params}
  if model_state.batch_stats:
    variables["batch_stats"] = model_state.batch_stats
    outputs, mutated = module.apply(variables, inputs, train=True, mutable=["batch_stats"])
    return outputs, mutated["batch_stats"]
  return module.apply(variables, inputs, train=True), None


def make_hourglass_step(
  module,
  optimizer: optax.GradientTransformation,
  *,
  loss_name: str,
  sigma: float,
  crop_size: int,
  heatmap_size: int,
  mesh,
  model_name: str = "hourglass",
  occluded_spread: float = 0.0,
  decoded_weight: float = 0.0,
) -> Callable:
  """The hourglass update (any network with heatmap outputs) of state.models[model_name].
  batch: images uint8 [B, S, S, 3], landmarks [B, L, 2] (crop pixels), visible bool [B, L].
  occluded_spread: as in :func:`heatmap_targets`. decoded_weight > 0 adds that times
  `losses.decoded_landmark_l1` of the last stack (the maps inference decodes) over the visible,
  unoccluded landmarks inside the map; it needs a loss whose maps are logits."""
  heatmap_loss = losses.heatmap_loss(loss_name)
  if decoded_weight and not heatmap_loss.outputs_logits:
    raise ValueError(f"decoded_weight needs a loss with logit maps, not {loss_name!r}")
  loss_fn = heatmap_loss.fn

  def step(state: TrainState, batch: dict):
    model_state = state.models[model_name]
    images = images_to_float(batch["images"])
    points = heatmap_lib.crop_to_heatmap(batch["landmarks"], crop_size, heatmap_size)
    occluded = batch.get("occluded")
    targets = heatmap_targets(points, occluded, heatmap_size, sigma, occluded_spread)
    if decoded_weight:
      # The decoded term's landmarks: seen, not trained towards a wide map, and on the map (a
      # decoder cannot place a landmark outside it).
      on_map = jnp.all((points >= 0.0) & (points <= heatmap_size - 1.0), axis=-1)
      sharp = batch["visible"] & on_map
      if occluded is not None:
        sharp = sharp & ~occluded

    def objective(params):
      stacks, new_stats = _apply_train(module, model_state, params, images)
      loss = loss_fn(stacks, targets, batch["visible"])
      if decoded_weight:
        decoded = losses.decoded_landmark_l1(stacks[-1], points, sharp, sigma)
        loss = loss + decoded_weight * decoded
      return loss, new_stats

    (loss, new_stats), grads = jax.value_and_grad(objective, has_aux=True)(model_state.params)
    new_model = apply_gradients(model_state, grads, optimizer, new_stats)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
    return state.replace(step=state.step + 1, models={model_name: new_model}), metrics

  return _jit_step(step, mesh)


def heatmap_targets(
  points: jax.Array,
  occluded: jax.Array | None,
  heatmap_size: int,
  sigma: float,
  occluded_spread: float,
) -> jax.Array:
  """The Gaussian target maps [B, h, w, L] of the landmarks.

  points: [B, L, 2] heatmap pixels; occluded: [B, L] bool, True where the landmark is hidden
  (the dataset's flag or an augmentation's occluder), or None (none is).
  occluded_spread 0: every target has width sigma, the hidden landmarks' too. s > 0: a hidden
  landmark's target is s times wider, so its map still points at the landmark but holds
  little mass near its peak: Eq. 9's window score falls where the face is hidden, which is
  what marks a landmark unreliable for the shape repair.
  """
  size = (heatmap_size, heatmap_size)
  sharp = heatmap_lib.gaussian_heatmaps(points, size, sigma)
  if occluded_spread == 0.0 or occluded is None:
    return sharp
  if occluded_spread < 1.0:
    raise ValueError(f"occluded_spread must be 0 or >= 1, got {occluded_spread}")
  wide = heatmap_lib.gaussian_heatmaps(points, size, sigma * occluded_spread)
  return jnp.where(occluded[:, None, None, :], wide, sharp)


def crop_to_normalised(points: jax.Array, crop_size: int) -> jax.Array:
  """Crop pixels -> the normalised coordinates of Eq. 2: u = (2 x + 1) / S - 1."""
  return (2.0 * points + 1.0) / crop_size - 1.0


def make_regression_step(
  module,
  optimizer: optax.GradientTransformation,
  *,
  crop_size: int,
  mesh,
  model_name: str = "resnet",
) -> Callable:
  """The Res-50 baseline's update (Sec. IV-G): L1 on normalised landmark coordinates.
  batch: as the hourglass's."""

  def step(state: TrainState, batch: dict):
    model_state = state.models[model_name]
    images = images_to_float(batch["images"])
    targets = crop_to_normalised(batch["landmarks"], crop_size)

    def objective(params):
      predicted, new_stats = _apply_train(module, model_state, params, images)
      return losses.coordinate_l1_loss(predicted, targets, batch["visible"]), new_stats

    (loss, new_stats), grads = jax.value_and_grad(objective, has_aux=True)(model_state.params)
    new_model = apply_gradients(model_state, grads, optimizer, new_stats)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
    return state.replace(step=state.step + 1, models={model_name: new_model}), metrics

  return _jit_step(step, mesh)


THETA_LOSS_UNITS = ("pixels", "normalised")


def theta_loss_scale(units: str, crop_size: int) -> float:
  """What multiplies ||theta - theta*|| (Eq. 5) to express it in `units`.

  theta maps normalised coordinates, in which the crop spans 2 units, so an error of 1 in a
  theta entry moves sampled points by up to S / 2 pixels: "pixels" multiplies by S / 2,
  "normalised" leaves theta's own units.
  """
  if units not in THETA_LOSS_UNITS:
    raise ValueError(
      f"theta_loss_units (config stgan.theta_loss_units) is {units!r}: "
      f"expected one of {THETA_LOSS_UNITS}"
    )
  return crop_size / 2.0 if units == "pixels" else 1.0


def make_stgan_step(
  generator,
  discriminator,
  g_optimizer,
  d_optimizer,
  *,
  theta_weight: float,
  adversarial_weight: float,
  mesh,
  theta_loss_units: str = "pixels",
  real_label: float = 1.0,
  adversarial_warmup_steps: int = 0,
) -> Callable:
  """The ST-GAN update of Algorithm 1.

  batch: fake uint8 [B, S, S, 3] (perturbed detector-like crops), real uint8 [B, S, S, 3]
  (canonical faces), theta [B, 2, 3] (the STN matrix that turns fake into real).

  Args:
    theta_weight, adversarial_weight: a and b of Eq. 5.
    theta_loss_units: "pixels" or "normalised", see `theta_loss_scale`.
    real_label: D's target on real faces (< 1: one-sided label smoothing).
    adversarial_warmup_steps: G trains on the theta term alone before this step; D trains
      throughout, so the adversarial term starts against a discriminator that has learned.
  """
  theta_loss_scale(theta_loss_units, 2)  # a bad name fails here, not inside jit

  def generator_objective(g_params, g_state, d_state, fake, target_theta, adversarial_scale):
    theta, g_stats = _apply_train(generator, g_state, g_params, fake)
    warped = sampler.warp(fake, theta, fake.shape[1:3])
    fake_logits, _ = _apply_train(discriminator, d_state, d_state.params, warped)
    adversarial = losses.adversarial_loss(fake_logits)
    scale = theta_loss_scale(theta_loss_units, fake.shape[1])  # square crops
    loss = (
      theta_weight * scale * losses.theta_loss(theta, target_theta)
      + adversarial_scale * adversarial
    )
    return loss, (g_stats, theta, adversarial)

  def discriminator_objective(d_params, d_state, images, term):
    logits, d_stats = _apply_train(discriminator, d_state, d_params, images)
    return term(logits), d_stats

  def step(state: TrainState, batch: dict):
    g_state, d_state = state.models["generator"], state.models["discriminator"]
    fake, real = images_to_float(batch["fake"]), images_to_float(batch["real"])
    target_theta = batch["theta"]
    # D sees I_real only where I_fake has content (where theta* samples inside the crop).
    # Warping a finite crop brings in black corners; unmasked, D separates real from fake by
    # those corners alone, which says nothing about pose, and drowns the theta loss.
    real = real * sampler.warp(jnp.ones_like(fake[..., :1]), target_theta, fake.shape[1:3])
    adversarial_on = (state.step >= adversarial_warmup_steps).astype(jnp.float32)
    g_grad = jax.value_and_grad(generator_objective, has_aux=True)
    d_grad = jax.value_and_grad(discriminator_objective, has_aux=True)

    # 1. G on Eq. 5.
    (g_loss, (g_stats, _, _)), grads = g_grad(
      g_state.params, g_state, d_state, fake, target_theta, adversarial_weight * adversarial_on
    )
    g_state = apply_gradients(g_state, grads, g_optimizer, g_stats)
    # 2. D on real faces (first term of Eq. 3).
    (d_real, d_stats), grads = d_grad(
      d_state.params,
      d_state,
      real,
      lambda logits: losses.discriminator_real_loss(logits, real_label),
    )
    d_state = apply_gradients(d_state, grads, d_optimizer, d_stats)
    # 3. D on generated faces (second term of Eq. 3); G is fixed here.
    theta, _ = _apply_train(generator, g_state, g_state.params, fake)
    warped = jax.lax.stop_gradient(sampler.warp(fake, theta, fake.shape[1:3]))
    (d_fake, d_stats), grads = d_grad(
      d_state.params, d_state, warped, losses.discriminator_fake_loss
    )
    d_state = apply_gradients(d_state, grads, d_optimizer, d_stats)
    # 4. G on its part of Eq. 6, against the updated D.
    (g_adv, (g_stats, theta, adversarial)), grads = g_grad(
      g_state.params,
      g_state,
      d_state,
      fake,
      target_theta,
      (adversarial_weight + 1.0) * adversarial_on,
    )
    g_state = apply_gradients(g_state, grads, g_optimizer, g_stats)

    metrics = {
      "generator_loss": g_loss,
      "generator_adversarial_step_loss": g_adv,
      "adversarial_loss": adversarial,
      "discriminator_real_loss": d_real,
      "discriminator_fake_loss": d_fake,
      "theta_error": losses.theta_loss(jax.lax.stop_gradient(theta), target_theta),
    }
    models = {"generator": g_state, "discriminator": d_state}
    return state.replace(step=state.step + 1, models=models), metrics

  return _jit_step(step, mesh)


def make_joint_step(
  generator,
  hourglass,
  g_optimizer,
  h_optimizer,
  *,
  options,
  thresholds: jax.Array,
  loss_name: str,
  sigma: float,
  landmark_weight: float,
  theta_weight: float,
  theta_loss_units: str,
  mesh,
  occluded_spread: float = 0.0,
) -> Callable:
  """The joint fine-tuning update of the GDNN and the hourglass through the relaxed pipeline.

  batch: as the ST-GAN's (fake uint8 [B, S, S, 3] detector-like crops, theta [B, 2, 3]) plus
  landmarks [B, L, 2] in fake-crop pixels and visible [B, L] bool.

  The loss is computed on `pipeline.run_pass` itself (options.differentiable), the function
  inference runs: the crop -> GDNN theta -> canonical face -> hourglass -> decoded landmarks ->
  crop pixels. Three terms:
    heatmap loss of the hourglass on the canonical face, the targets being the landmarks
      mapped into it (held fixed: this term keeps the maps maps, it does not steer theta);
    landmark_weight x mean distance (crop pixels) of the final landmarks to the truth;
    theta_weight x ||theta - theta*|| (Eq. 5's supervised term) in `theta_loss_units`, which
      keeps the canonical face near the template the hourglass was trained on.
  BatchNorm runs in inference mode (its statistics stay those of the independent stages):
  the networks are fine-tuned exactly as the pipeline uses them, and batches of a few faces
  would give noisy statistics.
  """
  loss_fn = losses.heatmap_loss(loss_name).fn
  theta_scale = theta_loss_scale(theta_loss_units, options.crop_size)
  size, heatmap_size = options.crop_size, options.heatmap_size
  whole_crop = jnp.array([-0.5, -0.5, size - 0.5, size - 0.5], jnp.float32)

  def objective(params, state: TrainState, crops, batch):
    g_state, h_state = state.models["generator"], state.models["hourglass"]
    variables = {
      "generator": {**g_state.variables, "params": params["generator"]},
      "hourglass": {**h_state.variables, "params": params["hourglass"]},
      "thresholds": thresholds,
    }
    crop_to_image = geometry.invert_affine(
      geometry.crop_matrix(jnp.broadcast_to(whole_crop, (crops.shape[0], 4)), size)
    )
    outputs, stacks = pipeline.run_pass(
      generator, hourglass, options, variables, crops, crop_to_image
    )
    to_canonical = jax.lax.stop_gradient(geometry.invert_affine(outputs["canonical_to_image"]))
    canonical_points = geometry.apply_affine(batch["landmarks"], to_canonical)
    inside = jnp.all((canonical_points >= -0.5) & (canonical_points <= size - 0.5), axis=-1)
    targets = heatmap_targets(
      heatmap_lib.crop_to_heatmap(canonical_points, size, heatmap_size),
      batch.get("occluded"),
      heatmap_size,
      sigma,
      occluded_spread,
    )
    heatmap_loss = loss_fn(stacks, targets, batch["visible"] & inside)
    distances = jnp.linalg.norm(outputs["landmarks"] - batch["landmarks"], axis=-1)
    weights = batch["visible"].astype(jnp.float32)
    landmark_error = jnp.sum(distances * weights) / jnp.maximum(jnp.sum(weights), 1.0)
    theta_error = losses.theta_loss(outputs["theta"], batch["theta"])
    theta_term = theta_weight * theta_scale * theta_error
    loss = heatmap_loss + landmark_weight * landmark_error + theta_term
    return loss, {
      "heatmap_loss": heatmap_loss,
      "landmark_error_px": landmark_error,
      "theta_error": theta_error,
    }

  def step(state: TrainState, batch: dict):
    crops = images_to_float(batch["fake"])
    params = {name: state.models[name].params for name in ("generator", "hourglass")}
    (loss, parts), grads = jax.value_and_grad(objective, has_aux=True)(params, state, crops, batch)
    models = {
      "generator": apply_gradients(state.models["generator"], grads["generator"], g_optimizer),
      "hourglass": apply_gradients(state.models["hourglass"], grads["hourglass"], h_optimizer),
    }
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **parts}
    return state.replace(step=state.step + 1, models=models), metrics

  return _jit_step(step, mesh)


def _jit_step(step: Callable, mesh) -> Callable:
  replicated = parallel.replicated_sharding(mesh)
  batch = parallel.batch_sharding(mesh)
  return jax.jit(
    step, in_shardings=(replicated, batch), out_shardings=(replicated, replicated), donate_argnums=0
  )
