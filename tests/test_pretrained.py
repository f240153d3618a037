"""The pretrained package: round trip against the live pipeline, the ST switch, clear errors."""

import dataclasses
import json
import math
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from msm_jax.inference import detection, pipeline, pretrained, tracking
from msm_jax.models import hourglass
from msm_jax.train import model_io, packaging, stages
from tests import tiny_models

ROOT = tiny_models.ROOT


@pytest.fixture(scope="module")
def packaged(tmp_path_factory):
  """(config, workdir, package folder, what package_pretrained returned, the live model)."""
  root = tmp_path_factory.mktemp("pretrained")
  config, workdir, out = tiny_models.tiny_config(), str(root / "run"), str(root / "package")
  tiny_models.make_workdir(workdir, config)
  calibration = detection.DetectorCalibration((0.01, 0.12), 0.87, "haarcascade_x.xml")
  info = packaging.package_pretrained(config, workdir, out, calibration)
  return config, workdir, out, info, model_io.load_trained(config, workdir)


def _inputs():
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, (2, 150, 170, 3), dtype=np.uint8)
  boxes = np.array([[10.0, 12.0, 140.0, 142.0], [-20.0, 5.0, 120.0, 145.0]], np.float32)
  return images, boxes


def test_round_trip_reproduces_the_live_pipeline_exactly(packaged):
  config, _, out, _, live = packaged
  loaded = pretrained.load_pretrained(out)
  assert loaded.options == dataclasses.replace(
    pipeline.options_from_config(config, True, True), per_face=pretrained.per_face_on_this_backend()
  )
  assert loaded.model.available == {"stgan", "hourglass", "dictionary"}
  # The same networks (rebuilt from config.json) and bit-identical variables ...
  assert (loaded.model.generator, loaded.model.networks) == (live.generator, live.networks)
  flat_live, flat_loaded = (
    traverse_util.flatten_dict({k: v for k, v in variables.items()}, sep="/")
    for variables in (live.variables, loaded.model.variables)
  )
  assert sorted(flat_live) == sorted(flat_loaded)
  for key, value in flat_live.items():
    np.testing.assert_array_equal(np.asarray(flat_loaded[key]), np.asarray(value), err_msg=key)
  # ... so the live variables through the pipeline give exactly the packaged model's output
  # (one jitted function for both: one compilation).
  images, boxes = _inputs()
  expected = loaded.infer(live.variables, images, boxes)
  got = loaded.infer(loaded.model.variables, images, boxes)
  for key in ("landmarks", "hourglass_landmarks", "scores", "reliable", "theta"):
    np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(expected[key]), err_msg=key)
  # The ST stage is really in there: the packaged generator's theta, not the identity.
  np.testing.assert_allclose(
    np.asarray(got["theta"][0]).ravel(), tiny_models.ZOOM_SHIFT_THETA, atol=1e-6
  )
  assert loaded.calibration.side_ratio == 0.87
  assert loaded.calibration.cascade == "haarcascade_x.xml"


def test_hourglass_fine_tuning_starts_from_the_package(packaged):
  config, _, out, _, live = packaged
  config = tiny_models.tiny_config()
  config.hourglass.init_from = out
  started = stages.STAGES["hourglass"].setup(config, steps_per_epoch=10).state.models["hourglass"]
  for name in ("params", "batch_stats"):
    jax.tree.map(
      np.testing.assert_array_equal, getattr(started, name), live.variables["hourglass"][name]
    )
  # A fresh optimiser state for those parameters (Adam's moments at zero).
  assert all(
    float(jnp.abs(leaf).max()) == 0.0
    for leaf in jax.tree.leaves(started.opt_state)
    if jnp.issubdtype(leaf.dtype, jnp.floating)
  )


def test_a_package_starts_a_wider_network_and_not_a_narrower_one(packaged):
  """A width-8 package starts a width-16 network (hourglass.widen_channels): every array holds
  the packaged one in its leading slice and reads none of the new channels; a narrower
  network, or one with other layers (a skip conv the package lacks), is refused, naming
  init_from."""
  _, _, out, _, live = packaged
  config = tiny_models.tiny_config()
  config.hourglass.init_from = out
  config.hourglass.width = 16
  config.hourglass.stem_widths = (4, 4, 16)  # as the package's, no skip conv at the stem's end
  started = stages.STAGES["hourglass"].setup(config, steps_per_epoch=10).state.models["hourglass"]
  packaged_arrays = traverse_util.flatten_dict(live.variables["hourglass"])
  started_arrays = traverse_util.flatten_dict(
    {"params": started.params, "batch_stats": started.batch_stats}
  )
  assert started_arrays.keys() == packaged_arrays.keys()
  widened = 0
  for key, value in packaged_arrays.items():
    got = np.asarray(started_arrays[key])
    np.testing.assert_array_equal(got[tuple(slice(0, n) for n in value.shape)], value)
    if value.ndim == 4 and got.shape[2] > value.shape[2]:
      assert not got[:, :, value.shape[2] :].any(), key
      widened += 1
  assert widened > 10
  config.hourglass.width, config.hourglass.stem_widths = 4, (4, 4, 4)
  with pytest.raises(stages.ConfigMismatchError, match="init_from=.*cannot embed"):
    stages.STAGES["hourglass"].setup(config, steps_per_epoch=10)
  config.hourglass.width, config.hourglass.stem_widths = 16, (4, 4, 8)
  with pytest.raises(stages.ConfigMismatchError, match="stem_residual.*skip.* in one only"):
    stages.STAGES["hourglass"].setup(config, steps_per_epoch=10)


def test_a_package_starts_the_network_at_twice_the_input_resolution(packaged):
  """A space_to_depth = 1 package starts a b = 2 network on 2x crops with its first conv
  widened (hourglass.widen_stem), every other array as packaged; crops that do not make
  data.heatmap_size maps are named before any training."""
  _, _, out, _, live = packaged
  config = tiny_models.tiny_config()
  config.hourglass.init_from = out
  config.hourglass.space_to_depth = 2
  config.data.crop_size *= 2
  started = stages.STAGES["hourglass"].setup(config, steps_per_epoch=10).state.models["hourglass"]
  expected = hourglass.widen_stem(live.variables["hourglass"], 2)
  for name in ("params", "batch_stats"):
    jax.tree.map(np.testing.assert_array_equal, getattr(started, name), expected[name])
  assert started.params["stem_conv1"]["kernel"].shape[2] == 12
  config.data.crop_size //= 2
  with pytest.raises(ValueError, match="data.heatmap_size is"):
    stages.STAGES["hourglass"].setup(config, steps_per_epoch=10)


def test_package_contents_and_reported_size(packaged):
  _, _, out, info, live = packaged
  files = {
    name: os.path.getsize(os.path.join(out, name)) for name in ("config.json", "weights.npz")
  }
  assert info["files"] == files and info["bytes"] == sum(files.values())
  assert sorted(os.listdir(out)) == ["config.json", "weights.npz"]  # no .tmp left behind
  header = json.load(open(os.path.join(out, "config.json")))
  assert header["inference"] == {"use_spatial_transformer": True, "use_shape_reconstruction": True}
  assert header["config"]["hourglass"]["width"] == 8
  assert header["stages"] == ["dictionary", "hourglass", "stgan"]
  with np.load(os.path.join(out, "weights.npz"), allow_pickle=False) as archive:
    names = list(archive.files)
    assert all(archive[name].dtype == np.float32 for name in names)
    assert archive["dictionary"].shape == (12, 68, 2)
  # Inference variables only: no optimiser state, no discriminator, no step counter.
  prefixes = {name.split("/")[0] + "/" + name.split("/")[1] for name in names if "/" in name}
  assert prefixes == {
    "generator/params",
    "generator/batch_stats",
    "hourglass/params",
    "hourglass/batch_stats",
  }
  # 4 bytes per parameter, plus the dictionary and thresholds, plus the zip headers.
  parameters = sum(
    x.size
    for x in jax.tree.leaves(
      {k: v for k, v in live.variables.items() if k in ("generator", "hourglass")}
    )
  )
  arrays = 4 * (parameters + 12 * 68 * 2 + 68)
  assert arrays < files["weights.npz"] < arrays + 400 * len(names) + 1000


def test_paths_inside_the_repository_are_stored_relative_to_it(tmp_path):
  config = tiny_models.tiny_config()
  config.data.validation_list = os.path.join(ROOT, "configs", "splits", "faces.txt")
  config.data.root = "/elsewhere/300w"  # outside the repository: kept as given
  workdir = str(tmp_path / "run")
  tiny_models.make_workdir(workdir, config, with_stgan=False)
  packaging.package_pretrained(config, workdir, str(tmp_path / "package"))
  header = json.load(open(tmp_path / "package" / "config.json"))
  stored = header["config"]["data"]["validation_list"]
  assert stored == os.path.join("configs", "splits", "faces.txt")
  assert header["config"]["data"]["root"] == "/elsewhere/300w"


def test_package_without_stgan(tmp_path):
  config = tiny_models.tiny_config()
  tiny_models.make_workdir(str(tmp_path / "run"), config, with_stgan=False)
  model = model_io.load_trained(config, str(tmp_path / "run"))
  with pytest.raises(ValueError, match="ST-GAN stage was not trained"):
    pretrained.from_trained(model, config, use_spatial_transformer=True)
  info = packaging.write_package(pretrained.from_trained(model, config), str(tmp_path / "p"))
  loaded = pretrained.load_pretrained(str(tmp_path / "p"))
  assert info["stages"] == ["dictionary", "hourglass"]
  assert not loaded.options.use_spatial_transformer and loaded.options.use_shape_reconstruction
  # No calibration given: the default detectors, dlib's first, in that order.
  assert loaded.calibrations == detection.DEFAULT_CALIBRATIONS
  assert loaded.calibration.cascade == detection.DLIB_HOG
  with np.load(str(tmp_path / "p" / "weights.npz")) as archive:
    assert not any(name.startswith("generator/") for name in archive.files)


def test_a_network_on_twice_the_crop_packages_without_an_st_gan(tmp_path):
  """A workdir whose hourglass reads 2x crops (space_to_depth 2) and has no ST-GAN loads and
  packages: the GDNN, which reads 128 x 128 crops only, is not set up when never trained."""
  config = tiny_models.tiny_config()
  config.hourglass.space_to_depth = 2
  config.data.crop_size *= 2
  tiny_models.make_workdir(str(tmp_path / "run"), config, with_stgan=False)
  model = model_io.load_trained(config, str(tmp_path / "run"))
  assert model.available == {"hourglass", "dictionary"}
  packaging.package_pretrained(config, str(tmp_path / "run"), str(tmp_path / "p"))
  loaded = pretrained.load_pretrained(str(tmp_path / "p"))
  assert loaded.options.crop_size == 2 * 128 and loaded.options.heatmap_size == 64
  stem = lambda variables: variables["hourglass"]["params"]["stem_conv1"]["kernel"]
  np.testing.assert_array_equal(stem(loaded.model.variables), stem(model.variables))
  assert stem(loaded.model.variables).shape[2] == 12
  # Only a b = 1 network widens: this package cannot start one at the original crop.
  config.hourglass.init_from = str(tmp_path / "p")
  config.hourglass.space_to_depth = 1
  config.data.crop_size //= 2
  with pytest.raises(ValueError, match="only a network with 1"):
    stages.STAGES["hourglass"].setup(config, steps_per_epoch=10)
  # The same weights fit a 128 crop too (convolutions take any size), but make 32 x 32 maps:
  # decoded as 64 x 64 ones every landmark would land at half its place.
  package = _copy_package(str(tmp_path / "p"), str(tmp_path / "at_128"))
  _edit_header(package, lambda header: _set_config_field(header, "data.crop_size", 128))
  with pytest.raises(
    pretrained.PackageError, match=r"config.json: .* 32x32 maps from 128x128 crops .*heatmap_size"
  ):
    pretrained.load_pretrained(package)


def test_st_switched_off_in_a_package_with_stgan(packaged, tmp_path):
  config, workdir, *_ = packaged
  packaging.package_pretrained(config, workdir, str(tmp_path), use_spatial_transformer=False)
  assert json.load(open(tmp_path / "config.json"))["inference"]["use_spatial_transformer"] is False
  loaded = pretrained.load_pretrained(str(tmp_path))
  assert not loaded.options.use_spatial_transformer and "stgan" in loaded.model.available
  # The switch changes nothing else (test_pipeline checks what ST off does to the landmarks).
  assert loaded.options == dataclasses.replace(
    pipeline.options_from_config(config, True, True),
    use_spatial_transformer=False,
    per_face=pretrained.per_face_on_this_backend(),
  )


def _copy_package(source, target):
  os.makedirs(target)
  for name in ("config.json", "weights.npz"):
    with (
      open(os.path.join(source, name), "rb") as src,
      open(os.path.join(target, name), "wb") as dst,
    ):
      dst.write(src.read())
  return target


def test_missing_files_name_the_file(packaged, tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json not found"):
    pretrained.load_pretrained(str(tmp_path))
  broken = _copy_package(packaged[2], str(tmp_path / "p"))
  os.remove(os.path.join(broken, "weights.npz"))
  with pytest.raises(FileNotFoundError, match="weights.npz not found"):
    pretrained.load_pretrained(broken)


def test_corrupt_files_name_the_file(packaged, tmp_path):
  broken = _copy_package(packaged[2], str(tmp_path / "a"))
  with open(os.path.join(broken, "weights.npz"), "wb") as file:
    file.write(b"PK\x03\x04 not really a zip")
  with pytest.raises(pretrained.PackageError, match="weights.npz: not a readable weights"):
    pretrained.load_pretrained(broken)
  broken = _copy_package(packaged[2], str(tmp_path / "b"))
  with open(os.path.join(broken, "config.json"), "w") as file:
    file.write("{ truncated")
  with pytest.raises(pretrained.PackageError, match="config.json: not valid JSON"):
    pretrained.load_pretrained(broken)


def _edit_header(package, edit):
  path = os.path.join(package, "config.json")
  header = json.load(open(path))
  edit(header)
  json.dump(header, open(path, "w"))


def test_mismatched_package_names_the_file(packaged, tmp_path):
  broken = _copy_package(packaged[2], str(tmp_path / "a"))
  _edit_header(broken, lambda header: header["config"]["hourglass"].update(stem_widths=[6, 4, 8]))
  # The first stem layer now has 6 channels, the stored arrays 4.
  with pytest.raises(
    pretrained.PackageError, match=r"weights.npz: hourglass/.* has shape \(4,\), .* expects \(6,\)"
  ):
    pretrained.load_pretrained(broken)
  broken = _copy_package(packaged[2], str(tmp_path / "b"))
  _edit_header(broken, lambda header: header.update(format_version=99))
  with pytest.raises(pretrained.PackageError, match="config.json: format_version 99"):
    pretrained.load_pretrained(broken)
  broken = _copy_package(packaged[2], str(tmp_path / "c"))
  _edit_header(broken, lambda header: header["config"]["hourglass"].update(depth=3))
  with pytest.raises(pretrained.PackageError, match="weights.npz: hourglass weights do not fit"):
    pretrained.load_pretrained(broken)
  broken = _copy_package(packaged[2], str(tmp_path / "d"))  # 12 exemplars, k = 13
  _edit_header(broken, lambda header: header["config"]["shape"].update(num_neighbours=13))
  with pytest.raises(pretrained.PackageError, match="dictionary has 12 shapes, fewer than .* 13"):
    pretrained.load_pretrained(broken)


MISSING = object()  # a _set_config_field value: delete the field


def _set_config_field(header, field, value):
  """header["config"][section][name] = value for field "section.name" (MISSING: delete it)."""
  section, name = field.split(".")
  if value is MISSING:
    del header["config"][section][name]
  else:
    header["config"][section][name] = value


@pytest.mark.parametrize(
  "field, value",
  [
    ("data.crop_size", 0),
    ("data.crop_size", "128"),
    ("data.heatmap_size", -64),
    ("data.box_margin", -1.25),
    ("data.box_margin", float("nan")),
    ("shape.num_neighbours", 0),
    ("shape.num_neighbours", -5),
    ("shape.num_neighbours", 2.5),
    ("shape.score_radius", -1),
    ("shape.score_radius", MISSING),
    ("shape.replace", "everything"),
    ("hourglass.sigma", 0.0),
    ("inference.recrop_passes", -1),
    ("inference.recrop_passes", 1.5),
    ("data.scheme", "300x"),
  ],
)
def test_a_config_field_out_of_range_names_the_file_and_the_field(packaged, tmp_path, field, value):
  """Each field the pipeline reads is checked at load: a bad one would otherwise predict
  nonsense with exit status 0, or fail later with a traceback that names neither."""
  package = _copy_package(packaged[2], str(tmp_path / "p"))
  _edit_header(package, lambda header: _set_config_field(header, field, value))
  with pytest.raises(pretrained.PackageError, match=rf"config.json: .*\b{re.escape(field)}\b"):
    pretrained.load_pretrained(package)


def test_a_config_that_is_not_an_object_names_the_file(packaged, tmp_path):
  package = _copy_package(packaged[2], str(tmp_path / "p"))
  _edit_header(package, lambda header: header.update(config=[]))
  with pytest.raises(pretrained.PackageError, match='config.json: the "config" section must be'):
    pretrained.load_pretrained(package)


@pytest.mark.parametrize(
  "field, value", [("data.crop_size", 64), ("data.heatmap_size", 32), ("data.crop_size", 60)]
)
def test_crops_that_do_not_make_heatmap_size_maps_are_refused(packaged, tmp_path, field, value):
  """The tiny hourglass halves its 128 crops once (its stem): 64 x 64 maps. Convolutions fit
  any crop, so the weights check alone passes a 64 crop (32 x 32 maps, decoded as 64 x 64:
  every landmark at half its place) and a 32-pixel map size; a 60 crop does not even pass
  through the hourglass's pooling and upsampling."""
  package = _copy_package(packaged[2], str(tmp_path / "p"))
  _edit_header(package, lambda header: _set_config_field(header, field, value))
  with pytest.raises(
    pretrained.PackageError, match=r"config.json: .*data.crop_size.* data.heatmap_size"
  ):
    pretrained.load_pretrained(package)


def test_a_package_with_fields_at_the_edges_of_their_ranges_loads(packaged, tmp_path):
  """k = the dictionary's 12 rows, r = 0, a margin of 1, no re-crop field: all allowed."""
  package = _copy_package(packaged[2], str(tmp_path / "p"))
  edits = {
    "shape.num_neighbours": 12,
    "shape.score_radius": 0,
    "data.box_margin": 1.0,
    "inference.recrop_passes": MISSING,
    "data.scheme": "ibug68",
  }
  _edit_header(
    package,
    lambda header: [_set_config_field(header, field, value) for field, value in edits.items()],
  )
  options = pretrained.load_pretrained(package).options
  assert (options.num_neighbours, options.score_radius) == (12, 0)
  assert (options.box_margin, options.recrop_passes) == (1.0, 0)


@pytest.mark.parametrize(
  "fallback, cascade", [(None, "/etc/passwd"), (0, "../../x"), (1, "sub/dir.xml")]
)
def test_a_detector_outside_opencvs_cascade_folder_is_refused(
  packaged, tmp_path, fallback, cascade
):
  """The first detector or a fallback (None: the first; else its index) naming a path."""
  package = _copy_package(packaged[2], str(tmp_path / "p"))

  def edit(header):
    header["detector_fallbacks"] = [c.to_dict() for c in detection.DEFAULT_CALIBRATIONS]
    target = header["detector"] if fallback is None else header["detector_fallbacks"][fallback]
    target["cascade"] = cascade

  _edit_header(package, edit)
  where = "detector" if fallback is None else f"detector_fallbacks[{fallback}]"
  with pytest.raises(
    pretrained.PackageError, match=rf"config.json: {re.escape(where)}: cascade '{cascade}'"
  ):
    pretrained.load_pretrained(package)


@pytest.mark.parametrize("how", ["int32", "nan"])
def test_weights_of_the_wrong_dtype_or_not_finite_are_refused(packaged, tmp_path, how):
  broken = _copy_package(packaged[2], str(tmp_path / how))
  path = os.path.join(broken, pretrained.WEIGHTS_FILE)
  weights = dict(np.load(path))
  key = "hourglass/params/stem_conv1/kernel"
  weights[key] = weights[key].astype(np.int32) if how == "int32" else weights[key] * np.nan
  np.savez(path, **weights)
  message = "is int32, expected float32 or float16" if how == "int32" else "holds NaN or infinite"
  with pytest.raises(pretrained.PackageError, match=f"'{key}' {message}"):
    pretrained.load_pretrained(broken)


def test_float16_kernels_halve_the_package_and_read_back_as_float32(packaged, tmp_path):
  """--kernel_dtype float16: kernels stored as float16, all else float32; loaded, the model is
  the live one with its kernels rounded to float16 (the round trip adds nothing more)."""
  config, workdir, out, info, live = packaged
  half = str(tmp_path / "half")
  half_info = packaging.package_pretrained(config, workdir, half, kernel_dtype="float16")
  with np.load(os.path.join(half, "weights.npz"), allow_pickle=False) as archive:
    dtypes = {name: archive[name].dtype for name in archive.files}
  kernels = [name for name in dtypes if name.endswith("/kernel")]
  assert kernels and all(dtypes[name] == np.float16 for name in kernels)
  assert all(dtype == np.float32 for name, dtype in dtypes.items() if name not in kernels)
  # Kernels hold most of the weights: 2 bytes instead of 4 for each of their values.
  kernel_values = sum(
    np.asarray(value).size
    for key, value in traverse_util.flatten_dict(live.variables, sep="/").items()
    if key.endswith("/kernel")
  )
  saved = info["files"]["weights.npz"] - half_info["files"]["weights.npz"]
  assert abs(saved - 2 * kernel_values) < 0.01 * saved
  loaded = pretrained.load_pretrained(half)
  flat_live = traverse_util.flatten_dict(live.variables, sep="/")
  flat_loaded = traverse_util.flatten_dict(loaded.model.variables, sep="/")
  for key, value in flat_live.items():
    expected = np.asarray(value)
    if key.endswith("/kernel"):
      expected = expected.astype(np.float16).astype(np.float32)
    assert flat_loaded[key].dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(flat_loaded[key]), expected, err_msg=key)
  with pytest.raises(ValueError, match="kernel_dtype 'int8'"):
    packaging.package_pretrained(config, workdir, str(tmp_path / "x"), kernel_dtype="int8")


def test_kernels_beyond_float16_are_refused_before_writing(packaged, tmp_path):
  config, _, _, _, live = packaged
  variables = jax.tree.map(lambda value: value, live.variables)
  kernel = variables["hourglass"]["params"]["stem_conv1"]["kernel"]
  variables["hourglass"]["params"]["stem_conv1"]["kernel"] = kernel.at[0, 0, 0, 0].set(1e6)
  model = dataclasses.replace(live, variables=variables)
  out = str(tmp_path / "refused")
  with pytest.raises(ValueError, match="stem_conv1/kernel' holds values that float16 cannot"):
    packaging.write_package(pretrained.from_trained(model, config), out, "float16")
  assert not os.path.exists(out)


def test_command_line_writes_a_loadable_package(packaged, tmp_path):
  config, workdir, *_ = packaged
  overrides = [f"--config.{key}={value}" for key, value in tiny_models.TINY_OVERRIDES.items()]
  calibration = tmp_path / "calibration.json"
  calibration.write_text(json.dumps({"centre_offset": [0.0, 0.2], "side_ratio": 0.9}))
  command = [
    sys.executable,
    "-m",
    "msm_jax.train.packaging",
    "--config=configs/synthetic.py",
    *overrides,
    "--config.hourglass.stem_widths=(4, 4, 8)",
    f"--workdir={workdir}",
    f"--out={tmp_path / 'cli'}",
    f"--detector_calibration={calibration}",
    "--spatial_transformer=off",
  ]
  result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  info = json.loads(result.stdout)
  assert info["bytes"] == sum(
    os.path.getsize(tmp_path / "cli" / name) for name in ("config.json", "weights.npz")
  )
  loaded = pretrained.load_pretrained(str(tmp_path / "cli"))
  assert not loaded.options.use_spatial_transformer
  assert loaded.calibration.centre_offset == (0.0, 0.2)


def test_the_landmark_offset_is_written_read_and_kept_by_a_rewrite(packaged, tmp_path):
  package = _copy_package(packaged[2], str(tmp_path / "p"))
  assert pretrained.load_pretrained(package).options.landmark_offset == (0.0, 0.0)
  before = json.load(open(os.path.join(package, "config.json")))
  packaging.set_landmark_offset(package, np.array([0.5, -0.125]))
  after = json.load(open(os.path.join(package, "config.json")))
  assert after.pop("landmark_offset") == [0.5, -0.125]
  before.pop("landmark_offset")
  assert after == before  # nothing else changed
  loaded = pretrained.load_pretrained(package)
  assert loaded.options.landmark_offset == (0.5, -0.125)
  packaging.write_package(loaded, str(tmp_path / "rewritten"))
  rewritten = pretrained.load_pretrained(str(tmp_path / "rewritten"))
  assert rewritten.options.landmark_offset == (0.5, -0.125)


@pytest.mark.parametrize("offset", [[0.5], [np.nan, 0.0], "left"])
def test_a_bad_landmark_offset_names_the_file_and_is_never_written(packaged, tmp_path, offset):
  package = _copy_package(packaged[2], str(tmp_path / "p"))
  _edit_header(package, lambda header: header.update(landmark_offset=offset))
  with pytest.raises(pretrained.PackageError, match="config.json: landmark_offset must be two"):
    pretrained.load_pretrained(package)
  packaging.set_landmark_offset(package, [1.0, 2.0])
  written = open(os.path.join(package, "config.json")).read()
  with pytest.raises(pretrained.PackageError, match="landmark_offset must be two"):
    packaging.set_landmark_offset(package, [np.inf, 0.0])
  assert open(os.path.join(package, "config.json")).read() == written


def test_tracking_thresholds_are_written_read_and_kept_by_a_rewrite(packaged, tmp_path):
  package = _copy_package(packaged[2], str(tmp_path / "p"))
  assert pretrained.load_pretrained(package).tracking_thresholds is None  # none fitted
  fitted = tracking.TrackingThresholds(0.125, 0.0, math.inf, {"data": "clips"})
  packaging.set_tracking_thresholds(package, fitted)
  loaded = pretrained.load_pretrained(package)
  assert loaded.tracking_thresholds == fitted
  packaging.write_package(loaded, str(tmp_path / "rewritten"))
  assert pretrained.load_pretrained(str(tmp_path / "rewritten")).tracking_thresholds == fitted


@pytest.mark.parametrize(
  "thresholds",
  ["high", {"lost_below": 0.1, "refine_below": 0.2}, {"lost_below": "x", "refine_below": 0.2}],
)
def test_bad_tracking_thresholds_name_the_file(packaged, tmp_path, thresholds):
  package = _copy_package(packaged[2], str(tmp_path / "p"))
  _edit_header(package, lambda header: header.update(tracking_thresholds=thresholds))
  with pytest.raises(pretrained.PackageError, match="config.json: tracking_thresholds: want"):
    pretrained.load_pretrained(package)
