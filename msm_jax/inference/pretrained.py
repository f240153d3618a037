"""The shipped-model format (`pretrained/`): what Algorithm 2 needs at inference, no pickle.

A package is a folder with two files:

  config.json   {"format": "msm-jax-pretrained", "format_version": 1,
                 "config":    the training config (ml_collections, as JSON),
                 "inference": {"use_spatial_transformer": bool,   # the ST of Tables VII/VIII
                               "use_shape_reconstruction": bool}, # the SR
                 "stages":    the trained stages packaged (stgan, hourglass, dictionary),
                 "detector":  the face detector's box calibration (msm_jax.inference.detection),
                 "detector_fallbacks": [calibrations of detectors tried next, in order],
                 "landmark_offset": [dx, dy] added to the landmarks, image pixels
                                    (msm_jax.inference.annotation_offset; absent: 0, 0)}
  weights.npz   float32 arrays under "/"-joined keys: generator/params/... (only when the
                ST-GAN was trained), hourglass/params/..., hourglass/batch_stats/...,
                dictionary [N, L, 2] (Sec. III-C) and thresholds [L] (Table IX); the
                convolution kernels (".../kernel") float32 or float16 (`--kernel_dtype`:
                half the size; read back as float32).

Only inference variables are kept (no optimiser state, no discriminator). The modules are
rebuilt from the config, and every array is checked against the shapes those modules expect,
so a package from another config or code version fails with a message naming the file.

  python -m msm_jax.inference.pretrained --config configs/300w_subset.py \
      --workdir runs/300w_subset --out pretrained/ \
      [--detector_calibration calibration.json] [--spatial_transformer off] \
      [--kernel_dtype float16]
"""

import dataclasses
import functools
import json
import os
import zipfile

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from msm_jax import landmarks, models
from msm_jax.inference import detection, pipeline

FORMAT = "msm-jax-pretrained"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.npz"
_NETWORKS = ("generator", "hourglass")  # the Flax variables trees packaged, by key prefix
# Storage dtypes of the convolution kernels. float16 keeps 11 significant bits, more than the
# 8 of a bfloat16 compute; everything else (BN statistics, dictionary) stays float32.
KERNEL_DTYPES = ("float32", "float16")


def _is_kernel(key: str) -> bool:
  return key.endswith("/kernel")


class PackageError(ValueError):
  """A pretrained package is missing, unreadable or does not fit the code."""


@dataclasses.dataclass(frozen=True, eq=False)
class PretrainedModel:
  """Everything `prediction.predict_images` needs.

  model: modules + variables (as `model_io.load_trained` returns them; the hourglass only).
  options: the pipeline options (crop size, ST/SR switches, decoding, repair).
  config: the training config (box_margin, landmark scheme, ...).
  calibration: detector box -> landmark-box convention (the first detector tried).
  fallbacks: calibrations of the detectors tried next when it finds no face in an image.
  """

  model: pipeline.TrainedModel
  options: pipeline.PipelineOptions
  config: ml_collections.ConfigDict
  calibration: detection.DetectorCalibration
  fallbacks: tuple = ()

  @property
  def calibrations(self) -> tuple:
    """The detectors to try, in order, with their calibrations."""
    return (self.calibration, *self.fallbacks)

  @functools.cached_property
  def infer(self):
    """The one-jit pipeline, built once so every call reuses its compilations."""
    return self.model.inference_fn(self.options)


def from_trained(
  model: pipeline.TrainedModel,
  config,
  use_spatial_transformer: bool | None = None,
  calibration: detection.DetectorCalibration | None = None,
  fallbacks: tuple | None = None,
) -> PretrainedModel:
  """A live `TrainedModel` as a PretrainedModel (ST on when trained unless told otherwise,
  SR on when the dictionary exists)."""
  use_st = (
    "stgan" in model.available if use_spatial_transformer is None else (use_spatial_transformer)
  )
  if use_st and "stgan" not in model.available:
    raise ValueError("use_spatial_transformer=True but the ST-GAN stage was not trained")
  options = pipeline.options_from_config(config, use_st, "dictionary" in model.available)
  if calibration is None:
    calibration, *default_fallbacks = detection.DEFAULT_CALIBRATIONS
    fallbacks = tuple(default_fallbacks) if fallbacks is None else fallbacks
  return PretrainedModel(model, options, config, calibration, tuple(fallbacks or ()))


def _flat_weights(model: pipeline.TrainedModel, kernel_dtype: str) -> dict[str, np.ndarray]:
  variables = {name: model.variables[name] for name in _NETWORKS if model.variables.get(name)}
  flat = traverse_util.flatten_dict(jax.device_get(variables), sep="/")
  flat["dictionary"] = model.variables["dictionary"]
  flat["thresholds"] = model.variables["thresholds"]
  weights = {}
  for key, value in flat.items():
    dtype = kernel_dtype if _is_kernel(key) else np.float32
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


def write_package(pretrained: PretrainedModel, out_dir: str, kernel_dtype: str = "float32") -> dict:
  """Write `pretrained` as a package folder (see the module docstring), its convolution
  kernels stored as ``kernel_dtype`` (``KERNEL_DTYPES``).

  Returns {"directory", "stages", "bytes" (total), "files": {name: bytes}}.
  """
  if kernel_dtype not in KERNEL_DTYPES:
    raise ValueError(f"kernel_dtype {kernel_dtype!r}: expected one of {KERNEL_DTYPES}")
  model = pretrained.model
  stages_packaged = sorted(model.available - {"resnet"})
  weights = _flat_weights(model, kernel_dtype)  # refused before anything is written
  os.makedirs(out_dir, exist_ok=True)
  weights_path = os.path.join(out_dir, WEIGHTS_FILE)
  with open(weights_path + ".tmp", "wb") as file:  # renamed when complete: never half-written
    np.savez(file, **weights)
  os.replace(weights_path + ".tmp", weights_path)
  header = {
    "format": FORMAT,
    "format_version": FORMAT_VERSION,
    "config": _portable(json.loads(pretrained.config.to_json_best_effort())),
    "inference": {
      "use_spatial_transformer": pretrained.options.use_spatial_transformer,
      "use_shape_reconstruction": pretrained.options.use_shape_reconstruction,
    },
    "stages": stages_packaged,
    "detector": pretrained.calibration.to_dict(),
    "detector_fallbacks": [fallback.to_dict() for fallback in pretrained.fallbacks],
    "landmark_offset": [float(value) for value in pretrained.options.landmark_offset],
  }
  _write_header(os.path.join(out_dir, CONFIG_FILE), header)
  files = {
    name: os.path.getsize(os.path.join(out_dir, name)) for name in (CONFIG_FILE, WEIGHTS_FILE)
  }
  return {
    "directory": out_dir,
    "stages": stages_packaged,
    "bytes": sum(files.values()),
    "files": files,
  }


def _write_header(path: str, header: dict) -> None:
  with open(path + ".tmp", "w") as file:  # renamed when complete: never half-written
    json.dump(header, file, indent=2)
  os.replace(path + ".tmp", path)


def set_landmark_offset(directory: str, offset) -> None:
  """Write ``offset`` (dx, dy image pixels) into a package's config.json, the rest as it was."""
  config_path = os.path.join(directory, CONFIG_FILE)
  if not os.path.isfile(config_path):
    raise FileNotFoundError(f"pretrained package incomplete: {config_path} not found")
  header = _read_header(config_path)
  header["landmark_offset"] = [float(value) for value in offset]
  _landmark_offset(header, config_path)  # refused before anything is written
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
  kernel_dtype: storage of the convolution kernels (``KERNEL_DTYPES``).
  Returns what `write_package` returns (the size in bytes included).
  """
  from msm_jax import model_io  # the training side: checkpoints (Orbax)

  model = model_io.load_trained(config, workdir)
  if variant:
    model = model.variant(variant)
  return write_package(
    from_trained(model, config, use_spatial_transformer, detector_calibration),
    out_dir,
    kernel_dtype,
  )


def _read_header(path: str) -> dict:
  try:
    with open(path) as file:
      header = json.load(file)
  except json.JSONDecodeError as error:
    raise PackageError(f"{path}: not valid JSON ({error})") from None
  if not isinstance(header, dict) or header.get("format") != FORMAT:
    raise PackageError(f'{path}: not an msm-jax pretrained package (no "format": "{FORMAT}")')
  if header.get("format_version") != FORMAT_VERSION:
    raise PackageError(
      f"{path}: format_version {header.get('format_version')} is not "
      f"supported (this code reads {FORMAT_VERSION})"
    )
  for key in ("config", "inference", "stages"):
    if key not in header:
      raise PackageError(f'{path}: missing the "{key}" section')
  return header


def _read_weights(path: str) -> dict[str, np.ndarray]:
  try:
    with np.load(path, allow_pickle=False) as archive:
      return {name: archive[name] for name in archive.files}
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
    raise PackageError(
      f"{path}: not a readable weights .npz ({type(error).__name__}: {error})"
    ) from None


def _expected_shapes(module, config) -> dict[str, tuple]:
  size = config.data.crop_size
  abstract = jax.eval_shape(
    lambda: module.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False)
  )
  return {
    key: tuple(value.shape) for key, value in traverse_util.flatten_dict(abstract, sep="/").items()
  }


def _check_values(value: np.ndarray, key: str, path: str) -> None:
  """Weights are float32 (kernels: or float16) and finite: a cast integer array or a NaN would
  give silently wrong landmarks."""
  allowed = KERNEL_DTYPES if _is_kernel(key) else ("float32",)
  if value.dtype.name not in allowed:
    raise PackageError(f"{path}: '{key}' is {value.dtype}, expected {' or '.join(allowed)}")
  if not np.all(np.isfinite(value)):
    raise PackageError(f"{path}: '{key}' holds NaN or infinite values")


def _network_variables(weights, prefix, module, config, path) -> dict:
  """The `prefix/...` arrays, checked against the module's own shapes, as a variables tree."""
  found = {
    key[len(prefix) + 1 :]: value for key, value in weights.items() if key.startswith(prefix + "/")
  }
  expected = _expected_shapes(module, config)
  missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
  if missing or extra:
    raise PackageError(
      f"{path}: {prefix} weights do not fit the network config.json builds "
      f"(missing {missing[:3]}, unexpected {extra[:3]}): package made with "
      f"another config or code version?"
    )
  for key, shape in expected.items():
    if found[key].shape != shape:
      raise PackageError(
        f"{path}: {prefix}/{key} has shape {found[key].shape}, the network "
        f"of config.json expects {shape}"
      )
    _check_values(found[key], f"{prefix}/{key}", path)
  return traverse_util.unflatten_dict(
    {key: jnp.asarray(value, jnp.float32) for key, value in found.items()}, sep="/"
  )


def package_config(directory: str) -> ml_collections.ConfigDict:
  """The training config a package was made with (its ``config.json``)."""
  config_path = os.path.join(directory, CONFIG_FILE)
  if not os.path.isfile(config_path):
    raise FileNotFoundError(f"pretrained package incomplete: {config_path} not found")
  return ml_collections.ConfigDict(_read_header(config_path)["config"])


def package_network_variables(directory: str, prefix: str, module, config) -> dict:
  """One network's variables (``prefix`` "hourglass" or "generator") from a package's
  weights, checked against ``module`` as ``config`` builds it: the starting point of a
  fine-tuning run (``hourglass.init_from``)."""
  weights_path = os.path.join(directory, WEIGHTS_FILE)
  if not os.path.isfile(weights_path):
    raise FileNotFoundError(f"pretrained package incomplete: {weights_path} not found")
  return _network_variables(_read_weights(weights_path), prefix, module, config, weights_path)


def _landmark_offset(header: dict, path: str) -> tuple[float, float]:
  offset = header.get("landmark_offset", [0.0, 0.0])
  try:
    values = tuple(float(value) for value in offset)
  except (TypeError, ValueError):
    values = ()
  if len(values) != 2 or not all(np.isfinite(values)):
    raise PackageError(f"{path}: landmark_offset must be two finite numbers [dx, dy], got {offset}")
  return values


def load_pretrained(directory: str) -> PretrainedModel:
  """Read a package written by `package_pretrained`.

  Raises FileNotFoundError (no folder / file) or PackageError (a ValueError naming the file:
  corrupt, wrong format version, arrays that do not fit the config's networks).
  """
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"pretrained package folder not found: {directory}")
  config_path = os.path.join(directory, CONFIG_FILE)
  weights_path = os.path.join(directory, WEIGHTS_FILE)
  for path in (config_path, weights_path):
    if not os.path.isfile(path):
      raise FileNotFoundError(f"pretrained package incomplete: {path} not found")
  header = _read_header(config_path)
  config = ml_collections.ConfigDict(header["config"])
  available = frozenset(header["stages"])
  try:
    use_st = bool(header["inference"]["use_spatial_transformer"])
    use_sr = bool(header["inference"]["use_shape_reconstruction"])
    scheme = landmarks.get_scheme(config.data.scheme)
    generator = models.generator(config)
    hourglass = models.landmark_network(config, "hourglass", scheme.num_points)
  except (KeyError, AttributeError, TypeError, ValueError) as error:
    raise PackageError(
      f"{config_path}: incomplete config or inference section ({type(error).__name__}: {error})"
    ) from None
  calibration = detection.DetectorCalibration.from_dict(
    header.get("detector", detection.DEFAULT_CALIBRATION.to_dict()), config_path
  )
  fallbacks = header.get("detector_fallbacks", [])
  if not isinstance(fallbacks, list):
    raise PackageError(f"{config_path}: detector_fallbacks must be a list of calibrations")
  fallbacks = tuple(
    detection.DetectorCalibration.from_dict(fallback, config_path) for fallback in fallbacks
  )
  if use_st and "stgan" not in available:
    raise PackageError(
      f"{config_path}: use_spatial_transformer is true but the package has no ST-GAN stage"
    )
  if use_sr and "dictionary" not in available:
    raise PackageError(
      f"{config_path}: use_shape_reconstruction is true but the package has no dictionary"
    )

  weights = _read_weights(weights_path)
  variables = {"generator": {}}
  if "stgan" in available:
    variables["generator"] = _network_variables(
      weights, "generator", generator, config, weights_path
    )
  variables["hourglass"] = _network_variables(weights, "hourglass", hourglass, config, weights_path)
  for key, shape in (
    ("dictionary", (None, scheme.num_points, 2)),
    ("thresholds", (scheme.num_points,)),
  ):
    value = weights.get(key)
    if (
      value is None
      or value.ndim != len(shape)
      or any(want is not None and got != want for got, want in zip(value.shape, shape))
    ):
      raise PackageError(
        f"{weights_path}: '{key}' must have shape {shape} (None: any), got "
        f"{None if value is None else value.shape}"
      )
    _check_values(value, key, weights_path)
    variables[key] = jnp.asarray(value, jnp.float32)
  model = pipeline.TrainedModel(generator, {"hourglass": hourglass}, variables, available)
  options = dataclasses.replace(
    pipeline.options_from_config(config, use_st, use_sr),
    landmark_offset=_landmark_offset(header, config_path),
  )
  rows = variables["dictionary"].shape[0]
  if use_sr and rows < options.num_neighbours:
    raise PackageError(
      f"{weights_path}: the dictionary has {rows} shapes, fewer than the k = "
      f"{options.num_neighbours} neighbours of the repair (shape.num_neighbours in config.json)"
    )
  return PretrainedModel(model, options, config, calibration, fallbacks)


def _cli() -> None:
  """`python -m msm_jax.inference.pretrained`: flags are defined here, not at import, so
  importing this module from train.py / evaluate.py (which define --config) cannot clash."""
  import sys
  from absl import app, flags
  from ml_collections import config_flags

  sys.path.insert(0, os.getcwd())  # config files import `configs`
  config_flag = config_flags.DEFINE_config_file(
    "config", None, "A configs/<name>.py file.", lock_config=True
  )
  workdir = flags.DEFINE_string("workdir", None, "The training run's workdir.")
  out = flags.DEFINE_string("out", "pretrained", "Package folder to write.")
  calibration_file = flags.DEFINE_string(
    "detector_calibration",
    None,
    "JSON of `python -m msm_jax.inference.detection` (default: the built-in 300-W calibration).",
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
    list(KERNEL_DTYPES),
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

  app.run(main)


if __name__ == "__main__":
  _cli()
