"""Make the shipped-model folder from a training run: the package (config.json, weights.npz),
its landmark offset fitted on the config's training faces, its video tracking thresholds
fitted on clips of its validation faces, and the exported pipeline (msm_pipeline.jaxexport).
The folder is built beside --out and replaces it whole; other files already there (a model
card) are kept.

  python package.py --config configs/300w_subset.py --workdir runs/300w_subset --out pretrained/
"""

import json
import sys

from absl import app, flags
from ml_collections import config_flags

from msm_jax.cli import (
  interrupts_remembered,
  parse_flags_help_exits_zero,
  quiet_library_logs,
  restart_with_page_reuse,
)

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "The configs/<name>.py file the run was trained by.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "The training run's workdir.")
_OUT = flags.DEFINE_string("out", None, "Package folder to write (replaced whole).")
_KERNEL_DTYPE = flags.DEFINE_enum(
  "kernel_dtype", "float16", ["float32", "float16"], "Storage of the convolution kernels."
)
_OFFSET_FACES = flags.DEFINE_integer(
  "offset_faces", 300, "Training faces the landmark offset is fitted on (0: no offset)."
)
_TRACKING_CLIPS = flags.DEFINE_integer(
  "tracking_clips",
  8,
  "Clips of validation faces the tracking thresholds are fitted on (0: none fitted).",
)
_EXPORT = flags.DEFINE_list(
  "export_platforms", ["cpu", "cuda"], "Platforms of the exported pipeline (empty: no export)."
)
_CALIBRATION = flags.DEFINE_string(
  "detector_calibration",
  None,
  "JSON of `python -m msm_jax.train.detector_calibration` (default: the built-in calibration).",
)
_SPATIAL_TRANSFORMER = flags.DEFINE_enum(
  "spatial_transformer", "auto", ["auto", "on", "off"], "Use the ST stage (auto: if trained)."
)
_VARIANT = flags.DEFINE_string(
  "variant", None, "Ship the networks of this fine-tuning stage (joint) instead."
)
flags.mark_flags_as_required(["config", "workdir", "out"])


def main(argv):
  del argv
  quiet_library_logs()
  from msm_jax import commands
  from msm_jax.inference import detection

  if _OFFSET_FACES.value == 1 or _OFFSET_FACES.value < 0:
    raise app.UsageError(f"--offset_faces {_OFFSET_FACES.value}: 0, or at least 2 faces")
  if _TRACKING_CLIPS.value < 0:
    raise app.UsageError(f"--tracking_clips {_TRACKING_CLIPS.value}: 0 or more clips")
  try:
    calibration = None
    if _CALIBRATION.value:
      with open(_CALIBRATION.value) as file:
        calibration = detection.DetectorCalibration.from_dict(json.load(file), _CALIBRATION.value)
    options = commands.PackageOptions(
      kernel_dtype=_KERNEL_DTYPE.value,
      offset_faces=_OFFSET_FACES.value,
      tracking_clips=_TRACKING_CLIPS.value,
      export_platforms=tuple(_EXPORT.value),
      detector_calibration=calibration,
      use_spatial_transformer={"auto": None, "on": True, "off": False}[_SPATIAL_TRANSFORMER.value],
      variant=_VARIANT.value,
    )
    with interrupts_remembered():
      summary = commands.package(
        _CONFIG.value,
        _WORKDIR.value,
        _OUT.value,
        options,
        log=lambda line: print(line, file=sys.stderr),
      )
  # A missing checkpoint (model_io.MissingStageError), calibration or data file; a bad
  # calibration file, image or annotation, values that float16 cannot hold: one line.
  except (OSError, ValueError) as error:
    raise SystemExit(f"error: {error}") from None
  except KeyboardInterrupt:
    print(f"interrupted; {_OUT.value} is as it was", file=sys.stderr)
    raise SystemExit(130) from None
  print(json.dumps({key: summary[key] for key in ("directory", "bytes", "files")}, indent=2))


if __name__ == "__main__":
  restart_with_page_reuse()
  app.run(main, flags_parser=parse_flags_help_exits_zero)
