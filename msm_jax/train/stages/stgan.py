"""The ST-GAN stage (Sec. III-A, Algorithm 1): the GDNN and the DDNN on (I_fake, I_real,
theta*) pairs, validated by how close the warped anchors land to the canonical template."""

import jax
import jax.numpy as jnp
import numpy as np

from msm_jax import models
from msm_jax.core import geometry, landmarks
from msm_jax.data import datasets, input_pipeline, stgan_pairs
from msm_jax.train import steps
from msm_jax.train.stages.base import (
  Setup,
  Stage,
  check_stgan_crop,
  example_images,
  stage_optimizer,
)
from msm_jax.train.state import init_model_state, new_train_state

# Faces whose ground-truth-box crops define the ST template (the mean moves < 0.1 px beyond).
TEMPLATE_SHAPES = 1000


def stgan_setup(config, steps_per_epoch: int) -> Setup:
  """G (GDNN, Table I) and D (DDNN, Table II), each with its own Adam."""
  check_stgan_crop(config)
  generator, discriminator = models.generator(config), models.discriminator(config)
  g_optimizer = stage_optimizer(config, "stgan", steps_per_epoch)
  d_optimizer = stage_optimizer(
    config, "stgan", steps_per_epoch, config.stgan.discriminator_learning_rate
  )
  g_rng, d_rng = jax.random.split(jax.random.key(config.seed))
  example = example_images(config)
  state = new_train_state(
    config.seed,
    {
      "generator": init_model_state(generator, g_optimizer, g_rng, example),
      "discriminator": init_model_state(discriminator, d_optimizer, d_rng, example),
    },
  )
  modules = {"generator": generator, "discriminator": discriminator}
  return Setup(modules, {"generator": g_optimizer, "discriminator": d_optimizer}, state)


def stgan_step(config, setup: Setup, mesh):
  return steps.make_stgan_step(
    setup.modules["generator"],
    setup.modules["discriminator"],
    setup.optimizers["generator"],
    setup.optimizers["discriminator"],
    theta_weight=config.stgan.theta_weight,
    adversarial_weight=config.stgan.adversarial_weight,
    mesh=mesh,
    theta_loss_units=config.stgan.theta_loss_units,
    real_label=config.stgan.real_label,
    adversarial_warmup_steps=config.stgan.adversarial_warmup_steps,
  )


def template_distance(config, setup: Setup):
  """A function (state, source) -> mean distance (px) of the warped anchors (pupils, mouth)
  to the canonical template, on detector-box crops: how canonical the ST-GAN's output is."""
  generator = setup.modules["generator"]
  scheme = landmarks.get_scheme(config.data.scheme)
  anchors = stgan_pairs.CanonicalAnchors.from_scheme(scheme)
  size = config.data.crop_size
  template = stgan_pairs.template_points(
    stgan_pairs.StganPairOptions.from_config(config).template, size
  )
  forward = jax.jit(
    lambda variables, crops: generator.apply(
      variables, crops.astype(jnp.float32) / 255.0, train=False
    )
  )

  def distances(theta, crop_landmarks):
    canonical_to_crop = geometry.theta_to_pixel_matrix(theta, (size, size), (size, size))
    in_canonical = geometry.apply_affine(crop_landmarks, geometry.invert_affine(canonical_to_crop))
    points = np.stack([anchors.points(shape) for shape in in_canonical])
    return np.linalg.norm(points - template[None], axis=-1).mean(axis=-1)

  def evaluate(state, source):
    variables = state.models["generator"].variables
    warped, identity = [], []
    for batch in input_pipeline.eval_dataset(
      source, config, batch_size=config.eval.batch_size, crop_box="record", worker_count=0
    ):
      theta = np.asarray(forward(variables, batch["images"]), np.float64)
      warped.append(distances(theta, batch["landmarks"]))
      identity.append(distances(np.broadcast_to(np.eye(2, 3), theta.shape), batch["landmarks"]))
    return {
      "template_distance_px": float(np.mean(np.concatenate(warped))),
      "template_distance_unwarped_px": float(np.mean(np.concatenate(identity))),
    }

  return evaluate


def resolve_stgan_template(config, log=print):
  """``config`` with the ST template fixed (``stgan.template_source``, see configs/base.py)."""
  if config.stgan.template_source != "training_crops":
    return config  # "fixed"; StganPairOptions.from_config rejects anything else
  train_source, _ = datasets.train_and_validation_sources(config)
  shapes = datasets.training_shapes(config, train_source, limit=TEMPLATE_SHAPES)
  anchors = stgan_pairs.CanonicalAnchors.from_scheme(landmarks.get_scheme(config.data.scheme))
  config = stgan_pairs.resolve_template(config, shapes, anchors)
  named = zip(
    ("left pupil", "right pupil", "mouth"),
    (
      config.stgan.template_left_pupil,
      config.stgan.template_right_pupil,
      config.stgan.template_mouth,
    ),
  )
  points = ", ".join(f"{name} ({x:.1f}, {y:.1f})" for name, (x, y) in named)
  log(f"[stgan] template from {len(shapes)} ground-truth-box crops (128 frame): {points}")
  return config


STAGE = Stage(
  name="stgan",
  section="stgan",
  models=("generator", "discriminator"),
  serves=("generator",),
  setup=stgan_setup,
  step=stgan_step,
  validation=template_distance,
  data=input_pipeline.stgan_train_dataset,
  prepare=lambda config, workdir, log: resolve_stgan_template(config, log),
  check=check_stgan_crop,
)
