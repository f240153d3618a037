"""The training stages of `train.py`: ST-GAN (Algorithm 1), hourglass, shape dictionary.

The three are trained independently, as in the paper (Sec. IV-C). Each stage keeps its own
Orbax checkpoints under `<workdir>/checkpoints/<stage>` and resumes from the newest one, data
iterator included, so a killed run continues with exactly the batches it would have seen.
The dictionary stage writes `<workdir>/dictionary.npz` (plain arrays, no pickle).
"""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from msm_jax import geometry, landmarks, metrics, pipeline, shape_dictionary
from msm_jax.data import datasets, input_pipeline, stgan_pairs
from msm_jax.models.ddnn import DDNN
from msm_jax.models.gdnn import GDNN
from msm_jax.models.hourglass import StackedHourglass
from msm_jax.models.resnet import ResNet50
from msm_jax.train import checkpoints, loop, parallel, steps
from msm_jax.train.state import halving_adam, init_model_state, new_train_state

PAPER_STAGES = ("stgan", "hourglass", "dictionary")  # what "all" trains
STAGES = PAPER_STAGES + ("resnet",)  # + the Res-50 baseline of the ablation (Sec. IV-G)
DICTIONARY_FILE = "dictionary.npz"


def parse_stages(text: str) -> tuple[str, ...]:
  """A comma list of stage names ("all" = the paper's three), returned in training order."""
  names = set()
  for name in (part.strip() for part in text.split(",")):
    names.update(PAPER_STAGES if name == "all" else {name} if name else set())
  unknown = sorted(names - set(STAGES))
  if unknown or not names:
    raise ValueError(f"stages={text!r}: choose 'all' or a comma list of {', '.join(STAGES)}")
  return tuple(stage for stage in STAGES if stage in names)


def num_landmarks(config) -> int:
  return landmarks.get_scheme(config.data.scheme).num_points


def hourglass_module(config) -> StackedHourglass:
  return StackedHourglass(
    num_landmarks=num_landmarks(config),
    width=config.hourglass.width,
    num_stacks=config.hourglass.num_stacks,
    depth=config.hourglass.depth,
    stem_widths=tuple(config.hourglass.stem_widths),
    dtype=jnp.dtype(config.hourglass.compute_dtype),
  )


def resnet_module(config) -> ResNet50:
  return ResNet50(num_landmarks=num_landmarks(config), width=config.resnet.width)


def generator_module(config) -> GDNN:
  return GDNN(width=config.stgan.generator_width)


def discriminator_module(config) -> DDNN:
  return DDNN(width=config.stgan.discriminator_width)


def _example_images(config) -> jax.Array:
  size = config.data.crop_size
  return jnp.zeros((1, size, size, 3), jnp.float32)


def _host_config(config, batch_field: str) -> ml_collections.ConfigDict:
  """This host's share of the global batch (every host loads its own slice)."""
  host = ml_collections.ConfigDict(config.to_dict())
  section, field = batch_field.split(".")
  host[section][field] = parallel.host_batch_size(config[section][field])
  return host


def _manager(workdir: str, stage: str, config):
  return checkpoints.checkpoint_manager(
    os.path.join(workdir, "checkpoints", stage),
    config.checkpoint.every_steps,
    config.checkpoint.keep,
  )


def _resume(manager, state, iterator, log, stage):
  restored = checkpoints.restore_latest(manager, state)
  if restored is None:
    return state
  state, data_state, _ = restored
  iterator.set_state(data_state)
  log(f"[{stage}] resumed from step {int(state.step)}")
  return state


def hourglass_states(config, steps_per_epoch: int):
  """(module, optimizer, fresh TrainState) of the hourglass stage."""
  module = hourglass_module(config)
  optimizer = halving_adam(
    config.hourglass.learning_rate, steps_per_epoch, config.hourglass.lr_halve_epochs
  )
  rng = jax.random.key(config.seed)
  model_state = init_model_state(module, optimizer, rng, _example_images(config))
  if config.hourglass.get("init_from", ""):
    model_state = _start_from_package(model_state, module, optimizer, config)
  return module, optimizer, new_train_state(config.seed, {"hourglass": model_state})


def _start_from_package(model_state, module, optimizer, config):
  """The hourglass's parameters and BatchNorm statistics from a pretrained package (fresh
  optimiser state): fine-tuning. A checkpoint in the workdir still takes precedence."""
  from msm_jax import pretrained  # it imports this module

  variables = pretrained.package_network_variables(
    config.hourglass.init_from, "hourglass", module, config
  )
  return model_state.replace(
    params=variables["params"],
    batch_stats=variables.get("batch_stats", {}),
    opt_state=optimizer.init(variables["params"]),
  )


def resnet_states(config, steps_per_epoch: int):
  """(module, optimizer, fresh TrainState) of the Res-50 baseline."""
  module = resnet_module(config)
  optimizer = halving_adam(
    config.resnet.learning_rate, steps_per_epoch, config.resnet.lr_halve_epochs
  )
  state = new_train_state(
    config.seed,
    {
      "resnet": init_model_state(
        module, optimizer, jax.random.key(config.seed), _example_images(config)
      )
    },
  )
  return module, optimizer, state


def stgan_states(config, steps_per_epoch: int):
  """(generator, discriminator, their optimizers, fresh TrainState) of the ST-GAN stage."""
  generator, discriminator = generator_module(config), discriminator_module(config)
  make_optimizer = lambda learning_rate: halving_adam(
    learning_rate, steps_per_epoch, config.stgan.lr_halve_epochs
  )
  g_optimizer = make_optimizer(config.stgan.learning_rate)
  d_optimizer = make_optimizer(config.stgan.discriminator_learning_rate)
  g_rng, d_rng = jax.random.split(jax.random.key(config.seed))
  state = new_train_state(
    config.seed,
    {
      "generator": init_model_state(generator, g_optimizer, g_rng, _example_images(config)),
      "discriminator": init_model_state(discriminator, d_optimizer, d_rng, _example_images(config)),
    },
  )
  return generator, discriminator, g_optimizer, d_optimizer, state


def _steps_per_epoch(source, batch_size: int) -> int:
  return max(1, len(source) // batch_size)


def predict_crop_landmarks(config, model_name: str, module, variables, crops):
  """The landmark network alone on [B, S, S, 3] float crops -> [B, L, 2] crop pixels, decoded
  exactly as the inference pipeline does."""
  if model_name == "resnet":
    return pipeline.normalised_to_crop(
      module.apply(variables, crops, train=False), config.data.crop_size
    )
  options = pipeline.PipelineOptions(
    crop_size=config.data.crop_size,
    heatmap_size=config.data.heatmap_size,
    heatmaps_are_logits=config.hourglass.loss == "softmax_cross_entropy",
    decode_blur_sigma=config.hourglass.sigma,
  )
  return pipeline.hourglass_points(module, variables, crops, options)[1]


def landmark_validation_nme(config, model_name: str, module):
  """A function (state, source) -> {"nme_inter_ocular": mean NME (%)} on ground-truth-box
  crops, for the hourglass or the Res-50 baseline."""
  scheme = landmarks.get_scheme(config.data.scheme)
  forward = jax.jit(
    lambda variables, crops: predict_crop_landmarks(
      config, model_name, module, variables, crops.astype(jnp.float32) / 255.0
    )
  )

  def evaluate(state, source):
    variables = state.models[model_name].variables
    nmes = []
    for batch in input_pipeline.eval_dataset(
      source, config, batch_size=config.eval.batch_size, crop_box="landmarks", worker_count=0
    ):
      pred = np.asarray(forward(variables, batch["images"]))
      nmes.append(metrics.nme(pred, batch["landmarks"], scheme, "inter_ocular"))
    return {"nme_inter_ocular": 100.0 * float(np.mean(np.concatenate(nmes)))}

  return evaluate


def template_distance(config, generator):
  """A function state -> mean distance (px) of the warped anchors (pupils, mouth) to the
  canonical template, on detector-box crops: how canonical the ST-GAN's output is."""
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


def _run_stage(
  config,
  workdir: str,
  mesh,
  log,
  *,
  stage: str,
  section: str,
  make_dataset,
  make_states,
  make_step,
  make_eval,
):
  """Shared driver: sources, schedule, state, data iterator, resume, step, loop."""
  train_source, validation_source = datasets.train_and_validation_sources(config)
  batch_size = config[section].batch_size
  parallel.check_batch_size(batch_size, mesh, f"{section}.batch_size")
  steps_per_epoch = _steps_per_epoch(train_source, batch_size)
  total_steps = int(config[section].epochs * steps_per_epoch)
  states = make_states(config, steps_per_epoch)
  state = parallel.replicate(states[-1], mesh)
  iterator = iter(
    make_dataset(
      train_source,
      _host_config(config, f"{section}.batch_size"),
      shard_index=jax.process_index(),
      shard_count=jax.process_count(),
    )
  )
  manager = _manager(workdir, stage, config)
  state = _resume(manager, state, iterator, log, stage)
  log(
    f"[{stage}] {len(train_source)} faces, {steps_per_epoch} steps/epoch, {total_steps} "
    f"steps of batch {batch_size} on {mesh.devices.size} device(s)"
  )
  eval_fn = make_eval(states) if validation_source is not None else None
  return loop.train_stage(
    stage=stage,
    step_fn=make_step(states),
    state=state,
    batches=iterator,
    data_iterator=iterator,
    manager=manager,
    mesh=mesh,
    total_steps=total_steps,
    batch_size=batch_size,
    workdir=workdir,
    log_every=config.log_every_steps,
    eval_fn=eval_fn and (lambda state: eval_fn(state, validation_source)),
    eval_every=config.eval_every_steps,
    log=log,
  )


# Faces whose ground-truth-box crops define the ST template (the mean moves < 0.1 px beyond).
TEMPLATE_SHAPES = 1000


def resolve_stgan_template(config, log=print):
  """``config`` with the ST template fixed (``stgan.template_source``, see configs/base.py)."""
  if config.stgan.template_source != "training_crops":
    return config  # "fixed"; StganPairOptions.from_config rejects anything else
  train_source, _ = datasets.train_and_validation_sources(config)
  shapes = datasets.training_shapes(config, train_source, limit=TEMPLATE_SHAPES)
  anchors = stgan_pairs.CanonicalAnchors.from_scheme(landmarks.get_scheme(config.data.scheme))
  config = stgan_pairs.resolve_template(config, shapes, anchors)
  points = ", ".join(
    f"{name} ({x:.1f}, {y:.1f})"
    for name, (x, y) in zip(
      ("left pupil", "right pupil", "mouth"),
      (
        config.stgan.template_left_pupil,
        config.stgan.template_right_pupil,
        config.stgan.template_mouth,
      ),
    )
  )
  log(f"[stgan] template from {len(shapes)} ground-truth-box crops (128 frame): {points}")
  return config


def train_stgan(config, workdir: str, mesh, log=print):
  """Stage 1 (Sec. III-A, Algorithm 1): GDNN + DDNN on (I_fake, I_real, theta*)."""
  config = resolve_stgan_template(config, log)
  return _run_stage(
    config,
    workdir,
    mesh,
    log,
    stage="stgan",
    section="stgan",
    make_dataset=input_pipeline.stgan_train_dataset,
    make_states=stgan_states,
    make_step=lambda states: steps.make_stgan_step(
      *states[:4],
      theta_weight=config.stgan.theta_weight,
      adversarial_weight=config.stgan.adversarial_weight,
      mesh=mesh,
      theta_loss_units=config.stgan.theta_loss_units,
      real_label=config.stgan.real_label,
      adversarial_warmup_steps=config.stgan.adversarial_warmup_steps,
    ),
    make_eval=lambda states: template_distance(config, states[0]),
  )


def train_hourglass(config, workdir: str, mesh, log=print):
  """Stage 2 (Sec. III-B): heatmap regression with intermediate supervision."""
  return _run_stage(
    config,
    workdir,
    mesh,
    log,
    stage="hourglass",
    section="hourglass",
    make_dataset=input_pipeline.hourglass_train_dataset,
    make_states=hourglass_states,
    make_step=lambda states: steps.make_hourglass_step(
      states[0],
      states[1],
      loss_name=config.hourglass.loss,
      sigma=config.hourglass.sigma,
      crop_size=config.data.crop_size,
      heatmap_size=config.data.heatmap_size,
      mesh=mesh,
    ),
    make_eval=lambda states: landmark_validation_nme(config, "hourglass", states[0]),
  )


def train_resnet(config, workdir: str, mesh, log=print):
  """The Res-50 coordinate-regression baseline (Sec. IV-G), on the hourglass's crops."""
  return _run_stage(
    config,
    workdir,
    mesh,
    log,
    stage="resnet",
    section="resnet",
    make_dataset=input_pipeline.hourglass_train_dataset,
    make_states=resnet_states,
    make_step=lambda states: steps.make_regression_step(
      states[0], states[1], crop_size=config.data.crop_size, mesh=mesh
    ),
    make_eval=lambda states: landmark_validation_nme(config, "resnet", states[0]),
  )


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
