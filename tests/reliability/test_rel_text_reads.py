"""Files read as text (configs and their ``_base_``, CSV lists, list files, manifests, JSON sidecars) must be
regular files, read up to a cap (``reidkit.utils.textfile``): a named pipe, ``/dev/zero`` or an oversized file
is one line naming the file, never a hang or an endless read. CLI cases run under a subprocess timeout, so a
regression fails instead of blocking."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reidkit.errors import ConfigError, DatasetError, ReidkitError
from reidkit.utils.textfile import read_bytes, read_text

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes need a POSIX system")
TIMEOUT = 60  # seconds: the error comes before torch is imported; a blocked read would never return


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def test_fifo_as_config_is_one_line(tmp_path, cli, one_line_error):
    fifo = _fifo(tmp_path / "run.yaml")
    line = one_line_error(cli(["train", "--config", fifo], timeout=TIMEOUT), str(fifo))
    assert "named pipe" in line and "regular file" in line


def test_fifo_as_base_is_one_line(tmp_path, cli, one_line_error):
    fifo = _fifo(tmp_path / "base.yaml")
    child = tmp_path / "child.yaml"
    child.write_text(f"_base_: {fifo}\n", encoding="utf-8")
    line = one_line_error(cli(["train", "--config", child], timeout=TIMEOUT), str(fifo))
    assert "named pipe" in line


def test_dev_zero_as_config_is_one_line(cli, one_line_error):
    line = one_line_error(cli(["train", "--config", "/dev/zero"], timeout=TIMEOUT), "/dev/zero")
    assert "character device" in line


def test_config_over_the_cap_is_one_line(tmp_path, cli, one_line_error):
    from reidkit.utils.limits import MAX_CONFIG_BYTES

    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * MAX_CONFIG_BYTES + "\n", encoding="utf-8")
    line = one_line_error(cli(["train", "--config", big], timeout=TIMEOUT), str(big))
    assert "larger than 1 MiB" in line


def test_fifo_as_extract_csv_is_one_line(tmp_path, rel_weights, cli, one_line_error):
    fifo = _fifo(tmp_path / "list.csv")
    one_line_error(cli(["extract", "--checkpoint", rel_weights, "--csv", fifo, "--out", tmp_path / "f.safetensors",
                        "--device", "cpu", "--no-progress"], timeout=120), str(fifo), "named pipe")
    assert not (tmp_path / "f.safetensors").exists()


def test_helper_refuses_pipes_devices_and_big_files(tmp_path):
    """The one helper: a pipe and /dev/zero are refused on the open descriptor (no blocking open, no read), a
    file over the cap is refused, a regular file within it is read whole."""
    fifo = _fifo(tmp_path / "p")
    with pytest.raises(ConfigError, match="named pipe, not a regular file; expected a config"):
        read_text(fifo, limit=10, what="a config", error=ConfigError)
    with pytest.raises(ReidkitError, match="/dev/zero: a character device"):
        read_bytes("/dev/zero", limit=10, what="a list")
    with pytest.raises(ReidkitError, match="folder, not a regular file"):
        read_bytes(tmp_path, limit=10, what="a list")
    (tmp_path / "f").write_bytes(b"x" * 11)
    with pytest.raises(ReidkitError, match="larger than 10 bytes"):
        read_bytes(tmp_path / "f", limit=10, what="a list")
    assert read_bytes(tmp_path / "f", limit=11, what="a list") == b"x" * 11
    (tmp_path / "t").write_bytes(b"\xef\xbb\xbfa\xff")
    with pytest.raises(DatasetError, match="not UTF-8 text"):
        read_text(tmp_path / "t", limit=10, what="a list", error=DatasetError)


def test_every_text_reader_refuses_a_pipe(tmp_path, monkeypatch):
    """CSV lists (both readers), MSMT17 list files, index manifests, history.json and the synthetic
    dataset's metadata: none blocks on a pipe; a CSV over the list cap is refused."""
    from reidkit.data.datasets import custom, msmt17
    from reidkit.data.synthetic import _read_meta
    from reidkit.engine.runlog import load_history
    from reidkit.inference.gallery import Gallery
    from reidkit.inference.sources import csv_images

    fifo = _fifo(tmp_path / "list.csv")
    with pytest.raises(DatasetError, match="named pipe"):
        custom.load_csv(fifo)
    with pytest.raises(DatasetError, match="named pipe"):
        csv_images(fifo)
    with pytest.raises(DatasetError, match="/dev/zero: a character device"):
        msmt17.read_list(Path("/dev/zero"), tmp_path)
    idx = tmp_path / "index"
    idx.mkdir()
    _fifo(idx / "manifest.json")
    with pytest.raises(ReidkitError, match=r"manifest\.json"):
        Gallery.load(idx)
    run = tmp_path / "run"
    run.mkdir()
    _fifo(run / "history.json")
    assert load_history(run) == []
    _fifo(run / "meta.json")
    monkeypatch.setattr("reidkit.data.synthetic.META_FILE", "meta.json")
    assert _read_meta(run) is None
    big = tmp_path / "big.csv"
    big.write_text("path,pid,camid\n" + "a.png,1,0\n" * 20, encoding="utf-8")
    monkeypatch.setattr(custom, "MAX_LIST_BYTES", 100)
    with pytest.raises(DatasetError, match="larger than 100 bytes"):
        csv_images(big)
