"""The bounds every value read from a file or a config is checked against before anything is allocated.

A model file, an ONNX file, a features file, an index manifest or a config names sizes (input size,
embedding width, number of classes, options); reidkit checks them against these bounds first, so a
crafted or damaged file is a one-line error instead of a traceback or an attempt to allocate petabytes
(``docs/guarantees.md``, "Files reidkit reads"). The resource knobs of the commands (threads, decoding workers, batch size, the
synthetic images' size) are bounded here too, by what the machine can run.
"""

from __future__ import annotations

import os

MIN_INPUT_SIDE = 8  # every network trains and embeds at 8×8 (tests/reliability: the config's edge values)
MAX_IMAGE_PIXELS = 89_478_485  # pixels in one decoded picture, any mode or bit depth (Pillow's own default)
MAX_INPUT_SIDE = 1024  # person crops are 128-384 pixels high; 1024×1024 still trains and embeds
MAX_EMBEDDING_DIM = 65_536
MAX_PARAMETERS = 1_000_000_000  # 4 GB of float32 weights; the papers' networks hold 25-35 million
MAX_BATCH_IMAGES = 4096  # sampler.p × sampler.k (the papers use 64-256)
MAX_WORKERS = 128  # data.workers: decoding threads or DataLoader processes
MAX_CONFIG_VALUES = 100_000  # values in a YAML document once its aliases are expanded (a preset holds ~100)
MAX_SEED = 2**32 - 1  # train.seed: numpy and the derived augmentation seeds stay in range
MAX_RANK = 100_000  # the length of a CMC curve (eval --max-rank, eval.max_rank): beyond it, it is flat
MAX_LR = 10.0  # optim.lr; larger rates overflow float32 within a few milestones or steps


def input_size_problem(size: object) -> str | None:
    """Why ``size`` is not an input size ``[H, W]`` within the bounds (None when it is one)."""
    if not isinstance(size, (list, tuple)) or len(size) != 2 or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in size):
        return f"expected [H, W], two integers, got {size!r}"[:200]
    if not all(MIN_INPUT_SIDE <= v <= MAX_INPUT_SIDE for v in size):
        return f"expected [H, W] with both between {MIN_INPUT_SIDE} and {MAX_INPUT_SIDE}, got {list(size)}"
    return None

# Files read as text: each must be a regular file (not a pipe or a device) and at most this many bytes
# (reidkit.utils.textfile). A preset is ~4 kB, a Market-1501 list ~1 MB, a manifest ~200 bytes per entry.
MAX_CONFIG_BYTES = 1 << 20  # a YAML config and each of its _base_ files: 1 MiB
MAX_LIST_BYTES = 1 << 30  # a CSV image list, an MSMT17 list file: 1 GiB (millions of rows)
MAX_MANIFEST_BYTES = 4 << 30  # an index manifest (ids and metadata of every entry): 4 GiB
MAX_SIDECAR_BYTES = 64 << 20  # a JSON sidecar (dataset metadata, extraction index, history.json): 64 MiB

# Resource knobs of the commands (and the library calls behind them).
THREADS_PER_CPU = 4  # --threads, --workers: at most this many per logical CPU (more only queue for the cores)
MAX_SYNTH_SIDE = MAX_INPUT_SIDE  # reidkit synth --height/--width: what a network can embed
MAX_SYNTH_IMAGES_PER_ID_CAM = 100  # reidkit synth --images-per-id-cam (Market-1501 has ~7 per identity and camera)
MAX_SYNTH_EXTRA = 100_000  # reidkit synth --distractors, --junk
MAX_SYNTH_IDS = 9_999  # reidkit synth/demo --ids: Market-1501 names hold 4-digit ids
MAX_NAME_BYTES = 255  # one file or folder name (NAME_MAX of Linux, macOS and Windows file systems)
MAX_PATH_BYTES = 4_095  # a whole path (PATH_MAX - 1 on Linux)
MAX_EPOCHS = 100_000  # reidkit demo --epochs
MAX_SECONDS = 7 * 24 * 3600  # a time budget (reidkit demo --seconds-budget): a week
MAX_RESULTS = 100_000  # results or pictures per query, queries drawn (--k, --queries, --worst, ...)
MAX_REPEATS = 10_000  # CUHK03 single-shot repeats
MAX_CLASSES = 1_000_000  # reidkit models --num-classes (MSMT17 has 1,041 training identities)
MAX_LABEL = 2**62  # a pid or camera number given on the command line


def max_threads() -> int:
    """The most CPU threads (or decoding workers) a command may use: ``THREADS_PER_CPU`` per logical CPU."""
    return THREADS_PER_CPU * (os.cpu_count() or 1)
