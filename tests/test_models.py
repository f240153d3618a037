"""The model registry (msm_jax/models/__init__.py): networks built from the config by name,
and a new backbone added as one registry entry, trained, evaluated, packaged and loaded
without touching any other file (the README's "Extending msm-jax" steps)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msm_jax import models
from msm_jax.inference import pipeline, pretrained
from msm_jax.models.hourglass import StackedHourglass
from msm_jax.models.resnet import ResNet50
from msm_jax.train import model_io, packaging, stages
from tests import tiny_models


class ToyHeatmapNet(nn.Module):
  """A backbone as a user would add one: crops [B, S, S, 3] -> one stack of maps
  [1, B, S/2, S/2, L]."""

  num_landmarks: int
  width: int = 4

  @nn.compact
  def __call__(self, images, train: bool = False):
    x = nn.Conv(self.width, (3, 3), strides=2)(images)
    x = nn.BatchNorm(use_running_average=not train)(x)
    return nn.Conv(self.num_landmarks, (1, 1))(nn.relu(x))[None]


def test_the_config_names_the_network():
  config = tiny_models.tiny_config()
  assert isinstance(models.landmark_network(config, "hourglass", 68), StackedHourglass)
  assert isinstance(models.landmark_network(config, "resnet", 68), ResNet50)
  assert models.architecture(config, "resnet").output == "coordinates"
  del config.hourglass["architecture"]  # configs of packages made before the field existed
  assert models.architecture_name(config, "hourglass") == "stacked_hourglass"
  config.hourglass.architecture = "transformer"
  with pytest.raises(ValueError, match="hourglass.architecture='transformer'"):
    models.landmark_network(config, "hourglass", 68)
  with pytest.raises(ValueError, match="output must be one of"):
    models.Architecture(ToyHeatmapNet, "points")
  with pytest.raises(ValueError, match="already registered"):
    models.register("resnet50", models.ARCHITECTURES["resnet50"])


@pytest.fixture
def toy_architecture():
  models.register("toy", models.Architecture(lambda section, n: ToyHeatmapNet(n), "heatmaps"))
  yield "toy"
  del models.ARCHITECTURES["toy"]


def test_a_registered_backbone_trains_evaluates_and_ships(toy_architecture, tmp_path):
  config = tiny_models.tiny_config()
  config.hourglass.architecture = toy_architecture  # --config.hourglass.architecture=toy
  config.data.train_size, config.data.validation_size = 8, 0
  config.hourglass.batch_size, config.hourglass.epochs = 4, 1
  config.shape.dictionary_size = 8
  workdir = str(tmp_path / "run")
  for name in ("hourglass", "dictionary"):
    stages.STAGES[name].train(config, workdir, _mesh(), log=lambda _: None)
  trained = model_io.load_trained(config, workdir)
  assert isinstance(trained.networks["hourglass"], ToyHeatmapNet)
  assert trained.available == {"hourglass", "dictionary"}

  # The same network through the one-jit pipeline, and through a package round trip.
  package = pretrained.from_trained(trained, config)
  images = np.random.default_rng(0).integers(0, 255, (2, 140, 150, 3), np.uint8)
  boxes = np.array([[10, 10, 130, 130], [20, 5, 140, 125]], np.float32)
  live = package.infer(trained.variables, images, boxes)
  assert live["landmarks"].shape == (2, 68, 2) and np.isfinite(live["landmarks"]).all()
  packaging.write_package(package, str(tmp_path / "package"))
  loaded = pretrained.load_pretrained(str(tmp_path / "package"))
  assert isinstance(loaded.model.networks["hourglass"], ToyHeatmapNet)
  again = loaded.infer(loaded.model.variables, images, boxes)
  np.testing.assert_allclose(again["landmarks"], live["landmarks"], atol=1e-3)
  # The options follow the architecture: heatmaps, decoded after a softmax (the CE loss).
  options = pipeline.options_from_config(config)
  assert (options.landmark_output, options.heatmaps_are_logits) == ("heatmaps", True)


def _mesh():
  from msm_jax.train import parallel

  return parallel.data_mesh()


def test_generator_and_discriminator_follow_their_widths():
  config = tiny_models.tiny_config()
  config.stgan.generator_width, config.stgan.discriminator_width = 0.5, 0.25
  assert models.generator(config).width_multiplier == 0.5
  assert models.discriminator(config).width_multiplier == 0.25
  # The GDNN regresses theta [B, 2, 3] from a 128 crop.
  theta = jax.eval_shape(
    lambda: models.generator(config).init_with_output(
      jax.random.key(0), jnp.zeros((2, 128, 128, 3))
    )[0]
  )
  assert theta.shape == (2, 2, 3)
