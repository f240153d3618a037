"""The shipped model's recipe, ninth step, twice the input resolution: the network of
`300w_subset_w192_occluders90.py` (packaged) given 256x256 crops, each 2x2 block of pixels
stacked on the channels before the stem (`hourglass.space_to_depth = 2`), so the maps stay
64x64 and the hourglasses cost the same. The first conv starts as the packaged one spread
over each block (`hourglass.widen_stem`: the same maps on the 2x2-averaged crop) and
everything is fine-tuned 12 epochs, Adam 1e-4 halved after 6 and 10 epochs, with the
augmentation of the step before:

  python train.py --config configs/300w_subset_w192_hires.py \
      --workdir runs/300w_w192_hires --config.stages=hourglass,dictionary
  python -m msm_jax.train.packaging --config configs/300w_subset_w192_hires.py \
      --workdir runs/300w_w192_hires --out runs/300w_w192_hires_package \
      --config.inference.flip_test=true --kernel_dtype float16
"""

import importlib

occluders90 = importlib.import_module("configs.300w_subset_w192_occluders90")


def get_config():
  config = occluders90.get_config()
  config.hourglass.init_from = "runs/300w_w192_occluders90_package"
  config.data.crop_size = 256
  config.hourglass.space_to_depth = 2
  config.hourglass.learning_rate = 1e-4
  config.hourglass.epochs = 12
  config.hourglass.lr_halve_epochs = (6, 10)
  return config
