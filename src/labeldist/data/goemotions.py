"""GoEmotions (Demszky et al., 2020): the official aggregated TSVs, the datasets-hub copy, and the
raw per-rater CSVs.

Pooling (config `pooling`): `clusters` = the study's 7 clusters (a cluster is on when any member
emotion is on; docs/methods.md section 1), `none` = the 27 emotions. `neutral` always means the empty
label set ("none"). The aggregated data has no annotators (p_ref_source "gold"); the rater files do:
ratings marked `example_very_unclear` are dropped (counted in `skipped_annotations`; an example left
without ratings is dropped and counted in `skipped`), and gold = pooled labels chosen by >= 50% of
the remaining raters.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import DataError
from ..io import TEXT_ENCODING, decode_error, read_json
from .readers import (empty_splits, iter_csv, iter_tsv_lines, load_hub, normalise_split, require_columns, require_dir,
                      require_file, seeded_split)
from .records import LabelledData, Origin, check_label_set, example_from_annotations, example_from_gold

EMOTIONS = ["admiration", "amusement", "anger", "annoyance", "approval", "caring", "confusion", "curiosity",
            "desire", "disappointment", "disapproval", "disgust", "embarrassment", "excitement", "fear",
            "gratitude", "grief", "joy", "love", "nervousness", "optimism", "pride", "realization", "relief",
            "remorse", "sadness", "surprise", "neutral"]
NEUTRAL = "neutral"
# The study's 7-cluster pooling (docs/methods.md section 1), used when emotion_clustering.json is absent.
CLUSTERS: dict[str, list[str]] = {
    "joy": ["amusement", "excitement", "joy", "love"],
    "optimism": ["desire", "optimism", "caring"],
    "admiration": ["pride", "admiration", "gratitude", "relief", "approval", "realization"],
    "surprise": ["surprise", "confusion", "curiosity"],
    "fear": ["fear", "nervousness"],
    "sadness": ["remorse", "embarrassment", "disappointment", "sadness", "grief"],
    "anger": ["anger", "disgust", "annoyance", "disapproval"],
}
RATER_COLUMNS = ["text", "id", "author", "subreddit", "link_id", "parent_id", "created_utc", "rater_id",
                 "example_very_unclear"]
TSV_SPLITS = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}
HUB_SPLITS = {"train": "train", "dev": "validation", "test": "test"}
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


# ---- pooling ------------------------------------------------------------------------------------
def read_clustering(path: Path, emotions: Sequence[str]) -> dict[str, list[str]]:
    """Return {cluster: [member emotions]} from emotion_clustering.json, checking every member is a
    known emotion and appears in one cluster only."""
    raw = read_json(path)
    if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
        raise DataError(path, "expected an object of cluster -> list of emotions")
    lines = _key_lines(path)
    names = check_label_set(list(raw), Origin(str(path)), "cluster names",
                            origins=[Origin(str(path), lines.get(k)) for k in raw])
    seen: dict[str, str] = {}
    out: dict[str, list[str]] = {}
    for (cluster, members), name in zip(raw.items(), names):
        at = Origin(str(path), lines.get(cluster))
        kept = []
        for m in members:
            m = m.strip() if isinstance(m, str) else m
            if m not in emotions or m == NEUTRAL:
                raise at.error(f"cluster {name!r}: unknown emotion {m!r}", name)
            if m in seen:
                raise at.error(f"emotion {m!r} in clusters {seen[m]!r} and {name!r}", name)
            seen[m] = name
            kept.append(m)
        out[name] = kept
    return out


def _key_lines(path: Path) -> dict[str, int]:
    """{top-level key: 1-based line} of a JSON object file, for errors (first occurrence wins)."""
    out: dict[str, int] = {}
    for lineno, line in enumerate(path.read_text(encoding=TEXT_ENCODING).splitlines(), start=1):
        m = re.match(r'\s*"((?:[^"\\]|\\.)*)"\s*:', line)
        if m:
            out.setdefault(m.group(1), lineno)
    return out


def label_space(pooling: str, clusters: Mapping[str, list[str]], emotions: Sequence[str]) \
        -> tuple[list[str], dict[str, str | None]]:
    """Return (label order, emotion -> label or None): clusters or the emotions; neutral -> None."""
    if pooling == "clusters":
        to_label: dict[str, str | None] = {m: c for c, ms in clusters.items() for m in ms}
        labels = list(clusters)
    else:
        labels = [e for e in emotions if e != NEUTRAL]
        to_label = {e: e for e in labels}
    to_label[NEUTRAL] = None
    for e in emotions:
        to_label.setdefault(e, None)  # an emotion outside every cluster pools to nothing
    return labels, to_label


def pool(emotions: Sequence[str], to_label: Mapping[str, str | None]) -> list[str]:
    """Return the distinct labels the given emotions pool to (neutral and unclustered ones vanish)."""
    out = []
    for e in emotions:
        lab = to_label[e]
        if lab is not None and lab not in out:
            out.append(lab)
    return out


def _emotions_and_clusters(folder: Path | None) -> tuple[list[str], dict[str, list[str]]]:
    emotions, clusters = list(EMOTIONS), dict(CLUSTERS)
    if folder is not None and (folder / "emotions.txt").is_file():
        path = folder / "emotions.txt"
        try:
            text = path.read_text(encoding=TEXT_ENCODING)
        except UnicodeDecodeError as err:
            raise decode_error(path, err) from None
        entries = [(i, ln) for i, ln in enumerate(text.splitlines(), start=1) if ln.strip()]
        emotions = check_label_set([ln for _, ln in entries], Origin(str(path)), "emotion",
                                   origins=[Origin(str(path), i) for i, _ in entries])
        if NEUTRAL not in emotions:
            raise DataError(path, f"no '{NEUTRAL}' emotion in the list")
    if folder is not None and (folder / "emotion_clustering.json").is_file():
        clusters = read_clustering(folder / "emotion_clustering.json", emotions)
    return emotions, clusters


# ---- aggregated TSVs (and the hub copy) ---------------------------------------------------------
def _indices_to_emotions(raw: str, emotions: Sequence[str], origin: Origin) -> list[str]:
    field = "emotion ids"
    if not raw.strip():
        raise origin.error("no emotion ids (the aggregated data marks an unlabelled comment 'neutral')", field)
    out = []
    for tok in raw.split(","):
        tok = tok.strip()
        if not tok.isdigit() or int(tok) >= len(emotions):
            raise origin.error(f"label {tok!r} is not in the label set (emotion ids 0-{len(emotions) - 1})", field)
        out.append(emotions[int(tok)])
    return out


def is_hub_id(path: str) -> bool:
    """True when `path` is not a local file or folder but looks like a hub id `owner/name`."""
    return not Path(path).exists() and bool(_HUB_ID.match(path))


NEUTRAL_RULE = "neutral_with_emotion"
NEUTRAL_NOTE = ("{n} {what} mark neutral together with an emotion: neutral is ignored there, the emotions "
                "are kept (labels.json rule_counts.neutral_with_emotion)")


def _neutral_note(data: LabelledData, what: str) -> None:
    n = sum(data.rule_counts.get(NEUTRAL_RULE, {}).values())
    data.rule_counts.setdefault(NEUTRAL_RULE, {sp: 0 for sp in TSV_SPLITS})
    data.notes.append(NEUTRAL_NOTE.format(n=n, what=what))


def load_goemotions(name: str, cfg: Mapping[str, Any]) -> LabelledData:
    """Return GoEmotions. Sources: `hub` (a datasets-hub id such as google-research-datasets/go_emotions,
    or a local folder in its layout), else `path` (a folder holding train/dev/test.tsv + emotions.txt
    and emotion_clustering.json; or, legacy, a hub id). `p_ref_source: annotators` reads the per-rater
    annotations (hub config `raw`, split membership from the `simplified` config's ids; locally the
    goemotions_*.csv rater files beside the official TSVs), `gold` (default) the aggregated labels."""
    pooling = cfg["pooling"]
    raters = cfg.get("p_ref_source", "gold") == "annotators"
    hub, field = cfg.get("hub"), f"datasets.{name}.hub"
    if hub is None and is_hub_id(str(cfg.get("path", ""))):
        hub, field = str(cfg["path"]), f"datasets.{name}.path"
    if hub is not None:
        if raters:
            return _load_goemotions_raters_hub(name, str(hub), pooling, cfg.get("hub_revision"), field)
        return _load_goemotions_hub(name, str(hub), pooling, cfg.get("hub_revision"), field)
    if raters:
        return load_goemotions_raters(name, cfg)
    folder = require_dir(str(cfg["path"]), f"datasets.{name}.path")
    emotions, clusters = _emotions_and_clusters(folder)
    labels, to_label = label_space(pooling, clusters, emotions)
    data = LabelledData(name, "goemotions", labels, "multilabel", "gold", empty_splits(),
                        notes=[f"GoEmotions aggregated splits, pooling={pooling}, neutral -> none"])
    for split, fname in TSV_SPLITS.items():
        fpath = require_file(folder / fname, f"datasets.{name}.path")
        for lineno, (text, raw, cid) in iter_tsv_lines(fpath, 3):
            origin = Origin(str(fpath), lineno)
            chosen = _indices_to_emotions(raw, emotions, origin)
            if NEUTRAL in chosen and len(set(chosen) - {NEUTRAL}) > 0:
                data.count_rule(NEUTRAL_RULE, split)
            gold = pool(chosen, to_label)
            data.splits[split].append(example_from_gold(cid, text, gold, labels, origin, id_field="comment id"))
    _neutral_note(data, "comment(s)")
    return data


def _load_goemotions_hub(name: str, hub_id: str, pooling: str, revision: str | None = None,
                         field: str | None = None) -> LabelledData:
    """Load the aggregated labels through `datasets.load_dataset(hub_id, "simplified")` (train/validation/
    test, columns text, labels = emotion ids, id): p_ref_source gold."""
    dd = load_hub(hub_id, "simplified", revision=revision, field=field or f"datasets.{name}.hub")
    data: LabelledData | None = None
    for split, hub_split in HUB_SPLITS.items():
        source = f"{hub_id} [simplified/{hub_split}]"
        if hub_split not in dd:
            raise DataError(source, f"the hub dataset has no '{hub_split}' split (has {list(dd)})")
        ds = dd[hub_split]
        require_columns(ds, ["text", "labels", "id"], source)
        if data is None:
            emotions = list(ds.features["labels"].feature.names)
            labels, to_label = label_space(pooling, CLUSTERS, emotions)
            data = LabelledData(name, "goemotions", labels, "multilabel", "gold", empty_splits(),
                                notes=[f"GoEmotions from the datasets hub ({hub_id}, simplified), pooling={pooling}"])
        for row_no, row in enumerate(ds, start=1):
            origin = Origin(source, row_no)
            chosen = _indices_to_emotions(",".join(str(i) for i in row["labels"]), emotions, origin)
            if NEUTRAL in chosen and len(set(chosen) - {NEUTRAL}) > 0:
                data.count_rule(NEUTRAL_RULE, split)
            data.splits[split].append(example_from_gold(row["id"], row["text"], pool(chosen, to_label), labels,
                                                        origin))
    assert data is not None
    _neutral_note(data, "comment(s)")
    return data


# ---- per-rater annotations (raw CSVs or the hub's `raw` config) ----------------------------------
def _rater_files(path: Path, name: str) -> list[Path]:
    if path.is_dir():
        files = sorted(path.glob("goemotions_*.csv"))
        if not files:
            raise DataError(path, "no goemotions_*.csv rater files in the folder", field=f"datasets.{name}.path")
        return files
    return [require_file(path, f"datasets.{name}.path")]


def _official_splits(folder: Path) -> dict[str, str] | None:
    """{comment id: split} from the aggregated TSVs beside the rater files, when all three are there;
    an empty one is a DataError naming it."""
    if not all((folder / f).is_file() for f in TSV_SPLITS.values()):
        return None
    out: dict[str, str] = {}
    for split, f in TSV_SPLITS.items():
        ids = [cid for _, (_, _, cid) in iter_tsv_lines(folder / f, 3)]
        if not ids:
            raise DataError(folder / f, f"empty official split file: no comment of split '{split}'")
        out.update({cid: split for cid in ids})
    return out


def _truthy(value: Any, origin: Origin, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    v = str(value).strip().lower() if value is not None else ""
    if v in ("true", "1"):
        return True
    if v in ("false", "0", ""):
        return False
    raise origin.error(f"expected True/False or 1/0, got {value!r}", field)


class _Raters:
    """Rater rows grouped by comment id: annotations (pooled), very-unclear and neutral+emotion counts."""

    def __init__(self, emotions: Sequence[str], to_label: Mapping[str, str | None]):
        self.emotions, self.to_label = list(emotions), to_label
        self.groups: dict[str, dict[str, Any]] = {}
        self.unclear: dict[str, int] = defaultdict(int)
        self.neutral_mixed: dict[str, int] = defaultdict(int)

    def add(self, row: Mapping[str, Any], origin: Origin, split: Any = None) -> None:
        cid = str(row["id"] if row["id"] is not None else "").strip()
        if not cid:
            raise origin.error("empty id", "id")
        if not isinstance(row["text"], str) or not row["text"].strip():
            raise origin.error("empty text", "text")
        g = self.groups.setdefault(cid, {"text": row["text"], "origin": origin, "annotations": [], "split": split})
        if _truthy(row["example_very_unclear"], origin, "example_very_unclear"):
            self.unclear[cid] += 1
            return
        chosen = [e for e in self.emotions if _truthy(row[e], origin, e)]
        if NEUTRAL in chosen and len(chosen) > 1:
            self.neutral_mixed[cid] += 1
        g["annotations"].append(pool(chosen, self.to_label))

    def to_data(self, data: LabelledData, assign: Mapping[str, str]) -> LabelledData:
        """Fill `data`'s splits from the groups (comments outside `assign` left out and noted)."""
        outside = 0
        for cid, g in self.groups.items():
            split = assign.get(cid)
            if split is None:  # the official splits keep only comments whose raters agreed on something
                outside += 1
                continue
            data.skipped_annotations[split] += self.unclear.get(cid, 0)
            if self.neutral_mixed.get(cid):
                data.count_rule(NEUTRAL_RULE, split, self.neutral_mixed[cid])
            if not g["annotations"]:
                data.skipped[split] += 1  # every rating was very unclear
                continue
            data.splits[split].append(example_from_annotations(cid, g["text"], g["annotations"], data.labels,
                                                               g["origin"], annotations_field="emotions"))
        if outside:
            data.notes.append(f"{outside} rated comment(s) in none of the official splits: left out")
        _neutral_note(data, "rating(s)")
        return data


RATERS_NOTE = "GoEmotions raters, pooling={pooling}, neutral -> none, very-unclear ratings dropped, gold = share >= 0.5"


def load_goemotions_raters(name: str, cfg: Mapping[str, Any]) -> LabelledData:
    """Return GoEmotions from the raw rater CSVs (goemotions_1.csv ...; one row per rater): rows
    grouped by `id` into annotations, very-unclear ratings dropped, pooled as configured.

    Splits: the official ones when train/dev/test.tsv sit in the same folder (comments outside them
    are left out, as in the official release, and noted), else a `split_field`
    column if present, else a seeded 80/10/10 split by id (config `split_seed`).
    """
    path = Path(str(cfg["path"]))
    pooling = cfg["pooling"]
    folder = path if path.is_dir() else path.parent
    emotions, clusters = _emotions_and_clusters(folder)
    labels, to_label = label_space(pooling, clusters, emotions)
    split_field = cfg["split_field"]
    raters = _Raters(emotions, to_label)
    for fpath in _rater_files(path, name):
        for lineno, row in iter_csv(fpath, required=RATER_COLUMNS + emotions):
            raters.add(row, Origin(str(fpath), lineno), row.get(split_field))
    groups = raters.groups
    official = _official_splits(folder)
    if official is None and any(g["split"] in (None, "") for g in groups.values()):
        assign = seeded_split(list(groups), int(cfg["split_seed"]), str(path))
        split_note = f"seeded 80/10/10 split by id (split_seed={cfg.get('split_seed', 0)})"
    elif official is None:
        assign = {cid: normalise_split(g["split"], g["origin"], split_field) for cid, g in groups.items()}
        split_note = f"splits from the '{split_field}' column"
    else:
        assign = official
        split_note = "official splits from train/dev/test.tsv"
    data = LabelledData(name, str(cfg["loader"]), labels, "multilabel", "annotators",
                        empty_splits(), notes=[RATERS_NOTE.format(pooling=pooling), split_note])
    return raters.to_data(data, assign)


def _load_goemotions_raters_hub(name: str, hub_id: str, pooling: str, revision: str | None = None,
                                field: str | None = None) -> LabelledData:
    """GoEmotions per rater from the hub: config `raw` (one row per rater: id, text, rater_id,
    example_very_unclear, the 27 emotions and neutral as 0/1) grouped by id; split membership from the
    `simplified` config's train/validation/test ids (comments outside them left out and noted)."""
    field = field or f"datasets.{name}.hub"
    raw = load_hub(hub_id, "raw", revision=revision, field=field)
    if "train" not in raw:
        raise DataError(f"{hub_id} [raw]", f"the hub dataset has no 'train' split (has {list(raw)})")
    source = f"{hub_id} [raw/train]"
    rows = raw["train"]
    emotions = list(EMOTIONS)
    require_columns(rows, ["text", "id", "rater_id", "example_very_unclear"] + emotions, source)
    labels, to_label = label_space(pooling, CLUSTERS, emotions)
    raters = _Raters(emotions, to_label)
    for row_no, row in enumerate(rows, start=1):
        raters.add(row, Origin(source, row_no))
    simplified = load_hub(hub_id, "simplified", revision=revision, field=field)
    assign: dict[str, str] = {}
    for split, hub_split in HUB_SPLITS.items():
        where = f"{hub_id} [simplified/{hub_split}]"
        if hub_split not in simplified:
            raise DataError(where, f"the hub dataset has no '{hub_split}' split (has {list(simplified)})")
        require_columns(simplified[hub_split], ["id"], where)
        ids = [str(i).strip() for i in simplified[hub_split]["id"]]
        if not ids:
            raise DataError(where, "empty official split: no comment ids")
        assign.update({cid: split for cid in ids})
    data = LabelledData(name, "goemotions", labels, "multilabel", "annotators", empty_splits(),
                        notes=[RATERS_NOTE.format(pooling=pooling) + f" (datasets hub {hub_id}, config raw)",
                               "official splits from the simplified config's train/validation/test ids"])
    return raters.to_data(data, assign)
