"""Load a trained MSM (the three stages' newest checkpoints + the dictionary) for inference.

Returns the pieces `pipeline.make_inference_fn` needs: the Flax modules, the variables dict,
and (`pipeline_options`) the `PipelineOptions` from the config. Missing stages are reported
by name; the ST stage, the dictionary and the Res-50 baseline may be absent (their rows are
then left out), the hourglass may not.
"""

import dataclasses
import os
from typing import Any

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
  manager = checkpoints.checkpoint_manager(
    directory, config.checkpoint.every_steps, config.checkpoint.keep
  )
  restored = checkpoints.restore_latest(manager, fresh_state)
  manager.close()
  return None if restored is None else restored[0].models


def pipeline_options(
  config, use_st: bool = True, use_sr: bool = True, landmark_network: str = "hourglass"
) -> pipeline.PipelineOptions:
  return pipeline.PipelineOptions(
    crop_size=config.data.crop_size,
    heatmap_size=config.data.heatmap_size,
    use_spatial_transformer=use_st,
    use_shape_reconstruction=use_sr,
    landmark_network=landmark_network,
    heatmaps_are_logits=config.hourglass.loss == "softmax_cross_entropy",
    decode_blur_sigma=config.hourglass.sigma,
    score_radius=config.shape.score_radius,
    num_neighbours=config.shape.num_neighbours,
    ridge_lambda=config.shape.ridge_lambda,
    replace=config.shape.replace,
    recrop_passes=int(config.get("inference", {}).get("recrop_passes", 0)),
    upright_recrop=bool(config.get("inference", {}).get("upright_recrop", True)),
    box_margin=float(config.data.box_margin),
  )


@dataclasses.dataclass(frozen=True)
class TrainedModel:
  generator: Any  # GDNN module
  hourglass: Any  # StackedHourglass module
  resnet: Any  # ResNet50 module (the ablation baseline; its variables only if trained)
  variables: dict  # what `pipeline.make_inference_fn`'s function takes
  available: frozenset  # the stages found: stgan, hourglass, dictionary, resnet


def _abstract(make_states, config):
  """The fresh TrainState's shapes and dtypes, without computing anything."""
  return jax.eval_shape(lambda: make_states(config, 1)[-1])


def load_trained(config, workdir: str) -> TrainedModel:
  """The newest checkpoint of every stage in `workdir`, and the dictionary."""
  scheme = landmarks.get_scheme(config.data.scheme)
  variables, available = {"generator": {}}, set()
  for stage, make_states, names in (
    ("hourglass", stages.hourglass_states, ("hourglass",)),
    ("stgan", stages.stgan_states, ("generator",)),
    ("resnet", stages.resnet_states, ("resnet",)),
  ):
    models = _restore_models(config, workdir, stage, _abstract(make_states, config))
    if models is not None:
      variables.update({name: models[name].variables for name in names})
      available.add(stage)
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
  variables["thresholds"] = jnp.asarray(
    landmarks.region_thresholds(
      scheme, config.shape.contour_threshold, config.shape.feature_threshold
    )
  )
  return TrainedModel(
    stages.generator_module(config),
    stages.hourglass_module(config),
    stages.resnet_module(config),
    variables,
    frozenset(available),
  )
