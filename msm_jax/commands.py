"""The bodies of the commands that span floors: `train.py` trains, then evaluates;
`package.py` packages a run, fits its landmark offset and exports it.

The one library module that imports both the training and the evaluation packages; nothing
below it imports it (the layer contract in pyproject.toml).
"""

import dataclasses
import os
import shutil

import jax

from msm_jax import files
from msm_jax.eval import annotation_offset, paper_tables, tracking_fit
from msm_jax.inference import export, pretrained
from msm_jax.train import model_io, packaging, run

EXPORT_FILE = "msm_pipeline.jaxexport"
# What `package` writes; the other files of an older package folder (its model card) stay.
PACKAGE_FILES = (pretrained.CONFIG_FILE, pretrained.WEIGHTS_FILE, EXPORT_FILE)


def train_and_evaluate(config, workdir: str, log=print, allow_changed: bool = False) -> dict:
  """Train the config's stages, then, with ``config.evaluate_after_training``, evaluate the
  workdir (the paper's tables, `msm_jax.eval.paper_tables`). Returns `run.train`'s results."""
  results = run.train(config, workdir, log=log, allow_changed=allow_changed)
  if not config.evaluate_after_training:
    return results
  if jax.process_count() > 1:  # the report is written by one process reading every checkpoint
    log("multi-host run: evaluate with `python evaluate.py --config ... --workdir ...` on one host")
    return results
  try:
    paper_tables.evaluate(config, workdir, log=log)
  except model_io.MissingStageError as error:  # e.g. only the ST-GAN trained so far
    log(f"evaluation skipped: {error}")
  return results


@dataclasses.dataclass(frozen=True)
class PackageOptions:
  """kernel_dtype: storage of the convolution kernels (`pretrained.KERNEL_DTYPES`);
  offset_faces: training faces the landmark offset is fitted on (0: no offset);
  tracking_clips: clips of validation faces the tracking thresholds are fitted on (0: none);
  export_platforms: platforms of the exported pipeline (empty: none written);
  detector_calibration: a `detection.DetectorCalibration` (None: the built-in one);
  use_spatial_transformer: None = on when the ST-GAN stage was trained;
  variant: ship the networks of a fine-tuning stage (e.g. "joint") instead."""

  kernel_dtype: str = "float16"
  offset_faces: int = annotation_offset.DEFAULT_FACES
  tracking_clips: int = tracking_fit.DEFAULT_CLIPS
  export_platforms: tuple[str, ...] = ("cpu", "cuda")
  detector_calibration: object = None
  use_spatial_transformer: bool | None = None
  variant: str | None = None


def package(config, workdir: str, out: str, options=PackageOptions(), log=print) -> dict:
  """The shipped-model folder `out` from `workdir`'s newest checkpoints: the package
  (`packaging.package_pretrained`), its landmark offset fitted on the config's training faces
  (`annotation_offset`), its tracking thresholds fitted on clips of the validation faces
  (`tracking_fit`), the exported pipeline. Built beside `out` and put in its place whole
  (`files.replace_folder`), so a failure or a kill leaves the older package as it was."""
  out = os.path.normpath(out)
  staged = f"{out}.partial-{os.getpid()}"
  try:
    summary = packaging.package_pretrained(
      config,
      workdir,
      staged,
      options.detector_calibration,
      options.use_spatial_transformer,
      options.variant,
      options.kernel_dtype,
    )
    log(f"packaged {', '.join(summary['stages'])} from {workdir}")
    if options.offset_faces:
      records = annotation_offset.training_sample(config, options.offset_faces)
      fitted = annotation_offset.fit(pretrained.load_pretrained(staged), records)
      packaging.set_landmark_offset(staged, fitted["offset"])
      summary["landmark_offset"] = fitted
      log(
        f"landmark offset on {fitted['faces']} training faces: "
        f"dx {fitted['offset'][0]:+.3f}, dy {fitted['offset'][1]:+.3f} px"
      )
    made = pretrained.load_pretrained(staged)  # with its offset; thresholds leave it as is
    if options.tracking_clips:
      _, faces = tracking_fit.split_faces(config)
      try:
        fitted = tracking_fit.fit(made, faces, options.tracking_clips)
      except ValueError as error:
        raise ValueError(
          f"tracking thresholds: {error} (--tracking_clips 0 leaves them out)"
        ) from None
      packaging.set_tracking_thresholds(staged, fitted)
      summary["tracking_thresholds"] = fitted.to_dict()
      log(
        f"tracking thresholds on {options.tracking_clips} clips: lost below "
        f"{fitted.lost_below:.4g}, refined below {fitted.refine_below:.4g} (tracked) and "
        f"{fitted.refine_below_detected:.4g} (detected)"
      )
    if options.export_platforms:
      exported = export.export_from_trained(
        made.model, made.options, platforms=tuple(options.export_platforms)
      )
      export.save_exported(
        os.path.join(staged, EXPORT_FILE),
        exported,
        {"source": os.path.abspath(out), "pipeline_options": dataclasses.asdict(made.options)},
      )
      log(f"exported the pipeline for {', '.join(options.export_platforms)}")
    files.replace_folder(staged, out, carried=lambda name: name not in PACKAGE_FILES)
  except BaseException:
    shutil.rmtree(staged, ignore_errors=True)
    raise
  summary["directory"] = out
  summary["files"] = {name: os.path.getsize(os.path.join(out, name)) for name in os.listdir(out)}
  summary["bytes"] = sum(summary["files"].values())
  return summary
