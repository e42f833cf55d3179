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
    """Send stdout, stderr (tqdm progress bars included) and `logging` to `path` for the block.

    A user-facing LabeldistError is written as one clear line (no traceback) and re-raised, so
    Snakemake marks the job failed and shows the log.
    """
    logger = logging.getLogger("labeldist")
    if path is None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        yield logger
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8", buffering=1) as fh:
        old_out, old_err = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = fh
        handler = logging.StreamHandler(fh)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        try:
            yield logger
        except LabeldistError as err:
            fh.write(f"ERROR: {err}\n")
            raise
        except BaseException:
            fh.write(traceback.format_exc())
            raise
        finally:
            root.removeHandler(handler)
            sys.stdout, sys.stderr = old_out, old_err
