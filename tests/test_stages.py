"""The stage registry (msm_jax/train/stages/): names and order, and a new stage added as one
`register` call, driven by train.py's own loop (checkpoints, metrics, resume)."""

import json
import os

import jax
import jax.numpy as jnp
import pytest

from msm_jax.data import input_pipeline
from msm_jax.train import run, stages
from msm_jax.train.state import ModelState, new_train_state
from tests import tiny_models


def test_names_and_training_order():
  assert list(stages.STAGES) == ["stgan", "hourglass", "dictionary", "resnet", "joint"]
  assert stages.parse_stages("all") == ("stgan", "hourglass", "dictionary")
  assert stages.parse_stages("resnet, hourglass") == ("hourglass", "resnet")
  assert stages.parse_stages("joint,all") == ("stgan", "hourglass", "dictionary", "joint")
  with pytest.raises(ValueError, match="choose 'all' or a comma list of stgan, hourglass"):
    stages.parse_stages("hourglas")
  with pytest.raises(ValueError, match="already registered"):
    stages.register(stages.Stage(name="hourglass"))


def _counting_setup(config, steps_per_epoch):
  state = new_train_state(
    config.seed,
    {"counter": ModelState(params={"faces": jnp.zeros(())}, batch_stats={}, opt_state=())},
  )
  return stages.Setup({"counter": None}, {"counter": None}, state)


def _counting_step(config, setup, mesh):
  """Counts the faces it is fed: the parameter after n steps is n x the batch size."""

  def step(state, batch):
    counter = state.models["counter"]
    seen = counter.params["faces"] + batch["images"].shape[0]
    counter = counter.replace(params={"faces": seen})
    return state.replace(step=state.step + 1, models={"counter": counter}), {"loss": seen}

  return jax.jit(step)


@pytest.fixture
def counting_stage():
  stages.register(
    stages.Stage(
      name="counter",
      section="hourglass",  # its batch size and epochs
      models=("counter",),
      setup=_counting_setup,
      step=_counting_step,
      data=input_pipeline.hourglass_train_dataset,
      in_all=False,
    ),
    before="resnet",
  )
  yield "counter"
  del stages.STAGES["counter"]


def test_a_registered_stage_runs_in_train_py(counting_stage, tmp_path):
  assert list(stages.STAGES)[-3:] == ["counter", "resnet", "joint"]
  config = tiny_models.tiny_config()
  config.stages = "counter"  # --config.stages=counter
  config.data.train_size, config.data.validation_size = 8, 0
  config.hourglass.batch_size, config.hourglass.epochs = 4, 2  # 4 steps
  config.evaluate_after_training, config.log_every_steps = False, 1
  workdir = str(tmp_path / "run")
  logs = []
  run.train(config, workdir, log=logs.append)
  lines = open(os.path.join(workdir, "metrics", "counter.jsonl")).read().splitlines()
  assert [json.loads(line)["loss"] for line in lines] == [4.0, 8.0, 12.0, 16.0]
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "counter"))
  # A second run resumes from the final checkpoint: nothing left to do.
  logs.clear()
  run.train(config, workdir, log=logs.append)
  assert any("[counter] resumed from step 4" in line for line in logs), logs


def test_a_run_that_cannot_finish_is_refused_before_anything_is_written(tmp_path):
  config = tiny_models.tiny_config()
  config.stages = "hourglass,dictionary"
  config.data.train_size, config.shape.num_neighbours = 8, 20
  workdir = tmp_path / "run"
  with pytest.raises(ValueError, match="shape.num_neighbours=20: .* the data has 8"):
    run.train(config, str(workdir), log=lambda _: None)
  assert not workdir.exists()  # no config.json describing a run that never happened
  config.stages = "hourglas"
  with pytest.raises(ValueError, match="stages='hourglas'"):
    run.train(config, str(workdir), log=lambda _: None)
  assert not workdir.exists()
