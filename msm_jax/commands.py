"""The bodies of the commands that span floors: `train.py` trains, then evaluates.

The one library module that imports both the training and the evaluation packages; nothing
below it imports it (the layer contract in pyproject.toml).
"""

import jax

from msm_jax.eval import paper_tables
from msm_jax.train import model_io, run


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
