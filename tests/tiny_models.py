"""Tiny MSM models for tests: random weights of init-like scale, without running `init`.

Running a network's init compiles it (tens of seconds on 2 busy cores) and nothing in these
tests depends on how the weights were drawn, so the variables are filled from the abstract
shapes instead.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from configs import synthetic as synthetic_config  # noqa: E402
from msm_jax.core import landmarks, shape_dictionary  # noqa: E402
from msm_jax.data import synthetic  # noqa: E402
from msm_jax.inference import detection, pipeline, pretrained  # noqa: E402
from msm_jax.train import checkpoints, stages  # noqa: E402

# A GDNN output that is not the identity, so the ST stage visibly changes the landmarks.
ZOOM_SHIFT_THETA = np.array([0.9, 0.1, 0.05, -0.1, 0.9, -0.03], np.float32)


# The test widths, as `--config.<key>=<value>` overrides of configs/synthetic.py can give them
# (plus hourglass.stem_widths = (4, 4, 8)).
TINY_OVERRIDES = {
  "hourglass.width": 8,
  "hourglass.depth": 2,
  "stgan.generator_width": 0.25,
  "stgan.discriminator_width": 0.0625,
  "shape.num_neighbours": 5,
}


def tiny_config():
  """The synthetic config at the test widths."""
  config = synthetic_config.get_config()
  for key, value in TINY_OVERRIDES.items():
    section, field = key.split(".")
    config[section][field] = value
  config.hourglass.stem_widths = (4, 4, 8)
  # A random model's landmarks are anywhere: a crop fitted to them tests nothing here (the
  # re-crop has its own tests in test_pipeline.py and test_robustness.py).
  config.inference.recrop_passes = 0
  return config


def random_like(abstract, rng: np.random.Generator):
  """Random values for a pytree of shapes: BatchNorm variances and scales near 1, kernels
  with 1/sqrt(fan-in) spread, optimiser state and integers zero."""

  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    if "opt_state" in name or not jnp.issubdtype(leaf.dtype, jnp.floating):
      return jnp.zeros(leaf.shape, leaf.dtype)
    if name.endswith("['var']"):
      return jnp.asarray(rng.uniform(0.5, 1.5, leaf.shape), leaf.dtype)
    if name.endswith("['scale']"):
      return jnp.asarray(1 + 0.1 * rng.normal(size=leaf.shape), leaf.dtype)
    fan_in = max(1, int(np.prod(leaf.shape[:-1])))
    return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(fan_in), leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, abstract)


def random_variables(module, rng: np.random.Generator, crop_size: int = 128):
  abstract = jax.eval_shape(
    lambda: module.init(jax.random.key(0), jnp.zeros((1, crop_size, crop_size, 3)), train=False)
  )
  return random_like(abstract, rng)


def face_dictionary(rng: np.random.Generator, size: int = 12) -> np.ndarray:
  """Face-like exemplars: a jittered ellipse of 68 points in the 128 canonical frame."""
  angles = np.linspace(0, 2 * np.pi, 68, endpoint=False)
  base = np.stack([64 + 40 * np.cos(angles), 64 + 48 * np.sin(angles)], -1)
  return (base + rng.normal(0, 2.0, (size, 68, 2))).astype(np.float32)


def tiny_pretrained(seed: int = 0, thresholds=(0.9, 0.95)) -> pretrained.PretrainedModel:
  """A tiny random MSM with the ST stage on (a fixed zoom + shift theta) and a random
  dictionary; mid-range thresholds give some reliable and some repaired points."""
  config = tiny_config()
  rng = np.random.default_rng(seed)
  generator, hourglass = stages.generator_module(config), stages.hourglass_module(config)
  generator_variables = random_variables(generator, rng)
  generator_variables["params"]["conv11"]["bias"] = jnp.asarray(ZOOM_SHIFT_THETA)
  generator_variables["params"]["conv11"]["kernel"] *= 0.0
  variables = {
    "generator": generator_variables,
    "hourglass": random_variables(hourglass, rng),
    "dictionary": jnp.asarray(face_dictionary(rng)),
    "thresholds": jnp.asarray(
      landmarks.region_thresholds(landmarks.get_scheme("300w"), *thresholds)
    ),
  }
  trained = pipeline.TrainedModel(
    generator, {"hourglass": hourglass}, variables, frozenset({"stgan", "hourglass", "dictionary"})
  )
  return pretrained.from_trained(trained, config)


def detectable_face(cascade: str) -> dict:
  """A rendered frontal face (`synthetic.render_face`'s dict) that the Haar cascade finds;
  the cascade finds about a third of the rendered faces."""
  settings = dict(
    image_size=256,
    max_roll_deg=0.0,
    max_yaw_deg=0.0,
    max_pitch_deg=0.0,
    occlusion_prob=0.0,
    blur_prob=0.0,
    max_noise_std=0.0,
    background_clutter=0,
  )
  for index in range(12):
    face = synthetic.render_face(0, index, settings)
    if len(detection.detect_faces(face["image"], cascade)):
      return face
  pytest.fail(f"{cascade} found none of 12 rendered faces")


def face_records(count: int = 2, seed: int = 3) -> list:
  """Rendered synthetic faces as dataset records (pixels in the record, no files)."""
  from msm_jax.data.records import FaceRecord, box_from_landmarks

  records = []
  for index in range(count):
    face = synthetic.render_face(seed, index, dict(image_size=192, occlusion_prob=0.0))
    records.append(
      FaceRecord(
        image_path=None,
        landmarks=face["landmarks"],
        box=box_from_landmarks(face["landmarks"]),
        subset=f"synthetic {index}",  # one "image" per face
        image=face["image"],
      )
    )
  return records


def save_stage(workdir, stage, state, config):
  """`state` as step 1 of `stage` in `workdir`, as a training run checkpoints it."""
  manager = checkpoints.checkpoint_manager(
    os.path.join(workdir, "checkpoints", stage),
    config.checkpoint.every_steps,
    config.checkpoint.keep,
  )
  checkpoints.save(manager, 1, state, {}, {}, force=True)
  manager.close()


def random_state(stage, config, seed):
  """A fresh TrainState of a registered stage with random weights (this module)."""
  abstract = jax.eval_shape(lambda: stages.STAGES[stage].setup(config, 1).state)
  return random_like(abstract, np.random.default_rng(seed))


def make_workdir(workdir, config, with_stgan=True):
  """A training workdir as train.py leaves it: random states, a random dictionary."""
  save_stage(workdir, "hourglass", random_state("hourglass", config, 0), config)
  if with_stgan:
    state = random_state("stgan", config, 1)
    generator = state.models["generator"]
    params = jax.tree.map(lambda x: x, generator.params)
    params["conv11"]["bias"] = jnp.asarray(ZOOM_SHIFT_THETA)
    params["conv11"]["kernel"] = jnp.zeros_like(params["conv11"]["kernel"])
    state = state.replace(models=dict(state.models, generator=generator.replace(params=params)))
    save_stage(workdir, "stgan", state, config)
  rng = np.random.default_rng(0)
  angles = np.linspace(0, 2 * np.pi, 68, endpoint=False)
  mean = np.stack([64 + 40 * np.cos(angles), 64 + 48 * np.sin(angles)], -1)
  dictionary = mean + rng.normal(0, 2.0, (12, 68, 2))
  shape_dictionary.save_dictionary(os.path.join(workdir, stages.DICTIONARY_FILE), dictionary)
