"""`train.py`'s training: set up devices, lock the workdir, record the config, run the chosen
stages in order. The evaluation after it is `train.py`'s to start (training never imports the
evaluation)."""

import os
import time

import jax

from msm_jax import files
from msm_jax.train import config_checks, parallel, stages
from msm_jax.train import workdir as workdir_lib
from msm_jax.train.workdir import locked, record_config


def train(config, workdir: str, log=print, allow_changed: bool = False) -> dict:
  """allow_changed: accept a config whose checkpoint-shaping fields differ from the
  workdir's recorded config.json (`workdir.compared_fields`). Returns {stage: what its
  training returned} (the final TrainState; the dictionary stage's exemplars)."""
  # First: JAX's backend must not start before jax.distributed (the stages' checks trace).
  parallel.maybe_initialize_distributed()
  chosen = config_checks.check_config(config)  # before anything is written
  for name in chosen:
    try:
      stages.STAGES[name].check(config)
    except ValueError as error:
      raise config_checks.ConfigError(str(error)) from None
  workdir_lib.prepare(workdir)
  if jax.process_index() > 0:  # multi-host: process 0 locks, records and logs for the job
    return _train_stages(config, workdir, chosen, lambda line: None)
  with locked(workdir, log):
    record_config(config, workdir, allow_changed, log)
    return _train_stages(config, workdir, chosen, log)


def _train_stages(config, workdir: str, chosen: tuple, log) -> dict:
  mesh = parallel.data_mesh()
  log(
    f"devices: {jax.device_count()} x {jax.devices()[0].platform} "
    f"({jax.process_count()} process(es)); workdir {os.path.abspath(workdir)}"
  )
  started = time.perf_counter()
  results = {}
  for stage in chosen:
    stage_start = time.perf_counter()
    results[stage] = stages.STAGES[stage].train(config, workdir, mesh, log)
    log(f"[{stage}] done in {time.perf_counter() - stage_start:.0f} s")
  timing = {"train_seconds": time.perf_counter() - started}
  if jax.process_index() == 0:
    files.write_json(os.path.join(workdir, "train_time.json"), timing)
  log(f"training finished in {timing['train_seconds']:.0f} s")
  return results
