"""Writes the shipped-model format (`msm_jax.inference.pretrained` reads it): a training
run's newest checkpoints, or a live `TrainedModel`, as a package folder of config.json and
weights.npz (the format is described in `msm_jax.inference.pretrained`).

  python -m msm_jax.train.packaging --config configs/300w_subset.py \
      --workdir runs/300w_subset --out pretrained/ \
      [--detector_calibration calibration.json] [--spatial_transformer off] \
      [--kernel_dtype float16]
"""

import json
import os

import jax
import numpy as np
from flax import traverse_util

from msm_jax import cli, files
from msm_jax.inference import detection, pipeline, pretrained
from msm_jax.train import model_io


def _flat_weights(model: pipeline.TrainedModel, kernel_dtype: str) -> dict[str, np.ndarray]:
  variables = {
    name: model.variables[name] for name in pretrained.NETWORKS if model.variables.get(name)
  }
  flat = traverse_util.flatten_dict(jax.device_get(variables), sep="/")
  flat["dictionary"] = model.variables["dictionary"]
  flat["thresholds"] = model.variables["thresholds"]
  weights = {}
  for key, value in flat.items():
    dtype = kernel_dtype if pretrained.is_kernel(key) else np.float32
    with np.errstate(over="ignore"):
      weights[key] = np.asarray(value, dtype)
    if not np.all(np.isfinite(weights[key])):
      raise ValueError(f"'{key}' holds values that {dtype} cannot represent (NaN, inf or beyond)")
  return weights


# The repository root: configs name their files (e.g. a validation list) by absolute paths
# under it, which a package keeps relative to it, not as the packaging machine's paths.
_REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _portable(tree, root: str = _REPOSITORY):
  """The config dict with every absolute path under ``root`` made relative to it."""
  if isinstance(tree, dict):
    return {key: _portable(value, root) for key, value in tree.items()}
  if isinstance(tree, list):
    return [_portable(value, root) for value in tree]
  if isinstance(tree, str) and os.path.isabs(tree) and tree.startswith(root + os.sep):
    return os.path.relpath(tree, root)
  return tree


def write_package(
  package: pretrained.PretrainedModel, out_dir: str, kernel_dtype: str = "float32"
) -> dict:
  """Write `package` as a package folder (see the module docstring), its convolution
  kernels stored as ``kernel_dtype`` (``pretrained.KERNEL_DTYPES``).

  Returns {"directory", "stages", "bytes" (total), "files": {name: bytes}}.
  """
  if kernel_dtype not in pretrained.KERNEL_DTYPES:
    raise ValueError(f"kernel_dtype {kernel_dtype!r}: expected one of {pretrained.KERNEL_DTYPES}")
  model = package.model
  stages_packaged = sorted(model.available - {"resnet"})
  weights = _flat_weights(model, kernel_dtype)  # refused before anything is written
  os.makedirs(out_dir, exist_ok=True)
  weights_path = os.path.join(out_dir, pretrained.WEIGHTS_FILE)
  with files.atomic_write(weights_path, "wb") as file:
    np.savez(file, **weights)
  header = {
    "format": pretrained.FORMAT,
    "format_version": pretrained.FORMAT_VERSION,
    "config": _portable(json.loads(package.config.to_json_best_effort())),
    "inference": {
      "use_spatial_transformer": package.options.use_spatial_transformer,
      "use_shape_reconstruction": package.options.use_shape_reconstruction,
    },
    "stages": stages_packaged,
    "detector": package.calibration.to_dict(),
    "detector_fallbacks": [fallback.to_dict() for fallback in package.fallbacks],
    "landmark_offset": [float(value) for value in package.options.landmark_offset],
  }
  if package.tracking_thresholds is not None:
    header["tracking_thresholds"] = package.tracking_thresholds.to_dict()
  _write_header(os.path.join(out_dir, pretrained.CONFIG_FILE), header)
  sizes = {
    name: os.path.getsize(os.path.join(out_dir, name))
    for name in (pretrained.CONFIG_FILE, pretrained.WEIGHTS_FILE)
  }
  return {
    "directory": out_dir,
    "stages": stages_packaged,
    "bytes": sum(sizes.values()),
    "files": sizes,
  }


def _write_header(path: str, header: dict) -> None:
  files.write_json(path, header)


def set_landmark_offset(directory: str, offset) -> None:
  """Write ``offset`` (dx, dy image pixels) into a package's config.json, the rest as it was."""
  config_path = os.path.join(directory, pretrained.CONFIG_FILE)
  if not os.path.isfile(config_path):
    raise FileNotFoundError(f"pretrained package incomplete: {config_path} not found")
  header = pretrained.read_header(config_path)
  header["landmark_offset"] = [float(value) for value in offset]
  pretrained.parse_landmark_offset(header, config_path)  # refused before anything is written
  _write_header(config_path, header)


def set_tracking_thresholds(directory: str, thresholds) -> None:
  """Write ``thresholds`` (a `tracking.TrackingThresholds`) into a package's config.json, the
  rest as it was."""
  config_path = os.path.join(directory, pretrained.CONFIG_FILE)
  if not os.path.isfile(config_path):
    raise FileNotFoundError(f"pretrained package incomplete: {config_path} not found")
  header = pretrained.read_header(config_path)
  header["tracking_thresholds"] = thresholds.to_dict()
  pretrained.parse_tracking_thresholds(header, config_path)  # refused before anything is written
  _write_header(config_path, header)


def package_pretrained(
  config,
  workdir: str,
  out_dir: str,
  detector_calibration: detection.DetectorCalibration | None = None,
  use_spatial_transformer: bool | None = None,
  variant: str | None = None,
  kernel_dtype: str = "float32",
) -> dict:
  """Package `workdir`'s newest checkpoints (`model_io.load_trained`) into `out_dir`.

  use_spatial_transformer: None = on when the ST-GAN stage was trained.
  variant: ship the networks of a fine-tuning stage (e.g. "joint") in place of the others'.
  kernel_dtype: storage of the convolution kernels (``pretrained.KERNEL_DTYPES``).
  Returns what `write_package` returns (the size in bytes included).
  """
  model = model_io.load_trained(config, workdir)
  if variant:
    model = model.variant(variant)
  return write_package(
    pretrained.from_trained(model, config, use_spatial_transformer, detector_calibration),
    out_dir,
    kernel_dtype,
  )


def _cli() -> None:
  """`python -m msm_jax.train.packaging`: flags are defined here, not at import, so
  importing this module from train.py / evaluate.py (which define --config) cannot clash."""
  from absl import app, flags
  from ml_collections import config_flags

  config_flag = config_flags.DEFINE_config_file(
    "config", None, "A configs/<name>.py file.", lock_config=True
  )
  workdir = flags.DEFINE_string("workdir", None, "The training run's workdir.")
  out = flags.DEFINE_string("out", "pretrained", "Package folder to write.")
  calibration_file = flags.DEFINE_string(
    "detector_calibration",
    None,
    "JSON of `python -m msm_jax.train.detector_calibration` (default: the built-in 300-W "
    "calibration).",
  )
  st_switch = flags.DEFINE_enum(
    "spatial_transformer",
    "auto",
    ["auto", "on", "off"],
    "Use the ST stage by default (auto: when it was trained).",
  )
  variant = flags.DEFINE_string(
    "variant", None, "Ship the networks of this fine-tuning stage (joint) instead."
  )
  kernel_dtype = flags.DEFINE_enum(
    "kernel_dtype",
    "float32",
    list(pretrained.KERNEL_DTYPES),
    "Storage of the convolution kernels (float16: half the size).",
  )
  flags.mark_flags_as_required(["config", "workdir"])

  def main(argv):
    del argv
    calibration = None
    if calibration_file.value:
      with open(calibration_file.value) as file:
        calibration = detection.DetectorCalibration.from_dict(
          json.load(file), calibration_file.value
        )
    use_st = {"auto": None, "on": True, "off": False}[st_switch.value]
    info = package_pretrained(
      config_flag.value,
      workdir.value,
      out.value,
      calibration,
      use_st,
      variant.value,
      kernel_dtype.value,
    )
    print(json.dumps(info, indent=2))

  app.run(main, flags_parser=cli.parse_flags_help_exits_zero)


if __name__ == "__main__":
  _cli()
