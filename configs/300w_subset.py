"""The shipped model: the 2,012 300-W training faces in `shared/data/300w_subset` (afw,
helen/trainset, lfpw/trainset; official layout) with the images named in
`configs/splits/300w_subset_validation.txt` held out (201 faces), trained from scratch in one
run by the recipe of `recipe.py` with a width-192 hourglass (trains in CPU hours), then the
shape dictionary; then one command makes the package (landmark offset included):

  python train.py --config configs/300w_subset.py --workdir runs/300w_subset
  python package.py --config configs/300w_subset.py --workdir runs/300w_subset \
      --out pretrained/
  python evaluate.py --config configs/300w_subset.py --workdir runs/300w_subset --robustness

Variants are overrides, e.g. `--config.hourglass.width=256` (the paper's width),
`--config.data.validation_list=` (all 2,012 faces); `recipe.py` says how to add the ST-GAN.
The data is for research, non-commercial use only; it is never part of this repository.
"""

import os

from configs import base, recipe

SPLITS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "splits")


def get_config():
  config = recipe.apply(base.get_config(), epochs=104)  # 113 steps per epoch
  config.data.dataset = "300w"
  config.data.root = "../shared/data/300w_subset"
  config.data.train_split = "train"  # reads the afw + helen/trainset + lfpw/trainset folders
  config.data.validation_list = os.path.join(SPLITS, "300w_subset_validation.txt")
  config.data.eval_splits = ("validation",)
  config.data.worker_count = 0  # 2 CPU cores: both go to the training step
  config.hourglass.width = 192  # 4.9 M parameters
  config.hourglass.stem_widths = (32, 64, 64)
  config.stgan.epochs = 60
  config.stgan.lr_halve_epochs = (40,)
  config.stgan.discriminator_width = 0.25
  # With Sec. IV-C's balance D rejects every warped face within a few hundred steps on these
  # photos (D's loss on fakes ~1e-6) and L_A drowns the theta term (theta error 0.35 after
  # 1,500 steps, 0.15 at its best). G first learns theta alone; D is slowed and smoothed.
  config.stgan.adversarial_warmup_steps = 4500
  config.stgan.discriminator_learning_rate = 1e-4
  config.stgan.real_label = 0.9
  config.shape.dictionary_size = 500
  config.checkpoint.every_steps = 200
  config.eval_every_steps = 2000
  return config
