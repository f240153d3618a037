"""Joint fine-tuning of the GDNN and the hourglass through the differentiable pipeline
(ST + HG, one pass): the cascade of Algorithm 2 trained end to end, started from the trained
stgan and hourglass checkpoints."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np

from msm_jax import models
from msm_jax.core import landmarks
from msm_jax.data import input_pipeline
from msm_jax.inference import pipeline
from msm_jax.train import steps
from msm_jax.train.stages.base import (
  STAGES,
  ConfigMismatchError,
  Setup,
  Stage,
  check_stgan_crop,
  crop_nme,
  example_images,
  hourglass_module,
  reliability_thresholds,
  restore_stage_models,
  stage_optimizer,
  with_variables,
)
from msm_jax.train.stages.stgan import resolve_stgan_template
from msm_jax.train.state import init_model_state, new_train_state


def joint_setup(config, steps_per_epoch: int) -> Setup:
  """The GDNN and the hourglass, each with its own Adam (``config.joint``), started from the
  trained ``stgan`` and ``hourglass`` checkpoints of the workdir ``joint.init_from``."""
  check_stgan_crop(config)
  generator, hourglass = models.generator(config), hourglass_module(config)
  g_optimizer = stage_optimizer(config, "joint", steps_per_epoch)
  h_optimizer = stage_optimizer(config, "joint", steps_per_epoch)
  g_rng, h_rng = jax.random.split(jax.random.key(config.seed))
  example = example_images(config)
  g_state = init_model_state(generator, g_optimizer, g_rng, example)
  h_state = init_model_state(hourglass, h_optimizer, h_rng, example)
  if config.joint.init_from:
    trained = _trained_generator_and_hourglass(config, config.joint.init_from)
    g_state = with_variables(g_state, g_optimizer, trained["generator"])
    h_state = with_variables(h_state, h_optimizer, trained["hourglass"])
  state = new_train_state(config.seed, {"generator": g_state, "hourglass": h_state})
  modules = {"generator": generator, "hourglass": hourglass}
  return Setup(modules, {"generator": g_optimizer, "hourglass": h_optimizer}, state)


def _trained_generator_and_hourglass(config, workdir: str) -> dict:
  """The generator and hourglass variables of ``workdir``'s newest stgan and hourglass
  checkpoints."""
  variables = {}
  for name in ("stgan", "hourglass"):
    _, restored = restore_stage_models(config, workdir, STAGES[name])
    if restored is None:
      raise ConfigMismatchError(
        f"the joint stage starts from a trained ST-GAN and hourglass: no checkpoint in "
        f"{workdir}/checkpoints/{name} (train stages 'stgan,hourglass' first)"
      )
    served = "generator" if name == "stgan" else name
    variables[served] = restored[served].variables
  return variables


def prepare_joint(config, workdir: str, log):
  """The ST template (the crops' theta* as the ST-GAN's), and the workdir to start from."""
  config = resolve_stgan_template(config, log)
  if not config.joint.init_from:
    config.joint.init_from = os.path.abspath(workdir)
  return config


def joint_options(config, differentiable: bool) -> pipeline.PipelineOptions:
  """ST + HG, one pass, no flip, no repair: what the joint stage trains and validates."""
  options = pipeline.options_from_config(config, True, False, differentiable=differentiable)
  return dataclasses.replace(options, recrop_passes=0, flip_test=None)


def joint_step(config, setup: Setup, mesh):
  return steps.make_joint_step(
    setup.modules["generator"],
    setup.modules["hourglass"],
    setup.optimizers["generator"],
    setup.optimizers["hourglass"],
    options=joint_options(config, differentiable=True),
    thresholds=reliability_thresholds(config),
    loss_name=config.hourglass.loss,
    sigma=config.hourglass.sigma,
    landmark_weight=config.joint.landmark_weight,
    theta_weight=config.joint.theta_weight,
    theta_loss_units=config.stgan.theta_loss_units,
    mesh=mesh,
    occluded_spread=config.hourglass.get("occluded_target_spread", 0.0),
  )


def joint_validation(config, setup: Setup):
  """fn(state, source) -> {"nme_inter_ocular": ST + HG NME (%) on the records' own boxes}: the
  exact pipeline (no repair) on the crops a detector's box gives."""
  scheme = landmarks.get_scheme(config.data.scheme)
  infer = pipeline.make_inference_fn(
    setup.modules["generator"], setup.modules["hourglass"], joint_options(config, False)
  )
  size = config.data.crop_size
  whole_crop = np.array([-0.5, -0.5, size - 0.5, size - 0.5], np.float32)
  thresholds = reliability_thresholds(config)

  def evaluate(state, source):
    variables = {
      "generator": state.models["generator"].variables,
      "hourglass": state.models["hourglass"].variables,
      "thresholds": thresholds,
      "dictionary": jnp.zeros((1, scheme.num_points, 2), jnp.float32),
    }

    def predict(images):  # the crop is the whole image
      boxes = np.broadcast_to(whole_crop, (len(images), 4))
      return infer(variables, images, boxes)["landmarks"]

    return crop_nme(config, source, "record", predict)

  return evaluate


def joint_train_dataset(source, config, **kwargs):
  return input_pipeline.stgan_train_dataset(
    source, config, batch_size=config.joint.batch_size, **kwargs
  )


def check_joint(config) -> None:
  check_stgan_crop(config)
  if models.architecture(config, "hourglass").output != "heatmaps":
    raise ValueError(
      f"config hourglass.architecture={models.architecture_name(config, 'hourglass')!r}: the "
      "joint stage fine-tunes a heatmap network through the pipeline's decoder"
    )


STAGE = Stage(
  name="joint",
  section="joint",
  models=("generator", "hourglass"),
  serves=("generator", "hourglass"),
  setup=joint_setup,
  step=joint_step,
  validation=joint_validation,
  data=joint_train_dataset,
  prepare=prepare_joint,
  in_all=False,
  variant=True,
  check=check_joint,
)
