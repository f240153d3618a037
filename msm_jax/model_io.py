"""Load a trained MSM (the three stages' newest checkpoints + the dictionary) for inference.

Returns the pieces `pipeline.make_inference_fn` needs: the two Flax modules, the variables
dict and the `PipelineOptions` from the config. Missing stages are reported by name; the ST
stage may be absent (then it is switched off), the hourglass may not.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np

from msm_jax import landmarks, pipeline, shape_dictionary
from msm_jax.train import checkpoints, stages


class MissingStageError(FileNotFoundError):
  """A stage's checkpoint or the dictionary file is not in the workdir."""


def _restore_models(config, workdir: str, stage: str, fresh_state) -> dict | None:
  directory = os.path.join(workdir, "checkpoints", stage)
  if not os.path.isdir(directory):
    return None
  manager = checkpoints.checkpoint_manager(directory, config.checkpoint.every_steps,
                                           config.checkpoint.keep)
  restored = checkpoints.restore_latest(manager, fresh_state)
  manager.close()
  return None if restored is None else restored[0].models


def pipeline_options(config, use_st: bool = True, use_sr: bool = True) -> pipeline.PipelineOptions:
  return pipeline.PipelineOptions(
      crop_size=config.data.crop_size, heatmap_size=config.data.heatmap_size,
      use_spatial_transformer=use_st, use_shape_reconstruction=use_sr,
      heatmaps_are_logits=config.hourglass.loss == "softmax_cross_entropy",
      decode_blur_sigma=config.hourglass.sigma, score_radius=config.shape.score_radius,
      num_neighbours=config.shape.num_neighbours, ridge_lambda=config.shape.ridge_lambda,
      replace=config.shape.replace)


def load_trained(config, workdir: str):
  """(generator, hourglass, variables, available) where `available` names the stages found."""
  scheme = landmarks.get_scheme(config.data.scheme)
  # Shapes only: nothing is computed to build the restore targets.
  hourglass_state = jax.eval_shape(lambda: stages.hourglass_states(config, 1)[-1])
  hourglass_models = _restore_models(config, workdir, "hourglass", hourglass_state)
  if hourglass_models is None:
    raise MissingStageError(f"no hourglass checkpoint in {workdir}/checkpoints/hourglass: "
                            f"run train.py with stages 'hourglass' first")
  variables = {"hourglass": hourglass_models["hourglass"].variables}
  available = {"hourglass"}

  stgan_state = jax.eval_shape(lambda: stages.stgan_states(config, 1)[-1])
  stgan_models = _restore_models(config, workdir, "stgan", stgan_state)
  if stgan_models is not None:
    variables["generator"] = stgan_models["generator"].variables
    available.add("stgan")
  else:
    variables["generator"] = {}

  dictionary_path = os.path.join(workdir, stages.DICTIONARY_FILE)
  if os.path.exists(dictionary_path):
    dictionary, _ = shape_dictionary.load_dictionary(dictionary_path, scheme.num_points)
    available.add("dictionary")
  else:  # a placeholder of the right shape; SR must be off without a dictionary
    dictionary = np.zeros((max(1, config.shape.num_neighbours), scheme.num_points, 2), np.float32)
  variables["dictionary"] = jnp.asarray(dictionary, jnp.float32)
  variables["thresholds"] = jnp.asarray(landmarks.region_thresholds(
      scheme, config.shape.contour_threshold, config.shape.feature_threshold))
  return (stages.generator_module(config), stages.hourglass_module(config), variables,
          frozenset(available))
