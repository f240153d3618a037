"""The shape-dictionary stage (Sec. III-C, IV-C): canonical training shapes -> k-means ->
the exemplar shapes of `dictionary.npz`, which the shape repair searches (Eq. 10-11)."""

import os

import numpy as np

from msm_jax.core import landmarks, shape_dictionary
from msm_jax.data import datasets
from msm_jax.train.stages.base import DICTIONARY_FILE, Stage


def build_dictionary(config, workdir: str, log=print) -> np.ndarray:
  """Stage 3 (Sec. III-C, IV-C): canonical training shapes -> k-means -> dictionary.npz."""
  scheme = landmarks.get_scheme(config.data.scheme)
  train_source, _ = datasets.train_and_validation_sources(config)
  shapes = datasets.training_shapes(config, train_source)
  canonical, _ = shape_dictionary.canonicalise(shapes, landmarks.pupils(shapes, scheme))
  size = min(config.shape.dictionary_size, len(canonical))
  if size < config.shape.dictionary_size:
    log(
      f"[dictionary] only {len(canonical)} training shapes: dictionary of {size}, "
      f"not {config.shape.dictionary_size}"
    )
  dictionary = shape_dictionary.build_dictionary(np.asarray(canonical), size=size, seed=config.seed)
  path = os.path.join(workdir, DICTIONARY_FILE)
  shape_dictionary.save_dictionary(
    path, dictionary, {"scheme": scheme.name, "training_shapes": len(canonical)}
  )
  log(f"[dictionary] {size} exemplar shapes from {len(canonical)} training shapes -> {path}")
  return dictionary


def check_dictionary(config) -> None:
  """The repair needs k = shape.num_neighbours exemplars: at least that many training faces."""
  train_source, _ = datasets.train_and_validation_sources(config)
  if len(train_source) < config.shape.num_neighbours:
    raise ValueError(
      f"config shape.num_neighbours={config.shape.num_neighbours}: the shape repair needs at "
      f"least that many training faces for the dictionary, the data has {len(train_source)}"
    )


STAGE = Stage(name="dictionary", section="shape", run=build_dictionary, check=check_dictionary)
