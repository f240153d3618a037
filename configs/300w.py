"""300-W with the paper's settings (Sec. IV-A/C; Tables III and IV).

  python train.py --config configs/300w.py --workdir runs/300w --config.data.root=/data/300W
  python evaluate.py --config configs/300w.py --workdir runs/300w --config.data.root=/data/300W

`data.root` holds the official release folders: afw/, helen/{trainset,testset}/,
lfpw/{trainset,testset}/, ibug/ and optionally 300W/{01_Indoor,02_Outdoor}/ (private test).
"""

from configs import base


def get_config():
  config = base.get_config()
  config.data.dataset = "300w"
  config.data.scheme = "300w"
  config.data.train_split = "train"  # afw + helen/trainset + lfpw/trainset: 3,148 faces
  config.data.eval_splits = ("common", "challenge", "full", "private")
  return config
