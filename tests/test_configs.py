"""The configs of real data: the shipped recipe (`configs/recipe.py`) laid out over any number
of epochs, and every config passing the checks `train.py` runs before anything is written."""

import importlib

import pytest

from configs import base, recipe
from msm_jax.train import config_checks, stages


def test_the_recipe_at_its_layout_epochs_is_the_layout_itself():
  config = recipe.apply(base.get_config(), epochs=recipe.LAYOUT_EPOCHS)
  assert config.hourglass.lr_halve_epochs == recipe.LR_HALVINGS
  for field, knots in recipe.SCHEDULE.items():
    assert config.augment.schedule[field] == knots
    assert config.augment[field] == knots[0][1]


def test_the_recipe_spreads_its_schedules_over_the_epochs_in_proportion():
  epochs = 300
  config = recipe.apply(base.get_config(), epochs=epochs)
  assert config.hourglass.epochs == epochs
  # 36 of 104 epochs -> 103.85 of 300, kept to a tenth of an epoch.
  assert config.hourglass.lr_halve_epochs[0] == 103.8
  for field, knots in recipe.SCHEDULE.items():
    for (epoch, value), (scaled, same) in zip(knots, config.augment.schedule[field]):
      assert same == value and abs(scaled - epoch * epochs / recipe.LAYOUT_EPOCHS) <= 0.05


@pytest.mark.parametrize("name", ["300w", "300w_subset", "cofw", "wflw"])
def test_every_real_data_config_passes_the_checks_before_training(name, tmp_path):
  config = importlib.import_module(f"configs.{name}").get_config()
  config.data.root = str(tmp_path)
  config.data.validation_list = ""
  chosen = config_checks.check_config(config)
  assert chosen == ("hourglass", "dictionary")
  stages.STAGES["hourglass"].check(config)  # the network's maps fit data.heatmap_size
