"""The commands that span floors: `package` (package.py) makes a whole shipped-model folder
from a run, or leaves the older one as it was."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from msm_jax import commands
from msm_jax.eval import annotation_offset, tracking_fit
from msm_jax.inference import export, pretrained, tracking
from msm_jax.train import packaging
from tests import tiny_models

QUIET = lambda _: None  # noqa: E731


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """(config, workdir) of a tiny hourglass + dictionary run."""
  config = tiny_models.tiny_config()
  workdir = str(tmp_path_factory.mktemp("run") / "run")
  tiny_models.make_workdir(workdir, config, with_stgan=False)
  return config, workdir


def _old_package(folder):
  folder.mkdir()
  (folder / "MODEL_CARD.md").write_text("the card")
  (folder / pretrained.WEIGHTS_FILE).write_text("older weights")
  (folder / commands.EXPORT_FILE).write_text("older export")
  return {name: (folder / name).read_text() for name in os.listdir(folder)}


def test_package_replaces_an_older_package_whole_with_offset_and_export(run, tmp_path, monkeypatch):
  config, workdir = run
  records = tiny_models.face_records(3)
  monkeypatch.setattr(annotation_offset, "training_sample", lambda config, faces, seed=0: records)
  # The thresholds' fit is tested on its own (test_tracking_fit.py); here, that its result is
  # what the package holds, fitted on the validation faces' fitting half and the asked clips.
  validation = tiny_models.face_records(4)
  fitted = tracking.TrackingThresholds(0.11, 0.22, 0.33, {"data": "test"})
  fits = []
  monkeypatch.setattr(
    tracking_fit, "split_faces", lambda config: (validation[1::2], validation[::2])
  )
  monkeypatch.setattr(
    tracking_fit, "fit", lambda model, faces, clips: fits.append((model, faces, clips)) or fitted
  )
  out = tmp_path / "pretrained"
  _old_package(out)
  options = commands.PackageOptions(offset_faces=3, tracking_clips=2, export_platforms=("cpu",))
  summary = commands.package(config, workdir, str(out), options, log=QUIET)
  assert sorted(os.listdir(tmp_path)) == ["pretrained"]  # nothing staged is left
  assert sorted(os.listdir(out)) == sorted(
    ["MODEL_CARD.md", pretrained.CONFIG_FILE, pretrained.WEIGHTS_FILE, commands.EXPORT_FILE]
  )
  assert (out / "MODEL_CARD.md").read_text() == "the card"
  assert summary["bytes"] == sum(os.path.getsize(out / name) for name in os.listdir(out))
  # The offset is the fit of the same package without one (packaged separately here).
  plain = str(tmp_path / "plain")
  packaging.package_pretrained(config, workdir, plain, kernel_dtype="float16")
  expected = annotation_offset.fit(pretrained.load_pretrained(plain), records)["offset"]
  loaded = pretrained.load_pretrained(str(out))
  np.testing.assert_allclose(loaded.options.landmark_offset, expected, rtol=1e-6)
  [(fit_model, fit_faces, fit_clips)] = fits
  assert [id(face) for face in fit_faces] == [id(face) for face in validation[::2]]
  assert fit_clips == 2
  assert fit_model.options.landmark_offset == loaded.options.landmark_offset  # after the offset
  assert (
    loaded.tracking_thresholds == fitted and summary["tracking_thresholds"]["lost_below"] == 0.11
  )
  with np.load(out / pretrained.WEIGHTS_FILE) as weights:
    kernels = [key for key in weights.files if pretrained.is_kernel(key)]
    assert kernels and all(weights[key].dtype == np.float16 for key in kernels)
  header = export.read_header(str(out / commands.EXPORT_FILE))
  assert header["platforms"] == ["cpu"]
  assert header["metadata"]["source"] == os.path.abspath(out)


def test_a_failure_while_packaging_leaves_the_older_package_as_it_was(run, tmp_path, monkeypatch):
  config, workdir = run

  def failing_export(*args, **kwargs):
    raise RuntimeError("lowering failed")

  monkeypatch.setattr(export, "export_from_trained", failing_export)
  out = tmp_path / "pretrained"
  before = _old_package(out)
  options = commands.PackageOptions(offset_faces=0, tracking_clips=0, export_platforms=("cpu",))
  with pytest.raises(RuntimeError, match="lowering failed"):
    commands.package(config, workdir, str(out), options, log=QUIET)
  assert {name: (out / name).read_text() for name in os.listdir(out)} == before
  assert sorted(os.listdir(tmp_path)) == ["pretrained"]


def test_a_threshold_fit_that_finds_no_faces_says_how_to_leave_it_out(run, tmp_path, monkeypatch):
  config, workdir = run

  def no_faces(model, faces, clips):
    raise ValueError("refine thresholds need faces: none was found")

  monkeypatch.setattr(tracking_fit, "split_faces", lambda config: ([], []))
  monkeypatch.setattr(tracking_fit, "fit", no_faces)
  out = tmp_path / "pretrained"
  before = _old_package(out)
  options = commands.PackageOptions(offset_faces=0, tracking_clips=1, export_platforms=())
  with pytest.raises(
    ValueError, match=r"tracking thresholds: .*none was found.*--tracking_clips 0"
  ):
    commands.package(config, workdir, str(out), options, log=QUIET)
  assert {name: (out / name).read_text() for name in os.listdir(out)} == before


def _package_py(*flags):
  overrides = [f"--config.{key}={value}" for key, value in tiny_models.TINY_OVERRIDES.items()]
  command = [
    sys.executable,
    "package.py",
    "--config=configs/synthetic.py",
    *overrides,
    "--config.hourglass.stem_widths=(4, 4, 8)",
    "--offset_faces=0",
    "--tracking_clips=0",
    "--export_platforms=",
    *flags,
  ]
  environment = dict(os.environ, MSM_JAX_SYSTEM_MALLOC="1")
  return subprocess.run(
    command, cwd=tiny_models.ROOT, capture_output=True, text=True, timeout=300, env=environment
  )


def test_package_py_writes_a_loadable_package_and_names_a_missing_run(run, tmp_path):
  config, workdir = run
  result = _package_py(f"--workdir={workdir}", f"--out={tmp_path / 'made'}")
  assert result.returncode == 0, result.stderr[-2000:]
  assert json.loads(result.stdout)["directory"] == str(tmp_path / "made")
  assert sorted(os.listdir(tmp_path / "made")) == [pretrained.CONFIG_FILE, pretrained.WEIGHTS_FILE]
  made = pretrained.load_pretrained(str(tmp_path / "made"))
  assert made.options.landmark_offset == (0.0, 0.0) and made.tracking_thresholds is None
  missing = _package_py(f"--workdir={tmp_path / 'nowhere'}", f"--out={tmp_path / 'other'}")
  assert missing.returncode == 1 and "Traceback" not in missing.stderr, missing.stderr[-2000:]
  last = missing.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and "nowhere" in last, last
  assert not (tmp_path / "other").exists()
