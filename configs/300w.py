"""300-W (Sec. IV-A; Tables III and IV): the shipped model's recipe (`recipe.py`) at the
paper's width (256) over the paper's 300 epochs, on all 3,148 training faces.

  python train.py --config configs/300w.py --workdir runs/300w --config.data.root=/data/300W
  python evaluate.py --config configs/300w.py --workdir runs/300w --config.data.root=/data/300W

`data.root` holds the official release folders: afw/, helen/{trainset,testset}/,
lfpw/{trainset,testset}/, ibug/ and optionally 300W/{01_Indoor,02_Outdoor}/ (private test).
Prepared once as face crops, the faces are read at accelerator speed: `python -m msm_jax.data.tfds
build msm_300w --config crop256 --manual_dir /data/300W`, then `--config.data.source=tfds`.
The paper's ST-GAN rows: `--config.stages=all --config.data.crop_size=128
--config.hourglass.space_to_depth=1`; the Res-50 baseline: add `,resnet` to the stages.
"""

from configs import base, recipe


def get_config():
  config = recipe.apply(base.get_config(), epochs=300)
  config.data.dataset = "300w"
  config.data.scheme = "300w"
  config.data.train_split = "train"  # afw + helen/trainset + lfpw/trainset: 3,148 faces
  config.data.eval_splits = ("common", "challenge", "full", "private")
  return config
