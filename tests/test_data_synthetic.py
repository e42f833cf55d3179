"""The synthetic dataset: deterministic, fast, spread p_ref that follows the latent intensities."""

import time

import numpy as np

from labeldist.data import load_labelled_data, prepare_data
from labeldist.data.synthetic import CUES, cue_words

CFG = {"loader": "synthetic", "synthetic": {"labels": ["joy", "optimism", "admiration", "surprise", "fear",
                                                        "sadness", "anger"],
                                             "n_train": 800, "n_dev": 120, "n_test": 160,
                                             "annotators": [3, 5], "seed": 0},
       "subsets": {"main_size": 100, "multi_size": 60, "dev_size": 60, "train_size": 200, "seed": 0}}


def _write(tmp_path, cfg, tag):
    out = {k: str(tmp_path / tag / f"{k}.{'jsonl' if k in ('train', 'dev', 'test') else 'json'}")
           for k in ("train", "dev", "test", "labels", "subsets")}
    prepare_data("synthetic", cfg, out)
    return {k: open(v, "rb").read() for k, v in out.items()}


def _with_seed(seed):
    return {**CFG, "synthetic": {**CFG["synthetic"], "seed": seed}}


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a, b = _write(tmp_path, CFG, "a"), _write(tmp_path, CFG, "b")
    assert a == b
    c = _write(tmp_path, _with_seed(1), "c")
    for split in ("train", "dev", "test"):
        assert c[split] != a[split]


def test_default_generation_is_fast():
    start = time.perf_counter()
    data = load_labelled_data("synthetic", CFG)
    assert time.perf_counter() - start < 2.0
    assert {s: len(v) for s, v in data.splits.items()} == {"train": 800, "dev": 120, "test": 160}
    assert data.splits["train"][12].id == "syn-train-00012"


def test_p_ref_is_spread_and_follows_intensity():
    data = load_labelled_data("synthetic", CFG)
    labels = data.labels
    exs = data.splits["train"]
    p = np.array([[ex.p_ref[lab] for lab in labels] for ex in exs])
    inten = np.array([[ex.extra["intensity"][lab] for lab in labels] for ex in exs])
    between = ((p > 0) & (p < 1)).mean()
    assert between > 0.1, "p_ref should often lie strictly between 0 and 1"
    assert len(np.unique(np.round(p, 3))) >= 8
    assert np.corrcoef(p.ravel(), inten.ravel())[0, 1] > 0.8  # votes follow the latent intensity
    none = np.array([ex.p_ref["none"] for ex in exs])
    assert (none == 1.0).any() and (none == 0.0).any()
    n_gold = np.array([len(ex.labels) for ex in exs])
    assert (n_gold == 0).any() and (n_gold >= 2).any()
    for ex in exs:
        n = len(ex.annotations)
        assert 3 <= n <= 5
        assert ex.labels == [lab for lab in labels if ex.p_ref[lab] >= 0.5]
        for lab in labels:
            assert abs(ex.p_ref[lab] - sum(lab in a for a in ex.annotations) / n) < 1e-12


def test_texts_are_short_and_carry_cues_of_active_labels():
    data = load_labelled_data("synthetic", CFG)
    cues = cue_words(data.labels)
    for ex in data.splits["dev"]:
        words = ex.text.split()
        assert 8 <= len(words) <= 20
        for lab, v in ex.extra["intensity"].items():
            has_cue = any(c in words for c in cues[lab])
            assert has_cue == (v >= 0.2), (ex.text, lab, v)


def test_unknown_labels_get_cue_words():
    cues = cue_words(["joy", "zebra", "umbrella"])
    assert cues["joy"] == CUES["joy"]
    assert cues["zebra"] and cues["zebra"] != cues["umbrella"]
    many = cue_words([f"lab{i}" for i in range(20)])
    assert all(many[f"lab{i}"] for i in range(20))
