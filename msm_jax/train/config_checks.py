"""One check of a whole training config before anything is written or trained.

`train.py` runs `check_config` first: a name that no registry knows, a number out of its range
or a data folder that does not exist is one line naming the field and what it may be
(`ConfigError`, exit status 2), not a traceback minutes into training, and not a
`config.json` that then refuses the corrected rerun as a changed config. The stages' own
`check` functions (which may read the data) run after it, still before anything is written.
"""

import os
from typing import Callable

from msm_jax import models
from msm_jax.core import landmarks
from msm_jax.data import augment, datasets
from msm_jax.data.tfds import reading
from msm_jax.inference import pretrained
from msm_jax.models import layers
from msm_jax.train import losses, stages

COMPUTE_DTYPES = ("float32", "bfloat16")


class ConfigError(ValueError):
  """A config field that cannot work: the message names the field and what it may be."""


def _positive_int(value) -> bool:
  return pretrained.is_integer(value) and value >= 1


def _non_negative_int(value) -> bool:
  return pretrained.is_integer(value) and value >= 0


def _positive_number(value) -> bool:
  return pretrained.is_finite(value) and value > 0


# (field, test, what it may be): fields every run reads.
RANGES: tuple[tuple[str, Callable, str], ...] = (
  ("data.crop_size", _positive_int, "a positive integer"),
  ("data.heatmap_size", _positive_int, "a positive integer"),
  ("data.box_margin", _positive_number, "a finite number > 0"),
  ("shape.num_neighbours", _positive_int, "an integer >= 1"),
  ("shape.dictionary_size", _positive_int, "an integer >= 1"),
  ("hourglass.sigma", _positive_number, "a finite number > 0"),
  ("checkpoint.every_steps", _positive_int, "an integer >= 1"),
  ("checkpoint.keep", _positive_int, "an integer >= 1"),
  ("log_every_steps", _positive_int, "an integer >= 1"),
  ("eval_every_steps", _non_negative_int, "an integer >= 0 (0: at the end only)"),
  ("eval.batch_size", _positive_int, "an integer >= 1"),
)

# (field, test, what it may be) of the section of each chosen stage with update steps.
STAGE_RANGES: tuple[tuple[str, Callable, str], ...] = (
  ("batch_size", _positive_int, "an integer >= 1"),
  ("epochs", _positive_number, "a number > 0"),
  ("learning_rate", _positive_number, "a finite number > 0"),
)


def _kernels_name(name: str) -> None:
  if name != layers.AUTO_KERNELS:
    layers.kernels(name)


def _registered(config) -> None:
  """Every name the config gives, against its registry (each lookup's own message)."""
  lookups = (
    lambda: landmarks.get_scheme(config.data.scheme),
    lambda: datasets.dataset_of(config.data.dataset),
    lambda: datasets.evaluation_dataset(config),
    lambda: datasets.source_kind(config),
    lambda: losses.heatmap_loss(config.hourglass.loss),
    lambda: models.architecture_name(config, "hourglass"),
    lambda: models.architecture_name(config, "resnet"),
    # By name only: resolving "auto" would start JAX's backend before jax.distributed.
    lambda: _kernels_name(config.hourglass.get("kernels", layers.AUTO_KERNELS)),
  )
  for lookup in lookups:
    try:
      lookup()
    except ValueError as error:
      raise ConfigError(str(error)) from None


def _in_range(config, chosen: tuple) -> None:
  fields = [(name, test, allowed) for name, test, allowed in RANGES]
  for stage in (stages.STAGES[name] for name in chosen):
    if stage.step is not None:  # a stage with update steps reads its section's schedule
      fields += [(f"{stage.section}.{name}", test, allowed) for name, test, allowed in STAGE_RANGES]
  values = config.to_dict()
  for name, test, allowed in fields:
    value = pretrained.config_value(values, name)
    if value is not pretrained.MISSING and not test(value):
      raise ConfigError(f"config {name}={value!r}: expected {allowed}")
  dtype = config.hourglass.get("compute_dtype", "float32")
  if dtype not in COMPUTE_DTYPES:
    raise ConfigError(
      f"config hourglass.compute_dtype={dtype!r}: expected one of {', '.join(COMPUTE_DTYPES)}"
    )
  try:
    augment.check_schedule(config.augment.get("schedule", None) or {})
  except ValueError as error:
    raise ConfigError(f"config {error}") from None
  if config.shape.num_neighbours > config.shape.dictionary_size:
    raise ConfigError(
      f"config shape.num_neighbours={config.shape.num_neighbours}: the repair's k cannot exceed "
      f"shape.dictionary_size={config.shape.dictionary_size}"
    )


def _reads_prepared(config) -> bool:
  return config.data.get("source", "folder") == "tfds"


def _paths(config) -> None:
  """The data folders a real dataset reads, and the validation list, exist."""
  if datasets.dataset_of(config.data.dataset).train_records is not None:
    if not _reads_prepared(config) and not os.path.isdir(config.data.root):
      raise ConfigError(
        f"config data.root={config.data.root!r}: no such folder (the {config.data.dataset} "
        "data; see docs/datasets.md for the layout)"
      )
  validation_list = config.data.get("validation_list", "")
  if validation_list and not os.path.isfile(validation_list):
    raise ConfigError(f"config data.validation_list={validation_list!r}: no such file")


def _prepared(config) -> None:
  """With data.source = "tfds": the prepared datasets that training and the evaluation after
  it read are built in data.tfds_data_dir and serve the config's crops and augmentation."""
  if not _reads_prepared(config):
    return
  directory = config.data.get("tfds_data_dir", "")
  if not isinstance(directory, str):
    raise ConfigError(f"config data.tfds_data_dir={directory!r}: expected a folder ('': TFDS's)")
  read = [(datasets.dataset_of(config.data.dataset), "root")]
  evaluated = datasets.evaluation_dataset(config)
  # An evaluated dataset without a prepared form ("folder") is read from its folder.
  if config.evaluate_after_training and evaluated.prepared and evaluated is not read[0][0]:
    read.append((evaluated, "eval_root" if config.data.get("eval_root", "") else "root"))
  for dataset, root_field in read:
    try:
      datasets.check_prepared(config, dataset, root_field)
    except reading.NotPreparedError as error:
      raise ConfigError(f"config data.source='tfds': {error}") from None
    except ValueError as error:
      raise ConfigError(str(error)) from None


def check_config(config) -> tuple[str, ...]:
  """Raise ConfigError naming the first field that cannot work; returns the chosen stages
  (`config.stages` parsed, in training order)."""
  try:
    chosen = stages.parse_stages(config.stages)
  except ValueError as error:
    raise ConfigError(f"config {error}") from None
  _registered(config)
  _in_range(config, chosen)
  _paths(config)
  _prepared(config)
  return chosen
