"""The shipped model's recipe, step five: the network of `300w_subset_w192_tighter.py`
(packaged) fine-tuned 8 more epochs with occluders on more of the faces (natural texture on
half of them, a noise patch on 15 %), Adam 6e-5 halved after 5 epochs:

  python -m msm_jax.train.packaging --config configs/300w_subset_w192_tighter.py \
      --workdir runs/300w_w192_tighter --out runs/300w_w192_tighter_package \
      --config.inference.flip_test=true --kernel_dtype float16
  python train.py --config configs/300w_subset_w192_occluders.py \
      --workdir runs/300w_w192_occluders --config.stages=hourglass,dictionary
"""

import importlib

tighter = importlib.import_module("configs.300w_subset_w192_tighter")


def get_config():
  config = tighter.get_config()
  config.hourglass.init_from = "runs/300w_w192_tighter_package"
  config.augment.natural_occluder = 0.5
  config.augment.random_erasing = 0.15
  config.hourglass.learning_rate = 6e-5
  config.hourglass.epochs = 8
  config.hourglass.lr_halve_epochs = (5,)
  return config
