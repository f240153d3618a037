"""Flax Linen models: GDNN and DDNN (ST-GAN, Tables I-II), stacked hourglass (Fig. 3-4),
Res-50 baseline; and the registry that builds them from a config by name.

A landmark network is chosen by the ``architecture`` field of its config section
(``config.hourglass.architecture``, ``config.resnet.architecture``); training, evaluation,
the pretrained loader and the export all build it through :func:`landmark_network`. An
architecture says what its network outputs, which decides how it is trained and decoded:

  "heatmaps"     stacked maps [S, B, h, w, L] (h = crop / 2b, b = space_to_depth): heatmap
                 loss, Eq. 8-9, repair
  "coordinates"  [B, L, 2] normalised crop coordinates in [-1, 1]: L1 loss, no scores

A new backbone is its own module file plus one :func:`register` call (README, "Extending").
"""

import dataclasses
from typing import Callable

import flax.linen as nn
import jax.numpy as jnp

from msm_jax.models import layers
from msm_jax.models.ddnn import DDNN
from msm_jax.models.gdnn import GDNN
from msm_jax.models.hourglass import StackedHourglass
from msm_jax.models.resnet import ResNet50

OUTPUTS = ("heatmaps", "coordinates")


@dataclasses.dataclass(frozen=True)
class Architecture:
  """build(section, num_landmarks) -> Flax module; section: the network's config section."""

  build: Callable[..., nn.Module]
  output: str

  def __post_init__(self):
    if self.output not in OUTPUTS:
      raise ValueError(f"Architecture output must be one of {OUTPUTS}, got {self.output!r}")


def _stacked_hourglass(section, num_landmarks: int) -> nn.Module:
  return StackedHourglass(
    num_landmarks=num_landmarks,
    width=section.width,
    num_stacks=section.num_stacks,
    depth=section.depth,
    stem_widths=tuple(section.stem_widths),
    space_to_depth=int(section.get("space_to_depth", 1)),
    dtype=jnp.dtype(section.get("compute_dtype", "float32")),
    kernels=layers.resolve_kernels(section.get("kernels", layers.AUTO_KERNELS)),
  )


def _resnet50(section, num_landmarks: int) -> nn.Module:
  return ResNet50(num_landmarks=num_landmarks, width_multiplier=section.width)


ARCHITECTURES: dict[str, Architecture] = {
  "stacked_hourglass": Architecture(_stacked_hourglass, "heatmaps"),
  "resnet50": Architecture(_resnet50, "coordinates"),
}
# A config without an architecture field: the section name decides.
DEFAULT_ARCHITECTURE = {"hourglass": "stacked_hourglass", "resnet": "resnet50"}


def register(name: str, architecture: Architecture) -> None:
  """Make ``name`` a value of ``config.<section>.architecture``."""
  if name in ARCHITECTURES:
    raise ValueError(f"architecture {name!r} is already registered")
  ARCHITECTURES[name] = architecture


def architecture_name(config, section: str) -> str:
  name = config[section].get("architecture", "") or DEFAULT_ARCHITECTURE.get(section, "")
  if name not in ARCHITECTURES:
    raise ValueError(
      f"config {section}.architecture={name!r}: expected one of {', '.join(sorted(ARCHITECTURES))}"
    )
  return name


def architecture(config, section: str) -> Architecture:
  """The registered architecture of ``config.<section>``."""
  return ARCHITECTURES[architecture_name(config, section)]


def landmark_network(config, section: str, num_landmarks: int) -> nn.Module:
  """The landmark network of ``config.<section>`` (e.g. "hourglass"), built by name."""
  return architecture(config, section).build(config[section], num_landmarks)


def generator(config) -> nn.Module:
  """The ST-GAN's GDNN (Table I) at ``stgan.generator_width``."""
  return GDNN(width_multiplier=config.stgan.generator_width)


def discriminator(config) -> nn.Module:
  """The ST-GAN's DDNN (Table II) at ``stgan.discriminator_width``."""
  return DDNN(width_multiplier=config.stgan.discriminator_width)
