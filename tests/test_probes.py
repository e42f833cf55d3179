"""Linear probes: planted signals are recovered, degenerate labels don't crash, every output is complete."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import save_file
from sklearn.metrics import f1_score
from threadpoolctl import threadpool_limits

from labeldist.artifacts.hidden import read_hidden_states
from labeldist.errors import DataError
from labeldist.probes import (
    fit_probes,
    multi_hot,
    own_label_targets,
    predict_probes,
    resolve_layers,
    run_linear_probes,
    svd_components,
)

LABELS = ["joy", "fear", "anger"]


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """One BLAS/OpenMP thread: on a shared 2-core machine more threads make sklearn many times slower."""
    with threadpool_limits(limits=1):
        yield


def planted_task(d: int, n_labels: int, rng: np.random.Generator, latent: int = 6):
    """A fixed low-rank feature map and label weights, shared by every sample drawn from the task."""
    return rng.normal(size=(latent, d)), rng.normal(size=(latent, n_labels))


def planted(n: int, d: int, n_labels: int, rng: np.random.Generator, task=None, noise: float = 0.3):
    """Features with a low-rank structure and labels that are linear functions of the latent factors."""
    mix, w = task if task is not None else planted_task(d, n_labels, rng)
    z = rng.normal(size=(n, mix.shape[0]))
    x = z @ mix + noise * rng.normal(size=(n, d))
    y = (z @ w > 0.3).astype(int)
    return x.astype(np.float32), y


@pytest.mark.parametrize("d, max_svd_dim, uses_svd", [(24, 512, False), (96, 8, True)])
def test_probes_recover_a_planted_linear_signal(d, max_svd_dim, uses_svd):
    rng = np.random.default_rng(0)
    x, y = planted(600, d, 3, rng)
    probes = fit_probes(x[:400], y[:400], max_svd_dim=max_svd_dim, seed=0)
    assert [("svd" in p.named_steps) for p in probes] == [uses_svd] * 3
    q = predict_probes(probes, x[400:])
    assert q.shape == (200, 3) and (q >= 0).all() and (q <= 1).all()
    for j in range(3):
        assert f1_score(y[400:, j], q[:, j] >= 0.5) > 0.9


def test_svd_only_when_the_width_exceeds_the_target():
    assert svd_components(4096, 512, n_samples=5000) == 1024  # max(d/4, 512)
    assert svd_components(1024, 512, n_samples=5000) == 512
    assert svd_components(512, 512, n_samples=5000) is None
    assert svd_components(128, 512, n_samples=5000) is None
    assert svd_components(4096, 512, n_samples=200) == 199  # no more components than centred samples


@pytest.mark.parametrize("value", [0, 1])
def test_single_class_label_gives_its_training_prevalence(value):
    rng = np.random.default_rng(1)
    x, y = planted(120, 16, 2, rng)
    y[:, 1] = value
    probes = fit_probes(x[:80], y[:80])
    q = predict_probes(probes, x[80:])
    assert np.all(q[:, 1] == float(value))
    assert np.unique(q[:, 0]).size > 1  # the other label still gets a real probe


def test_multi_hot_marks_none_for_empty_sets():
    y = multi_hot([["fear"], [], ["joy", "anger"]], LABELS + ["none"])
    assert y.tolist() == [[0, 1, 0, 0], [0, 0, 0, 1], [1, 0, 1, 0]]


def test_own_label_targets():
    assert own_label_targets([["fear", "joy"], ["anger"]], LABELS, "non_first").tolist() == [[1, 0, 0], [0, 0, 0]]
    assert own_label_targets([["fear", "joy"], ["anger"]], LABELS, "all").tolist() == [[1, 1, 0], [0, 0, 1]]


def test_resolve_layers():
    assert resolve_layers("all", 5) == [0, 1, 2, 3, 4]
    assert resolve_layers([4, 0, 4], 5) == [0, 4]
    with pytest.raises(DataError, match="out of range"):
        resolve_layers([5], 5)


# ---- the rule's function on files -------------------------------------------------------------
N_SLOTS, WIDTH = 4, 12


def _write_hidden(path, ids, hidden):
    save_file({"hidden": hidden.astype(np.float32)}, str(path), metadata={"ids": json.dumps(ids)})


def _fixture(tmp_path, rng):
    """Three subsets whose last layer carries the gold labels and the model's emitted labels; layer 0 is noise.

    The model 'emits' its labels in a fixed order (label order), so the non-first target is the gold set
    minus its first label, also a function of the latent factors.
    """
    files, hidden, gold = {}, {}, {}
    task = planted_task(WIDTH, len(LABELS), rng)
    for subset, n in (("train", 300), ("main", 150), ("dev", 80)):
        ids = [f"{subset}-{i}" for i in range(n)]
        x, y = planted(n, WIDTH, len(LABELS), rng, task)
        states = rng.normal(size=(n, N_SLOTS, WIDTH))
        states[:, -1, :] = x
        path = tmp_path / f"{subset}.hidden.safetensors"
        _write_hidden(path, ids, states)
        files[subset], hidden[subset] = path, ids
        gold[subset] = {i: [LABELS[j] for j in range(len(LABELS)) if y[k, j]] for k, i in enumerate(ids)}
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"id": i, "text": "t", "labels": labs, "annotations": None,
                                         "p_ref": {l: float(l in labs) for l in LABELS} | {"none": float(not labs)}})
                             + "\n" for i, labs in gold["train"].items()))
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"dataset": "planted", "labels": LABELS}))
    gens = {}
    for subset in ("train", "main"):
        path = tmp_path / f"{subset}.gen.jsonl"
        path.write_text("".join(json.dumps({
            "id": i, "labels": labs,
            "steps": [{"position": 3 * k, "label": lab, "first_token_logits": [0.0] * (len(LABELS) + 1),
                       "whole_label_logprobs": [-2.0] * (len(LABELS) + 1)} for k, lab in enumerate(labs or ["none"])],
        }) + "\n" for i, labs in gold[subset].items()))
        gens[subset] = path
    return files, gens, train, labels, gold


def by_seed(files, seeds=(0,)):
    """The probe stage's inputs keyed (subset, seed): the same files for every seed."""
    return {(subset, seed): path for subset, path in files.items() for seed in seeds}


def test_run_linear_probes_writes_every_output(tmp_path):
    rng = np.random.default_rng(3)
    files, gens, train, labels, gold = _fixture(tmp_path, rng)
    out = {name: tmp_path / "out" / f"linear_probe{name}" for name in (".parquet", ".layers.csv", ".own_labels.csv")}
    run_linear_probes(hidden=by_seed(files, (0, 1)), generations=by_seed(gens, (0, 1)), train_data=train,
                      labels_json=labels, seeds=[0, 1], estimates=out[".parquet"], layer_tables=out[".layers.csv"],
                      own_labels=out[".own_labels.csv"], layers="all", max_svd_dim=512)
    columns = LABELS + ["none"]
    table = pd.read_parquet(out[".parquet"])
    assert list(table.columns) == ["seed", "subset", "id", "label", "q"] and table.q.dtype == np.float64
    assert list(dict.fromkeys(zip(table.seed, table.subset))) == [(0, "main"), (0, "dev"), (1, "main"), (1, "dev")]
    all_layers = pd.read_csv(out[".layers.csv"])
    assert list(all_layers.columns) == ["seed", "subset", "layer", "id", "label", "q"]
    for subset in ("main", "dev"):
        est = table[(table.subset == subset) & (table.seed == 0)].reset_index(drop=True)
        assert len(est) == len(gold[subset]) * len(columns)
        assert set(est.id) == set(gold[subset]) and set(est.label) == set(columns)
        assert est.q.between(0, 1).all()
        # the main estimate uses the last layer, where the signal is
        y = multi_hot([gold[subset][i] for i in est.id[::len(columns)]], columns)
        q = est.q.to_numpy().reshape(-1, len(columns))
        assert f1_score(y[:, :3], q[:, :3] >= 0.5, average="micro") > 0.85

        layers = all_layers[(all_layers.subset == subset) & (all_layers.seed == 0)]
        assert sorted(layers.layer.unique()) == list(range(N_SLOTS))
        assert layers.groupby("layer").size().eq(len(gold[subset]) * len(columns)).all()
        last = layers[layers.layer == N_SLOTS - 1].reset_index(drop=True)
        assert np.allclose(last.q.to_numpy(), est.q.to_numpy())
        f1_by_layer = {}
        for layer, part in layers.groupby("layer"):
            part = part[part.label != "none"]
            y_l = np.array([lab in gold[subset][i] for i, lab in zip(part.id, part.label)])
            f1_by_layer[layer] = f1_score(y_l, part.q >= 0.5)
        assert f1_by_layer[N_SLOTS - 1] > f1_by_layer[0] + 0.3

    own = pd.read_csv(out[".own_labels.csv"])
    assert list(own.columns) == ["seed", "variant", "label", "f1", "accuracy", "n_pos"]
    assert sorted(own.seed.unique()) == [0, 1]
    own = own[own.seed == 0]
    assert sorted(own.variant.unique()) == ["all", "non_first"] and len(own) == 2 * len(LABELS)
    first = own[own.variant == "all"].set_index("label")
    assert (first.f1 > 0.8).all()
    # the first label in emission order is never a non-first label
    assert own[(own.variant == "non_first") & (own.label == "joy")].n_pos.item() == 0
    assert (own.accuracy.between(0, 1)).all()


def test_listed_layers_only(tmp_path):
    rng = np.random.default_rng(4)
    files, gens, train, labels, _ = _fixture(tmp_path, rng)
    out = tmp_path / "o"
    run_linear_probes(hidden=by_seed(files), generations=by_seed(gens), train_data=train, labels_json=labels,
                      seeds=[0], estimates=out / "e.parquet", layer_tables=out / "l.csv",
                      own_labels=out / "own.csv", layers=[1, 3], max_svd_dim=512)
    assert sorted(pd.read_csv(out / "l.csv").layer.unique()) == [1, 3]


def test_hidden_ids_missing_from_the_train_split_name_the_file(tmp_path):
    rng = np.random.default_rng(5)
    files, gens, train, labels, _ = _fixture(tmp_path, rng)
    lines = train.read_text().splitlines()
    train.write_text("\n".join(lines[1:]) + "\n")
    out = tmp_path / "o"
    with pytest.raises(DataError, match="train.jsonl"):
        run_linear_probes(hidden=by_seed(files), generations=by_seed(gens), train_data=train, labels_json=labels,
                          seeds=[0], estimates=out / "e.parquet", layer_tables=out / "l.csv",
                          own_labels=out / "own.csv", layers="all", max_svd_dim=512)
    assert not out.exists() or not any(out.iterdir())


def test_bad_hidden_state_files(tmp_path):
    path = tmp_path / "h.safetensors"
    save_file({"hidden": np.zeros((3, 2, 4), np.float32)}, str(path), metadata={"ids": json.dumps(["a", "b"])})
    with pytest.raises(DataError, match="'ids'"):
        read_hidden_states(path)
    save_file({"hidden": np.zeros((3, 4), np.float32)}, str(path), metadata={"ids": json.dumps(["a", "b", "c"])})
    with pytest.raises(DataError, match="shape"):
        read_hidden_states(path)
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(DataError, match="safetensors"):
        read_hidden_states(path)
    ok = tmp_path / "ok.safetensors"
    save_file({"hidden": np.ones((2, 3, 4), np.float32)}, str(ok), metadata={"ids": json.dumps(["a", "b"])})
    hs = read_hidden_states(ok)
    assert hs.ids == ["a", "b"] and hs.n_layers == 3
