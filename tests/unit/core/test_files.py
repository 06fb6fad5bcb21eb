"""Atomic writes: a file is replaced whole or not at all, and a failure is one UserError."""

import errno

import pytest

from mixerflow.core.errors import UserError
from mixerflow.core.files import atomic_copy, atomic_write, atomic_write_text, writable


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "out.txt"
    atomic_write_text(path, "first")

    def full_disk(file):
        file.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(UserError, match="cannot write .*out.txt: No space left on device; "
                                        "the previous out.txt is kept"):
        atomic_write(path, full_disk)
    assert path.read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_a_write_creates_its_folder_and_copies_whole_files(tmp_path):
    source = tmp_path / "a.bin"
    atomic_write(source, lambda file: file.write(bytes(range(256))))
    atomic_copy(source, tmp_path / "deep" / "b.bin")
    assert (tmp_path / "deep" / "b.bin").read_bytes() == bytes(range(256))
    assert oct((tmp_path / "deep" / "b.bin").stat().st_mode & 0o777) == "0o644"


def test_writable_checks_before_the_work(tmp_path):
    assert writable(tmp_path / "new" / "report.md") == tmp_path / "new" / "report.md"
    (tmp_path / "folder").mkdir()
    with pytest.raises(UserError, match="it is a folder"):
        writable(tmp_path / "folder")
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="cannot write"):
        writable(tmp_path / "file" / "below.txt")
