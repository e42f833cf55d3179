"""The data stage: dispatch a dataset config to its loader, check the result, write the stage's files.

Nothing is written until the whole dataset has been read and checked, so bad input (a DataError
naming file, line and field) leaves no output file behind; each file is then written atomically.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping

from ..artifacts.labels import write_label_set
from ..artifacts.splits import write_split, write_subsets
from ..config import validate_block
from ..errors import ConfigError, DataError
from .generic import EXTENSIONS, load_generic
from .goemotions import TSV_SPLITS, is_hub_id, load_goemotions, load_goemotions_raters
from .hatexplain import load_hatexplain
from .mfrc import load_mfrc, load_mfrc_fractions
from .records import SPLITS, LabelledData, check_dataset
from .semeval import FILES as SEMEVAL_FILES, TEST_FILES as SEMEVAL_TEST_FILES, load_semeval2018_ec
from .subsets import make_subsets
from .synthetic import load_synthetic

log = logging.getLogger("labeldist.data")

LOADERS: dict[str, Callable[[str, Mapping[str, Any]], LabelledData]] = {
    "synthetic": load_synthetic,
    "goemotions": load_goemotions,
    "goemotions_raters": load_goemotions_raters,
    "mfrc": load_mfrc,
    "mfrc_fractions": load_mfrc_fractions,
    "semeval2018_ec": load_semeval2018_ec,
    "hatexplain": load_hatexplain,
    "generic": load_generic,
}


# Where to get each loader's files, for the one-line error of a data job whose files are missing.
HOW_TO_GET = {
    "goemotions": "the official TSVs (train/dev/test.tsv, emotions.txt) from "
                  "https://github.com/google-research/google-research/tree/master/goemotions/data, or set "
                  "`hub: google-research-datasets/go_emotions` instead of `path`",
    "goemotions_raters": "goemotions_1.csv..goemotions_3.csv from "
                         "https://storage.googleapis.com/gresearch/goemotions/data/full_dataset/ (or use loader "
                         "goemotions with `hub: google-research-datasets/go_emotions` and `p_ref_source: annotators`)",
    "mfrc": "final_mfrc_data.csv from https://huggingface.co/datasets/USC-MOLA-Lab/MFRC, or set "
            "`hub: USC-MOLA-Lab/MFRC` instead of `path`",
    "mfrc_fractions": "a JSONL of id, split, text, distribution (docs/formats.md); the per-annotator release "
                      "is read by loader mfrc with `hub: USC-MOLA-Lab/MFRC`",
    "semeval2018_ec": "2018-E-c-En-train.txt, 2018-E-c-En-dev.txt (and 2018-E-c-En-test-gold.txt) from the "
                      "SemEval-2018 Task 1 page https://competitions.codalab.org/competitions/17751 (research use "
                      "only; the hub copy is a loading script that datasets 5 no longer runs)",
    "hatexplain": "dataset.json and post_id_divisions.json from https://github.com/hate-alert/HateXplain "
                  "(folder Data/), see data/hatexplain/README.md",
    "generic": "your own JSONL/CSV file (docs/formats.md)",
}
SPLIT_FILE_HINT = ("the study's MFRC split file ships with the repository as data/mfrc/study_splits.csv "
                   "(rebuilt by data/mfrc/make_study_splits.py)")


def load_labelled_data(name: str, cfg: Mapping[str, Any]) -> LabelledData:
    """Return the checked dataset `name` described by its config block `cfg` (loader, path, ...):
    every split non-empty, ids unique within and across splits, the configured `p_ref_source` (when
    given) the one the data gives. A missing data file is a one-line DataError naming the config key
    and where to get the data."""
    loader = cfg.get("loader") if isinstance(cfg, Mapping) else None
    if loader not in LOADERS:
        raise ConfigError(f"datasets.{name}.loader: unknown loader {loader!r} (have {', '.join(LOADERS)})")
    cfg = validate_block("dataset", cfg, f"datasets.{name}")  # every default filled: loaders read cfg[key]
    try:
        data = LOADERS[loader](name, cfg)
    except DataError as err:
        if err.field in (f"datasets.{name}.path", f"datasets.{name}.split_file") and "not found" in str(err) \
                and loader in HOW_TO_GET:
            how = (SPLIT_FILE_HINT if err.field.endswith("split_file") else HOW_TO_GET[loader])
            raise DataError(err.path, f"{str(err).rsplit(': ', 1)[-1]}; get the data: {how}",
                            line=err.line, field=err.field) from None
        raise
    want = cfg.get("p_ref_source")
    if want is not None and data.p_ref_source != want:
        raise DataError(f"datasets.{name}", f"p_ref_source is {want!r} in the config, but loader {loader!r} gives "
                                            f"{data.p_ref_source!r} for this data", field="p_ref_source")
    return check_dataset(data)


def input_files(cfg: Mapping[str, Any]) -> list[str]:
    """Return the existing local files the dataset's loader reads (for the rule's `input:`); empty for
    the synthetic loader and a hub id. Missing files are left out so the loader reports them."""
    loader, path = cfg.get("loader"), cfg.get("path")
    extra = [str(cfg["split_file"])] if cfg.get("split_file") and Path(str(cfg["split_file"])).is_file() else []
    if cfg.get("hub"):
        return extra
    if loader == "synthetic" or path is None or (loader == "goemotions" and is_hub_id(str(path))):
        return []
    p = Path(str(path))
    folder = p if p.is_dir() else p.parent
    names: list[str] = []
    if loader in ("goemotions", "goemotions_raters"):
        names = list(TSV_SPLITS.values()) + ["emotions.txt", "emotion_clustering.json"]
        raters = loader == "goemotions_raters" or cfg.get("p_ref_source") == "annotators"
        if raters and p.is_dir():
            names += sorted(x.name for x in p.glob("goemotions_*.csv"))
    elif loader == "semeval2018_ec":
        names = list(SEMEVAL_FILES.values()) + SEMEVAL_TEST_FILES
    elif loader == "hatexplain":
        names = ["dataset.json", "post_id_divisions.json"]
    elif loader == "generic" and p.is_dir():
        names = [f"{s}{ext}" for s in SPLITS for ext in EXTENSIONS]
    files = [folder / n for n in names if (folder / n).is_file()]
    if p.is_file():
        files.insert(0, p)
    return sorted({str(f) for f in files}, key=lambda s: (s != str(p), s)) + extra


def write_prepared(data: LabelledData, subsets: Mapping[str, list[str]], outputs: Mapping[str, str]) -> None:
    """Write {split}.jsonl, labels.json and subsets.json to the paths in `outputs` (keys train, dev,
    test, labels, subsets), each atomically."""
    for split in SPLITS:
        write_split(outputs[split], (ex.to_record() for ex in data.splits[split]))
    write_label_set(outputs["labels"], data.labels_json())
    write_subsets(outputs["subsets"], subsets)


def prepare_data(name: str, cfg: Mapping[str, Any], outputs: Mapping[str, str]) -> LabelledData:
    """Load, check and write dataset `name` (its config block `cfg`) to `outputs`; return the data.
    Raises DataError (and writes nothing) on bad input."""
    data = load_labelled_data(name, cfg)
    subsets = make_subsets(data, validate_block("dataset", cfg, f"datasets.{name}")["subsets"])
    write_prepared(data, subsets, outputs)
    info = data.labels_json()
    log.info("dataset %s (%s): %d labels, counts %s, skipped %s, skipped annotations %s; subsets %s",
             name, data.loader, len(data.labels), info["counts"], info["skipped"], info["skipped_annotations"],
             {k: len(v) for k, v in subsets.items()})
    for note in data.notes:
        log.info("dataset %s: %s", name, note)
    return data
