"""Restoring checkpoints: a damaged newest step falls back to the next older one (nothing is
deleted); a checkpoint of another model is a clear error at once."""

import glob
import os
import warnings

import jax.numpy as jnp
import numpy as np
import pytest

from msm_jax.train import checkpoints
from msm_jax.train.state import ModelState, new_train_state


def _toy_state(value: float, name: str = "w", size: int = 3):
  params = {name: jnp.full((size,), value, jnp.float32)}
  return new_train_state(0, {"toy": ModelState(params=params, batch_stats={}, opt_state=())})


def _two_steps(directory) -> None:
  """Steps 1 and 2 of a toy run: w = [1, 1, 1] then [2, 2, 2]."""
  manager = checkpoints.checkpoint_manager(str(directory), every_steps=1, keep=5)
  for step in (1, 2):
    checkpoints.save(manager, step, _toy_state(step), {"position": step}, {}, force=True)
  manager.wait_until_finished()
  manager.close()


def _truncate(pattern: str) -> None:
  paths = glob.glob(pattern)
  assert paths, pattern  # the layout Orbax writes: a damage that misses would test nothing
  for path in paths:
    open(path, "w").close()


# Orbax's step layout: <step>/state/_METADATA (the tree), <step>/state/d/* (the arrays, an
# OCDBT store), <step>/data/metadata (the iterator state, JSON).
DAMAGES = {
  "tree metadata deleted": lambda step: os.remove(f"{step}/state/_METADATA"),
  "array files truncated": lambda step: _truncate(f"{step}/state/d/*"),
  "iterator JSON truncated": lambda step: _truncate(f"{step}/data/metadata"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_newest_step_falls_back_to_the_previous_one(tmp_path, damage):
  _two_steps(tmp_path)
  DAMAGES[damage](tmp_path / "2")
  files_before = sorted(glob.glob(f"{tmp_path}/2/**", recursive=True))
  manager = checkpoints.checkpoint_manager(str(tmp_path), every_steps=1, keep=5)
  with pytest.warns(checkpoints.CheckpointFallbackWarning) as caught:
    state, data_state, _ = checkpoints.restore_latest(manager, _toy_state(0))
  assert [float(w) for w in state.models["toy"].params["w"]] == [1.0, 1.0, 1.0]
  assert data_state == {"position": 1}
  (message,) = [
    str(warning.message)
    for warning in caught
    if issubclass(warning.category, checkpoints.CheckpointFallbackWarning)
  ]
  assert message.startswith(f"checkpoint {tmp_path}/2 cannot be restored, trying an older step: ")
  assert "\n" not in message
  assert sorted(glob.glob(f"{tmp_path}/2/**", recursive=True)) == files_before  # kept as is
  assert manager.all_steps() == [1, 2]


def test_no_restorable_step_is_an_error_naming_every_step(tmp_path):
  _two_steps(tmp_path)
  for step in (1, 2):
    os.remove(tmp_path / str(step) / "state" / "_METADATA")
  manager = checkpoints.checkpoint_manager(str(tmp_path), every_steps=1, keep=5)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", checkpoints.CheckpointFallbackWarning)
    with pytest.raises(checkpoints.CheckpointUnreadableError) as error:
      checkpoints.restore_latest(manager, _toy_state(0))
  message = str(error.value)
  assert message.startswith(f"no checkpoint in {tmp_path} can be restored: step 2 (")
  assert "; step 1 (" in message
  assert sorted(os.listdir(tmp_path)) == ["1", "2"]


@pytest.mark.parametrize(
  "other", [_toy_state(0, size=4), _toy_state(0, name="v")], ids=["shape", "name"]
)
def test_another_model_is_an_immediate_error_not_a_fallback(tmp_path, other):
  _two_steps(tmp_path)
  manager = checkpoints.checkpoint_manager(str(tmp_path), every_steps=1, keep=5)
  with warnings.catch_warnings():
    warnings.simplefilter("error", checkpoints.CheckpointFallbackWarning)
    with pytest.raises(checkpoints.CheckpointMismatchError, match="does not fit") as error:
      checkpoints.restore_latest(manager, other)
  assert f"checkpoint {tmp_path}/2 does not fit" in str(error.value)  # the newest, at once


def test_no_checkpoint_is_none(tmp_path):
  manager = checkpoints.checkpoint_manager(str(tmp_path), every_steps=1, keep=5)
  assert checkpoints.restore_latest(manager, _toy_state(0)) is None


def _flip_a_bit_in_the_middle(path: str) -> None:
  with open(path, "r+b") as file:
    data = bytearray(file.read())
    data[len(data) // 2] ^= 0x10
    file.seek(0)
    file.write(data)


def _random_state(seed: int):
  """4,096 random float32 values: incompressible, so the middle of a data file is array bytes."""
  values = np.random.default_rng(seed).normal(size=4096).astype(np.float32)
  params = {"w": jnp.asarray(values)}
  return new_train_state(0, {"toy": ModelState(params=params, batch_stats={}, opt_state=())})


def test_bits_flipped_in_the_newest_step_fall_back_naming_the_step(tmp_path):
  """One bit flipped in the middle of every array file of step 2: whatever the files still
  decode to, step 2's values are never returned; step 1's are, with a warning."""
  manager = checkpoints.checkpoint_manager(str(tmp_path), every_steps=1, keep=5)
  for step in (1, 2):
    checkpoints.save(manager, step, _random_state(step), {}, {}, force=True)
  manager.close()
  files = glob.glob(f"{tmp_path}/2/state/**/d/*", recursive=True)
  paths = [path for path in files if os.path.getsize(path) > 8192]
  assert paths
  for path in paths:
    _flip_a_bit_in_the_middle(path)
  manager = checkpoints.checkpoint_manager(str(tmp_path), every_steps=1, keep=5)
  with pytest.warns(checkpoints.CheckpointFallbackWarning) as caught:
    state, _, _ = checkpoints.restore_latest(manager, _random_state(0))
  expected = _random_state(1).models["toy"].params["w"]
  assert bool(jnp.all(state.models["toy"].params["w"] == expected))
  messages = [str(warning.message) for warning in caught]
  assert any(f"{tmp_path}/2 cannot be restored" in message for message in messages), messages


def test_a_checksum_mismatch_alone_is_a_damaged_step(tmp_path, monkeypatch):
  """Files that decode to other values than were saved (the recorded checksum differs)."""
  _two_steps(tmp_path)
  manager = checkpoints.checkpoint_manager(str(tmp_path), every_steps=1, keep=5)
  restore = manager.restore

  def altered(step, args):
    restored = restore(step, args=args)
    if step == 2:  # one value changed, as a flipped bit that still decodes would
      models = {"toy": restored["state"].models["toy"].replace(params={"w": jnp.full((3,), 7.0)})}
      restored = {**restored, "state": restored["state"].replace(models=models)}
    return restored

  monkeypatch.setattr(manager, "restore", altered)
  with pytest.warns(checkpoints.CheckpointFallbackWarning, match=r"array .*'w'.* checksum"):
    state, data_state, _ = checkpoints.restore_latest(manager, _toy_state(0))
  assert data_state == {"position": 1}


def test_a_training_run_sets_a_damaged_step_aside_and_can_save_it_again(tmp_path):
  """The last step's manifest emptied: the run falls back to step 1, renames step 2's folder
  (kept) and saves step 2 again, where it used to die with StepAlreadyExistsError."""
  _two_steps(tmp_path)
  _truncate(f"{tmp_path}/2/state/manifest.ocdbt")
  manager = checkpoints.checkpoint_manager(str(tmp_path), every_steps=1, keep=5)
  with pytest.warns(checkpoints.CheckpointFallbackWarning) as caught:
    state, _, _ = checkpoints.restore_latest(manager, _toy_state(0), set_aside_damaged=True)
  assert float(state.models["toy"].params["w"][0]) == 1.0
  assert os.path.isdir(tmp_path / "damaged_step_2") and not (tmp_path / "2").exists()
  assert any("set aside as" in str(warning.message) for warning in caught)
  assert manager.all_steps() == [1]
  assert checkpoints.save(manager, 2, _toy_state(2), {"position": 2}, {}, force=True)
  manager.wait_until_finished()
  restored, _, _ = checkpoints.restore_latest(manager, _toy_state(0))
  assert float(restored.models["toy"].params["w"][0]) == 2.0
