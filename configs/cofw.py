"""COFW, as in the paper (Sec. IV-E, Tables V and VIII): train on 300-W, test on the 68-point
re-annotation of the COFW test set (507 faces, Ghiasi & Fowlkes).

  python train.py --config configs/cofw.py --workdir runs/300w --config.data.root=/data/300W
  python evaluate.py --config configs/cofw.py --workdir runs/300w \
      --config.data.eval_root=/data/COFW68

The models are the 300-W ones (same workdir, the same training fields as `configs/300w.py`);
only the evaluation set differs. Table VIII's rows: as `configs/300w.py` says.
"""

from configs import base, recipe


def get_config():
  # The shipped model's recipe (`recipe.py`) at the paper's width (256) and epochs (300).
  config = recipe.apply(base.get_config(), epochs=300)
  config.data.dataset = "300w"
  config.data.scheme = "300w"
  config.data.train_split = "train"
  config.data.eval_dataset = "cofw68"
  config.data.eval_root = ""  # folder with COFW_test_color.mat and COFW68_Data/
  config.data.eval_splits = ("test",)
  return config
