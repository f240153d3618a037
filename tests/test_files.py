"""Files written whole or not at all (msm_jax/files.py)."""

import json
import os

import pytest

from msm_jax import files


def test_write_json_makes_the_folder_and_round_trips(tmp_path):
  path = tmp_path / "new" / "folder" / "table.json"
  payload = {"faces": 2, "table": {"landmark box": {"HG": {"nme": 3.5, "found": 2}}}}
  files.write_json(str(path), payload)
  assert json.loads(path.read_text()) == payload
  assert os.listdir(path.parent) == ["table.json"]  # no temporary left behind


def test_a_write_that_fails_midway_leaves_the_old_file_and_no_temporary(tmp_path):
  path = tmp_path / "report.json"
  path.write_text('{"old": true}')
  with pytest.raises(ValueError):  # NaN refused by allow_nan=False after part was written
    files.write_json(str(path), {"a": list(range(1000)), "b": float("nan")}, allow_nan=False)
  assert path.read_text() == '{"old": true}'
  assert os.listdir(tmp_path) == ["report.json"]


def test_an_interrupt_inside_the_block_keeps_the_target_as_it_was(tmp_path):
  path = tmp_path / "overlay.png"
  with pytest.raises(KeyboardInterrupt):
    with files.atomic_write(str(path), "wb") as file:
      file.write(b"\x89PNG half")
      raise KeyboardInterrupt
  assert not path.exists() and os.listdir(tmp_path) == []


def test_a_full_disk_leaves_nothing_half_written(tmp_path, monkeypatch):
  path = tmp_path / "predictions.json"
  path.write_text("{}")

  def no_space(descriptor):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(files.os, "fsync", no_space)
  with pytest.raises(OSError, match="No space left"):
    files.write_text(str(path), "x" * 10_000)
  assert path.read_text() == "{}" and os.listdir(tmp_path) == ["predictions.json"]


def test_replace_folder_puts_the_new_folder_in_place_and_carries_the_chosen_old_files(tmp_path):
  target, staged = tmp_path / "package", tmp_path / "package.partial"
  target.mkdir()
  (target / "weights.npz").write_text("old weights")
  (target / "stale.bin").write_text("old export")
  (target / "CARD.md").write_text("the card")
  staged.mkdir()
  (staged / "weights.npz").write_text("new weights")
  files.replace_folder(str(staged), str(target), carried=lambda name: name.endswith(".md"))
  assert sorted(os.listdir(target)) == ["CARD.md", "weights.npz"]
  assert (target / "weights.npz").read_text() == "new weights"
  assert (target / "CARD.md").read_text() == "the card"
  assert sorted(os.listdir(tmp_path)) == ["package"]  # nothing staged or set aside is left
  # Into a folder that does not exist yet: a plain rename.
  fresh = tmp_path / "fresh.partial"
  fresh.mkdir()
  (fresh / "a").write_text("a")
  files.replace_folder(str(fresh), str(tmp_path / "fresh"), carried=lambda name: True)
  assert os.listdir(tmp_path / "fresh") == ["a"] and not fresh.exists()
