"""The shipped model's recipe: the hourglass of `300w_subset.py` at width 192, trained in one
run on all 1,811 training faces with detector-like box jitter and natural-texture occluders
from the start, then the shape dictionary from the same faces.

  python train.py --config configs/300w_subset_w192.py --workdir runs/300w_w192 \
      --config.stages=hourglass,dictionary

~0.92 s per step (4,972 steps, ~1.3 h) on a 2-core AVX512-BF16 CPU in bfloat16.
"""

import importlib

subset = importlib.import_module("configs.300w_subset")  # a module name cannot start with 3


def get_config():
  config = subset.get_config()
  config.hourglass.width = 192  # 5.0 M parameters
  config.hourglass.epochs = 44  # 113 steps per epoch
  config.hourglass.lr_halve_epochs = (16, 26, 38)
  return subset.detector_like_augmentation(config)
