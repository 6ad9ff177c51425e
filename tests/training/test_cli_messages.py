"""Messages of the commands for devices they cannot use and files they cannot write: a named
error with the remedy, never a traceback or raw errno text."""
import errno

import pytest
from helpers import TINY_CLI

from fastair import cli
from fastair.errors import WriteError
from fastair.training.config import check_device


@pytest.mark.parametrize("device", ["mps", "meta", "cpu:0x"])
def test_check_device_refuses_what_fastair_cannot_run_on(device):
    with pytest.raises(ValueError, match="cpu"):
        check_device(device)


def test_train_and_reproduce_refuse_mps_with_exit_2(tiny_data, tmp_path, capsys):
    assert cli.main(["train", "--device", "mps", "--epochs", "1", "--run-dir",
                     str(tmp_path / "run"), *TINY_CLI]) == 2
    err = capsys.readouterr().err
    assert "cpu or cuda" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())
    assert cli.main(["reproduce", "--device", "mps", "--out", str(tmp_path / "rep"),
                     "--quick"]) == 2
    err = capsys.readouterr().err
    assert "cpu or cuda" in err and "Traceback" not in err


def test_write_errors_print_the_message_without_errno_text():
    e = WriteError(errno.ENOSPC, "could not write /x/last.pt: the disk is full; free space")
    assert str(e) == "could not write /x/last.pt: the disk is full; free space"
    assert e.errno == errno.ENOSPC and isinstance(e, OSError)
    assert "[Errno" not in str(WriteError(errno.EACCES, "no permission on /x"))
