"""Train MSM: ST-GAN, stacked hourglass and shape dictionary (Sec. IV-C).

  python train.py --config configs/synthetic.py --workdir runs/synthetic
  python train.py --config configs/300w.py --workdir runs/300w --config.data.root=/data/300W
  python train.py --config configs/300w.py --workdir runs/300w_hg --config.stages=hourglass

Each stage resumes from its newest checkpoint in the workdir; re-running a finished run is a
no-op apart from re-evaluating. Multi-host: set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and
JAX_PROCESS_ID on every host (or MSM_JAX_DISTRIBUTED=1 where JAX detects the cluster).
One run at a time holds a workdir (<workdir>/.lock); a config whose data or network fields
differ from the workdir's config.json is refused unless --allow_changed_config is given.
"""

import os
import sys

from absl import app, flags
from ml_collections import config_flags

from msm_jax.cli import (
  configure_training_process,
  interrupts_remembered,
  parse_flags_help_exits_zero,
  quiet_library_logs,
  restart_with_page_reuse,
)

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "A configs/<name>.py file.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and reports go.")
_ALLOW_CHANGED_CONFIG = flags.DEFINE_bool(
  "allow_changed_config",
  False,
  "Train even if the data or network fields differ from the workdir's config.json.",
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  quiet_library_logs()
  configure_training_process()
  from msm_jax import commands
  from msm_jax.train import config_checks, stages, workdir  # after the XLA flags are set

  try:
    with interrupts_remembered():
      commands.train_and_evaluate(
        _CONFIG.value, _WORKDIR.value, allow_changed=_ALLOW_CHANGED_CONFIG.value
      )
  except config_checks.ConfigError as error:  # nothing written: one line, a usage error
    print(f"error: {error}", file=sys.stderr)
    raise SystemExit(2) from None
  # Locked, changed config, unwritable; fields that cannot work together: one line.
  except (workdir.WorkdirError, stages.ConfigMismatchError) as error:
    raise SystemExit(f"error: {error}") from None
  except KeyboardInterrupt as interrupt:  # checkpoints and metrics on disk are whole
    where = f" {interrupt}" if str(interrupt) else ""
    print(
      f"interrupted{where}; the same command resumes from the newest checkpoint", file=sys.stderr
    )
    sys.stdout.flush()
    sys.stderr.flush()
    # At once: an Orbax save cut short leaves threads that would hold up the interpreter's
    # exit (its temporary folder is ignored, and cleaned, by the next run).
    os._exit(130)


if __name__ == "__main__":
  restart_with_page_reuse()
  app.run(main, flags_parser=parse_flags_help_exits_zero)
