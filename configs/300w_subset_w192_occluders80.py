"""The shipped model's recipe, step seven: the network of `300w_subset_w192_occluders70.py`
(packaged) fine-tuned 8 more epochs with natural texture on 80 % of the faces (a noise patch
on 20 %), Adam 4e-5 halved after 5 epochs:

  python -m msm_jax.train.packaging --config configs/300w_subset_w192_occluders70.py \
      --workdir runs/300w_w192_occluders70 --out runs/300w_w192_occluders70_package \
      --config.inference.flip_test=true --kernel_dtype float16
  python train.py --config configs/300w_subset_w192_occluders80.py \
      --workdir runs/300w_w192_occluders80 --config.stages=hourglass,dictionary
"""

import importlib

occluders70 = importlib.import_module("configs.300w_subset_w192_occluders70")


def get_config():
  config = occluders70.get_config()
  config.hourglass.init_from = "runs/300w_w192_occluders70_package"
  config.augment.natural_occluder = 0.8
  config.hourglass.learning_rate = 4e-5
  return config
