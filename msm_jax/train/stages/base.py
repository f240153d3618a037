"""The stage record, the registry and the generic driver of `train.py`'s stages.

A stage with update steps is a `Stage` record: its config section, the TrainState models it
trains, and four builders (setup, step, validation, data) that `Stage.train` drives through
`loop.train_stage`. Each keeps its own Orbax checkpoints under `<workdir>/checkpoints/<stage>`
and resumes from the newest one, data iterator included, so a killed run continues with
exactly the batches it would have seen. A stage without steps (the dictionary) gives `run`
instead. The stages themselves are the other modules of this package.
"""

import dataclasses
import os
from typing import Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from msm_jax import models
from msm_jax.core import landmarks, metrics
from msm_jax.data import datasets, input_pipeline
from msm_jax.train import checkpoints, loop, parallel
from msm_jax.train.state import TrainState, halving_adam

DICTIONARY_FILE = "dictionary.npz"

STGAN_CROP_SIZE = 128  # the GDNN's and the DDNN's input side (Tables I-II)


@flax.struct.dataclass
class Setup:
  """A stage's networks (model name -> Flax module), their optimisers and a fresh state; a
  pytree whose only leaves are the state's (so `jax.eval_shape` can build it abstractly)."""

  modules: dict = flax.struct.field(pytree_node=False)
  optimizers: dict = flax.struct.field(pytree_node=False)
  state: TrainState = None


@dataclasses.dataclass(frozen=True)
class Stage:
  """One training stage.

  name: its value in `config.stages`, its checkpoint folder.
  section: its config section (batch_size, epochs, learning_rate, lr_halve_epochs).
  models: the TrainState models it trains (checkpointed).
  serves: those of them the inference pipeline uses (`model_io` loads their variables).
  setup(config, steps_per_epoch) -> Setup.
  step(config, setup, mesh) -> the jitted update (TrainState, batch) -> (TrainState, metrics).
  validation(config, setup) -> fn(state, source) -> {name: scalar}, or None.
  data(source, host_config, shard_index=, shard_count=) -> its Grain training dataset.
  prepare(config, workdir, log) -> config: fixes config values computed from data (or the
    workdir) before training.
  in_all: trained by `config.stages = "all"` (the paper's three).
  variant: its served models replace the other stages' ones in a variant of the trained
    model (`TrainedModel.variant(name)`) instead of being the model's own (joint fine-tuning).
  run(config, workdir, log): a stage without update steps (then the builders are unused).
  check(config): raises a ValueError naming the config field when the stage cannot run to
    its end with this config; `train.py` checks every chosen stage before training any.
  """

  name: str
  section: str | None = None
  models: tuple = ()
  serves: tuple = ()
  setup: Callable | None = None
  step: Callable | None = None
  validation: Callable | None = None
  data: Callable | None = None
  prepare: Callable = lambda config, workdir, log: config
  in_all: bool = True
  variant: bool = False
  run: Callable | None = None
  check: Callable = lambda config: None

  def train(self, config, workdir: str, mesh, log=print):
    if self.run is not None:
      return self.run(config, workdir, log)
    return _train_steps(self, self.prepare(config, workdir, log), workdir, mesh, log)


STAGES: dict[str, Stage] = {}


def register(stage: Stage, before: str | None = None) -> None:
  """Add a stage to the registry (after the others, or before the stage named ``before``)."""
  if stage.name in STAGES or stage.name == "all":
    raise ValueError(f"stage {stage.name!r} is already registered")
  items = list(STAGES.items())
  position = len(items) if before is None else [name for name, _ in items].index(before)
  items.insert(position, (stage.name, stage))
  STAGES.clear()
  STAGES.update(items)


def parse_stages(text: str) -> tuple[str, ...]:
  """A comma list of stage names ("all" = the paper's three), returned in training order."""
  names = set()
  for name in (part.strip() for part in text.split(",")):
    names.update({s.name for s in STAGES.values() if s.in_all} if name == "all" else {name} - {""})
  unknown = sorted(names - set(STAGES))
  if unknown or not names:
    raise ValueError(f"stages={text!r}: choose 'all' or a comma list of {', '.join(STAGES)}")
  return tuple(name for name in STAGES if name in names)


class ConfigMismatchError(ValueError):
  """Config fields that cannot work together: `train.py` prints these as one line."""


def num_landmarks(config) -> int:
  return landmarks.get_scheme(config.data.scheme).num_points


def landmark_module(config, section: str = "hourglass"):
  """The landmark network of a config section, built by its registered architecture."""
  return models.landmark_network(config, section, num_landmarks(config))


def hourglass_module(config):
  return landmark_module(config, "hourglass")


def generator_module(config):
  return models.generator(config)


def example_images(config) -> jax.Array:
  size = config.data.crop_size
  return jnp.zeros((1, size, size, 3), jnp.float32)


def stage_optimizer(config, section: str, steps_per_epoch: int, learning_rate=None):
  return halving_adam(
    config[section].learning_rate if learning_rate is None else learning_rate,
    steps_per_epoch,
    config[section].lr_halve_epochs,
  )


def with_variables(model_state, optimizer, variables):
  """A network's state holding ``variables`` (parameters, BatchNorm statistics) and a fresh
  optimiser state."""
  return model_state.replace(
    params=variables["params"],
    batch_stats=variables.get("batch_stats", {}),
    opt_state=optimizer.init(variables["params"]),
  )


def reliability_thresholds(config) -> jax.Array:
  """[L] Table IX thresholds K of the config (contour and facial-feature landmarks)."""
  return jnp.asarray(
    landmarks.region_thresholds(
      landmarks.get_scheme(config.data.scheme),
      config.shape.contour_threshold,
      config.shape.feature_threshold,
    )
  )


def crop_nme(config, source, crop_box: str, predict) -> dict:
  """{"nme_inter_ocular": mean NME (%)} of ``predict`` (uint8 crops [B, S, S, 3] -> crop
  pixels [B, L, 2]) on the source's evaluation crops from ``crop_box``."""
  scheme = landmarks.get_scheme(config.data.scheme)
  nmes = []
  for batch in input_pipeline.eval_dataset(
    source, config, batch_size=config.eval.batch_size, crop_box=crop_box, worker_count=0
  ):
    pred = np.asarray(predict(batch["images"]))
    nmes.append(metrics.nme(pred, batch["landmarks"], scheme, "inter_ocular"))
  return {"nme_inter_ocular": 100.0 * float(np.mean(np.concatenate(nmes)))}


def check_stgan_crop(config) -> None:
  if config.data.crop_size != STGAN_CROP_SIZE:
    raise ConfigMismatchError(
      f"the ST-GAN reads {STGAN_CROP_SIZE}x{STGAN_CROP_SIZE} crops (Table I) but "
      f"data.crop_size is {config.data.crop_size}: train the stgan and joint stages with "
      f"a {STGAN_CROP_SIZE}-pixel config"
    )


def _abstract_setup(stage: Stage, config) -> Setup:
  """A stage's modules and the shapes of its fresh TrainState, without computing anything
  (and without reading a fine-tuning start package: the checkpoint replaces it)."""
  config = ml_collections.ConfigDict(config.to_dict())
  if stage.section in config and "init_from" in config[stage.section]:
    config[stage.section].init_from = ""
  return jax.eval_shape(lambda: stage.setup(config, 1))  # Setup: modules static, state abstract


def checkpoint_directory(workdir: str, stage: str) -> str:
  return os.path.join(workdir, "checkpoints", stage)


def restore_stage_models(config, workdir: str, stage: Stage) -> tuple[Setup, dict | None]:
  """``stage``'s abstract setup and the models of its newest checkpoint in ``workdir`` (None
  where it has none)."""
  setup = _abstract_setup(stage, config)
  manager = checkpoints.checkpoint_manager(
    checkpoint_directory(workdir, stage.name), config.checkpoint.every_steps, config.checkpoint.keep
  )
  restored = checkpoints.restore_latest(manager, setup.state)
  manager.close()
  return setup, None if restored is None else restored[0].models


def _host_config(config, section: str) -> ml_collections.ConfigDict:
  """This host's share of the global batch (every host loads its own slice)."""
  host = ml_collections.ConfigDict(config.to_dict())
  host[section]["batch_size"] = parallel.host_batch_size(config[section].batch_size)
  return host


def _train_steps(stage: Stage, config, workdir: str, mesh, log):
  """Sources, schedule, state, data iterator, resume, then `loop.train_stage`."""
  train_source, validation_source = datasets.train_and_validation_sources(config)
  batch_size = config[stage.section].batch_size
  parallel.check_batch_size(batch_size, mesh, f"{stage.section}.batch_size")
  steps_per_epoch = max(1, len(train_source) // batch_size)
  total_steps = int(config[stage.section].epochs * steps_per_epoch)
  setup = stage.setup(config, steps_per_epoch)
  state = parallel.replicate(setup.state, mesh)
  data = iter(
    stage.data(
      train_source,
      _host_config(config, stage.section),
      shard_index=jax.process_index(),
      shard_count=jax.process_count(),
    )
  )
  manager = checkpoints.checkpoint_manager(
    os.path.join(workdir, "checkpoints", stage.name),
    config.checkpoint.every_steps,
    config.checkpoint.keep,
  )
  restored = checkpoints.restore_latest(manager, state, set_aside_damaged=True)
  if restored is not None:
    state, data_state, _ = restored
    data.set_state(data_state)
    log(f"[{stage.name}] resumed from step {int(state.step)}")
  log(
    f"[{stage.name}] {len(train_source)} faces, {steps_per_epoch} steps/epoch, {total_steps} "
    f"steps of batch {batch_size} on {mesh.devices.size} device(s)"
  )
  evaluate = None
  if jax.process_count() > 1 and stage.validation is not None:
    # The validation feeds host-local crops: on several processes `evaluate.py` does it after.
    log(f"[{stage.name}] validation off on {jax.process_count()} processes (run evaluate.py)")
  elif stage.validation is not None and validation_source is not None:
    validate = stage.validation(config, setup)
    evaluate = lambda state: validate(state, validation_source)
  return loop.train_stage(
    stage=stage.name,
    step_fn=stage.step(config, setup, mesh),
    state=state,
    data=data,
    manager=manager,
    mesh=mesh,
    total_steps=total_steps,
    batch_size=batch_size,
    workdir=workdir,
    log_every=config.log_every_steps,
    eval_fn=evaluate,
    eval_every=config.eval_every_steps,
    log=log,
  )
