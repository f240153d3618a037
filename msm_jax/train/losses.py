"""Pure loss functions of MSM, named after the paper's equations.

ST-GAN (Sec. III-A): the discriminator loss L_D (Eq. 3), the adversarial loss L_A (Eq. 4)
and the generator loss L_G = a * ||theta_hat - theta*|| + b * L_A (Eq. 5); together they
form the minimax objective of Eq. 6, optimised by the alternating steps of Algorithm 1.

Hourglass (Sec. III-B): heatmap regression with intermediate supervision, i.e. a loss per
stack, summed over the stacks. The paper uses the mean squared error; the spatial-softmax
cross-entropy is offered beside it because plain MSE did not learn in our calibration run on
real faces (docs/cpu_notes.md) while the cross-entropy learned at once.

All discriminator outputs are logits, so log D = log_sigmoid(logit) is computed stably.
"""

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from msm_jax.core import heatmaps as heatmap_lib


def discriminator_real_loss(real_logits: jax.Array, real_label: float = 1.0) -> jax.Array:
  """First term of Eq. 3 as a loss to minimise: -E[log D(I_real)].

  Algorithm 1 step 2 optimises D on real faces with this term alone. `real_label` < 1 is
  one-sided label smoothing (Salimans et al. 2016, Sec. 3.4): the target for real faces
  becomes `real_label`, i.e. -E[s log D + (1 - s) log(1 - D)], which keeps D from growing
  over-confident logits; 1.0 is Eq. 3 exactly.
  real_logits: [B] discriminator logits on canonical faces.
  """
  return -jnp.mean(
    real_label * jax.nn.log_sigmoid(real_logits)
    + (1.0 - real_label) * jax.nn.log_sigmoid(-real_logits)
  )


def discriminator_fake_loss(fake_logits: jax.Array) -> jax.Array:
  """Second term of Eq. 3 as a loss to minimise: -E[log(1 - D(G(I_fake)))].

  Algorithm 1 step 3. log(1 - sigmoid(z)) = log_sigmoid(-z).
  fake_logits: [B] discriminator logits on warped (generated) faces.
  """
  return -jnp.mean(jax.nn.log_sigmoid(-fake_logits))


def discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """L_D of Eq. 3 negated (D maximises Eq. 3, so it minimises this)."""
  return discriminator_real_loss(real_logits) + discriminator_fake_loss(fake_logits)


def adversarial_loss(fake_logits: jax.Array, non_saturating: bool = True) -> jax.Array:
  """L_A of Eq. 4, minimised by the generator: E[log(1 - D(G(I_fake)))].

  Minimising Eq. 4 literally gives vanishing gradients while D confidently rejects the fakes
  (Goodfellow et al. 2014, Sec. 3), so by default we minimise the standard non-saturating
  surrogate -E[log D(G(I_fake))], which has the same fixed point. `non_saturating=False`
  returns Eq. 4 exactly.
  """
  if non_saturating:
    return -jnp.mean(jax.nn.log_sigmoid(fake_logits))
  return jnp.mean(jax.nn.log_sigmoid(-fake_logits))


def theta_loss(theta: jax.Array, target_theta: jax.Array) -> jax.Array:
  """||theta_hat - theta*|| of Eq. 5: Frobenius norm per face, averaged over the batch.

  theta, target_theta: [B, 2, 3].
  """
  difference = (theta - target_theta).reshape(theta.shape[0], -1)
  # sqrt has an infinite gradient at 0; the epsilon keeps a perfect prediction finite.
  return jnp.mean(jnp.sqrt(jnp.sum(jnp.square(difference), axis=-1) + 1e-12))


def generator_loss(
  theta, target_theta, fake_logits, theta_weight=1.0, adversarial_weight=0.5, non_saturating=True
) -> jax.Array:
  """L_G of Eq. 5: a * ||theta_hat - theta*|| + b * L_A, with a = 1, b = 0.5 (Sec. IV-C)."""
  return theta_weight * theta_loss(theta, target_theta) + adversarial_weight * adversarial_loss(
    fake_logits, non_saturating
  )


def heatmap_mse_loss(stacked_heatmaps: jax.Array, target_heatmaps: jax.Array) -> jax.Array:
  """The paper's heatmap regression loss: per-pixel MSE, summed over the stacks.

  stacked_heatmaps: [S, B, h, w, L] predictions of each hourglass stack (intermediate
  supervision); target_heatmaps: [B, h, w, L] Gaussian targets.
  """
  per_stack = jnp.mean(jnp.square(stacked_heatmaps - target_heatmaps[None]), axis=(1, 2, 3, 4))
  return jnp.sum(per_stack)


def heatmap_softmax_cross_entropy(
  stacked_heatmaps: jax.Array, target_heatmaps: jax.Array, visible: jax.Array | None = None
) -> jax.Array:
  """Spatial-softmax cross-entropy against the normalised Gaussian, summed over the stacks.

  Each landmark's map is treated as a distribution over the h*w pixels: the target is the
  Gaussian divided by its sum, the prediction a softmax of the logits. Landmarks whose target
  is empty (outside the map) or marked invisible are left out of the mean.

  stacked_heatmaps: [S, B, h, w, L]; target_heatmaps: [B, h, w, L]; visible: [B, L] bool.
  """
  num_stacks, batch, height, width, num_landmarks = stacked_heatmaps.shape
  logits = stacked_heatmaps.reshape(num_stacks, batch, height * width, num_landmarks)
  target = target_heatmaps.reshape(batch, height * width, num_landmarks).astype(jnp.float32)
  target_mass = jnp.sum(target, axis=1)  # [B, L]
  valid = target_mass > 1e-6
  if visible is not None:
    valid = valid & visible
  target = target / jnp.where(valid, target_mass, 1.0)[:, None, :]
  log_probabilities = jax.nn.log_softmax(logits.astype(jnp.float32), axis=2)
  cross_entropy = -jnp.sum(target[None] * log_probabilities, axis=2)  # [S, B, L]
  weights = valid.astype(jnp.float32)
  per_stack = jnp.sum(cross_entropy * weights[None], axis=(1, 2)) / jnp.maximum(
    jnp.sum(weights), 1.0
  )
  return jnp.sum(per_stack)


def coordinate_l1_loss(predicted: jax.Array, target: jax.Array, visible: jax.Array) -> jax.Array:
  """The Res-50 baseline's regression loss (Sec. IV-G): mean absolute coordinate error.

  The paper does not name the loss of its coordinate-regression baseline; L1 is the usual
  choice for landmark regression (less pulled by the occasional bad target than L2).
  predicted, target: [B, L, 2] normalised crop coordinates; visible: [B, L] bool.
  """
  weights = visible.astype(jnp.float32)[..., None]
  total = jnp.sum(jnp.abs(predicted - target) * weights)
  return total / jnp.maximum(2.0 * jnp.sum(weights), 1.0)


def decoded_landmark_l1(
  logits: jax.Array, points: jax.Array, valid: jax.Array, blur_sigma: float
) -> jax.Array:
  """Mean L1 distance (heatmap pixels, x + y) between the landmarks that inference decodes
  from spatial-softmax logits (DARK after a Gaussian blur of ``blur_sigma``: the pipeline's
  decoder) and the true ones, over the ``valid`` landmarks.

  The cross-entropy matches whole distributions; this term trains the decoded peak itself.
  Its gradient flows through DARK's Taylor step (the integer peak carries none).
  logits: [B, h, w, L]; points: [B, L, 2] heatmap pixels; valid: [B, L] bool.
  """
  probabilities = heatmap_lib.spatial_softmax(logits.astype(jnp.float32))
  decoded = heatmap_lib.decode_heatmaps(probabilities, "dark", blur_sigma=blur_sigma)
  error = jnp.sum(jnp.abs(decoded - points), axis=-1)  # [B, L]
  weights = valid.astype(jnp.float32)
  return jnp.sum(error * weights) / jnp.maximum(jnp.sum(weights), 1.0)


# Adaptive Wing (Wang, Bo and Fuxin, ICCV 2019): the published constants, and the weighted
# loss map's threshold and weight (their Sec. 4.2: W = 10 * M + 1).
ADAPTIVE_WING = {"omega": 14.0, "theta": 0.5, "epsilon": 1.0, "alpha": 2.1}
LOSS_MAP_THRESHOLD = 0.2
LOSS_MAP_WEIGHT = 10.0


def adaptive_wing(error: jax.Array, target: jax.Array, omega, theta, epsilon, alpha) -> jax.Array:
  """Eq. 6 of Wang et al.: per-pixel loss of |prediction - target| = ``error``.

  Below ``theta`` it is omega * ln(1 + (error / epsilon)^(alpha - target)): on the
  foreground (target near 1) the exponent is near 1.1, a steep, L1-like slope that keeps
  pushing small errors down, which MSE stops doing; on the background (target 0) it is near
  2.1, MSE-like, so the many background pixels do not dominate. Above ``theta`` it is the
  straight line A * error - C that meets the curve with the same value and slope.
  """
  power = alpha - target
  ratio = theta / epsilon
  slope = omega * power * ratio ** (power - 1.0) / (epsilon * (1.0 + ratio**power))
  offset = theta * slope - omega * jnp.log1p(ratio**power)
  # A floor on the base keeps the power's gradient finite where the error is exactly zero.
  curve = omega * jnp.log1p(jnp.maximum(error / epsilon, 1e-12) ** power)
  return jnp.where(error < theta, curve, slope * error - offset)


def weighted_loss_map(target_heatmaps: jax.Array) -> jax.Array:
  """Wang et al.'s weighted loss map [B, h, w, L]: LOSS_MAP_WEIGHT + 1 on the pixels where a
  3 x 3 grey dilation of the target reaches LOSS_MAP_THRESHOLD (the foreground and its
  rim), 1 elsewhere."""
  dilated = jax.lax.reduce_window(
    target_heatmaps, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 1, 1, 1), "SAME"
  )
  return 1.0 + LOSS_MAP_WEIGHT * (dilated >= LOSS_MAP_THRESHOLD).astype(target_heatmaps.dtype)


def heatmap_adaptive_wing_loss(
  stacked_heatmaps: jax.Array, target_heatmaps: jax.Array, visible: jax.Array | None = None
) -> jax.Array:
  """Adaptive Wing loss with the weighted loss map, the mean over pixels and landmarks,
  summed over the stacks; the maps are regressed as they are (no softmax), like MSE's.

  stacked_heatmaps: [S, B, h, w, L]; target_heatmaps: [B, h, w, L] Gaussians peaking at 1;
  visible: [B, L] bool, or None: landmarks outside the crop are left out of the mean.
  """
  target = target_heatmaps.astype(jnp.float32)
  error = jnp.abs(stacked_heatmaps.astype(jnp.float32) - target[None])
  weights = weighted_loss_map(target)
  if visible is not None:
    weights = weights * visible.astype(jnp.float32)[:, None, None, :]
  loss = adaptive_wing(error, target[None], **ADAPTIVE_WING) * weights[None]
  per_stack = jnp.sum(loss, axis=(1, 2, 3, 4)) / jnp.maximum(jnp.sum(weights > 0), 1)
  return jnp.sum(per_stack)


@dataclasses.dataclass(frozen=True)
class HeatmapLoss:
  """A heatmap loss: fn(stacked_heatmaps [S, B, h, w, L], targets [B, h, w, L], visible [B, L])
  -> scalar. outputs_logits: the maps it trains are logits of a spatial softmax, so inference
  applies one before decoding (Eq. 8) and scoring (Eq. 9); False: the maps are decoded as
  they are."""

  fn: Callable
  outputs_logits: bool


HEATMAP_LOSSES: dict[str, HeatmapLoss] = {
  "mse": HeatmapLoss(
    lambda stacks, target, visible=None: heatmap_mse_loss(stacks, target),
    heatmap_lib.LOSS_OUTPUTS_LOGITS["mse"],
  ),
  "softmax_cross_entropy": HeatmapLoss(
    heatmap_softmax_cross_entropy, heatmap_lib.LOSS_OUTPUTS_LOGITS["softmax_cross_entropy"]
  ),
  "adaptive_wing": HeatmapLoss(
    heatmap_adaptive_wing_loss, heatmap_lib.LOSS_OUTPUTS_LOGITS["adaptive_wing"]
  ),
}


def register_heatmap_loss(name: str, loss: HeatmapLoss) -> None:
  """Make ``name`` a value of ``config.hourglass.loss``."""
  if name in HEATMAP_LOSSES:
    raise ValueError(f"heatmap loss {name!r} is already registered")
  HEATMAP_LOSSES[name] = loss
  heatmap_lib.LOSS_OUTPUTS_LOGITS[name] = loss.outputs_logits


def heatmap_loss(name: str) -> HeatmapLoss:
  """The heatmap loss named in the config (`hourglass.loss`)."""
  if name not in HEATMAP_LOSSES:
    raise ValueError(f"config hourglass.loss={name!r}: expected one of {sorted(HEATMAP_LOSSES)}")
  return HEATMAP_LOSSES[name]
