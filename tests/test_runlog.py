"""rule_log: a rule's log file receives everything its script writes, by any route."""

from __future__ import annotations

import logging
import os
import sys

import pytest

from labeldist.errors import DataError
from labeldist.runlog import rule_log


def test_every_route_of_output_reaches_the_log(tmp_path, capfd):
    log = tmp_path / "logs" / "job.log"
    held_stderr = sys.__stderr__  # what a library handler created at import time would hold
    with rule_log(log):
        print("via print")
        logging.getLogger("some.library").warning("via logging")
        os.write(2, b"via fd 2\n")
        held_stderr.write("via a held stderr handle\n")
        held_stderr.flush()
    text = log.read_text()
    for line in ["via print", "via logging", "via fd 2", "via a held stderr handle"]:
        assert line in text
    print("after the block")
    out, _ = capfd.readouterr()
    assert "after the block" in out
    assert "after the block" not in log.read_text()


def test_user_errors_end_the_script_with_one_line(tmp_path):
    log = tmp_path / "job.log"
    with pytest.raises(SystemExit) as exit_info:
        with rule_log(log):
            raise DataError("in.jsonl", "empty text", line=3, field="text")
    assert str(exit_info.value) == "ERROR: in.jsonl, line 3, field 'text': empty text"
    assert "ERROR: in.jsonl, line 3, field 'text': empty text" in log.read_text()
    assert "Traceback" not in log.read_text()


def test_other_errors_keep_their_traceback(tmp_path):
    log = tmp_path / "job.log"
    with pytest.raises(KeyError):
        with rule_log(log):
            {}["missing"]
    assert "Traceback" in log.read_text() and "KeyError" in log.read_text()
