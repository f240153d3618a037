"""The training stages of `train.py`, as one registry (`STAGES`, in training order):

  stgan       Sec. III-A, Algorithm 1: GDNN + DDNN on (I_fake, I_real, theta*)   config.stgan
  hourglass   Sec. III-B: the landmark network (`hourglass.architecture`)         config.hourglass
  dictionary  Sec. III-C, IV-C: k-means exemplar shapes -> dictionary.npz          config.shape
  resnet      Sec. IV-G: the Res-50 coordinate-regression baseline of the ablation  config.resnet

The paper trains the three independently (Sec. IV-C). A stage with update steps is a `Stage`
record: its config section, the TrainState models it trains, and four builders (setup, step,
validation, data) that `Stage.train` drives through `loop.train_stage`. Each keeps its own
Orbax checkpoints under `<workdir>/checkpoints/<stage>` and resumes from the newest one, data
iterator included, so a killed run continues with exactly the batches it would have seen.
A stage without steps (the dictionary) gives `run` instead. A new stage is one `register`
call (README, "Extending msm-jax").
"""

import dataclasses
import os
from typing import Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from msm_jax import geometry, landmarks, metrics, models, shape_dictionary
from msm_jax.data import datasets, input_pipeline, stgan_pairs
from msm_jax.inference import pipeline
from msm_jax.models import hourglass as hourglass_lib
from msm_jax.train import checkpoints, loop, parallel, steps
from msm_jax.train.state import TrainState, halving_adam, init_model_state, new_train_state

DICTIONARY_FILE = "dictionary.npz"
# Faces whose ground-truth-box crops define the ST template (the mean moves < 0.1 px beyond).
TEMPLATE_SHAPES = 1000


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


def num_landmarks(config) -> int:
  return landmarks.get_scheme(config.data.scheme).num_points


def landmark_module(config, section: str = "hourglass"):
  """The landmark network of a config section, built by its registered architecture."""
  return models.landmark_network(config, section, num_landmarks(config))


def hourglass_module(config):
  return landmark_module(config, "hourglass")


def generator_module(config):
  return models.generator(config)


def _example_images(config) -> jax.Array:
  size = config.data.crop_size
  return jnp.zeros((1, size, size, 3), jnp.float32)


def _optimizer(config, section: str, steps_per_epoch: int, learning_rate=None):
  return halving_adam(
    config[section].learning_rate if learning_rate is None else learning_rate,
    steps_per_epoch,
    config[section].lr_halve_epochs,
  )


# --- landmark networks: the hourglass stage, and the Res-50 baseline ---------------------------


def landmark_setup(name: str) -> Callable:
  """Setup of a landmark stage: its network (section ``name``) and Adam, the variables from a
  pretrained package when ``<name>.init_from`` is set (fine-tuning)."""

  def setup(config, steps_per_epoch: int) -> Setup:
    module = landmark_module(config, name)
    _check_map_size(module, config, name)
    optimizer = _optimizer(config, name, steps_per_epoch)
    model_state = init_model_state(
      module, optimizer, jax.random.key(config.seed), _example_images(config)
    )
    if config[name].get("init_from", ""):
      model_state = _start_from_package(model_state, optimizer, config, name)
    state = new_train_state(config.seed, {name: model_state})
    return Setup({name: module}, {name: optimizer}, state)

  return setup


STGAN_CROP_SIZE = 128  # the GDNN's and the DDNN's input side (Tables I-II)


class ConfigMismatchError(ValueError):
  """Config fields that cannot work together: `train.py` prints these as one line."""


def _check_map_size(module, config, name: str) -> None:
  """A heatmap network whose maps are not ``data.heatmap_size`` would fail deep inside the
  loss: say which fields disagree instead."""
  if models.architecture(config, name).output != "heatmaps":
    return
  size = config.data.crop_size
  maps = jax.eval_shape(
    lambda: module.init_with_output(jax.random.key(0), _example_images(config), train=False)[0]
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
  from msm_jax.inference import pretrained

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
  return _with_variables(model_state, optimizer, variables)


def _with_variables(model_state, optimizer, variables):
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
  )


# --- the ST-GAN ---------------------------------------------------------------------------------


def _check_stgan_crop(config) -> None:
  if config.data.crop_size != STGAN_CROP_SIZE:
    raise ConfigMismatchError(
      f"the ST-GAN reads {STGAN_CROP_SIZE}x{STGAN_CROP_SIZE} crops (Table I) but "
      f"data.crop_size is {config.data.crop_size}: train the stgan and joint stages with "
      f"a {STGAN_CROP_SIZE}-pixel config"
    )


def stgan_setup(config, steps_per_epoch: int) -> Setup:
  """G (GDNN, Table I) and D (DDNN, Table II), each with its own Adam."""
  _check_stgan_crop(config)
  generator, discriminator = models.generator(config), models.discriminator(config)
  g_optimizer = _optimizer(config, "stgan", steps_per_epoch)
  d_optimizer = _optimizer(
    config, "stgan", steps_per_epoch, config.stgan.discriminator_learning_rate
  )
  g_rng, d_rng = jax.random.split(jax.random.key(config.seed))
  example = _example_images(config)
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


# --- the shape dictionary -----------------------------------------------------------------------


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


# --- the driver ---------------------------------------------------------------------------------


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
  restored = checkpoints.restore_latest(manager, state)
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


register(
  Stage(
    name="stgan",
    section="stgan",
    models=("generator", "discriminator"),
    serves=("generator",),
    setup=stgan_setup,
    step=stgan_step,
    validation=template_distance,
    data=input_pipeline.stgan_train_dataset,
    prepare=lambda config, workdir, log: resolve_stgan_template(config, log),
  )
)
register(landmark_stage("hourglass"))


def check_dictionary(config) -> None:
  """The repair needs k = shape.num_neighbours exemplars: at least that many training faces."""
  train_source, _ = datasets.train_and_validation_sources(config)
  if len(train_source) < config.shape.num_neighbours:
    raise ValueError(
      f"config shape.num_neighbours={config.shape.num_neighbours}: the shape repair needs at "
      f"least that many training faces for the dictionary, the data has {len(train_source)}"
    )


register(Stage(name="dictionary", section="shape", run=build_dictionary, check=check_dictionary))
register(landmark_stage("resnet", in_all=False))  # the ablation baseline, on request


# --- joint fine-tuning of the GDNN and the hourglass ---------------------------------------------


def joint_setup(config, steps_per_epoch: int) -> Setup:
  """The GDNN and the hourglass, each with its own Adam (``config.joint``), started from the
  trained ``stgan`` and ``hourglass`` checkpoints of the workdir ``joint.init_from``."""
  _check_stgan_crop(config)
  generator, hourglass = models.generator(config), hourglass_module(config)
  g_optimizer = _optimizer(config, "joint", steps_per_epoch)
  h_optimizer = _optimizer(config, "joint", steps_per_epoch)
  g_rng, h_rng = jax.random.split(jax.random.key(config.seed))
  example = _example_images(config)
  g_state = init_model_state(generator, g_optimizer, g_rng, example)
  h_state = init_model_state(hourglass, h_optimizer, h_rng, example)
  if config.joint.init_from:
    trained = _trained_generator_and_hourglass(config, config.joint.init_from)
    g_state = _with_variables(g_state, g_optimizer, trained["generator"])
    h_state = _with_variables(h_state, h_optimizer, trained["hourglass"])
  state = new_train_state(config.seed, {"generator": g_state, "hourglass": h_state})
  modules = {"generator": generator, "hourglass": hourglass}
  return Setup(modules, {"generator": g_optimizer, "hourglass": h_optimizer}, state)


def _trained_generator_and_hourglass(config, workdir: str) -> dict:
  from msm_jax import model_io  # reads this registry

  trained = model_io.load_trained(config, workdir)
  if "stgan" not in trained.available:
    raise model_io.MissingStageError(
      f"the joint stage starts from a trained ST-GAN: no checkpoint in "
      f"{workdir}/checkpoints/stgan (train stages 'stgan,hourglass' first)"
    )
  return trained.variables


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
  if models.architecture(config, "hourglass").output != "heatmaps":
    raise ValueError(
      f"config hourglass.architecture={models.architecture_name(config, 'hourglass')!r}: the "
      "joint stage fine-tunes a heatmap network through the pipeline's decoder"
    )


register(
  Stage(
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
)
