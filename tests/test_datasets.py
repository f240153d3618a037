"""From config.data to sources: synthetic splits, validation carve-out, folder evaluation."""

import dataclasses
import os

import numpy as np
import pytest
from PIL import Image

from configs import synthetic as synthetic_config  # noqa: E402
from msm_jax.data import datasets, input_pipeline  # noqa: E402
from msm_jax.data.records import FaceRecord  # noqa: E402


def _tiny_synthetic():
  config = synthetic_config.get_config()
  config.data.train_size, config.data.validation_size, config.data.test_size = 6, 2, 3
  return config


def test_synthetic_splits_are_disjoint_ranges_of_one_generator():
  config = _tiny_synthetic()
  train, validation = datasets.train_and_validation_sources(config)
  evaluation = datasets.eval_sources(config)
  assert (len(train), len(validation)) == (6, 2)
  assert {name: len(source) for name, source in evaluation.items()} == {
    "test": 3,
    "occluded_test": 3,
  }
  # train 0-5, validation 6-7, test 8-10, occluded_test 11-13: face 8 of the generator is
  # test face 0, and it differs from training face 0.
  assert "face 8 of seed 0" in evaluation["test"][0]["name"]
  assert "face 11 of seed 0" in evaluation["occluded_test"][0]["name"]
  assert not np.array_equal(train[0]["landmarks"], evaluation["test"][0]["landmarks"])
  # The clean test split has no occluders; the occluded one has them on every face.
  assert not any(evaluation["test"][i]["occluded"].any() for i in range(3))
  assert all(evaluation["occluded_test"][i]["occluded"].any() for i in range(3))


def test_training_shapes_keep_the_first_faces_up_to_the_limit():
  train, _ = datasets.train_and_validation_sources(_tiny_synthetic())
  shapes = datasets.training_shapes(None, train)
  assert shapes.shape == (6, 68, 2)
  np.testing.assert_array_equal(shapes[1], train[1]["landmarks"])
  np.testing.assert_array_equal(datasets.training_shapes(None, train, limit=4), shapes[:4])
  records = [_record("a.jpg"), _record("b.jpg"), _record("c.jpg")]
  records[1] = dataclasses.replace(records[1], landmarks=records[1].landmarks + 2)
  from_records = datasets.training_shapes(None, input_pipeline.RecordSource(records), limit=2)
  np.testing.assert_array_equal(from_records, [records[0].landmarks, records[1].landmarks])


def _record(name):
  return FaceRecord(
    image_path=name,
    landmarks=np.zeros((68, 2), np.float32) + 5,
    box=np.array([0, 0, 10, 10], np.float32),
    subset="s",
  )


def test_validation_split_is_seeded_and_keeps_faces_of_one_image_together():
  # 20 images, the first 5 with two faces each.
  records = [_record(f"img{i}.jpg") for i in range(20)] + [_record(f"img{i}.jpg") for i in range(5)]
  train, validation = datasets.split_validation(records, 0.2, seed=3)
  again, _ = datasets.split_validation(records, 0.2, seed=3)
  assert [r.source for r in train] == [r.source for r in again]
  train_images = {r.source for r in train}
  validation_images = {r.source for r in validation}
  assert len(validation_images) == 4 and not train_images & validation_images
  assert len(train) + len(validation) == 25
  with pytest.raises(ValueError, match="validation_fraction"):
    datasets.split_validation(records, 1.0, seed=0)


def test_validation_list_names_the_validation_images(tmp_path):
  root = tmp_path / "data"
  records = [
    FaceRecord(
      image_path=str(root / folder / f"{name}.jpg"),
      landmarks=np.zeros((68, 2), np.float32),
      box=np.array([0, 0, 10, 10], np.float32),
      subset=folder,
    )
    for folder, name in (
      ("afw", "1"),
      ("afw", "2"),
      ("lfpw/trainset", "3"),
      ("lfpw/trainset", "3"),
      ("lfpw/trainset", "4"),
    )
  ]
  listing = tmp_path / "validation.txt"
  listing.write_text("# validation images\nafw/2.jpg\n\nlfpw/trainset/3.jpg\n")
  names = datasets.read_validation_list(str(listing))
  assert names == ["afw/2.jpg", "lfpw/trainset/3.jpg"]
  train, validation = datasets.split_validation_by_list(records, names, str(root), "list")
  assert [r.image_path for r in validation] == [records[1].image_path] + [records[2].image_path] * 2
  assert [r.image_path for r in train] == [records[0].image_path, records[4].image_path]
  with pytest.raises(ValueError, match=r"list: 1 listed image\(s\) are not among"):
    datasets.split_validation_by_list(records, names + ["ibug/9.jpg"], str(root), "list")
  with pytest.raises(FileNotFoundError, match="nowhere.txt"):
    datasets.read_validation_list(str(tmp_path / "nowhere.txt"))


def _write_face(folder, name):
  folder.mkdir(parents=True, exist_ok=True)
  Image.new("RGB", (40, 30)).save(folder / f"{name}.jpg")
  points = "\n".join(f"{5 + i % 30} {4 + i % 20}" for i in range(68))
  (folder / f"{name}.pts").write_text(f"version: 1\nn_points: 68\n{{\n{points}\n}}\n")


def test_folder_evaluation_makes_one_subset_per_pts_folder(tmp_path):
  root = tmp_path / "mydata"
  _write_face(root / "afw", "a")
  _write_face(root / "helen" / "trainset", "b")
  _write_face(root / "helen" / "trainset", "c")
  config = _tiny_synthetic()
  config.data.eval_dataset, config.data.eval_splits = "folder", ()
  config.data.eval_root = str(root)
  sources = datasets.eval_sources(config)
  assert {name: len(source) for name, source in sources.items()} == {"afw": 1, "helen/trainset": 2}
  # A flat folder is one subset named after the folder.
  config.data.eval_root = str(root / "afw")
  assert list(datasets.eval_sources(config)) == ["afw"]


def test_missing_or_empty_roots_are_named(tmp_path):
  config = _tiny_synthetic()
  config.data.dataset = "300w"
  with pytest.raises(ValueError, match="data.root is empty"):
    datasets.train_and_validation_sources(config)
  config.data.root = str(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="nowhere"):
    datasets.train_and_validation_sources(config)
  config.data.eval_dataset, config.data.eval_root = "folder", str(tmp_path)
  with pytest.raises(FileNotFoundError, match="no .pts files"):
    datasets.eval_sources(config)


_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
# Every configs/<name>.py that has a get_config() (recipe.py is applied by them).
_CONFIG_NAMES = sorted(
  name[:-3]
  for name in os.listdir(_CONFIGS)
  if name.endswith(".py") and "def get_config" in open(os.path.join(_CONFIGS, name)).read()
)


@pytest.mark.parametrize("name", _CONFIG_NAMES)
def test_every_config_can_evaluate_a_folder_from_the_command_line(name, tmp_path):
  # config_flags locks the config: an override of a field the config lacks is an error, so
  # `--config.data.eval_dataset=folder --config.data.eval_root=DIR` needs both fields in all.
  import importlib.util

  path = os.path.join(_CONFIGS, f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"config_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.lock()
  _write_face(tmp_path / "faces", "a")
  _write_face(tmp_path / "faces", "b")
  config.data.eval_dataset, config.data.eval_root = "folder", str(tmp_path / "faces")
  config.data.eval_splits = ("test",)  # not "validation": that would read the training data
  sources = datasets.eval_sources(config)
  assert {subset: len(source) for subset, source in sources.items()} == {"faces": 2}


@pytest.fixture
def toy_dataset():
  from tests import tiny_models

  faces = tiny_models.face_records(count=4)
  datasets.register(
    "toyfaces",
    datasets.Dataset(
      eval_sources=lambda config, splits: {"toy test": input_pipeline.RecordSource(faces[:2])},
      train_records=lambda config: faces,
      occlusion_flags=True,
    ),
  )
  yield faces
  del datasets.DATASETS["toyfaces"]


def test_a_registered_dataset_trains_and_evaluates(toy_dataset, tmp_path):
  from msm_jax.train import parallel, stages
  from tests import tiny_models

  config = tiny_models.tiny_config()
  config.data.dataset = "toyfaces"  # --config.data.dataset=toyfaces
  config.data.validation_fraction, config.data.eval_splits = 0.25, ("test",)
  train, validation = datasets.train_and_validation_sources(config)
  assert (len(train), len(validation)) == (3, 1)
  assert datasets.evaluation_dataset(config).occlusion_flags
  assert {name: len(source) for name, source in datasets.eval_sources(config).items()} == {
    "toy test": 2
  }
  config.hourglass.batch_size, config.hourglass.epochs = 2, 1  # divisible by 2 or 4 devices
  stages.STAGES["hourglass"].train(config, str(tmp_path), parallel.data_mesh(), log=print)
  assert os.path.isdir(tmp_path / "checkpoints" / "hourglass")
  with pytest.raises(ValueError, match="already registered"):
    datasets.register("300w", datasets.DATASETS["300w"])
  config.data.dataset = "cofw68"
  with pytest.raises(ValueError, match="'cofw68' is not a training set"):
    datasets.read_training_records(config)
  config.data.dataset = "nowhere"
  with pytest.raises(ValueError, match="data.dataset='nowhere': expected one of synthetic"):
    datasets.train_and_validation_sources(config)
