"""Evaluate a trained MSM and print the paper's tables (Sec. IV-B, Tables III-IX).

  python evaluate.py --config configs/synthetic.py --workdir runs/synthetic
  python evaluate.py --config configs/300w.py --workdir runs/300w --config.data.root=/data/300W

Reads the newest checkpoints of `--workdir` (or `--checkpoint DIR`, a workdir of another run)
and writes report.json, report.md, CED plots and overlay images to `<workdir>/eval`. With
`--robustness` it also runs the robustness protocol on whole photos (the validation split, or
`--robustness_folder DIR` of images + .pts) and writes robustness.{md,json} there.
"""

import os

from absl import app, flags
from ml_collections import config_flags

from msm_jax.cli import parse_flags_help_exits_zero, quiet_library_logs, restart_with_page_reuse

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "A configs/<name>.py file.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "The training run's workdir.")
_CHECKPOINT = flags.DEFINE_string(
  "checkpoint", None, "Read the model from this workdir instead of --workdir."
)
_OUT = flags.DEFINE_string("out", None, "Report folder (default <workdir>/eval).")
_ROBUSTNESS = flags.DEFINE_bool(
  "robustness",
  False,
  "Also run the robustness protocol (msm_jax/eval/robustness.py) on whole photos: landmark box, "
  "detector, rotated, sloppy box, occluded.",
)
_ROBUSTNESS_FOLDER = flags.DEFINE_string(
  "robustness_folder", None, "Images + .pts for the protocol (default: the validation split)."
)
_ROBUSTNESS_LIMIT = flags.DEFINE_integer("robustness_limit", None, "The first N faces only.")
flags.mark_flag_as_required("config")


def main(argv):
  del argv
  quiet_library_logs()
  model_dir = _CHECKPOINT.value or _WORKDIR.value
  if not model_dir:
    raise app.UsageError("give --workdir (or --checkpoint)")
  from msm_jax.data.images import ImageReadError
  from msm_jax.data.records import AnnotationError
  from msm_jax.eval import paper_tables, robustness
  from msm_jax.train import model_io

  out_dir = _OUT.value or os.path.join(_WORKDIR.value or model_dir, "eval")
  try:
    paper_tables.evaluate(_CONFIG.value, model_dir, out_dir)
    if _ROBUSTNESS.value:
      paper_tables.evaluate_robustness(
        _CONFIG.value, model_dir, out_dir, _ROBUSTNESS_FOLDER.value, _ROBUSTNESS_LIMIT.value
      )
  except (
    FileNotFoundError,
    AnnotationError,
    ImageReadError,
    model_io.MissingStageError,
    robustness.NoFacesError,
  ) as error:
    raise SystemExit(f"error: {error}") from None  # bad data or run: one line, no traceback


if __name__ == "__main__":
  restart_with_page_reuse()
  app.run(main, flags_parser=parse_flags_help_exits_zero)
