"""Per-rule log files: everything a rule's script prints, warns or logs goes to its `log:` file."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Iterator

from .errors import LabeldistError


@contextlib.contextmanager
def rule_log(path: str | os.PathLike | None) -> Iterator[logging.Logger]:
    """Send everything the block writes to `path`: stdout, stderr, tqdm bars, `logging`, and output of
    libraries that hold their own handle on the original stderr (transformers' logger, C extensions),
    by pointing file descriptors 1 and 2 at the log file for the duration of the block.

    A user-facing LabeldistError is written to the log as one clear line and ends the script with exit
    status 1 and that line on stderr (SystemExit: no traceback), so Snakemake marks the job failed and
    the user reads what is wrong, not where in the code it was noticed. Other exceptions keep their
    traceback in the log and propagate.
    """
    logger = logging.getLogger("labeldist")
    if path is None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        yield logger
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8", buffering=1) as fh:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = {fd: os.dup(fd) for fd in (1, 2)}
        for fd in saved:
            os.dup2(fh.fileno(), fd)
        old_out, old_err = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = fh
        handler = logging.StreamHandler(fh)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        failure = None
        try:
            yield logger
        except LabeldistError as err:
            fh.write(f"ERROR: {err}\n")
            failure = SystemExit(f"ERROR: {err}")
        except BaseException:
            fh.write(traceback.format_exc())
            raise
        finally:
            root.removeHandler(handler)
            fh.flush()
            sys.stdout, sys.stderr = old_out, old_err
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
    if failure is not None:
        raise failure
