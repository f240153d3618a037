"""The shipped model's recipe, fourth step: the network of `300w_subset_w192_tight.py`
(packaged) fine-tuned 10 more epochs with the jitter narrowed further (rotation +-8 degrees,
scale +-4 %, shift +-2.5 %), Adam 1e-4 halved after 5 and 8 epochs:

  python -m msm_jax.train.packaging --config configs/300w_subset_w192_tight.py \
      --workdir runs/300w_w192_tight --out runs/300w_w192_tight_package \
      --config.inference.flip_test=true --kernel_dtype float16
  python train.py --config configs/300w_subset_w192_tighter.py \
      --workdir runs/300w_w192_tighter --config.stages=hourglass,dictionary
"""

import importlib

tight = importlib.import_module("configs.300w_subset_w192_tight")


def get_config():
  config = tight.get_config()
  config.hourglass.init_from = "runs/300w_w192_tight_package"
  config.augment.rotation_degrees = 8.0
  config.augment.scale = 0.04
  config.augment.translation = 0.025
  config.hourglass.learning_rate = 1e-4
  config.hourglass.epochs = 10
  config.hourglass.lr_halve_epochs = (5, 8)
  return config
