"""DukeMTMC-reID (Zheng et al., ICCV 2017; from Ristani et al.'s DukeMTMC).

Layout (``DukeMTMC-reID/``):
    bounding_box_train/  0001_c2_f0046182.jpg ...   16,522 images, 702 ids
    bounding_box_test/   gallery: 17,661 images, 1,110 ids (408 distractor ids included)
    query/               2,228 images, 702 ids

File names: ``PPPP_cC_fFFFFFFF.jpg`` with cameras 1-8 (made 0-based); there are no junk images.
"""

from __future__ import annotations

import os

from reidkit.data.datasets._common import VerifyMode, assemble
from reidkit.data.datasets.market1501 import SPLIT_DIRS, load_bbox_layout
from reidkit.data.records import ReidDataset

FOLDER_NAMES = ("DukeMTMC-reID", "dukemtmc-reid/DukeMTMC-reID", "dukemtmcreid/DukeMTMC-reID", "dukemtmc-reid",
                "dukemtmcreid")
LAYOUT = "folders bounding_box_train/, bounding_box_test/, query/"


def load(root: str | os.PathLike[str], verify_images: VerifyMode = "header") -> ReidDataset:
    """Read DukeMTMC-reID from ``root`` (its own folder or the folder holding it)."""
    base, splits, skipped = load_bbox_layout(
        "dukemtmcreid", root, candidates=FOLDER_NAMES, layout=LAYOUT, max_cam=8, drop_pids=(-1,),
        verify_images=verify_images,
    )
    sources = {s: str(base / d) for s, d in SPLIT_DIRS.items()}
    return assemble("dukemtmcreid", base, splits, verify=verify_images, sources=sources, skipped=skipped)
