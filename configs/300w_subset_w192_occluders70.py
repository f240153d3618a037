"""The shipped model's recipe, step six: the network of `300w_subset_w192_occluders.py`
(packaged) fine-tuned 8 more epochs with occluders on more of the faces still (natural texture
on 70 % of them, a noise patch on 20 %), Adam 5e-5 halved after 5 epochs:

  python -m msm_jax.train.packaging --config configs/300w_subset_w192_occluders.py \
      --workdir runs/300w_w192_occluders --out runs/300w_w192_occluders_package \
      --config.inference.flip_test=true --kernel_dtype float16
  python train.py --config configs/300w_subset_w192_occluders70.py \
      --workdir runs/300w_w192_occluders70 --config.stages=hourglass,dictionary
"""

import importlib

occluders = importlib.import_module("configs.300w_subset_w192_occluders")


def get_config():
  config = occluders.get_config()
  config.hourglass.init_from = "runs/300w_w192_occluders_package"
  config.augment.natural_occluder = 0.7
  config.augment.random_erasing = 0.2
  config.hourglass.learning_rate = 5e-5
  return config
