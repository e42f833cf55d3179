"""Bad input, end to end: broken data files, configs and generation records.

Every input either loads into valid output records or ends in a LabeldistError whose message names the
file (with line and field where the fault has one) or the config key; never an unhandled exception
(KeyError, TypeError, UnicodeDecodeError, ...) and never silently wrong numbers.

Three parts:
- named cases from the reliability checklist (truncations, encodings, a 5 MB text, labels with commas
  and quotes, empty splits, a label set of one, ids colliding across splits, NaN/inf/negative shares,
  non-list annotations, configs with wrong types at depth), each with its documented outcome;
- a seeded mutation corpus: every valid source file of every loader is truncated at many cut points,
  has bytes replaced by troublesome ones, lines dropped, duplicated or swapped, and is re-encoded; each
  mutant goes through `prepare_data` (what the data rule calls) and must give either a clean error and
  no output file, or output files that pass an independent validity check (`check_outputs`);
- the same invariant for configs (`validate_config` / `load_config`) and for generation records
  (`labeldist.estimators` parsers, then every estimator: q finite in [0, 1]).
Hypothesis is not installed; the corpus is hand-rolled and seeded, so a failure reproduces.
"""

from __future__ import annotations

import copy
import json
import math
import random
import shutil
import signal
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml

from labeldist import config as config_module
from labeldist import estimators as est
from labeldist.artifacts import generations as gen_files
from labeldist.config import load_config, validate_config
from labeldist.data import load_labelled_data, prepare_data
from labeldist.data.records import MAX_TEXT_CHARS
from labeldist.errors import ConfigError, DataError, LabeldistError

REPO = Path(__file__).resolve().parents[1]
FIX = REPO / "tests" / "fixtures"
SEED = 20250607
OUTPUT_KEYS = ("train", "dev", "test", "labels", "subsets")
BAD_LABEL_CHARS = (",", '"', "\t", "\n", "\r")


# ---- time guard: a bad input must not hang a loader --------------------------------------------
@contextmanager
def deadline(seconds: int):
    """Fail the test (instead of hanging CI) when the block runs longer than `seconds`."""
    def _expired(signum, frame):
        raise TimeoutError(f"input took longer than {seconds} s")

    old = signal.signal(signal.SIGALRM, _expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ---- valid sources, one or more per loader -----------------------------------------------------
EMO_SE = ["anger", "anticipation", "disgust", "fear", "joy", "love", "optimism", "pessimism", "sadness",
          "surprise", "trust"]


@dataclass
class Source:
    """A valid input of one loader: its config block and the files a mutation may break."""

    name: str
    cfg: dict
    files: list[Path]
    task: str = "multilabel"
    gold_given: bool = False  # the records carry a gold labels field next to annotations/distribution
    extra: dict = field(default_factory=dict)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def make_sources(root: Path) -> list[Source]:
    """Write one small valid input per loader (and per generic file format) under `root`."""
    out = []
    d = root / "generic_jsonl"
    d.mkdir(parents=True)
    shutil.copy(FIX / "generic" / "annotations.jsonl", d / "a.jsonl")
    out.append(Source("generic_jsonl", {"loader": "generic", "path": str(d / "a.jsonl")}, [d / "a.jsonl"]))

    d = root / "generic_csv"
    d.mkdir()
    shutil.copy(FIX / "generic" / "distribution.csv", d / "d.csv")
    out.append(Source("generic_csv", {"loader": "generic", "path": str(d / "d.csv")}, [d / "d.csv"]))

    rows = ["id\ttext\tlabels"] + [f"t{i}\tsome text number {i}\t{['x', 'y', 'x, y', 'none'][i % 4]}"
                                   for i in range(14)]
    p = _write(root / "generic_tsv" / "g.tsv", "\n".join(rows) + "\n")
    out.append(Source("generic_tsv", {"loader": "generic", "path": str(p), "labels": ["x", "y", "z"]}, [p]))

    d = root / "generic_folder_single"
    votes = [["p"], ["q"], ["p"]], [["q"], ["q"], ["r"]], [["r"], ["r"], ["p"]]
    for split, n in (("train", 6), ("dev", 3), ("test", 3)):
        _write(d / f"{split}.jsonl", "".join(json.dumps({"id": f"{split}{i}", "text": f"{split} text {i}",
                                                         "annotations": votes[i % 3]}) + "\n" for i in range(n)))
    out.append(Source("generic_folder_single", {"loader": "generic", "path": str(d), "task": "single_label"},
                      [d / "train.jsonl", d / "dev.jsonl", d / "test.jsonl"], task="single_label"))

    d = root / "mfrc"
    d.mkdir()
    shutil.copy(FIX / "mfrc" / "mfrc_annotations.csv", d / "m.csv")
    out.append(Source("mfrc", {"loader": "mfrc", "path": str(d / "m.csv"), "split_seed": 1}, [d / "m.csv"]))

    fr = [{"id": f"f{i}", "split": ["train", "train", "dev", "test"][i % 4], "text": f"moral text {i}",
           "distribution": {"Care": round(0.25 * (i % 5), 2), "Purity": 0.5, "none": 0.25}} for i in range(12)]
    p = _write(root / "mfrc_fractions" / "f.jsonl", "".join(json.dumps(r) + "\n" for r in fr))
    out.append(Source("mfrc_fractions", {"loader": "mfrc_fractions", "path": str(p)}, [p]))

    d = root / "goemotions"
    _write(d / "train.tsv", "I love it\t18\tid1\nso sad today\t25\tid2\nwow, really?\t26,7\tid3\nfine\t27\tid4\n")
    _write(d / "dev.tsv", "what?\t26\tid5\nthanks a lot\t15,4\tid6\n")
    _write(d / "test.tsv", "ok then\t27\tid7\nthat is scary\t14\tid8\n")
    out.append(Source("goemotions", {"loader": "goemotions", "path": str(d)},
                      [d / "train.tsv", d / "dev.tsv", d / "test.tsv"]))

    d = root / "goemotions_raters"
    d.mkdir()
    for f in ("goemotions_1.csv", "goemotions_2.csv"):
        shutil.copy(FIX / "goemotions_raters" / f, d / f)
    out.append(Source("goemotions_raters", {"loader": "goemotions_raters", "path": str(d)},
                      [d / "goemotions_1.csv", d / "goemotions_2.csv"]))

    d = root / "semeval"
    header = "ID\tTweet\t" + "\t".join(EMO_SE)
    for fname, prefix, n in (("2018-E-c-En-train.txt", "2018-En-0", 6), ("2018-E-c-En-dev.txt", "2018-En-1", 4)):
        body = "".join(f"{prefix}{i:04d}\ttweet {i} here\t" + "\t".join("1" if (i + j) % 5 == 0 else "0"
                                                                        for j in range(11)) + "\n" for i in range(n))
        _write(d / fname, header + "\n" + body)
    out.append(Source("semeval2018_ec", {"loader": "semeval2018_ec", "path": str(d)},
                      [d / "2018-E-c-En-train.txt", d / "2018-E-c-En-dev.txt"]))

    d = root / "hatexplain"
    d.mkdir()
    for f in ("dataset.json", "post_id_divisions.json"):
        shutil.copy(FIX / "hatexplain" / f, d / f)
    out.append(Source("hatexplain", {"loader": "hatexplain", "path": str(d)},
                      [d / "dataset.json", d / "post_id_divisions.json"], task="single_label"))
    return out


# ---- an independent check of the data stage's outputs (docs/formats.md, "Data") ----------------
def check_outputs(outputs: dict[str, Path], source: Source) -> dict:
    """Assert the written files are complete and internally consistent; return labels.json.

    Written from the contract, not from the loaders' code: p_ref is recomputed from the annotations
    (or checked against the gold set / the shipped fractions' rules), gold from p_ref, counts from the
    files, subsets against the splits."""
    meta = json.loads(outputs["labels"].read_text(encoding="utf-8"))
    labels = meta["labels"]
    assert isinstance(labels, list) and len(labels) >= 2 and len(set(labels)) == len(labels)
    for lab in labels:
        assert isinstance(lab, str) and lab.strip() == lab and lab and lab != "none"
        assert not any(c in lab for c in BAD_LABEL_CHARS), lab
    assert meta["none_label"] == "none" and meta["task"] == source.task
    keys = labels + ["none"]
    ids: dict[str, str] = {}
    gold_of: dict[str, list[str]] = {}
    for split in ("train", "dev", "test"):
        lines = [ln for ln in outputs[split].read_text(encoding="utf-8").splitlines() if ln.strip()]
        assert len(lines) == meta["counts"][split] > 0
        assert isinstance(meta["skipped"][split], int) and meta["skipped"][split] >= 0
        for line in lines:
            rec = json.loads(line)
            rid, text, gold, anns, p_ref = rec["id"], rec["text"], rec["labels"], rec["annotations"], rec["p_ref"]
            assert isinstance(rid, str) and rid and rid not in ids, rid
            ids[rid] = split
            gold_of[rid] = gold
            assert isinstance(text, str) and text.strip() and len(text) <= MAX_TEXT_CHARS
            assert gold == [lab for lab in labels if lab in gold], (gold, labels)  # known, ordered, unique
            assert list(p_ref) == keys
            assert all(isinstance(v, float) and math.isfinite(v) and 0.0 <= v <= 1.0 for v in p_ref.values())
            if meta["p_ref_source"] == "annotators":
                assert isinstance(anns, list) and anns
                assert all(isinstance(a, list) and set(a) <= set(labels) for a in anns)
                n = len(anns)
                if source.task == "single_label":
                    assert all(len(a) == 1 for a in anns)
                    want = {lab: sum(a == [lab] for a in anns) / n for lab in labels}
                    want["none"] = 0.0
                else:
                    want = {lab: sum(lab in a for a in anns) / n for lab in labels}
                    want["none"] = sum(not a for a in anns) / n
                assert p_ref == pytest.approx(want), (p_ref, want)
            elif meta["p_ref_source"] == "gold":
                assert anns is None
                assert p_ref == {**{lab: float(lab in gold) for lab in labels}, "none": float(not gold)}
            else:
                assert anns is None and meta["p_ref_source"] == "distribution"
            if source.task == "single_label":
                assert sum(p_ref.values()) == pytest.approx(1.0, abs=0.02)
                assert len(gold) == 1
                assert p_ref[gold[0]] == max(p_ref[lab] for lab in labels)
            elif meta["p_ref_source"] != "gold" and not source.gold_given:
                assert gold == [lab for lab in labels if p_ref[lab] >= 0.5 - 1e-9]
    subsets = json.loads(outputs["subsets"].read_text(encoding="utf-8"))
    for name, split in (("main", "test"), ("multi", "test"), ("dev", "dev"), ("train", "train")):
        assert all(ids.get(i) == split for i in subsets[name]), name
    assert all(len(gold_of[i]) >= 2 for i in subsets["multi"])
    return meta


def run_prepare(source: Source, out_dir: Path, cfg: dict | None = None):
    """Run the data stage on `source` into `out_dir`; return ("ok", labels.json) or ("error", err).

    On an error, assert it is a LabeldistError naming a file of the source (or its folder) or the
    dataset's config key, and that no output file was written."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    outputs = {k: out_dir / (f"{k}.jsonl" if k in ("train", "dev", "test") else f"{k}.json") for k in OUTPUT_KEYS}
    try:
        with deadline(30):
            prepare_data(source.name, cfg or source.cfg, {k: str(v) for k, v in outputs.items()})
    except LabeldistError as err:
        check_error_names_place(err, source)
        assert not any(p.exists() for p in outputs.values()), f"output written despite {err}"
        return "error", err
    return "ok", check_outputs(outputs, source)


def check_error_names_place(err: LabeldistError, source: Source) -> None:
    """The message starts with a file of the source, its folder, or the dataset's config key."""
    msg = str(err)
    places = [str(f) for f in source.files] + [str(source.cfg["path"]) if "path" in source.cfg else "",
                                               f"datasets.{source.name}"]
    assert any(p and msg.startswith(p) for p in places), msg
    assert msg.strip() and "Traceback" not in msg
    if isinstance(err, DataError) and err.path in map(str, source.files):
        # a fault inside a file names its line or its field, unless it concerns the whole file
        whole_file = ("no records", "not UTF-8", "empty file", "cannot split", "expected an object",
                      "post id(s) not in", "duplicate key")
        assert err.line is not None or err.field is not None or any(w in msg for w in whole_file), msg


# ---- mutations ----------------------------------------------------------------------------------
NASTY = [b'"', b",", b"\t", b"\n", b"\r", b"\x00", b"\xff", b"\xc3", b"{", b"}", b"[", b"]", b":", b"\\",
         b"0", b"1", b"-", b" ", b"a", b"NaN"]


def mutants(data: bytes, rng: random.Random, n_cuts: int = 10, n_flips: int = 12):
    """Yield (description, mutated bytes) for one valid file: truncations at evenly spread and random
    cut points, troublesome bytes written over or inserted, lines dropped/duplicated/swapped,
    re-encodings (latin-1, UTF-16 with and without a BOM) and a UTF-8 BOM."""
    n = len(data)
    cuts = sorted({int(n * k / (n_cuts + 1)) for k in range(1, n_cuts + 1)} | {rng.randrange(1, n) for _ in range(4)})
    for c in cuts:
        yield f"truncated at byte {c}", data[:c]
    for _ in range(n_flips):
        pos, bad = rng.randrange(n), rng.choice(NASTY)
        if rng.random() < 0.5:
            yield f"byte {pos} replaced by {bad!r}", data[:pos] + bad + data[pos + 1:]
        else:
            yield f"{bad!r} inserted at byte {pos}", data[:pos] + bad + data[pos:]
    lines = data.splitlines(keepends=True)
    if len(lines) > 2:
        i, j = rng.sample(range(len(lines)), 2)
        yield f"line {i + 1} dropped", b"".join(lines[:i] + lines[i + 1:])
        yield f"line {i + 1} duplicated", b"".join(lines[: i + 1] + [lines[i]] + lines[i + 1:])
        swapped = list(lines)
        swapped[i], swapped[j] = swapped[j], swapped[i]
        yield f"lines {i + 1} and {j + 1} swapped", b"".join(swapped)
    text = data.decode("utf-8")
    yield "UTF-8 BOM", b"\xef\xbb\xbf" + data
    yield "UTF-16 with BOM", text.encode("utf-16")
    yield "UTF-16-LE without BOM", text.encode("utf-16-le")
    pos = rng.randrange(len(text))
    yield f"latin-1 with an accented letter at character {pos}", (text[:pos] + "\u00e9" + text[pos:]).encode("latin-1", "replace")


def test_mutation_corpus_all_loaders(tmp_path):
    """Every mutant of every loader's valid input: clean error (no output) or valid output."""
    rng = random.Random(SEED)
    sources = make_sources(tmp_path / "src")
    outcomes: Counter = Counter()
    per_source: dict[str, Counter] = {}
    started = time.perf_counter()
    for source in sources:
        assert run_prepare(source, tmp_path / "out")[0] == "ok", f"{source.name}: the unmutated input must load"
        per_source[source.name] = Counter()
        for target in source.files:
            original = target.read_bytes()
            for what, mutated in mutants(original, rng):
                target.write_bytes(mutated)
                try:
                    kind, _ = run_prepare(source, tmp_path / "out")
                except AssertionError as err:
                    raise AssertionError(f"{source.name}, {target.name} {what}: {err}") from None
                except Exception as err:  # an unhandled exception: name the mutant that caused it
                    raise AssertionError(f"{source.name}, {target.name} {what}: unhandled "
                                         f"{type(err).__name__}: {err}") from err
                outcomes[kind] += 1
                per_source[source.name][kind] += 1
            target.write_bytes(original)
    elapsed = time.perf_counter() - started
    # The corpus must exercise both outcomes for every loader, or it tests nothing.
    for name, counts in per_source.items():
        assert counts["error"] > 5 and counts["ok"] > 0, (name, counts)
    assert sum(outcomes.values()) > 400, outcomes
    assert elapsed < 60, f"mutation corpus took {elapsed:.1f} s"


def test_check_outputs_rejects_tampered_records(tmp_path):
    """The corpus's validity check is not vacuous: a silently wrong p_ref or gold set fails it."""
    source = make_sources(tmp_path / "src")[0]
    assert run_prepare(source, tmp_path / "out")[0] == "ok"
    outputs = {k: tmp_path / "out" / (f"{k}.jsonl" if k in ("train", "dev", "test") else f"{k}.json")
               for k in OUTPUT_KEYS}
    lines = outputs["train"].read_text().splitlines()
    rec = json.loads(lines[0])
    for tamper in (lambda r: r["p_ref"].update({next(iter(r["p_ref"])): 0.99}),
                   lambda r: r.update(labels=list(reversed(r["p_ref"]))[1:]),
                   lambda r: r["p_ref"].update(none=float("nan"))):
        bad = copy.deepcopy(rec)
        tamper(bad)
        outputs["train"].write_text("\n".join([json.dumps(bad)] + lines[1:]) + "\n")
        with pytest.raises(AssertionError):
            check_outputs(outputs, source)


# ---- named cases --------------------------------------------------------------------------------
def source_named(tmp_path: Path, name: str) -> Source:
    """One valid source of make_sources, by name."""
    return next(s for s in make_sources(tmp_path / "src") if s.name == name)


def generic(tmp_path: Path, rows: list, name: str = "d.jsonl", **cfg) -> Source:
    """A generic-loader source from JSON rows (or raw lines as str / bytes)."""
    path = tmp_path / name
    if isinstance(rows, bytes):
        path.write_bytes(rows)
    else:
        path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return Source("bad", {"loader": "generic", "path": str(path), **cfg}, [path],
                  task=cfg.get("task", "multilabel"))


def rows_ann(n: int = 12) -> list[dict]:
    return [{"id": f"r{i}", "text": f"text {i}", "annotations": [["a"], ["a", "b"], []] if i % 2 else [["b"], ["b"]]}
            for i in range(n)]


def expect_error(source: Source, tmp_path: Path, line: int | None, field: str | None, *needles: str,
                 path: Path | None = None) -> DataError:
    kind, err = run_prepare(source, tmp_path / "out")
    assert kind == "error", f"expected an error, the data loaded: {err}"
    assert isinstance(err, DataError), err
    assert Path(err.path) == (path or source.files[0]), str(err)
    assert (err.line, err.field) == (line, field), str(err)
    for needle in needles:
        assert needle in str(err), str(err)
    return err


def test_jsonl_cut_mid_line(tmp_path):
    src = generic(tmp_path, rows_ann())
    text = src.files[0].read_text()
    cut = text.index('"r4"') + 10  # inside line 5
    src.files[0].write_text(text[:cut])
    expect_error(src, tmp_path, 5, None, "malformed JSON")


def test_csv_cut_mid_quoted_field(tmp_path):
    path = tmp_path / "d.csv"
    text = (FIX / "generic" / "distribution.csv").read_text()
    start = text.index('"{', text.index("g003"))  # line 4's quoted distribution cell
    path.write_text(text[: start + 7])  # ends inside the quoted cell: "{""qua
    err = expect_error(Source("bad", {"loader": "generic", "path": str(path)}, [path]), tmp_path, 4, None,
                       "malformed CSV record")
    assert "unexpected end of data" in str(err)


def test_tsv_missing_columns(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text("id\ttext\tlabels\n" + "".join(f"r{i}\ttext {i}\t{'ab'[i % 2]}\n" for i in range(8))
                    + "r8\tno labels column\n")
    expect_error(Source("bad", {"loader": "generic", "path": str(path)}, [path]), tmp_path, 10, None,
                 "2 fields, the header has 3")
    folder = tmp_path / "ge"
    folder.mkdir()
    (folder / "train.tsv").write_text("fine\t1\tid1\nid missing\t2\n")
    (folder / "dev.tsv").write_text("ok\t3\tid3\n")
    (folder / "test.tsv").write_text("ok\t4\tid4\n")
    expect_error(Source("bad", {"loader": "goemotions", "path": str(folder)}, [folder / "train.tsv"]), tmp_path,
                 2, None, "2 tab-separated fields, expected 3")


@pytest.mark.parametrize("encoding", ["latin-1", "utf-16", "utf-16-le", "utf-16-be"])
def test_wrong_encodings_are_named(tmp_path, encoding):
    rows = rows_ann()
    rows[3]["text"] = "caf\u00e9 cr\u00e8me"
    src = generic(tmp_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode(encoding))
    if encoding == "latin-1":  # the first line that does not decode
        expect_error(src, tmp_path, 4, None, "not UTF-8", "latin-1")
    elif encoding == "utf-16":  # with a byte-order mark
        expect_error(src, tmp_path, 1, None, "UTF-16", "re-save it as UTF-8")
    else:  # ASCII text in UTF-16 without a BOM is valid UTF-8 full of NULs
        expect_error(src, tmp_path, 1, None, "NUL characters", "UTF-16")
    csv_path = tmp_path / "d.csv"
    csv_path.write_bytes(("id,text,labels\n" + "".join(f"r{i},caf\u00e9 {i},a\n" for i in range(6))).encode(encoding))
    kind, err = run_prepare(Source("bad", {"loader": "generic", "path": str(csv_path)}, [csv_path]), tmp_path / "o")
    assert kind == "error" and err.line is not None and ("UTF-8" in str(err) or "UTF-16" in str(err)), err


def test_utf8_bom_is_accepted_everywhere(tmp_path):
    """A UTF-8 byte-order mark is dropped: the same records as without it (JSONL, CSV, TSV, JSON)."""
    for source in make_sources(tmp_path / "src"):
        kind, plain = run_prepare(source, tmp_path / "plain")
        for f in source.files:
            f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes())
        kind_bom, with_bom = run_prepare(source, tmp_path / "bom")
        assert (kind, kind_bom) == ("ok", "ok"), (source.name, with_bom)
        for split in ("train", "dev", "test"):
            assert (tmp_path / "plain" / f"{split}.jsonl").read_bytes() == \
                (tmp_path / "bom" / f"{split}.jsonl").read_bytes(), source.name


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_huge_text_field_is_a_clear_error_and_fast(tmp_path, fmt):
    """Documented behaviour: a text over MAX_TEXT_CHARS (100,000 characters) is a DataError naming its
    line and field (a corrupt record or a document to shorten); a 5 MB field takes well under a second."""
    huge = "word " * 1_000_000  # 5 MB
    if fmt == "jsonl":
        rows = rows_ann()
        rows[6]["text"] = huge
        src = generic(tmp_path, rows)
    else:
        path = tmp_path / "d.csv"
        path.write_text("id,text,labels\n" + "".join(f"r{i},text {i},a\n" for i in range(6))
                        + f'r6,"{huge}",b\n' + "r7,short,b\n")
        src = Source("bad", {"loader": "generic", "path": str(path)}, [path])
    started = time.perf_counter()
    err = expect_error(src, tmp_path, 7 if fmt == "jsonl" else 8, "text", "5,000,000 characters", "100,000")
    assert time.perf_counter() - started < 10, err


def test_text_at_the_limit_loads(tmp_path):
    rows = [dict(r, split=["train", "train", "dev", "test"][i % 4]) for i, r in enumerate(rows_ann())]
    rows[0]["text"] = "x" * MAX_TEXT_CHARS
    assert run_prepare(generic(tmp_path, rows), tmp_path / "out")[0] == "ok"


@pytest.mark.parametrize("label, what", [("a, b", "a comma"), ('say "hi"', "a double quote"),
                                         ("two\nlines", "a line break"), ("tab\there", "a tab"),
                                         ("", "empty label name"), (" padded", "leading or trailing")])
def test_labels_with_commas_quotes_and_blanks_are_rejected(tmp_path, label, what):
    rows = rows_ann()
    rows[5]["annotations"] = [["a"], [label]]
    if label == " padded":  # documented: label lists are stripped, so this is the label "padded"
        kind, meta = run_prepare(generic(tmp_path, rows), tmp_path / "out")
        assert kind == "ok" and "padded" in meta["labels"], meta
    else:
        expect_error(generic(tmp_path, rows), tmp_path, 6, "annotations", what)
    rows = [{"id": f"r{i}", "text": "t", "distribution": {"a": 0.5, label if i == 2 else "b": 0.5}} for i in range(9)]
    if label == " padded":  # docs/formats.md: label names never count edge spaces, in any field
        kind, meta = run_prepare(generic(tmp_path, rows), tmp_path / "out2")
        assert kind == "ok" and "padded" in meta["labels"] and " padded" not in meta["labels"], meta
    else:
        expect_error(generic(tmp_path, rows), tmp_path, 3, "distribution", what)


def test_csv_label_cells_honour_quotes(tmp_path):
    """`a, "b"` is the labels a and b; `a, "b,c"` is a label 'b,c', which label names may not be."""
    path = tmp_path / "d.csv"
    body = "".join(f'r{i},text {i},"a, ""b"""\n' for i in range(9))
    path.write_text("id,text,labels\n" + body)
    src = Source("ok", {"loader": "generic", "path": str(path)}, [path])
    kind, meta = run_prepare(src, tmp_path / "out")
    assert kind == "ok" and meta["labels"] == ["a", "b"], meta
    first = json.loads((tmp_path / "out" / "train.jsonl").read_text().splitlines()[0])
    assert first["labels"] == ["a", "b"]
    path.write_text("id,text,labels\n" + body + 'r9,text,"a, ""b,c"""\n')
    expect_error(Source("bad", {"loader": "generic", "path": str(path)}, [path]), tmp_path, 11, "labels",
                 "'b,c'", "a comma")


def test_label_set_of_one_is_an_error(tmp_path):
    rows = [{"id": f"r{i}", "text": f"t {i}", "labels": ["a"] if i % 2 else []} for i in range(9)]
    err = expect_error(generic(tmp_path, rows), tmp_path, None, "labels", "1 label(s)", "at least 2",
                       path=Path("datasets.bad"))
    assert "datasets.bad.labels" in str(err)  # tells the user where to list labels that never occur
    src = generic(tmp_path, rows, labels=["a", "b"])  # listing the second label fixes it
    assert run_prepare(src, tmp_path / "out")[0] == "ok"


def test_empty_splits(tmp_path):
    folder = tmp_path / "g"
    folder.mkdir()
    for split in ("train", "dev", "test"):
        (folder / f"{split}.jsonl").write_text("" if split == "dev" else "".join(
            json.dumps({"id": f"{split}{i}", "text": "t", "labels": ["a", "b"][i % 2]}) + "\n" for i in range(4)))
    src = Source("bad", {"loader": "generic", "path": str(folder)}, [folder / "dev.jsonl"])
    kind, err = run_prepare(src, tmp_path / "out")
    assert kind == "error" and str(err).startswith("datasets.bad") and "split 'dev' has no examples" in str(err)
    # MFRC whose test rows were all dropped by the Non-Moral rule: the drop count is in the message
    path = tmp_path / "m.csv"
    path.write_text("text,annotator,annotation,split\n" + "".join(f"t{i},a1,Care,{['train', 'dev'][i % 2]}\n"
                                                                  for i in range(4))
                    + "mixed,a1,\"Care,Non-Moral\",test\n")
    kind, err = run_prepare(Source("bad", {"loader": "mfrc", "path": str(path)}, [path]), tmp_path / "out")
    assert kind == "error" and "split 'test' has no examples (1 dropped by a documented rule" in str(err)


def test_ids_colliding_across_splits(tmp_path):
    rows = [{"id": f"f{i}", "split": ["train", "dev", "test"][i % 3], "text": "t", "distribution": {"Care": 1.0}}
            for i in range(6)]
    rows[5]["id"] = "f0"  # f0 is train, the copy is test
    path = tmp_path / "f.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    err = expect_error(Source("bad", {"loader": "mfrc_fractions", "path": str(path)}, [path]), tmp_path, 6, "id",
                       "duplicate id 'f0'")
    assert "first seen in split 'train'" in str(err) and "line 1" in str(err)
    folder = source_named(tmp_path, "semeval2018_ec").files[0].parent
    dev = folder / "2018-E-c-En-dev.txt"
    train_id = (folder / "2018-E-c-En-train.txt").read_text().splitlines()[1].split("\t")[0]
    lines = dev.read_text().splitlines()
    lines[2] = train_id + lines[2][lines[2].index("\t"):]
    dev.write_text("\n".join(lines) + "\n")
    kind, err = run_prepare(Source("bad", {"loader": "semeval2018_ec", "path": str(folder)}, [dev]), tmp_path / "o")
    assert kind == "error" and f"duplicate id {train_id!r}" in str(err) and err.field == "id", err


@pytest.mark.parametrize("raw, shown", [("NaN", "nan"), ("Infinity", "inf"), ("-Infinity", "-inf"),
                                        ("-0.25", "-0.25"), ("1.5", "1.5"), ('"0.5"', "'0.5'"), ("true", "True"),
                                        ("null", "None"), ("[0.5]", "[0.5]")])
def test_bad_shares_in_distributions(tmp_path, raw, shown):
    lines = [f'{{"id": "r{i}", "text": "t", "distribution": {{"a": {raw if i == 4 else "0.5"}, "b": 0.25}}}}'
             for i in range(9)]
    expect_error(generic(tmp_path, lines), tmp_path, 5, "distribution", "must be a number in [0, 1]", shown)
    path = tmp_path / "d.csv"  # the same in a CSV cell holding JSON
    cell = json.dumps({"a": 0.5}).replace('"', '""')
    bad = '{""a"": ' + raw.replace('"', '""') + "}"
    path.write_text("id,text,distribution\n" + "".join(f'r{i},t,"{bad if i == 2 else cell}"\n' for i in range(9)))
    expect_error(Source("bad", {"loader": "generic", "path": str(path)}, [path]), tmp_path, 4, "distribution",
                 "must be a number in [0, 1]")


def test_single_label_shares_must_sum_to_one(tmp_path):
    rows = [{"id": f"r{i}", "text": "t", "distribution": {"a": 0.7, "b": 0.3}} for i in range(9)]
    rows[3]["distribution"] = {"a": 0.9, "b": 0.8}
    expect_error(generic(tmp_path, rows, task="single_label"), tmp_path, 4, "distribution", "sum to 1.7")
    rows[3]["distribution"] = {"a": 0.333, "b": 0.667}  # rounded fractions are fine
    src = generic(tmp_path, rows, task="single_label")
    assert run_prepare(src, tmp_path / "out")[0] == "ok"


@pytest.mark.parametrize("value, field_, needle", [
    ('"a"', "annotations", "expected JSON"), ("5", "annotations", "expected a list of label lists, got 5"),
    ('{"a": 1}', "annotations", "expected a list of label lists"), ("[5]", "annotations", "annotation 0 must be a list"),
    ("[null]", "annotations", "annotation 0 must be a list"), ('[["a"], {"b": 1}]', "annotations", "annotation 1"),
    ('[[["a"]]]', "annotations", "expected a list of labels"), ('[["a", 3]]', "annotations", "expected a list of labels"),
    ("[]", "annotations", "zero annotators"), ('[["zzz"]]', "annotations[0]", "'zzz' is not in the label set")])
def test_non_list_annotations(tmp_path, value, field_, needle):
    good = json.dumps([["a"], ["b"]])
    lines = [f'{{"id": "r{i}", "text": "t", "annotations": {value if i == 7 else good}}}' for i in range(9)]
    cfg = {"labels": ["a", "b"]} if "zzz" in value else {}
    expect_error(generic(tmp_path, lines, **cfg), tmp_path, 8, field_, needle)


def test_comma_string_annotations_are_label_lists(tmp_path):
    """Documented: an annotation may be a comma-separated string (CSV exports); `"a, b"` = ["a", "b"]."""
    rows = [{"id": f"r{i}", "text": "t", "annotations": ["a, b", ["a"]], "split": ["train", "dev", "test"][i % 3]}
            for i in range(6)]
    src = generic(tmp_path, rows)
    kind, meta = run_prepare(src, tmp_path / "out")
    assert kind == "ok" and meta["labels"] == ["a", "b"]
    rec = json.loads((tmp_path / "out" / "train.jsonl").read_text().splitlines()[0])
    assert rec["annotations"] == [["a", "b"], ["a"]] and rec["p_ref"] == {"a": 1.0, "b": 0.5, "none": 0.0}


def test_duplicate_keys_in_json_are_errors(tmp_path):
    """HateXplain's dataset.json is one JSON object: a repeated post id would silently keep the last."""
    folder = tmp_path / "hx"
    folder.mkdir()
    shutil.copy(FIX / "hatexplain" / "post_id_divisions.json", folder)
    text = (FIX / "hatexplain" / "dataset.json").read_text()
    posts = json.loads(text)
    first = next(iter(posts))
    body = text.rstrip().rstrip("}").rstrip()
    dup = json.dumps({first: posts[first]}, indent=4)[1:-1].strip()
    (folder / "dataset.json").write_text(body + ",\n    " + dup + "\n}\n")
    src = Source("bad", {"loader": "hatexplain", "path": str(folder)}, [folder / "dataset.json"])
    kind, err = run_prepare(src, tmp_path / "out")
    assert kind == "error" and err.field == first and "duplicate key" in str(err), err
    starts = [i + 1 for i, ln in enumerate((folder / "dataset.json").read_text().splitlines())
              if ln.startswith(f'    "{first}":')]
    assert len(starts) == 2 and err.line == starts[1], (starts, str(err))


def test_emotions_list_in_latin1(tmp_path):
    folder = source_named(tmp_path, "goemotions").files[0].parent
    (folder / "emotions.txt").write_bytes("\n".join(["admiration", "caf\u00e9", "neutral"]).encode("latin-1"))
    kind, err = run_prepare(Source("bad", {"loader": "goemotions", "path": str(folder)}, [folder / "emotions.txt"]),
                            tmp_path / "out")
    assert kind == "error" and err.line == 2 and "not UTF-8" in str(err), err


# ---- configs ------------------------------------------------------------------------------------
def default_config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


def _set(cfg: dict, path: tuple, value) -> None:
    for k in path[:-1]:
        cfg = cfg[k]
    cfg[path[-1]] = value


def _leaves(obj, path=()):
    yield path, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _leaves(v, path + (i,))


@pytest.mark.parametrize("path, value, needle", [
    (("datasets", "synthetic", "synthetic", "n_train"), "many", "datasets.synthetic.synthetic.n_train"),
    (("datasets", "synthetic", "synthetic", "annotators"), [3], "datasets.synthetic.synthetic.annotators"),
    (("datasets", "synthetic", "subsets"), [1, 2], "datasets.synthetic.subsets"),
    (("datasets", "synthetic", "synthetic", "labels"), ["joy", "joy, fear"], "datasets.synthetic.synthetic.labels"),
    (("models", "tiny", "builtin", "lr"), "3e-3", "write it with a dot"),
    (("prompts", "emotions", "k"), 4.0, "prompts.emotions.k: 4.0 is not of type 'integer'"),
    (("prompts", "emotions", "instruction"), {"labels": None}, "prompts.emotions.instruction"),
    (("metrics", "threshold"), float("nan"), "metrics.threshold: NaN or infinite"),
    (("finetune", "sft", "lr"), float("inf"), "finetune.sft.lr: NaN or infinite"),
    (("generation", "icl_sweep_ratios", 2), float("nan"), "generation.icl_sweep_ratios.2"),
    (("seeds",), "0", "seeds"),
    (("datasets",), ["synthetic"], "datasets"),
    (("models", "tiny"), None, "models.tiny"),
    (("regimes",), ["base", "dpo"], "regimes.1"),
])
def test_config_wrong_types_at_depth(path, value, needle):
    cfg = default_config()
    _set(cfg, path, value)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert needle in str(err.value), str(err.value)


def test_config_leaf_mutation_corpus(monkeypatch):
    """Every leaf of the default config replaced by values of the wrong type or range: a ConfigError
    naming that key (or a parent), or a valid config; non-finite numbers are never accepted."""
    schema = config_module.load_schema()  # parsing the schema YAML is 95% of a validation: read it once
    monkeypatch.setattr(config_module, "load_schema", lambda *a, **k: schema)
    base = default_config()
    replacements = [None, "x", -1, 1.5, 4.0, [], {}, True, float("nan"), float("inf"), 10 ** 30, [[1]],
                    {"a": {"b": 1}}]
    counts: Counter = Counter()
    for path, _ in list(_leaves(base)):
        if not path:
            continue
        for value in replacements:
            cfg = copy.deepcopy(base)
            _set(cfg, path, value)
            try:
                validate_config(cfg)
            except ConfigError as err:
                keys = [".".join(map(str, path[:i])) for i in range(len(path), 0, -1)]
                assert any(k in str(err) for k in keys), (path, value, str(err))
                counts["error"] += 1
            except Exception as err:
                raise AssertionError(f"{path} = {value!r}: unhandled {type(err).__name__}: {err}") from err
            else:
                assert not (isinstance(value, float) and not math.isfinite(value)), (path, value)
                counts["ok"] += 1
    assert counts["error"] > 1000 and counts["ok"] > 50, counts


def test_config_file_bytes_corpus(tmp_path):
    """The default config.yaml truncated at many points, with bytes replaced, re-encoded or empty:
    load_config raises ConfigError naming the file, or returns a valid config."""
    rng = random.Random(SEED)
    data = (REPO / "config.yaml").read_bytes()
    path = tmp_path / "c.yaml"
    counts: Counter = Counter()
    cases = list(mutants(data, rng, n_cuts=25, n_flips=25)) + [("empty", b""), ("a list", b"- 1\n- 2\n"),
                                                              ("tab indent", b"datasets:\n\tsyn: 1\n")]
    for what, mutated in cases:
        path.write_bytes(mutated)
        try:
            cfg = load_config(path)
        except ConfigError as err:
            assert str(err).startswith(str(path)), (what, str(err))
            counts["error"] += 1
        except Exception as err:
            raise AssertionError(f"config.yaml {what}: unhandled {type(err).__name__}: {err}") from err
        else:
            assert cfg["datasets"] and cfg["models"] and cfg["prompts"], what
            counts["ok"] += 1
    assert counts["error"] > 20 and counts["ok"] > 5, counts
    path.write_bytes("seeds: [0]\n# caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)
    with pytest.raises(ConfigError, match="expected a mapping"):
        validate_config(["not", "a", "mapping"])  # type: ignore[arg-type]


# ---- generation records (estimators' input validation) ---------------------------------------------
GEN_LABELS = ["a", "b", "c"]


def valid_generation() -> dict:
    return {"id": "x1", "demo_ids": ["d1"], "output_text": "a, b", "labels": ["a", "b"], "unknown": [],
            "repeated": [], "n_tokens": 4, "hit_max_tokens": False, "no_label": False,
            "steps": [{"position": 0, "label": "a", "first_token_logits": [1.0, 0.5, -1.0, 0.0],
                       "whole_label_logprobs": [-0.5, -1.0, -3.0, -2.0], "label_logprob": -0.5},
                      {"position": 2, "label": "b", "first_token_logits": [0.1, 2.0, -1.0, float("-inf")],
                       "whole_label_logprobs": [-2.5, -0.2, -3.0, -2.0], "label_logprob": -0.2}],
            "marginal": [0.9, 0.8, 0.1, 0.05]}


BAD_VALUES = [None, "x", "1.5", -1, 1.5, 1e308, -1e308, [], {}, True, float("nan"), float("inf"),
              float("-inf"), [[1.0, 2.0, 3.0, 4.0]], [1, 2, 3, 4], [True, False, True, False], ["a"], {"a": 1},
              "none", "a", "zzz"]


def _check_record(parse, obj, what: str) -> str:
    """Parse one record: a DataError naming its field, or a record every estimator turns into q in [0, 1]."""
    try:
        rec = parse(obj, GEN_LABELS, source="gen.jsonl", line=3)
    except DataError as err:
        assert str(err).startswith("gen.jsonl, line 3") and err.field, (what, str(err))
        return "error"
    except Exception as err:
        raise AssertionError(f"{what}: unhandled {type(err).__name__}: {err}") from err
    if parse is gen_files.parse_generation:
        frames = []
        for name, fn in est.GENERATION_ESTIMATORS.items():
            try:
                frames.append(fn([rec], GEN_LABELS))
            except DataError as err:  # e.g. marginal without the marginal field: an error naming it
                assert err.field, (what, name, str(err))
            except Exception as err:
                raise AssertionError(f"{what}: estimator {name}: unhandled {type(err).__name__}: {err}") from err
    elif parse is gen_files.parse_unary:
        frames = [est.unary([rec], GEN_LABELS)]
    else:
        frames = [est.pairwise_bt([rec], GEN_LABELS, steps=20)]
    for frame in frames:
        assert np.isfinite(frame["q"]).all() and frame["q"].between(0.0, 1.0).all(), what
    return "ok"


@pytest.mark.parametrize("kind", ["baseline", "unary", "pairwise"])
def test_generation_record_mutation_corpus(kind):
    """Every field of a valid generation record replaced by a bad value or deleted."""
    parse, base = {
        "baseline": (gen_files.parse_generation, valid_generation()),
        "unary": (gen_files.parse_unary, {"id": "x", "p_reasonable": {"a": 0.2, "b": 0.9, "c": 0.5}}),
        "pairwise": (gen_files.parse_pairwise, {"id": "x", "pairs": [{"a": "a", "b": "b", "p_a": 0.7},
                                                               {"a": "b", "b": "a", "p_a": 0.3},
                                                               {"a": "c", "b": "none", "p_a": 0.6}]}),
    }[kind]
    counts: Counter = Counter()
    for path, _ in list(_leaves(base)):
        if not path:
            continue
        for value in BAD_VALUES + ["<deleted>"]:
            obj = copy.deepcopy(base)
            if value == "<deleted>":
                parent = obj
                for k in path[:-1]:
                    parent = parent[k]
                del parent[path[-1]]
            else:
                _set(obj, path, value)
            counts[_check_record(parse, obj, f"{kind} {path} = {value!r}")] += 1
    assert counts["error"] > 30 and counts["ok"] >= 3, counts


def test_generation_file_truncations(tmp_path):
    """A generation file cut anywhere: a DataError naming the line, or fewer complete records."""
    labels_json = tmp_path / "labels.json"
    labels_json.write_text(json.dumps({"dataset": "fuzz", "labels": GEN_LABELS, "none_label": "none"}))
    recs = []
    for i in range(6):
        r = valid_generation()
        r["id"] = f"x{i}"
        recs.append(json.dumps(r).replace("-Infinity", "-1e4"))
    data = ("\n".join(recs) + "\n").encode()
    path = tmp_path / "seed0.jsonl"
    rng = random.Random(SEED)
    counts: Counter = Counter()
    for what, mutated in mutants(data, rng, n_cuts=30, n_flips=30):
        path.write_bytes(mutated)
        try:
            frame = est.estimate("max_over_steps", path, labels_json)
        except DataError as err:
            assert str(err).startswith(str(path)), (what, str(err))
            counts["error"] += 1
        except Exception as err:
            raise AssertionError(f"generation file {what}: unhandled {type(err).__name__}: {err}") from err
        else:
            assert np.isfinite(frame["q"]).all() and frame["q"].between(0, 1).all(), what
            counts["ok"] += 1
    assert counts["error"] > 20 and counts["ok"] > 5, counts


def test_load_labelled_data_is_what_the_rule_calls():
    """The rule's script calls prepare_data, which calls load_labelled_data: an unknown loader is a
    ConfigError naming the key (the schema normally stops it first)."""
    with pytest.raises(ConfigError, match=r"datasets\.x\.loader"):
        load_labelled_data("x", {"loader": "nope"})


# ---- model output edge cases are counted in the tables, never dropped ------------------------------
def _step(label, top: int, n: int = 4) -> dict:
    logits = [0.0] * n
    logits[top] = 2.0
    logprobs = [math.log(0.1)] * n
    logprobs[top] = math.log(0.6)
    return {"position": 0, "label": label, "first_token_logits": logits, "whole_label_logprobs": logprobs,
            "label_logprob": None if label is None else math.log(0.6)}


def edge_case_records(ids: list[str]) -> list[dict]:
    """Baseline generation records (docs/formats.md) for six examples, as the extraction writes them:
    an ordinary output, no label at all, an unknown label only, a repeated label, a runaway output that
    hit max_new_tokens (repeats and unknown strings included), and `none`."""
    base = {"demo_ids": ["d1"], "unknown": [], "repeated": [], "n_tokens": 4, "hit_max_tokens": False,
            "no_label": False}
    recs = [
        {"output_text": "joy", "labels": ["joy"], "steps": [_step("joy", 0)]},
        {"output_text": "", "labels": [], "no_label": True, "steps": []},
        {"output_text": "xyzzy", "labels": [], "unknown": ["xyzzy"], "steps": [_step(None, 1)]},
        {"output_text": "fear, fear", "labels": ["fear"], "repeated": ["fear"],
         "steps": [_step("fear", 1), _step("fear", 1)]},
        {"output_text": "joy, fear, joy, blah, joy, fear, anger, blah", "labels": ["joy", "fear", "anger"],
         "unknown": ["blah", "blah"], "repeated": ["joy", "joy", "fear"], "n_tokens": 12, "hit_max_tokens": True,
         "steps": [_step(lab, i % 3) for i, lab in enumerate(["joy", "fear", "joy", None, "joy", "fear", "anger",
                                                               None])]},
        {"output_text": "none", "labels": [], "steps": [_step("none", 3)]},
    ]
    return [{"id": i, **base, **r} for i, r in zip(ids, recs)]


def test_output_edge_cases_are_counted_in_classification_table(tmp_path):
    """Outputs with no label, unknown labels, repeated labels or a runaway to the token limit go
    through the estimators, metrics and tables like any other: every example is scored (n_examples)
    and each case is counted in classification.csv's gen_* columns."""
    from labeldist.artifacts.estimates import write_estimates
    from labeldist.io import write_json, write_jsonl
    from labeldist.metrics import run_metrics
    from labeldist.tables import write_table

    data = tmp_path / "data"
    files = {k: str(data / (f"{k}.jsonl" if k in ("train", "dev", "test") else f"{k}.json")) for k in OUTPUT_KEYS}
    prepare_data("syn", {"loader": "synthetic", "synthetic": {"labels": ["joy", "fear", "anger"], "n_train": 10,
                                                            "n_dev": 10, "n_test": 10, "annotators": [3, 4]},
                         "subsets": {"main_size": 6, "dev_size": 6}}, files)
    subsets = json.loads(Path(files["subsets"]).read_text())
    gen = {s: tmp_path / f"gen_{s}.jsonl" for s in ("main", "dev")}
    write_jsonl(gen["main"], edge_case_records(subsets["main"]))
    write_jsonl(gen["dev"], edge_case_records(subsets["dev"]))
    metric_paths = []
    estimators = ["first_step", "max_over_steps", "output", "conditional", "joint"]
    for name in estimators:
        write_estimates(tmp_path / f"{name}.parquet",
                        {(s, 0): est.estimate(name, gen[s], files["labels"]) for s in ("main", "dev")})
        result = run_metrics(estimates=tmp_path / f"{name}.parquet", seed=0,
                             test_data=files["test"], dev_data=files["dev"], labels=files["labels"],
                             subsets=files["subsets"], generation=gen["main"], threshold=0.5, ece_bins=10, n_bootstrap=5,
                             meta={"dataset": "syn", "model": "tiny", "regime": "base", "estimator": name, "seed": 0})
        metric_paths.append(tmp_path / f"{name}.json")
        write_json(metric_paths[-1], [result])
    out = {k: tmp_path / f"classification.{k}" for k in ("csv", "md", "html")}
    write_table(metric_paths, "classification", csv=out["csv"], md=out["md"], html_path=out["html"])
    import pandas as pd

    table = pd.read_csv(out["csv"])
    assert sorted(table["estimator"]) == sorted(estimators)  # one row per estimator: none dropped
    for col, want in {"n_examples": 6, "gen_n_outputs": 6, "gen_no_label": 1, "gen_unknown": 2, "gen_repeated": 2,
                      "gen_hit_max_tokens": 1}.items():
        assert col in table.columns, f"classification.csv lacks {col}"
        assert (table[col] == want).all(), (col, table[col].tolist())
    assert table["f1_micro_mean"].notna().all()
    assert "1 / 2 / 2 / 1 of 6" in out["md"].read_text()
