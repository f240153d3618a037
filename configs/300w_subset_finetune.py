"""Fine-tuning a pretrained hourglass on the 300-W faces at hand (`300w_subset.py`'s data and
validation images): starts from the package in `hourglass.init_from`, trains on all 1,811
training faces with detector-like box jitter and natural-texture occluders, then rebuilds the
shape dictionary from the same faces.

  python train.py --config configs/300w_subset_finetune.py --workdir runs/300w_finetune \
      --config.stages=hourglass,dictionary --config.hourglass.init_from=<package>

The starting package must not have been trained on the validation images (the shipped
`pretrained/` was not: `configs/300w_subset_w192.py` trains on the 1,811 training faces only).
"""

import importlib

subset = importlib.import_module("configs.300w_subset")  # a module name cannot start with 3


def get_config():
  config = subset.get_config()
  config.hourglass.init_from = "pretrained"
  config.hourglass.learning_rate = 5e-4
  config.hourglass.epochs = 16  # 113 steps per epoch
  config.hourglass.lr_halve_epochs = (8, 12, 14)
  return subset.detector_like_augmentation(config)
