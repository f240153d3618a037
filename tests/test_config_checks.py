"""One check of the whole training config before anything is written (msm_jax/train/
config_checks.py): each bad value is one ConfigError naming the field, and the workdir is not
even created."""

import os

import pytest

from msm_jax.train import run
from msm_jax.train.config_checks import ConfigError, check_config
from tests import tiny_models


def _config():
  config = tiny_models.tiny_config()
  config.stages = "hourglass,dictionary"
  config.evaluate_after_training = False
  return config


BAD_VALUES = {
  "stages": ("foo", "stages='foo'"),
  "shape.num_neighbours": (1000, "shape.num_neighbours=1000"),
  "data.dataset": ("bogus", "data.dataset='bogus'"),
  "data.scheme": ("bogus", "'bogus'"),
  "hourglass.architecture": ("bogus", "hourglass.architecture='bogus'"),
  "hourglass.batch_size": (0, "hourglass.batch_size=0"),
  "hourglass.epochs": (-1, "hourglass.epochs=-1"),
  "hourglass.loss": ("bogus", "hourglass.loss='bogus'"),
  "hourglass.kernels": ("bogus", "kernels 'bogus'"),
  "data.box_margin": (-1.25, "data.box_margin=-1.25"),
  "augment.schedule.scale": (((5, 0.1), (2, 0.2)), "augment.schedule.scale="),
}


@pytest.mark.parametrize("field", BAD_VALUES)
def test_a_bad_value_is_one_line_naming_the_field_before_anything_is_written(tmp_path, field):
  value, named = BAD_VALUES[field]
  config = _config()
  section, _, name = field.rpartition(".")
  (config[section] if section else config)[name] = value
  workdir = tmp_path / "run"
  with pytest.raises(ConfigError) as error:
    run.train(config, str(workdir), log=lambda _: None)
  message = str(error.value)
  assert named in message and "\n" not in message, message
  assert not workdir.exists()  # no config.json that would refuse the corrected rerun


def test_a_missing_data_folder_is_named(tmp_path):
  config = _config()
  config.data.dataset, config.data.root = "300w", str(tmp_path / "nonexistent")
  with pytest.raises(ConfigError, match="data.root=.*nonexistent.*no such folder"):
    check_config(config)


def test_a_heatmap_network_whose_maps_do_not_fit_is_refused_before_training(tmp_path):
  config = _config()
  config.data.heatmap_size = config.data.crop_size // 4  # the network makes crop / 2 maps
  with pytest.raises(ConfigError, match="heatmap_size"):
    run.train(config, str(tmp_path / "run"), log=lambda _: None)
  assert not (tmp_path / "run").exists()


def test_a_good_config_passes_and_returns_the_stages_in_training_order():
  config = _config()
  config.stages = "dictionary,hourglass"
  assert check_config(config) == ("hourglass", "dictionary")


def test_train_py_reports_a_bad_value_in_one_line_with_exit_status_2(tmp_path):
  import subprocess
  import sys

  result = subprocess.run(
    [
      sys.executable,
      os.path.join(tiny_models.ROOT, "train.py"),
      "--config",
      os.path.join(tiny_models.ROOT, "configs", "synthetic.py"),
      "--workdir",
      str(tmp_path / "run"),
      "--config.hourglass.batch_size=0",
    ],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 2, result.stderr[-2000:]
  assert result.stderr.strip() == (
    "error: config hourglass.batch_size=0: expected an integer >= 1"
  ), result.stderr[-2000:]
  assert not (tmp_path / "run").exists()
