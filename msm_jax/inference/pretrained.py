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
                                    (msm_jax.eval.annotation_offset; absent: 0, 0),
                 "tracking_thresholds": the video tracker's confidences
                                    (msm_jax.inference.tracking.TrackingThresholds, fitted by
                                    msm_jax.eval.tracking_fit; absent: none fitted)}
  weights.npz   float32 arrays under "/"-joined keys: generator/params/... (only when the
                ST-GAN was trained), hourglass/params/..., hourglass/batch_stats/...,
                dictionary [N, L, 2] (Sec. III-C) and thresholds [L] (Table IX); the
                convolution kernels (".../kernel") float32 or float16 (`--kernel_dtype`:
                half the size; read back as float32).

Only inference variables are kept (no optimiser state, no discriminator). The modules are
rebuilt from the config, and every array is checked against the shapes those modules expect,
so a package from another config or code version fails with a message naming the file. The
package is checked as a whole before anything runs: each config field the pipeline reads is in
its range (`CONFIG_FIELDS`), the landmark network makes `data.heatmap_size` maps from
`data.crop_size` crops (convolutions fit any crop, so the weights' shapes cannot tell: a wrong
crop size would move every landmark), and each detector is one in OpenCV's cascade folder.

Packages are written by `msm_jax.train.packaging`; `package.py` adds the landmark offset, the
tracking thresholds and the exported pipeline:

  python package.py --config configs/300w_subset.py --workdir runs/300w_subset --out pretrained/
"""

import dataclasses
import functools
import json
import math
import os
import zipfile

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from msm_jax import models
from msm_jax.core import landmarks
from msm_jax.inference import detection, pipeline, tracking

FORMAT = "msm-jax-pretrained"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.npz"
NETWORKS = ("generator", "hourglass")  # the Flax variables trees packaged, by key prefix
# Storage dtypes of the convolution kernels. float16 keeps 11 significant bits, more than the
# 8 of a bfloat16 compute; everything else (BN statistics, dictionary) stays float32.
# The shipped package: `pretrained/` beside the `msm_jax` package (an editable install keeps
# it there), so `load_pretrained()` finds it from any working folder.
SHIPPED_PACKAGE = os.path.join(
  os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "pretrained"
)
KERNEL_DTYPES = ("float32", "float16")


def is_kernel(key: str) -> bool:
  return key.endswith("/kernel")


class PackageError(ValueError):
  """A pretrained package is missing, unreadable or does not fit the code."""


MISSING = object()  # a config field the package does not have


def is_integer(value) -> bool:
  """An int, not a bool (JSON true is not a count)."""
  return isinstance(value, int) and not isinstance(value, bool)


def is_finite(value) -> bool:
  """A finite int or float, not a bool."""
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_scheme(value) -> bool:
  try:
    landmarks.get_scheme(value)
  except ValueError:
    return False
  return True


def _optional(predicate):
  """A field read with a default (``config.get``): absent is fine."""
  return lambda value: value is MISSING or predicate(value)


# The training-config fields the pipeline reads (`pipeline.options_from_config`, and the crop
# margin in `prediction`): (field, predicate, what is allowed). Out of range, none of them fails
# on its own: the landmarks move, or a jitted function fails naming neither file nor field.
CONFIG_FIELDS = (
  ("data.crop_size", lambda v: is_integer(v) and v > 0, "a positive integer"),
  ("data.heatmap_size", lambda v: is_integer(v) and v > 0, "a positive integer"),
  ("data.box_margin", lambda v: is_finite(v) and v > 0, "a finite number > 0"),
  ("data.scheme", _is_scheme, "a landmark scheme (300w, wflw, cofw, cofw68, 68, 98, 29)"),
  ("hourglass.sigma", lambda v: is_finite(v) and v > 0, "a finite number > 0"),
  ("shape.score_radius", lambda v: is_integer(v) and v >= 0, "an integer >= 0"),
  ("shape.num_neighbours", lambda v: is_integer(v) and v >= 1, "an integer >= 1"),
  ("shape.ridge_lambda", lambda v: is_finite(v) and v > 0, "a finite number > 0"),
  ("shape.replace", lambda v: v in ("unreliable", "all"), '"unreliable" or "all"'),
  (
    "shape.hourglass_weight",
    _optional(lambda v: is_finite(v) and 0 <= v <= 1),
    "absent or a number in [0, 1]",
  ),
  (
    "shape.reliability_temperature",
    _optional(lambda v: is_finite(v) and v > 0),
    "absent or a finite number > 0",
  ),
  (
    "inference.recrop_passes",
    _optional(lambda v: is_integer(v) and v >= 0),
    "absent or an integer >= 0",
  ),
  ("inference.flip_test", _optional(lambda v: isinstance(v, bool)), "absent, true or false"),
  ("inference.upright_recrop", _optional(lambda v: isinstance(v, bool)), "absent, true or false"),
)


def config_value(config: dict, field: str):
  """``config[section][name]`` for field "section.name"; MISSING when absent."""
  value = config
  for name in field.split("."):
    if not isinstance(value, dict) or name not in value:
      return MISSING
    value = value[name]
  return value


def check_config_fields(config: dict, path: str) -> None:
  """Every `CONFIG_FIELDS` field of a package's training config (the JSON object) in range."""
  for field, allowed, description in CONFIG_FIELDS:
    value = config_value(config, field)
    if not allowed(value):
      found = "missing" if value is MISSING else f"{value!r}"
      raise PackageError(f"{path}: config field {field} is {found}; it must be {description}")


@dataclasses.dataclass(frozen=True, eq=False)
class PretrainedModel:
  """Everything `prediction.predict_images` needs.

  model: modules + variables (as `model_io.load_trained` returns them; the hourglass only).
  options: the pipeline options (crop size, ST/SR switches, decoding, repair).
  config: the training config (box_margin, landmark scheme, ...).
  calibration: detector box -> landmark-box convention (the first detector tried).
  fallbacks: calibrations of the detectors tried next when it finds no face in an image.
  tracking_thresholds: the video tracker's `tracking.TrackingThresholds` (None: not fitted).
  """

  model: pipeline.TrainedModel
  options: pipeline.PipelineOptions
  config: ml_collections.ConfigDict
  calibration: detection.DetectorCalibration
  fallbacks: tuple = ()
  tracking_thresholds: tracking.TrackingThresholds | None = None

  @property
  def calibrations(self) -> tuple:
    """The detectors to try, in order, with their calibrations."""
    return (self.calibration, *self.fallbacks)

  @functools.cached_property
  def infer(self):
    """The one-jit pipeline, built once so every call reuses its compilations."""
    return self.model.inference_fn(self.options)


def per_face_on_this_backend() -> bool:
  """A face's result independent of the other faces of its batch (`PipelineOptions.per_face`)
  where that costs nothing per face: on a CPU (elsewhere a batch runs faster as a whole)."""
  return jax.default_backend() == "cpu"


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
  options = dataclasses.replace(options, per_face=per_face_on_this_backend())
  if calibration is None:
    calibration, *default_fallbacks = detection.DEFAULT_CALIBRATIONS
    fallbacks = tuple(default_fallbacks) if fallbacks is None else fallbacks
  return PretrainedModel(model, options, config, calibration, tuple(fallbacks or ()))


def read_header(path: str) -> dict:
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
  for key, kind, name in (
    ("config", dict, "object"),
    ("inference", dict, "object"),
    ("stages", list, "list"),
  ):
    if key not in header:
      raise PackageError(f'{path}: missing the "{key}" section')
    if not isinstance(header[key], kind):
      raise PackageError(
        f'{path}: the "{key}" section must be a JSON {name}, got {type(header[key]).__name__}'
      )
  return header


def _read_weights(path: str) -> dict[str, np.ndarray]:
  try:
    with np.load(path, allow_pickle=False) as archive:
      return {name: archive[name] for name in archive.files}
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
    raise PackageError(
      f"{path}: not a readable weights .npz ({type(error).__name__}: {error})"
    ) from None


def _abstract_network(module, config) -> tuple:
  """(outputs, {"/"-joined variable key: shape}) of ``module`` on one data.crop_size crop,
  traced abstractly (`jax.eval_shape`: nothing is computed)."""
  size = config.data.crop_size
  outputs, variables = jax.eval_shape(
    lambda: module.init_with_output(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False)
  )
  shapes = {
    key: tuple(value.shape) for key, value in traverse_util.flatten_dict(variables, sep="/").items()
  }
  return outputs, shapes


def _checked_network(module, section: str, config, path: str, makes_maps: bool) -> dict:
  """The variable shapes of the network of config ``section``, once it is known to read
  data.crop_size crops and, when it ``makes_maps``, to make data.heatmap_size maps: what the
  pipeline decodes them as (training checks the same in `stages.landmark._check_map_size`)."""
  size, map_size = config.data.crop_size, config.data.heatmap_size
  advice = (
    f": set data.crop_size to 2 x {section}.space_to_depth x data.heatmap_size"
    if makes_maps
    else ""
  )
  try:
    outputs, shapes = _abstract_network(module, config)
  except (TypeError, ValueError) as error:
    raise PackageError(
      f"{path}: the {section} network does not run on {size}x{size} crops (data.crop_size; "
      f"{type(error).__name__}: {error}){advice}"
    ) from None
  maps = tuple(outputs.shape[-3:-1])  # [S, B, h, w, L] stacked maps (msm_jax.models)
  if makes_maps and maps != (map_size, map_size):
    raise PackageError(
      f"{path}: the {section} network makes {maps[0]}x{maps[1]} maps from {size}x{size} crops "
      f"(data.crop_size) but data.heatmap_size is {map_size}{advice}"
    )
  return shapes


def _check_values(value: np.ndarray, key: str, path: str) -> None:
  """Weights are float32 (kernels: or float16) and finite: a cast integer array or a NaN would
  give silently wrong landmarks."""
  allowed = KERNEL_DTYPES if is_kernel(key) else ("float32",)
  if value.dtype.name not in allowed:
    raise PackageError(f"{path}: '{key}' is {value.dtype}, expected {' or '.join(allowed)}")
  if not np.all(np.isfinite(value)):
    raise PackageError(f"{path}: '{key}' holds NaN or infinite values")


def _network_variables(weights, prefix, expected: dict[str, tuple], path) -> dict:
  """The `prefix/...` arrays, checked against the module's own shapes (``expected``, from
  `_abstract_network`), as a variables tree."""
  found = {
    key[len(prefix) + 1 :]: value for key, value in weights.items() if key.startswith(prefix + "/")
  }
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
  return ml_collections.ConfigDict(read_header(config_path)["config"])


def package_network_variables(directory: str, prefix: str, module, config) -> dict:
  """One network's variables (``prefix`` "hourglass" or "generator") from a package's
  weights, checked against ``module`` as ``config`` builds it: the starting point of a
  fine-tuning run (``hourglass.init_from``)."""
  weights_path = os.path.join(directory, WEIGHTS_FILE)
  if not os.path.isfile(weights_path):
    raise FileNotFoundError(f"pretrained package incomplete: {weights_path} not found")
  expected = _abstract_network(module, config)[1]
  return _network_variables(_read_weights(weights_path), prefix, expected, weights_path)


def parse_landmark_offset(header: dict, path: str) -> tuple[float, float]:
  offset = header.get("landmark_offset", [0.0, 0.0])
  try:
    values = tuple(float(value) for value in offset)
  except (TypeError, ValueError):
    values = ()
  if len(values) != 2 or not all(np.isfinite(values)):
    raise PackageError(f"{path}: landmark_offset must be two finite numbers [dx, dy], got {offset}")
  return values


def parse_tracking_thresholds(header: dict, path: str) -> tracking.TrackingThresholds | None:
  if "tracking_thresholds" not in header:
    return None
  try:
    return tracking.TrackingThresholds.from_dict(
      header["tracking_thresholds"], f"{path}: tracking_thresholds"
    )
  except ValueError as error:
    raise PackageError(str(error)) from None


def _calibration(data, source: str) -> detection.DetectorCalibration:
  try:
    return detection.DetectorCalibration.from_dict(data, source)
  except ValueError as error:
    raise PackageError(str(error)) from None


def load_pretrained(directory: str | None = None) -> PretrainedModel:
  """Read a package written by `msm_jax.train.packaging` (default: the shipped one,
  ``SHIPPED_PACKAGE``).

  Raises FileNotFoundError (no folder / file) or PackageError (a ValueError naming the file:
  corrupt, wrong format version, a config field out of range, a network that does not make
  data.heatmap_size maps, a detector outside OpenCV's cascade folder, arrays that do not fit
  the config's networks).
  """
  directory = SHIPPED_PACKAGE if directory is None else directory
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"pretrained package folder not found: {directory}")
  config_path = os.path.join(directory, CONFIG_FILE)
  weights_path = os.path.join(directory, WEIGHTS_FILE)
  for path in (config_path, weights_path):
    if not os.path.isfile(path):
      raise FileNotFoundError(f"pretrained package incomplete: {path} not found")
  header = read_header(config_path)
  check_config_fields(header["config"], config_path)
  config = ml_collections.ConfigDict(header["config"])
  available = frozenset(header["stages"])
  try:
    use_st = bool(header["inference"]["use_spatial_transformer"])
    use_sr = bool(header["inference"]["use_shape_reconstruction"])
    scheme = landmarks.get_scheme(config.data.scheme)
    generator = models.generator(config)
    hourglass = models.landmark_network(config, "hourglass", scheme.num_points)
    options = pipeline.options_from_config(config, use_st, use_sr)
  except (KeyError, AttributeError, TypeError, ValueError) as error:
    raise PackageError(
      f"{config_path}: incomplete config or inference section ({type(error).__name__}: {error})"
    ) from None
  calibration = _calibration(
    header.get("detector", detection.DEFAULT_CALIBRATION.to_dict()), f"{config_path}: detector"
  )
  fallbacks = header.get("detector_fallbacks", [])
  if not isinstance(fallbacks, list):
    raise PackageError(f"{config_path}: detector_fallbacks must be a list of calibrations")
  fallbacks = tuple(
    _calibration(fallback, f"{config_path}: detector_fallbacks[{index}]")
    for index, fallback in enumerate(fallbacks)
  )
  if use_st and "stgan" not in available:
    raise PackageError(
      f"{config_path}: use_spatial_transformer is true but the package has no ST-GAN stage"
    )
  if use_sr and "dictionary" not in available:
    raise PackageError(
      f"{config_path}: use_shape_reconstruction is true but the package has no dictionary"
    )

  makes_maps = options.landmark_output == "heatmaps"
  hourglass_shapes = _checked_network(hourglass, "hourglass", config, config_path, makes_maps)
  generator_shapes = None
  if "stgan" in available:
    generator_shapes = _checked_network(generator, "stgan", config, config_path, False)

  weights = _read_weights(weights_path)
  variables = {"generator": {}}
  if generator_shapes is not None:
    variables["generator"] = _network_variables(
      weights, "generator", generator_shapes, weights_path
    )
  variables["hourglass"] = _network_variables(weights, "hourglass", hourglass_shapes, weights_path)
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
    options,
    landmark_offset=parse_landmark_offset(header, config_path),
    per_face=per_face_on_this_backend(),
  )
  rows = variables["dictionary"].shape[0]
  if use_sr and rows < options.num_neighbours:
    raise PackageError(
      f"{weights_path}: the dictionary has {rows} shapes, fewer than the k = "
      f"{options.num_neighbours} neighbours of the repair (shape.num_neighbours in config.json)"
    )
  thresholds = parse_tracking_thresholds(header, config_path)
  return PretrainedModel(model, options, config, calibration, fallbacks, thresholds)
