"""annotation_offset: the mean residual by hand, a fitted offset that zeroes the residual it
was fitted on, the command line, the seeded training sample."""

import json
import os
import shutil

import numpy as np
import pytest

from msm_jax.data import datasets
from msm_jax.data.records import box_from_landmarks
from msm_jax.eval import annotation_offset
from msm_jax.inference import prediction, pretrained
from msm_jax.train import packaging
from tests import tiny_models


def test_mean_residual_by_hand_leaves_out_faces_without_a_prediction():
  truth = np.zeros((3, 2, 2))
  predicted = np.array(
    [
      [[-1.0, 0.0], [-3.0, 2.0]],  # residual per landmark (1, 0), (3, -2): face mean (2, -1)
      [[0.0, 0.0], [0.0, 0.0]],  # face mean (0, 0)
      [[np.nan, np.nan], [5.0, 5.0]],  # not found: left out
    ]
  )
  fitted = annotation_offset.mean_residual(predicted, truth)
  assert fitted["faces"] == 2
  np.testing.assert_allclose(fitted["offset"], [1.0, -0.5])
  # Per-face means (2, -1) and (0, 0): sample std (sqrt 2, sqrt 0.5), over sqrt 2 faces.
  np.testing.assert_allclose(fitted["standard_error"], [1.0, 0.5])
  with pytest.raises(ValueError, match="no face has a prediction"):
    annotation_offset.mean_residual(np.full((1, 2, 2), np.nan), np.zeros((1, 2, 2)))
  with pytest.raises(ValueError, match=r"want two \[F, L, 2\] arrays"):
    annotation_offset.mean_residual(np.zeros((1, 2, 2)), np.zeros((1, 3, 2)))


@pytest.fixture(scope="module")
def package(tmp_path_factory):
  folder = str(tmp_path_factory.mktemp("offset") / "package")
  packaging.write_package(tiny_models.tiny_pretrained(), folder)
  return folder


def test_a_fitted_offset_zeroes_the_residual_it_was_fitted_on(package, tmp_path, monkeypatch):
  records = tiny_models.face_records(3)
  monkeypatch.setattr(annotation_offset, "training_sample", lambda config, faces, seed: records)
  copy = str(tmp_path / "package")
  shutil.copytree(package, copy)
  config_file = os.path.join(tiny_models.ROOT, "configs", "synthetic.py")
  fitted = annotation_offset.main(["--model", copy, "--config", config_file, "--faces", "3"])
  assert fitted["faces"] == 3
  assert json.load(open(os.path.join(copy, "config.json")))["landmark_offset"] == pytest.approx(
    fitted["offset"]
  )
  # The package now adds the offset after the crops it framed before (the fit leaves its own
  # offset out), so its residual on the same faces is the old one minus the offset: zero up
  # to float32 rounding of ~200-pixel coordinates.
  model = pretrained.load_pretrained(copy)
  truth = np.stack([record.landmarks for record in records])
  results = prediction.predict_images(
    model, [record.image for record in records], [box_from_landmarks(t)[None] for t in truth]
  )
  predicted = np.stack([result.faces[0].landmarks for result in results])
  np.testing.assert_allclose((truth - predicted).mean(axis=(0, 1)), 0.0, atol=1e-3)
  assert np.abs(fitted["offset"]).max() > 1e-2  # a random model's residual is not zero


def test_dry_run_writes_nothing(package, monkeypatch):
  monkeypatch.setattr(
    annotation_offset, "training_sample", lambda config, faces, seed: tiny_models.face_records(2)
  )
  before = open(os.path.join(package, "config.json")).read()
  config_file = os.path.join(tiny_models.ROOT, "configs", "synthetic.py")
  annotation_offset.main(["--model", package, "--config", config_file, "--dry-run"])
  assert open(os.path.join(package, "config.json")).read() == before


def test_training_sample_is_seeded_and_never_takes_validation_faces(monkeypatch):
  records = tiny_models.face_records(6)
  monkeypatch.setattr(datasets, "read_training_records", lambda config: records)
  config = tiny_models.tiny_config()
  config.data.validation_list = ""
  config.data.validation_fraction = 0.5
  train, validation = datasets.split_records(config, records)
  first = annotation_offset.training_sample(config, 2, seed=1)
  assert [id(face) for face in first] == [
    id(face) for face in annotation_offset.training_sample(config, 2, seed=1)
  ]
  assert len(first) == 2 and all(any(face is kept for kept in train) for face in first)
  assert not any(face is held for face in first for held in validation)
  assert len(annotation_offset.training_sample(config, 100)) == len(train)
