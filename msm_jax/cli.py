"""Process set-up shared by the command-line programs (train.py, evaluate.py, predict.py)."""

import os

# Measured on this 2-core CPU machine (shared/notes/cpu_and_stack.md): the YNN fusion makes a
# training step ~30 % faster but slows inference by ~30 %, so it is set for training only.
_TRAINING_XLA_FLAGS = "--xla_cpu_experimental_ynn_fusion_type=dot,reduce"


def configure_training_process() -> None:
  """Set CPU XLA flags before JAX initialises its backend (no effect on GPU/TPU)."""
  flags = os.environ.get("XLA_FLAGS", "")
  if "ynn_fusion" not in flags and os.environ.get("MSM_JAX_NO_YNN") is None:
    os.environ["XLA_FLAGS"] = f"{flags} {_TRAINING_XLA_FLAGS}".strip()
