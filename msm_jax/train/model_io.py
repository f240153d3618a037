"""Load a trained MSM (every registered stage's newest checkpoint + the dictionary).

Returns a `pipeline.TrainedModel`: the pieces `pipeline.make_inference_fn` needs (modules and
variables; `pipeline.options_from_config` gives the options). Missing stages are reported by
name; the ST stage, the dictionary and the Res-50 baseline may be absent (their rows are then
left out), the hourglass may not.
"""

import os

import jax.numpy as jnp
import numpy as np

from msm_jax import models
from msm_jax.core import landmarks, shape_dictionary
from msm_jax.inference import pipeline
from msm_jax.train import stages


class MissingStageError(FileNotFoundError):
  """A stage's checkpoint or the dictionary file is not in the workdir."""


def load_trained(config, workdir: str) -> pipeline.TrainedModel:
  """The newest checkpoint of every stage in `workdir`, and the dictionary."""
  scheme = landmarks.get_scheme(config.data.scheme)
  variables, available, networks, variants = {"generator": {}}, set(), {}, {}
  for stage in stages.STAGES.values():
    # A stage never trained here is not set up either: its networks may not take this
    # config's crops (the GDNN reads 128 x 128 only, Table I).
    directory = stages.base.checkpoint_directory(workdir, stage.name)
    if stage.setup is None or not os.path.isdir(directory):
      continue
    setup, restored = stages.base.restore_stage_models(config, workdir, stage)
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
