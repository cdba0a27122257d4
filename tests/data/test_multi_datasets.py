"""Several training datasets as one (``reidkit.data.multi.combine``): identities and cameras offset per dataset,
exactly, on hand-made datasets and on trees in the real layouts (Market-1501, DukeMTMC-reID, MSMT17 from
../shared/realnames, skipped when absent); the sources a config names and their table labels."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from realnames_trees import build_tree, names

from reidkit.data.multi import DatasetSource, combine, source_labels
from reidkit.data.records import Record, ReidDataset
from reidkit.engine.config import load_config
from reidkit.errors import DatasetError


def _ds(name: str, train: list[tuple[int, int]], gallery_camids: tuple[int, ...] = (0,)) -> ReidDataset:
    """A dataset of (pid, camid) train records, one query and the given gallery cameras (paths name them)."""
    return ReidDataset(name, f"/d/{name}", [Record(f"/d/{name}/t{i}.jpg", p, c) for i, (p, c) in enumerate(train)],
                       [Record(f"/d/{name}/q.jpg", 1, 0)],
                       [Record(f"/d/{name}/g{c}.jpg", 1, c) for c in gallery_camids])


def test_offsets_on_hand_made_datasets() -> None:
    # a: 3 train ids (pids 0..2), cameras 0 and 2 in train, 3 in the gallery -> 4 cameras (0..3)
    a = _ds("a", [(0, 0), (1, 2), (2, 0), (2, 2)], gallery_camids=(1, 3))
    # b: ids numbered 5 and 9 (not relabelled by its maker) -> labels 0, 1; one camera
    b = _ds("b", [(9, 0), (5, 0), (9, 0)])
    c = _ds("c", [(0, 1)])  # camid 1 only: 2 cameras (0..1)
    both = combine([a, b, c])
    assert both.extras["datasets"] == [
        {"name": "a", "root": "/d/a", "pid_offset": 0, "ids": 3, "camid_offset": 0, "cameras": 4, "images": 4},
        {"name": "b", "root": "/d/b", "pid_offset": 3, "ids": 2, "camid_offset": 4, "cameras": 1, "images": 3},
        {"name": "c", "root": "/d/c", "pid_offset": 5, "ids": 1, "camid_offset": 5, "cameras": 2, "images": 1},
    ]
    assert [(r.pid, r.camid) for r in both.train] == [(0, 0), (1, 2), (2, 0), (2, 2),  # a unchanged
                                                      (4, 4), (3, 4), (4, 4),  # b: 9 -> 1 + 3, 5 -> 0 + 3
                                                      (5, 6)]  # c: 0 + 5, 1 + 5
    assert [r.path for r in both.train] == [r.path for d in (a, b, c) for r in d.train]
    assert both.query == a.query and both.gallery == a.gallery  # the first dataset's test split, untouched
    assert both.num_train_pids == 6 and both.name == "a+b+c"
    with pytest.raises(DatasetError, match="at least one"):
        combine([])
    with pytest.raises(DatasetError, match="'b' has no training images"):
        combine([a, _ds("b", [])])


def test_config_sources_spread_one_root_or_options_over_all() -> None:
    cfg = load_config(None, ["data.dataset=[market1501, cuhk03]", "data.root=/data",
                             "data.options={verify_images: none}"])
    assert cfg.data.sources() == [DatasetSource("market1501", "/data", {"verify_images": "none"}),
                                  DatasetSource("cuhk03", "/data", {"verify_images": "none"})]
    cfg = load_config(None, ["data.dataset=[market, cuhk03]", "data.root=[/m, /c]",
                             "data.options=[{}, {labeled: false}]"])
    assert cfg.data.sources() == [DatasetSource("market", "/m", {}), DatasetSource("cuhk03", "/c", {"labeled": False})]
    assert load_config(None, []).data.sources() == [DatasetSource("market1501", "data/market1501", {})]


def test_labels_are_distinct() -> None:
    labels = source_labels([DatasetSource("market", "/a"), DatasetSource("cuhk03", "/c", {"labeled": False}),
                            DatasetSource("duke", "/x"), DatasetSource("dukemtmcreid", "/y"),
                            DatasetSource("cuhk03", "/c", {"labeled": True})])
    assert labels == ["market1501", "cuhk03 (labeled=false)", "dukemtmcreid [/x]", "dukemtmcreid [/y]",
                      "cuhk03 (labeled=true)"]


@pytest.fixture(scope="module")
def real_trees(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Market-1501 and DukeMTMC-reID trees from the real file names, and MSMT17's real list files."""
    root = tmp_path_factory.mktemp("real")
    build_tree(root / "market" / "Market-1501-v15.09.15", names(shared_dir, "market1501"))
    build_tree(root / "duke" / "DukeMTMC-reID", names(shared_dir, "dukemtmcreid"))
    msmt = root / "msmt" / "MSMT17_V1"
    (msmt / "train").mkdir(parents=True)
    (msmt / "test").mkdir()
    for f in (shared_dir / "realnames" / "msmt17").glob("list_*.txt"):
        shutil.copyfile(f, msmt / f.name)
    return root


def test_real_layouts_offsets_exactly(real_trees: Path) -> None:
    """Market-1501 (751 train ids, 6 cameras), then DukeMTMC-reID (702, 8), then MSMT17 (1,041, 15), named as a
    config names them: Duke's pid 0 is 751 and its camid 0 is 6, MSMT17's 1,453 and 14."""
    r = real_trees
    cfg = load_config(None, ["data.dataset=[market1501, dukemtmcreid, msmt17]",
                             f"data.root=[{r / 'market'}, {r / 'duke'}, {r / 'msmt'}]",
                             "data.options=[{}, {}, {verify_images: none}]"])
    parts = [s.load() for s in cfg.data.sources()]
    both = combine(parts)
    assert [{k: v for k, v in m.items() if k != "root"} for m in both.extras["datasets"]] == [
        {"name": "market1501", "pid_offset": 0, "ids": 751, "camid_offset": 0, "cameras": 6, "images": 12936},
        {"name": "dukemtmcreid", "pid_offset": 751, "ids": 702, "camid_offset": 6, "cameras": 8, "images": 16522},
        {"name": "msmt17", "pid_offset": 1453, "ids": 1041, "camid_offset": 14, "cameras": 15, "images": 32621},
    ]
    assert len(both.train) == 12936 + 16522 + 32621
    assert sorted({x.pid for x in both.train}) == list(range(751 + 702 + 1041))
    assert sorted({x.camid for x in both.train}) == list(range(6 + 8 + 15))
    # record by record: each dataset's own (pid, camid) shifted by its offsets, nothing else changed
    start = 0
    pid_sets, cam_sets = [], []
    for part, pid_off, cam_off in zip(parts, (0, 751, 1453), (0, 6, 14), strict=True):
        mine = both.train[start:start + len(part.train)]
        start += len(part.train)
        assert mine == [Record(x.path, x.pid + pid_off, x.camid + cam_off) for x in part.train]
        pid_sets.append({x.pid for x in mine})
        cam_sets.append({x.camid for x in mine})
    for i in range(3):
        for j in range(i + 1, 3):
            assert not pid_sets[i] & pid_sets[j] and not cam_sets[i] & cam_sets[j]
    duke = parts[1]
    first = next(x for x in duke.train if x.pid == 0)  # Duke's pid 0 (its id 0001 file names)
    assert both.train[12936 + duke.train.index(first)].pid == 751
    assert "/0001_" in first.path.replace("\\", "/")
    assert both.query == parts[0].query and both.gallery == parts[0].gallery
    assert (len(both.query), len(both.gallery)) == (3368, 15913)
