"""The training stages of `train.py`, as one registry (`STAGES`, in training order):

  stgan       Sec. III-A, Algorithm 1: GDNN + DDNN on (I_fake, I_real, theta*)   stgan.py
  hourglass   Sec. III-B: the landmark network (`hourglass.architecture`)         landmark.py
  dictionary  Sec. III-C, IV-C: k-means exemplar shapes -> dictionary.npz          dictionary.py
  resnet      Sec. IV-G: the Res-50 coordinate-regression baseline of the ablation  landmark.py
  joint       the GDNN and the hourglass fine-tuned together through the pipeline joint.py

The paper trains the first three independently (Sec. IV-C). The record, the registry and the
driver are in `base.py`; a new stage is one module and one `register` call (README,
"Extending msm-jax").
"""

from msm_jax.train.stages import dictionary, joint, landmark, stgan
from msm_jax.train.stages.base import (
  DICTIONARY_FILE,
  STAGES,
  ConfigMismatchError,
  Setup,
  Stage,
  generator_module,
  hourglass_module,
  landmark_module,
  parse_stages,
  register,
  reliability_thresholds,
)

__all__ = [
  "DICTIONARY_FILE",
  "STAGES",
  "ConfigMismatchError",
  "Setup",
  "Stage",
  "generator_module",
  "hourglass_module",
  "landmark_module",
  "parse_stages",
  "register",
  "reliability_thresholds",
]

register(stgan.STAGE)
register(landmark.landmark_stage("hourglass"))
register(dictionary.STAGE)
register(landmark.landmark_stage("resnet", in_all=False))  # the ablation baseline, on request
register(joint.STAGE)
