"""Load a trained MSM (every registered stage's newest checkpoint + the dictionary).

Returns a `pipeline.TrainedModel`: the pieces `pipeline.make_inference_fn` needs (modules and
variables; `pipeline.options_from_config` gives the options). Missing stages are reported by
name; the ST stage, the dictionary and the Res-50 baseline may be absent (their rows are then
left out), the hourglass may not.
"""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from msm_jax import landmarks, models, shape_dictionary
from msm_jax.inference import pipeline
from msm_jax.train import checkpoints, stages


class MissingStageError(FileNotFoundError):
  """A stage's checkpoint or the dictionary file is not in the workdir."""


def _checkpoint_directory(workdir: str, stage: str) -> str:
  return os.path.join(workdir, "checkpoints", stage)


def _restore_models(config, workdir: str, stage: str, fresh_state) -> dict | None:
  directory = _checkpoint_directory(workdir, stage)
  manager = checkpoints.checkpoint_manager(
    directory, config.checkpoint.every_steps, config.checkpoint.keep
  )
  restored = checkpoints.restore_latest(manager, fresh_state)
  manager.close()
  return None if restored is None else restored[0].models


def _abstract_setup(stage, config):
  """A stage's modules and the shapes of its fresh TrainState, without computing anything
  (and without reading a fine-tuning start package: the checkpoint replaces it)."""
  config = ml_collections.ConfigDict(config.to_dict())
  if stage.section in config and "init_from" in config[stage.section]:
    config[stage.section].init_from = ""
  return jax.eval_shape(lambda: stage.setup(config, 1))  # Setup: modules static, state abstract


def load_trained(config, workdir: str) -> pipeline.TrainedModel:
  """The newest checkpoint of every stage in `workdir`, and the dictionary."""
  scheme = landmarks.get_scheme(config.data.scheme)
  variables, available, networks, variants = {"generator": {}}, set(), {}, {}
  for stage in stages.STAGES.values():
    # A stage never trained here is not set up either: its networks may not take this
    # config's crops (the GDNN reads 128 x 128 only, Table I).
    if stage.setup is None or not os.path.isdir(_checkpoint_directory(workdir, stage.name)):
      continue
    setup = _abstract_setup(stage, config)
    restored = _restore_models(config, workdir, stage.name, setup.state)
    if restored is not None and stage.variant:
      variants[stage.name] = {name: restored[name].variables for name in stage.serves}
      available.add(stage.name)
    elif restored is not None:
      variables.update({name: restored[name].variables for name in stage.serves})
      # A landmark stage keys its network by its own name ("hourglass", "resnet").
      networks.update({name: setup.modules[name] for name in stage.models if name == stage.name})
      available.add(stage.name)
  if "hourglass" not in available:
    raise MissingStageError(
      f"no hourglass checkpoint in {workdir}/checkpoints/hourglass: "
      f"run train.py with stages 'hourglass' first"
    )

  dictionary_path = os.path.join(workdir, stages.DICTIONARY_FILE)
  if os.path.exists(dictionary_path):
    dictionary, _ = shape_dictionary.load_dictionary(dictionary_path, scheme.num_points)
    available.add("dictionary")
  else:  # a placeholder of the right shape; SR must be off without a dictionary
    dictionary = np.zeros((max(1, config.shape.num_neighbours), scheme.num_points, 2), np.float32)
  variables["dictionary"] = jnp.asarray(dictionary, jnp.float32)
  variables["thresholds"] = stages.reliability_thresholds(config)
  return pipeline.TrainedModel(
    models.generator(config), networks, variables, frozenset(available), variants
  )
