"""The landmark-network stages (Sec. III-B): the stacked hourglass, and the Res-50
coordinate-regression baseline of the ablation (Sec. IV-G), each trained on hourglass crops.
"""

from typing import Callable

import jax
import jax.numpy as jnp

from msm_jax import models
from msm_jax.data import input_pipeline
from msm_jax.inference import pipeline, pretrained
from msm_jax.models import hourglass as hourglass_lib
from msm_jax.train import steps
from msm_jax.train.stages.base import (
  ConfigMismatchError,
  Setup,
  Stage,
  crop_nme,
  example_images,
  landmark_module,
  stage_optimizer,
  with_variables,
)
from msm_jax.train.state import init_model_state, new_train_state


def landmark_setup(name: str) -> Callable:
  """Setup of a landmark stage: its network (section ``name``) and Adam, the variables from a
  pretrained package when ``<name>.init_from`` is set (fine-tuning)."""

  def setup(config, steps_per_epoch: int) -> Setup:
    module = landmark_module(config, name)
    _check_map_size(module, config, name)
    optimizer = stage_optimizer(config, name, steps_per_epoch)
    model_state = init_model_state(
      module, optimizer, jax.random.key(config.seed), example_images(config)
    )
    if config[name].get("init_from", ""):
      model_state = _start_from_package(model_state, optimizer, config, name)
    state = new_train_state(config.seed, {name: model_state})
    return Setup({name: module}, {name: optimizer}, state)

  return setup


def _check_map_size(module, config, name: str) -> None:
  """A heatmap network whose maps are not ``data.heatmap_size`` would fail deep inside the
  loss: say which fields disagree instead."""
  if models.architecture(config, name).output != "heatmaps":
    return
  size = config.data.crop_size
  maps = jax.eval_shape(
    lambda: module.init_with_output(jax.random.key(0), example_images(config), train=False)[0]
  )
  if maps.shape[2:4] != (config.data.heatmap_size,) * 2:
    raise ConfigMismatchError(
      f"the {name} network makes {maps.shape[2]}x{maps.shape[3]} maps from {size}x{size} "
      f"crops but data.heatmap_size is {config.data.heatmap_size}: set data.crop_size to "
      f"2 x {name}.space_to_depth x data.heatmap_size"
    )


def _start_from_package(model_state, optimizer, config, name: str):
  """Parameters and BatchNorm statistics from a pretrained package, a fresh optimiser state.
  A package trained at ``space_to_depth = 1`` starts a network with b > 1 through
  ``hourglass.widen_stem`` (the same maps on the block-averaged crop), and a narrower one
  (``width``) a wider network through ``hourglass.widen_channels`` (the same maps, the new
  channels ready to learn). A checkpoint in the workdir still takes precedence (it is
  restored afterwards)."""
  source = config[name].init_from
  block = int(config[name].get("space_to_depth", 1))
  package_config = pretrained.package_config(source)
  package_block = int(package_config[name].get("space_to_depth", 1))
  if package_block not in (1, block):
    raise ConfigMismatchError(
      f"{name}.init_from={source!r}: its network has space_to_depth {package_block}; "
      f"only a network with 1 can start one with {block}"
    )
  package_module = landmark_module(package_config, name)
  variables = pretrained.package_network_variables(source, name, package_module, package_config)
  if package_block != block:
    variables = hourglass_lib.widen_stem(variables, block)
  fresh = {"params": model_state.params, "batch_stats": model_state.batch_stats}
  if jax.tree.map(jnp.shape, variables) != jax.tree.map(jnp.shape, fresh):
    try:
      variables = hourglass_lib.widen_channels(variables, fresh)
    except ValueError as error:
      raise ConfigMismatchError(
        f"{name}.init_from={source!r}: its network does not fit this config's ({error})"
      ) from None
  return with_variables(model_state, optimizer, variables)


def landmark_step(name: str) -> Callable:
  """The update of a landmark stage: heatmap loss or coordinate L1, by what it outputs."""

  def step(config, setup: Setup, mesh):
    module, optimizer = setup.modules[name], setup.optimizers[name]
    if models.architecture(config, name).output == "coordinates":
      return steps.make_regression_step(
        module, optimizer, crop_size=config.data.crop_size, mesh=mesh, model_name=name
      )
    return steps.make_hourglass_step(
      module,
      optimizer,
      loss_name=config.hourglass.loss,
      sigma=config.hourglass.sigma,
      crop_size=config.data.crop_size,
      heatmap_size=config.data.heatmap_size,
      mesh=mesh,
      model_name=name,
      occluded_spread=config.hourglass.get("occluded_target_spread", 0.0),
      decoded_weight=config.hourglass.get("decoded_landmark_weight", 0.0),
    )

  return step


def predict_crop_landmarks(config, name: str, module, variables, crops):
  """The landmark network of stage ``name`` alone on [B, S, S, 3] float crops -> [B, L, 2]
  crop pixels, decoded exactly as the inference pipeline does."""
  options = pipeline.options_from_config(config, False, False, landmark_stage=name)
  if options.landmark_output == "coordinates":
    normalised = module.apply(variables, crops, train=False)
    return pipeline.normalised_to_crop(normalised, config.data.crop_size)
  return pipeline.hourglass_points(module, variables, crops, options)[1]


def landmark_validation(name: str) -> Callable:
  """fn(state, source) -> {"nme_inter_ocular": mean NME (%)} on ground-truth-box crops."""

  def validation(config, setup: Setup):
    module = setup.modules[name]
    forward = jax.jit(
      lambda variables, crops: predict_crop_landmarks(
        config, name, module, variables, crops.astype(jnp.float32) / 255.0
      )
    )

    def evaluate(state, source):
      variables = state.models[name].variables
      return crop_nme(config, source, "landmarks", lambda images: forward(variables, images))

    return evaluate

  return validation


def landmark_check(name: str) -> Callable:
  """The network of section ``name`` makes `data.heatmap_size` maps from the config's crops
  (checked abstractly, before anything is trained)."""
  return lambda config: _check_map_size(landmark_module(config, name), config, name)


def landmark_stage(name: str, in_all: bool = True) -> Stage:
  """A stage training the landmark network of config section ``name`` on hourglass crops."""
  return Stage(
    name=name,
    section=name,
    models=(name,),
    serves=(name,),
    setup=landmark_setup(name),
    step=landmark_step(name),
    validation=landmark_validation(name),
    data=input_pipeline.hourglass_train_dataset,
    in_all=in_all,
    check=landmark_check(name),
  )
