"""The one atomic-write helper: whole files or none, old files untouched on failure."""

import os
import stat

import numpy as np
import pytest

from bayesmeta.atomic import atomic_path, atomic_write, save_npz, write_text


def test_text_and_npz_land_whole_with_plain_permissions(tmp_path):
    path = write_text(tmp_path / "sub" / "a.json", "{}")
    assert path.read_text() == "{}"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600
    save_npz(tmp_path / "b.npz", {"x": np.arange(3)}, compressed=True)
    np.testing.assert_array_equal(np.load(tmp_path / "b.npz")["x"], np.arange(3))
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing_behind(tmp_path):
    path = write_text(tmp_path / "a.txt", "old")

    def boom(fh):
        fh.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, boom)
    with pytest.raises(KeyError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise KeyError("writer failed")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
