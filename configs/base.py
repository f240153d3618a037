"""Shared defaults: every hyper-parameter of the paper, once, with where it comes from.

Not run directly: dataset configs (`300w.py`, `cofw.py`, `wflw.py`, `synthetic.py`) import
this and change a few fields.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  # Comma list of msm_jax/train/stages' STAGES (stgan, hourglass, dictionary, resnet);
  # "all" = the paper's three.
  config.stages = "all"
  # train.py ends with evaluate.py's report (tables, CED plots, overlays in <workdir>/eval).
  config.evaluate_after_training = True

  config.data = ml_collections.ConfigDict()
  config.data.dataset = "300w"  # msm_jax/data/datasets.py: DATASETS
  config.data.root = ""  # the dataset's official release folder
  # Where its faces are read (datasets.py: DATA_SOURCES): "folder", the photos under data.root,
  # decoded per face; "tfds", the face crops prepared once from them (docs/tfds.md) in
  # data.tfds_data_dir ("" = TFDS's default, $TFDS_DATA_DIR or ~/tensorflow_datasets).
  config.data.source = "folder"
  config.data.tfds_data_dir = ""
  config.data.scheme = "300w"  # landmark scheme: 300w (68) | wflw (98) | cofw (29)
  config.data.train_split = "train"
  config.data.eval_splits = ("common", "challenge", "full")
  # Evaluate on another dataset than the one trained on: "" (the same), "cofw68" (the
  # paper's COFW protocol) or "folder" (any folder tree of images + .pts); its root:
  config.data.eval_dataset = ""
  config.data.eval_root = ""
  config.data.validation_fraction = 0.0  # carve a seeded by-image split off train
  # Or name the validation images: a text file, one image path per line relative to data.root
  # (takes precedence over validation_fraction).
  config.data.validation_list = ""
  config.data.box_source = "landmarks"  # 300-W: landmarks | detector | ground_truth boxes
  config.data.crop_size = 128  # network input, Sec. III-A / III-B
  config.data.heatmap_size = 64  # hourglass output resolution, Sec. III-B
  config.data.box_margin = 1.25  # crop = landmark box scaled by this (field practice)
  config.data.skip_bad_samples = False  # True: skip and count bad files instead of failing
  config.data.worker_count = 2  # Grain worker processes
  config.data.prefetch = 2

  # Data augmentation, Sec. IV-C.
  config.augment = ml_collections.ConfigDict()
  config.augment.flip = True  # random flipping
  config.augment.rotation_degrees = 30.0  # "between +-30 degrees"
  config.augment.scale = 0.10  # "between +-10 %"
  config.augment.translation = 0.05  # fraction of the crop; not given in the paper
  config.augment.color_jitter = 0.2  # "colour jittering"; strength not given in the paper
  config.augment.random_erasing = 0.0  # probability of a random occluding patch (option)
  # Probability of a patch of natural texture (a window of the same photo) as an occluder.
  config.augment.natural_occluder = 0.0
  # Fields moved during a run: field -> ((epoch, value), ...), straight lines between the
  # knots (`msm_jax/data/augment.py: scheduled_options`); a scheduled field's value above is
  # not used. Empty: every field constant.
  config.augment.schedule = ml_collections.ConfigDict()

  # ST-GAN, Sec. III-A and IV-C, Algorithm 1.
  config.stgan = ml_collections.ConfigDict()
  config.stgan.generator_width = 1.0  # multiplies Table I's kernel counts
  config.stgan.discriminator_width = 1.0  # multiplies Table II's kernel counts
  config.stgan.batch_size = 16  # Sec. IV-C
  config.stgan.epochs = 1000  # Sec. IV-C
  config.stgan.learning_rate = 5e-4  # Adam, Sec. IV-C
  config.stgan.lr_halve_epochs = (400,)  # "reduced by half after 400 epochs"
  config.stgan.theta_weight = 1.0  # a in Eq. 5, Sec. IV-C
  config.stgan.adversarial_weight = 0.5  # b in Eq. 5, Sec. IV-C
  # The balance of a and b depends on the unit of ||theta - theta*||, which the paper does not
  # give: "pixels" (x S/2, how far a theta error moves the crop's edge) or "normalised"
  # (theta's own STN units). With "normalised" the adversarial gradient on theta dwarfs the
  # theta term's and theta does not learn (docs/cpu_notes.md).
  config.stgan.theta_loss_units = "pixels"
  # D's Adam rate. Sec. IV-C gives one rate for the ST-GAN; synthetic.py lowers it (balance).
  config.stgan.discriminator_learning_rate = 5e-4
  # D's target on real faces; < 1 is one-sided label smoothing (Salimans et al. 2016,
  # Sec. 3.4), which bounds D's confidence. 1.0 is Eq. 3 exactly.
  config.stgan.real_label = 1.0
  # G trains on the theta term alone for this many steps before the adversarial term switches
  # on (D trains throughout). Not in the paper: a knob for data where D overwhelms an
  # untrained G.
  config.stgan.adversarial_warmup_steps = 0
  # I_fake: a detector-like crop, perturbed (what a face detector hands over).
  config.stgan.perturb_rotation_degrees = 30.0
  config.stgan.perturb_scale = 0.10
  config.stgan.perturb_translation = 0.10
  # I_real: the canonical face, its pupils and mouth centre on a template (128x128 frame,
  # pixel-centre coordinates). "training_crops": where they sit on average in the ground-truth
  # box crops the hourglass trains on (computed from the training landmarks at the start of
  # the ST stage), so that a perfect warp lands faces in the hourglass's own frame; "fixed":
  # the three points below. The fixed ones are ~16 px from that frame on the synthetic faces
  # (pupils at y ~ 39, mouth at y ~ 80 there); with them the ST + HG rows trailed HG.
  config.stgan.template_source = "training_crops"
  config.stgan.template_left_pupil = (44.0, 50.0)
  config.stgan.template_right_pupil = (84.0, 50.0)
  config.stgan.template_mouth = (64.0, 96.0)

  # Stacked hourglass, Sec. III-B and IV-C.
  config.hourglass = ml_collections.ConfigDict()
  config.hourglass.architecture = "stacked_hourglass"  # msm_jax/models: ARCHITECTURES
  config.hourglass.width = 256  # Fig. 3
  config.hourglass.stem_widths = (
    64,
    64,
    128,
  )  # two 3x3 convs, pool, 3x3 conv; Fig. 3 has no numbers
  # b x b pixel blocks stacked on the channels before the stem: data.crop_size must be
  # 2 b x data.heatmap_size (1: the paper's 128 crop for 64x64 maps).
  config.hourglass.space_to_depth = 1
  config.hourglass.num_stacks = 2  # "two hourglass modules"
  config.hourglass.depth = 4  # "four-layer recursive structure"
  config.hourglass.batch_size = 16  # "similar procedure" to ST-GAN
  config.hourglass.epochs = 300  # Sec. IV-C
  config.hourglass.learning_rate = 5e-4  # not given for the hourglass; ST-GAN's value
  config.hourglass.lr_halve_epochs = (100,)  # "reduced to half after 100 epochs"
  config.hourglass.sigma = 1.5  # Gaussian target std in heatmap pixels; not in the paper
  # Occluded landmarks (dataset flag or augmentation occluder): 0 trains them like the others;
  # s > 0 towards a Gaussian s times wider, so Eq. 9's score falls where the face is hidden
  # (train/steps.py: heatmap_targets).
  config.hourglass.occluded_target_spread = 0.0
  # > 0: adds this x the L1 error (heatmap pixels) of the landmarks DARK decodes from the last
  # stack, the pipeline's decoder, to the heatmap loss (train/losses.py: decoded_landmark_l1).
  config.hourglass.decoded_landmark_weight = 0.0
  # The paper trains with MSE; on real data MSE did not learn in our calibration run
  # (docs/cpu_notes.md), spatial softmax cross-entropy did.
  config.hourglass.loss = "softmax_cross_entropy"  # or "mse" (train/losses.py: HEATMAP_LOSSES)
  config.hourglass.compute_dtype = "float32"  # or "bfloat16" (parameters stay float32)
  # msm_jax/models/layers.py: KERNELS. "auto": oneDNN's convolutions and BN + ReLU when JAX
  # computes on the CPU and the extension built, XLA's otherwise; "onednn", "xla": always those.
  config.hourglass.kernels = "auto"
  # Fine-tuning: start from the hourglass of this pretrained package folder ("" = random
  # init). Used only when the workdir has no hourglass checkpoint yet.
  config.hourglass.init_from = ""

  # Res-50 coordinate-regression baseline of the ablation (Sec. IV-G; stage "resnet").
  config.resnet = ml_collections.ConfigDict()
  config.resnet.architecture = "resnet50"
  config.resnet.width = 1.0  # multiplies ResNet-50's channels
  config.resnet.batch_size = 16
  config.resnet.epochs = 300  # as the hourglass
  config.resnet.learning_rate = 5e-4
  config.resnet.lr_halve_epochs = (100,)

  # Joint fine-tuning (not in the paper; stage "joint", on request): the trained GDNN and
  # hourglass together through the relaxed pipeline on the ST-GAN's detector-like crops, so
  # that the hourglass learns the ST-GAN's outputs and the ST-GAN what the hourglass needs
  # (msm_jax/train/steps.py, make_joint_step).
  config.joint = ml_collections.ConfigDict()
  config.joint.batch_size = 16
  config.joint.epochs = 4
  config.joint.learning_rate = 1e-4
  config.joint.lr_halve_epochs = (3,)
  config.joint.landmark_weight = 1.0  # per crop pixel of mean landmark error
  config.joint.theta_weight = 0.1  # x ||theta - theta*|| in stgan.theta_loss_units
  # Where the trained ST-GAN and hourglass checkpoints are read: "" = this workdir.
  config.joint.init_from = ""

  # Scores and exemplar shape reconstruction, Sec. III-B/C, IV-C, Table IX.
  config.shape = ml_collections.ConfigDict()
  config.shape.score_radius = 1  # r of Eq. 9; not given in the paper
  config.shape.contour_threshold = 0.4  # K for jaw-contour landmarks, Table IX
  config.shape.feature_threshold = 0.6  # K for facial-feature landmarks, Table IX
  config.shape.dictionary_size = 500  # N, Sec. IV-C
  config.shape.num_neighbours = 100  # k, Sec. IV-C
  config.shape.ridge_lambda = 60.0  # Sec. IV-C
  config.shape.replace = "unreliable"  # or "all": the paper's literal S_F = D_S alpha
  # A repaired landmark is a x the hourglass's own estimate + (1 - a) x the reconstruction;
  # 0 is the paper's replacement (msm_jax/inference/pipeline.py: repair_shapes).
  config.shape.hourglass_weight = 0.0
  # Width of the soft reliability weight sigmoid((score - K) / T) of the differentiable
  # pipeline (normalised-score units; msm_jax/inference/pipeline.py).
  config.shape.reliability_temperature = 0.05

  # Inference (msm_jax/inference/pipeline.py): passes re-run on a crop fitted to the previous
  # pass's landmarks, turned upright by the face's roll (not in the paper; what a detector's box
  # and a rolled face cost without it: docs/robustness.md).
  config.inference = ml_collections.ConfigDict()
  config.inference.recrop_passes = 1
  config.inference.upright_recrop = True
  # Average the maps of the crop and of its mirror image (test-time flip; twice the hourglass).
  config.inference.flip_test = False

  # Evaluation, Sec. IV-B.
  config.eval = ml_collections.ConfigDict()
  config.eval.failure_threshold = 0.08  # 300-W and COFW; WFLW uses 0.10
  config.eval.norms = ("inter_ocular", "inter_pupil")
  config.eval.batch_size = 32

  config.checkpoint = ml_collections.ConfigDict()
  config.checkpoint.every_steps = 500
  config.checkpoint.keep = 3

  config.log_every_steps = 50
  config.eval_every_steps = 2000
  return config
