"""Default config: PySlowFast key names and default values (slowfast/config/defaults.py),
only for the keys this project reads, plus our extension keys in marked blocks."""
from fvcore.common.config import CfgNode

_C = CfgNode()

# ---- PySlowFast keys (same names and defaults) ----
_C.NUM_GPUS = 1
_C.NUM_SHARDS = 1
_C.SHARD_ID = 0
_C.OUTPUT_DIR = "./tmp"
_C.RNG_SEED = 1
_C.LOG_PERIOD = 10
_C.LOG_MODEL_INFO = True
_C.DIST_BACKEND = "nccl"
# PySlowFast passes INIT_METHOD on the command line (tcp://host:port); a key here so YAML/opts work.
# Empty: the rendezvous comes from the launcher's environment (torchrun, MPI, SLURM, PBS, SGE).
_C.INIT_METHOD = ""

_C.BN = CfgNode()
_C.BN.USE_PRECISE_STATS = False
_C.BN.NUM_BATCHES_PRECISE = 200
_C.BN.WEIGHT_DECAY = 0.0
_C.BN.NORM_TYPE = "batchnorm"
_C.BN.NUM_SPLITS = 1
_C.BN.NUM_SYNC_DEVICES = 1
# Keys of older PySlowFast versions (2020), which older YAML files set; the models take them.
_C.BN.EPSILON = 1e-5
_C.BN.MOMENTUM = 0.1

_C.TRAIN = CfgNode()
_C.TRAIN.ENABLE = True
_C.TRAIN.DATASET = "kinetics"
_C.TRAIN.BATCH_SIZE = 64
_C.TRAIN.EVAL_PERIOD = 10
_C.TRAIN.CHECKPOINT_PERIOD = 10
_C.TRAIN.AUTO_RESUME = True
# Ours: keep only the N newest end-of-epoch checkpoints (and the best by mAP); 0 keeps all.
_C.TRAIN.CHECKPOINT_KEEP = 0
_C.TRAIN.CHECKPOINT_FILE_PATH = ""
_C.TRAIN.CHECKPOINT_TYPE = "pytorch"
_C.TRAIN.CHECKPOINT_INFLATE = False
_C.TRAIN.CHECKPOINT_EPOCH_RESET = False
_C.TRAIN.CHECKPOINT_CLEAR_NAME_PATTERN = ()
# Newer PySlowFast versions define TRAIN.MIXED_PRECISION (autocast); default off.
_C.TRAIN.MIXED_PRECISION = False

_C.TEST = CfgNode()
_C.TEST.ENABLE = True
_C.TEST.DATASET = "kinetics"
_C.TEST.BATCH_SIZE = 8
_C.TEST.CHECKPOINT_FILE_PATH = ""
_C.TEST.NUM_ENSEMBLE_VIEWS = 10
_C.TEST.NUM_SPATIAL_CROPS = 3
_C.TEST.CHECKPOINT_TYPE = "pytorch"
_C.TEST.SAVE_RESULTS_PATH = ""

_C.RESNET = CfgNode()
_C.RESNET.TRANS_FUNC = "bottleneck_transform"
_C.RESNET.NUM_GROUPS = 1
_C.RESNET.WIDTH_PER_GROUP = 64
_C.RESNET.INPLACE_RELU = True
_C.RESNET.STRIDE_1X1 = False
_C.RESNET.ZERO_INIT_FINAL_BN = False
_C.RESNET.DEPTH = 50
_C.RESNET.NUM_BLOCK_TEMP_KERNEL = [[3], [4], [6], [3]]
_C.RESNET.SPATIAL_STRIDES = [[1], [2], [2], [2]]
_C.RESNET.SPATIAL_DILATIONS = [[1], [1], [1], [1]]

_C.NONLOCAL = CfgNode()
_C.NONLOCAL.LOCATION = [[[]], [[]], [[]], [[]]]
_C.NONLOCAL.GROUP = [[1], [1], [1], [1]]
_C.NONLOCAL.INSTANTIATION = "dot_product"
_C.NONLOCAL.POOL = [[[1, 2, 2], [1, 2, 2]]] * 4

_C.MODEL = CfgNode()
_C.MODEL.ARCH = "slowfast"
_C.MODEL.MODEL_NAME = "SlowFast"
_C.MODEL.NUM_CLASSES = 400
_C.MODEL.LOSS_FUNC = "cross_entropy"
_C.MODEL.SINGLE_PATHWAY_ARCH = ["2d", "c2d", "i3d", "slow", "x3d", "mvit"]
_C.MODEL.MULTI_PATHWAY_ARCH = ["slowfast"]
_C.MODEL.DROPOUT_RATE = 0.5
_C.MODEL.DROPCONNECT_RATE = 0.0
_C.MODEL.FC_INIT_STD = 0.01
_C.MODEL.HEAD_ACT = "softmax"

_C.SLOWFAST = CfgNode()
_C.SLOWFAST.BETA_INV = 8
_C.SLOWFAST.ALPHA = 8
_C.SLOWFAST.FUSION_CONV_CHANNEL_RATIO = 2
_C.SLOWFAST.FUSION_KERNEL_SZ = 5

_C.DATA = CfgNode()
_C.DATA.PATH_TO_DATA_DIR = ""
_C.DATA.PATH_PREFIX = ""
_C.DATA.NUM_FRAMES = 8
_C.DATA.SAMPLING_RATE = 8
_C.DATA.TRAIN_PCA_EIGVAL = [0.225, 0.224, 0.229]
_C.DATA.TRAIN_PCA_EIGVEC = [
    [-0.5675, 0.7192, 0.4009],
    [-0.5808, -0.0045, -0.8140],
    [-0.5836, -0.6948, 0.4203],
]
_C.DATA.MEAN = [0.45, 0.45, 0.45]
_C.DATA.INPUT_CHANNEL_NUM = [3, 3]
_C.DATA.STD = [0.225, 0.225, 0.225]
_C.DATA.TRAIN_JITTER_SCALES = [256, 320]
_C.DATA.TRAIN_CROP_SIZE = 224
_C.DATA.TEST_CROP_SIZE = 256
_C.DATA.TARGET_FPS = 30
_C.DATA.DECODING_BACKEND = "pyav"
_C.DATA.RANDOM_FLIP = True
_C.DATA.MULTI_LABEL = False
_C.DATA.REVERSE_INPUT_CHANNEL = False

_C.SOLVER = CfgNode()
_C.SOLVER.BASE_LR = 0.1
_C.SOLVER.LR_POLICY = "cosine"
_C.SOLVER.COSINE_END_LR = 0.0
_C.SOLVER.GAMMA = 0.1
_C.SOLVER.STEP_SIZE = 1
_C.SOLVER.STEPS = []
_C.SOLVER.LRS = []
_C.SOLVER.MAX_EPOCH = 300
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.DAMPENING = 0.0
_C.SOLVER.NESTEROV = True
_C.SOLVER.WEIGHT_DECAY = 1e-4
_C.SOLVER.WARMUP_FACTOR = 0.1
_C.SOLVER.WARMUP_EPOCHS = 0.0
_C.SOLVER.WARMUP_START_LR = 0.01
_C.SOLVER.OPTIMIZING_METHOD = "sgd"
_C.SOLVER.BASE_LR_SCALE_NUM_SHARDS = False
_C.SOLVER.COSINE_AFTER_WARMUP = False
_C.SOLVER.ZERO_WD_1D_PARAM = False
_C.SOLVER.LARS_ON = False
_C.SOLVER.BETAS = (0.9, 0.999)
# Ours: LARS's trust coefficient (PySlowFast hard-codes 0.001).
_C.SOLVER.LARS_TRUST_COEFFICIENT = 0.001

_C.DATA_LOADER = CfgNode()
_C.DATA_LOADER.NUM_WORKERS = 8
_C.DATA_LOADER.PIN_MEMORY = True
_C.DATA_LOADER.ENABLE_MULTI_THREAD_DECODE = False

_C.DETECTION = CfgNode()
_C.DETECTION.ENABLE = False
_C.DETECTION.ALIGNED = True
_C.DETECTION.SPATIAL_SCALE_FACTOR = 16
_C.DETECTION.ROI_XFORM_RESOLUTION = 7

_C.AVA = CfgNode()
_C.AVA.FRAME_DIR = "/mnt/fair-flash3-east/ava_trainval_frames.img/"
_C.AVA.FRAME_LIST_DIR = "/mnt/vol/gfsai-flash3-east/ai-group/users/haoqifan/ava/frame_list/"
_C.AVA.ANNOTATION_DIR = "/mnt/vol/gfsai-flash3-east/ai-group/users/haoqifan/ava/frame_list/"
_C.AVA.TRAIN_LISTS = ["train.csv"]
_C.AVA.TEST_LISTS = ["val.csv"]
_C.AVA.TRAIN_GT_BOX_LISTS = ["ava_train_v2.2.csv"]
_C.AVA.TRAIN_PREDICT_BOX_LISTS = []
_C.AVA.TEST_PREDICT_BOX_LISTS = ["ava_val_predicted_boxes.csv"]
_C.AVA.DETECTION_SCORE_THRESH = 0.9
_C.AVA.BGR = False
_C.AVA.TRAIN_USE_COLOR_AUGMENTATION = False
_C.AVA.TRAIN_PCA_JITTER_ONLY = True
_C.AVA.TEST_FORCE_FLIP = False
_C.AVA.FULL_TEST_ON_VAL = False
_C.AVA.LABEL_MAP_FILE = "ava_action_list_v2.2_for_activitynet_2019.pbtxt"
_C.AVA.EXCLUSION_FILE = "ava_val_excluded_timestamps_v2.2.csv"
_C.AVA.GROUNDTRUTH_FILE = "ava_val_v2.2.csv"
_C.AVA.IMG_PROC_BACKEND = "cv2"

_C.TENSORBOARD = CfgNode()
_C.TENSORBOARD.ENABLE = False
_C.TENSORBOARD.LOG_DIR = ""

# Multigrid training (Wu et al., 2020), PySlowFast's keys and defaults; train/multigrid.py.
_C.MULTIGRID = CfgNode()
_C.MULTIGRID.EPOCH_FACTOR = 1.5
_C.MULTIGRID.SHORT_CYCLE = False
_C.MULTIGRID.SHORT_CYCLE_FACTORS = [0.5, 0.5 ** 0.5]
_C.MULTIGRID.LONG_CYCLE = False
_C.MULTIGRID.LONG_CYCLE_FACTORS = [[0.25, 0.5 ** 0.5], [0.5, 0.5 ** 0.5], [0.5, 1.0], [1.0, 1.0]]
_C.MULTIGRID.BN_BASE_SIZE = 8
_C.MULTIGRID.EVAL_FREQ = 3
# Set by PySlowFast while it trains (its "global variables"); read from the schedule here, so a
# value in a YAML file is accepted and not used.
_C.MULTIGRID.LONG_CYCLE_SAMPLING_RATE = 0
_C.MULTIGRID.DEFAULT_B = 0
_C.MULTIGRID.DEFAULT_T = 0
_C.MULTIGRID.DEFAULT_S = 0

# ---- slowfast-dist extension keys (not in PySlowFast) ----
# How a long-cycle stage's LR follows its batch factor: linear (PySlowFast), sqrt or none.
_C.MULTIGRID.LR_SCALING = "linear"
# Keep sampler + workers for the whole run (the study's RepeatSampler); False = rebuild per epoch.
_C.DATA_LOADER.PERSISTENT_WORKERS = True
# A loader worker that delivers no batch for this many seconds stops the rank, named (0: wait).
_C.DATA_LOADER.TIMEOUT_S = 600.0
# Where AVA pixels come from: "frames" (PySlowFast's JPEG dirs) or "video" (decode clips).
_C.AVA.PIXEL_SOURCE = "frames"
# JPEG decoder for AVA frames: auto (libjpeg where it was built, else simplejpeg, else pil),
# libjpeg (decodes only the crop's window; built by pip install where gcc and libjpeg-turbo's
# headers are found), simplejpeg, pil, opencv (in the loader workers); yuv420 (4:2:0 JPEGs
# only: the workers ship the Y, Cb, Cr planes, half the bytes of RGB, converted to RGB on the
# training device); or nvjpeg, dali (the batch
# decoded on the training device; workers only read bytes; dali also runs on CPU through its
# CPU backend).
_C.DATA.DECODER = "auto"
# Directory of AVA videos when PIXEL_SOURCE is "video".
_C.AVA.VIDEO_DIR = ""
# AMP dtype when TRAIN.MIXED_PRECISION: "bf16" or "fp16".
_C.TRAIN.AMP_DTYPE = "bf16"
# Gradient accumulation steps per optimizer step.
_C.TRAIN.GRAD_ACCUM_STEPS = 1
# Linear scaling reference global batch; 0 = use BASE_LR_SCALE_NUM_SHARDS instead.
_C.SOLVER.REFERENCE_GLOBAL_BATCH = 0
# Ours: warm-up epochs x (global batch / SOLVER.REFERENCE_GLOBAL_BATCH), at least
# SOLVER.WARMUP_EPOCHS, ending an epoch before the first LR step (half the run under cosine):
# a longer warm-up for larger batches; False keeps PySlowFast's fixed length.
_C.SOLVER.WARMUP_SCALES_WITH_BATCH = False
# Memory format / torch.compile / activation checkpointing switches (not in PySlowFast).
_C.MODEL.CHANNELS_LAST = False
_C.MODEL.COMPILE = False
_C.MODEL.ACT_CHECKPOINT = False
# Load TRAIN/TEST.CHECKPOINT_FILE_PATH with full unpickling, which runs any code the file holds.
# Off: only tensors, plain values and a few data classes load (PySlowFast's files need no more).
_C.TRAIN.CHECKPOINT_FULL_UNPICKLE = False
_C.TEST.CHECKPOINT_FULL_UNPICKLE = False
# Freeze BN statistics and affine params (PySlowFast has no such key).
_C.BN.FREEZE = False
# DistributedDataParallel knobs.
_C.DDP = CfgNode()
_C.DDP.BUCKET_CAP_MB = 25
_C.DDP.STATIC_GRAPH = False
_C.DDP.FIND_UNUSED_PARAMETERS = False
# Gradients as views into the allreduce buckets (saves one gradient-sized copy and its memory).
_C.DDP.GRADIENT_AS_BUCKET_VIEW = False
# Gradient compression on the wire: "none", or "bf16"/"fp16" (torch's compress hooks: half the
# bytes of every allreduce, gradients rounded to 16 bits before they are averaged).
_C.DDP.COMM_HOOK = "none"
# torch.profiler schedule and NVTX/communication probes.
_C.PROFILE = CfgNode()
_C.PROFILE.ENABLE = False
_C.PROFILE.WAIT = 1
_C.PROFILE.WARMUP = 1
_C.PROFILE.ACTIVE = 3
_C.PROFILE.REPEAT = 1
_C.PROFILE.NVTX = True
# Time every gradient bucket's allreduce with a Python DDP comm hook (replaces DDP's C++ one;
# read once per LOG_PERIOD). Off by default: it costs a Python call per bucket per step.
_C.PROFILE.COMM_PROBE = False
# Peak TFLOP/s for the MFU shown in the log; 0 = the table in profiling/mfu.py by device name.
_C.PROFILE.PEAK_TFLOPS = 0.0
# Process-group timeout and a fake world size for dry runs (0 = real run).
_C.DIST = CfgNode()
_C.DIST.TIMEOUT_S = 300
_C.DIST.DRY_RUN_WORLD_SIZE = 0
# Ours: train as N ranks would on fewer processes (N a multiple of the real world size): each
# process runs N / world simulated ranks' batches one after another and accumulates their
# gradients; BN normalises over each simulated rank's batch. 0: off.
_C.DIST.SIMULATE_WORLD_SIZE = 0


def get_cfg() -> CfgNode:
    """A fresh copy of the defaults."""
    return _C.clone()
