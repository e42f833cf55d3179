"""Linear probes on the LLM's hidden state at the first label step (docs/methods.md section 4, `linear_probe`).

Per label, a scikit-learn pipeline `StandardScaler -> [TruncatedSVD] -> LogisticRegression` is fitted on
the hidden states of the `train` subset against the train split's aggregate gold labels; q(l | x) is its
`predict_proba` on the `main` and `dev` subsets. The main estimate uses the last layer; one probe set per
configured layer shows where label information lives. A second probe set predicts the model's *own*
emitted labels (all of them, and the study's "non-first" variant: every emitted label but the first) to
test whether the first-step state already encodes labels the model emits later.
"""

from __future__ import annotations

import logging
import os
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.decomposition import TruncatedSVD
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from .config import NONE_LABEL
from .errors import DataError
from .artifacts.estimates import estimate_frame, write_estimates, write_layer_estimates, write_own_labels
from .artifacts.generations import read_generations
from .artifacts.hidden import HiddenStates, read_hidden_states
from .artifacts.labels import read_label_set
from .artifacts.splits import read_split

log = logging.getLogger("labeldist.probes")

OWN_LABEL_VARIANTS = ("all", "non_first")
Probe = Pipeline | DummyClassifier


def align(ids: Sequence[str], table: Mapping[str, list[str]], source: str | os.PathLike,
          what: str) -> list[list[str]]:
    """Return `table[id]` for every id, in order; a DataError names `source` when an id is missing."""
    missing = [i for i in ids if i not in table]
    if missing:
        raise DataError(source, f"{len(missing)} id(s) of the {what} not found, e.g. {missing[:3]}", field="id")
    return [table[i] for i in ids]


def multi_hot(label_sets: Sequence[Sequence[str]], columns: Sequence[str]) -> np.ndarray:
    """Return an int matrix [n, len(columns)]: 1 where the example has the label.

    The column named `none` (if any) is 1 exactly when the example's label set is empty.
    """
    index = {l: j for j, l in enumerate(columns)}
    y = np.zeros((len(label_sets), len(columns)), dtype=np.int64)
    for i, labs in enumerate(label_sets):
        for lab in labs:
            if lab in index:
                y[i, index[lab]] = 1
        if NONE_LABEL in index and not any(l in index and l != NONE_LABEL for l in labs):
            y[i, index[NONE_LABEL]] = 1
    return y


# ---- probes -------------------------------------------------------------------------------------
def svd_components(hidden_size: int, max_svd_dim: int, n_samples: int) -> int | None:
    """Return the TruncatedSVD size for features of width `hidden_size`, or None when no SVD is needed.

    The target is max(hidden_size // 4, max_svd_dim) (the study's max(d/4, 512)); SVD applies only when
    `hidden_size` exceeds it. It is capped at n_samples - 1, the most components centred data can have.
    """
    target = max(hidden_size // 4, max_svd_dim)
    if hidden_size <= target:
        return None
    return max(1, min(target, n_samples - 1))


def make_probe(hidden_size: int, n_samples: int, max_svd_dim: int = 512, seed: int = 0) -> Pipeline:
    """Return an unfitted probe: StandardScaler, TruncatedSVD when `hidden_size` is large, LogisticRegression."""
    steps: list = [("scale", StandardScaler())]
    k = svd_components(hidden_size, max_svd_dim, n_samples)
    if k is not None:
        steps.append(("svd", TruncatedSVD(n_components=k, random_state=seed)))
    steps.append(("lr", LogisticRegression(max_iter=2000, random_state=seed)))
    return Pipeline(steps)


def fit_probes(x: np.ndarray, y: np.ndarray, max_svd_dim: int = 512, seed: int = 0) -> list[Probe]:
    """Return one fitted probe per column of the multi-hot targets `y` [n, L], features `x` [n, d].

    A column with a single class in the training data gets a DummyClassifier (strategy "prior") that
    predicts its training prevalence (0 or 1) for every input, instead of failing.
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"features {x.shape} and targets {y.shape} do not match")
    probes: list[Probe] = []
    for j in range(y.shape[1]):
        target = y[:, j]
        if np.unique(target).size < 2:
            probes.append(DummyClassifier(strategy="prior").fit(x, target))
        else:
            probes.append(make_probe(x.shape[1], x.shape[0], max_svd_dim, seed).fit(x, target))
    return probes


def positive_proba(probe: Probe, x: np.ndarray) -> np.ndarray:
    """Return P(class 1) per row of `x` (0 where the probe never saw the positive class)."""
    proba = probe.predict_proba(x)
    classes = list(probe.classes_)
    if 1 in classes:
        return proba[:, classes.index(1)].astype(np.float64)
    return np.zeros(x.shape[0], dtype=np.float64)


def predict_probes(probes: Sequence[Probe], x: np.ndarray) -> np.ndarray:
    """Return q [n, L] in [0, 1]: each probe's positive-class probability on the features `x`."""
    q = np.stack([positive_proba(p, x) for p in probes], axis=1) if probes else np.zeros((len(x), 0))
    return np.clip(q, 0.0, 1.0)


def resolve_layers(spec: str | Sequence[int], n_layers: int, source: str = "probes.layers") -> list[int]:
    """Return the layer indices to probe: every slot 0..n_layers-1 for "all", else the listed ones.

    Index 0 is the embedding output, n_layers - 1 the last layer. A listed index out of range raises
    DataError naming `source`.
    """
    if spec == "all":
        return list(range(n_layers))
    layers = sorted({int(l) for l in spec})
    bad = [l for l in layers if not 0 <= l < n_layers]
    if bad:
        raise DataError(source, f"layers {bad} out of range: the hidden states have {n_layers} layer slots")
    return layers


def layer_probe_frames(train_x: np.ndarray, train_y: np.ndarray, evals: Mapping[str, HiddenStates],
                       columns: Sequence[str], layers: Sequence[int], max_svd_dim: int = 512,
                       seed: int = 0) -> dict[str, pd.DataFrame]:
    """Fit one probe set per layer and return, per evaluation subset, the long table layer, id, label, q.

    `train_x` is [n, n_layers + 1, d]; each `evals` value holds the same layer slots.
    """
    parts: dict[str, list[pd.DataFrame]] = {name: [] for name in evals}
    for layer in tqdm(layers, desc="probe layers", mininterval=5):
        probes = fit_probes(train_x[:, layer, :], train_y, max_svd_dim, seed)
        for name, hs in evals.items():
            frame = estimate_frame(hs.ids, columns, predict_probes(probes, hs.hidden[:, layer, :]))
            frame.insert(0, "layer", layer)
            parts[name].append(frame)
    return {name: pd.concat(frames, ignore_index=True) for name, frames in parts.items()}


def own_label_targets(emitted: Sequence[Sequence[str]], labels: Sequence[str], variant: str) -> np.ndarray:
    """Return multi-hot targets [n, L] of the model's own emitted labels.

    `all`: every emitted label; `non_first`: every emitted label except the first one emitted.
    """
    if variant == "all":
        sets = [list(e) for e in emitted]
    elif variant == "non_first":
        sets = [list(e[1:]) for e in emitted]
    else:
        raise ValueError(f"unknown own-label variant {variant!r}: use one of {OWN_LABEL_VARIANTS}")
    return multi_hot(sets, list(labels))


def own_label_scores(train_x: np.ndarray, train_emitted: Sequence[Sequence[str]], eval_x: np.ndarray,
                     eval_emitted: Sequence[Sequence[str]], labels: Sequence[str], max_svd_dim: int = 512,
                     seed: int = 0) -> pd.DataFrame:
    """Return per variant and label the F1 and accuracy of probes predicting the model's own labels.

    Probes are fitted on (`train_x`, targets from `train_emitted`) and scored at threshold 0.5 on
    (`eval_x`, `eval_emitted`); columns variant, label, f1, accuracy, n_pos (positives in the evaluation
    set). F1 is 0 when a label has neither positives nor positive predictions.
    """
    rows = []
    for variant in OWN_LABEL_VARIANTS:
        y_train = own_label_targets(train_emitted, labels, variant)
        y_eval = own_label_targets(eval_emitted, labels, variant)
        pred = (predict_probes(fit_probes(train_x, y_train, max_svd_dim, seed), eval_x) >= 0.5).astype(int)
        for j, lab in enumerate(labels):
            rows.append({
                "variant": variant, "label": lab,
                "f1": float(f1_score(y_eval[:, j], pred[:, j], zero_division=0)),
                "accuracy": float(accuracy_score(y_eval[:, j], pred[:, j])),
                "n_pos": int(y_eval[:, j].sum()),
            })
    return pd.DataFrame(rows, columns=["variant", "label", "f1", "accuracy", "n_pos"])


# ---- the rule -----------------------------------------------------------------------------------
def run_linear_probes(*, hidden: Mapping[tuple[str, int], str | os.PathLike],
                      generations: Mapping[tuple[str, int], str | os.PathLike], train_data: str | os.PathLike,
                      labels_json: str | os.PathLike, seeds: Sequence[int], estimates: str | os.PathLike,
                      layer_tables: str | os.PathLike, own_labels: str | os.PathLike,
                      layers: str | Sequence[int], max_svd_dim: int,
                      threads: int = 1) -> dict[int, dict[str, float]]:
    """Fit and apply every probe of one (dataset, model, regime) for each seed; write the three files of
    the probe stage once, every seed in them (labeldist.artifacts.estimates).

    `hidden` maps (subset, seed) for subsets train, main and dev to hidden-state files; `generations`
    maps (train|main, seed) to baseline generation files (own-label probes). `estimates` receives the
    last layer's probes of main and dev (the L labels plus `none`, the empty gold set), `layer_tables`
    one probe set per layer, `own_labels` the own-label scores. BLAS/OpenMP pools are limited to
    `threads` (oversubscribed pools are many times slower). Returns a few summary numbers per seed.
    """
    parts: dict[str, dict] = {"estimates": {}, "layers": {}, "own": {}}
    summary = {}
    with threadpool_limits(limits=max(1, int(threads))):
        for seed in seeds:
            out = probe_seed({s: hidden[(s, seed)] for s in ("train", "main", "dev")},
                             {s: generations[(s, seed)] for s in ("train", "main")}, train_data, labels_json,
                             layers, max_svd_dim, int(seed))
            for subset in ("main", "dev"):
                parts["estimates"][(subset, int(seed))] = out["estimates"][subset]
                parts["layers"][(subset, int(seed))] = out["layers"][subset]
            parts["own"][int(seed)] = out["own_labels"]
            summary[int(seed)] = out["summary"]
    write_estimates(estimates, parts["estimates"])
    write_layer_estimates(layer_tables, parts["layers"])
    write_own_labels(own_labels, parts["own"])
    return summary


def probe_seed(hidden: Mapping[str, str | os.PathLike], generations: Mapping[str, str | os.PathLike],
               train_data: str | os.PathLike, labels_json: str | os.PathLike, layers: str | Sequence[int],
               max_svd_dim: int, seed: int) -> dict:
    """Return the probes of one seed: {"estimates": {main, dev: id/label/q frame}, "layers": {main, dev:
    layer/id/label/q frame}, "own_labels": own-label scores, "summary": mean F1 per variant}."""
    label_set = read_label_set(labels_json)
    labels = label_set.labels
    columns = label_set.with_none
    states = {name: read_hidden_states(path) for name, path in hidden.items()}
    train = states["train"]
    for name, hs in states.items():
        if hs.hidden.shape[1:] != train.hidden.shape[1:]:
            raise DataError(hidden[name], f"hidden shape {list(hs.hidden.shape[1:])} differs from the train "
                            f"subset's {list(train.hidden.shape[1:])}", field="hidden")
    gold_sets = {r["id"]: r["labels"] for r in read_split(train_data, label_set)}
    gold = align(train.ids, gold_sets, train_data, f"hidden states {hidden['train']}")
    train_y = multi_hot(gold, columns)
    last = train.n_layers - 1
    log.info("seed %d, train subset: %d examples, %d layer slots, width %d; gold positives per label %s", seed,
             len(train.ids), train.n_layers, train.hidden.shape[2], dict(zip(columns, train_y.sum(0).tolist())))

    evals = {name: states[name] for name in ("main", "dev")}
    main_probes = fit_probes(train.hidden[:, last, :], train_y, max_svd_dim, seed)
    estimates = {name: estimate_frame(hs.ids, columns, predict_probes(main_probes, hs.hidden[:, last, :]))
                 for name, hs in evals.items()}
    chosen = resolve_layers(layers, train.n_layers)
    layer_frames = layer_probe_frames(train.hidden, train_y, evals, columns, chosen, max_svd_dim, seed)

    emitted = {name: {g.id: list(g.labels) for g in read_generations(generations[name], labels, label_set.none_label)}
               for name in ("train", "main")}  # the labels each output says, in order (docs/formats.md)
    train_emitted = align(train.ids, emitted["train"], generations["train"], f"hidden states {hidden['train']}")
    main = states["main"]
    main_emitted = align(main.ids, emitted["main"], generations["main"], f"hidden states {hidden['main']}")
    scores = own_label_scores(train.hidden[:, last, :], train_emitted, main.hidden[:, last, :], main_emitted,
                              labels, max_svd_dim, seed)
    summary = {f"own_{v}_mean_f1": float(scores.loc[scores.variant == v, "f1"].mean()) for v in OWN_LABEL_VARIANTS}
    log.info("seed %d, own-label probes (mean F1 over labels): %s", seed, summary)
    return {"estimates": estimates, "layers": layer_frames, "own_labels": scores, "summary": summary}

