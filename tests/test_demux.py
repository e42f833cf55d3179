"""Demux: exact label-token positions, learning a planted cue, early stopping, saving, encoder dispatch."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import f1_score, log_loss
from transformers import BertTokenizer

import labeldist.demux as demux
from labeldist.config import default_block
from labeldist.demux import (
    DemuxModel,
    DemuxSettings,
    build_builtin_encoder,
    build_encoder,
    label_correlation_loss,
    label_text,
    label_token_positions,
    load_demux,
    predict_proba,
    run_demux,
    train_demux,
    train_wordpiece_tokenizer,
)

LABELS = ["joy", "fear", "anger", "surprise"]
FILLER = ("the a day was really felt about when we then it my friend said so very this that today there "
          "after work home night morning").split()
TINY = DemuxSettings.from_config({**default_block("demux"), "hidden_size": 32, "num_layers": 1, "num_heads": 2,
                                  "max_epochs": 15, "patience": 3, "lr": 3e-3, "batch_size": 32, "vocab_size": 300})


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: on a shared 2-core machine more threads make these tiny models many times slower."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def cue_data(n: int, labels, seed: int, p: float = 0.3):
    """Texts of filler words plus one cue word per gold label ("cuejoy"); multi-hot gold [n, L]."""
    rng = np.random.default_rng(seed)
    texts, ys = [], []
    for _ in range(n):
        y = (rng.random(len(labels)) < p).astype(int)
        words = list(rng.choice(FILLER, size=int(rng.integers(5, 10))))
        for j, lab in enumerate(labels):
            if y[j]:
                words.insert(int(rng.integers(0, len(words) + 1)), f"cue{lab.replace(' ', '')}")
        texts.append(" ".join(words))
        ys.append(y)
    return texts, np.array(ys)


# ---- label-token positions ----------------------------------------------------------------------
def test_positions_of_multi_piece_labels_with_a_known_vocabulary():
    vocab = {t: i for i, t in enumerate(
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ",", "-", "em", "##bar", "##rass", "##ment", "joy",
         "thin", "moral", "##ity", "non", "hello"])}
    tok = BertTokenizer(vocab=vocab)
    labels = ["embarrassment", "joy", "thin morality", "non-moral"]
    # [CLS] em ##bar ##rass ##ment , joy , thin moral ##ity , non - moral [SEP] hello [SEP]
    assert label_token_positions(tok, labels) == [[1, 2, 3, 4], [6], [8, 9, 10], [12, 13, 14]]


def test_positions_map_to_exactly_the_label_tokens_of_a_trained_tokenizer():
    labels = ["embarrassment", "joy", "thin morality", "disapproval"]
    texts, _ = cue_data(200, ["joy"], seed=0)
    tok = train_wordpiece_tokenizer(texts, labels, vocab_size=60)  # too small to hold the label words whole
    positions = label_token_positions(tok, labels)
    segment, _ = label_text(labels)
    ids = tok(segment, "a day")["input_ids"]
    tokens = tok.convert_ids_to_tokens(ids)
    for lab, pos in zip(labels, positions):
        assert pos == list(range(pos[0], pos[-1] + 1))  # contiguous
        assert "".join(t.removeprefix("##") for t in (tokens[i] for i in pos)) == lab.replace(" ", "")
    assert len(positions[0]) >= 3 and len(positions[3]) >= 3  # really multi-piece
    covered = {i for pos in positions for i in pos}
    assert {tokens[i] for i in range(1, max(covered) + 1) if i not in covered} == {","}
    assert tokens[0] == "[CLS]" and tokens[max(covered) + 1] == "[SEP]"


def test_label_embedding_is_the_mean_of_its_own_token_states():
    labels = ["embarrassment", "joy"]
    texts, _ = cue_data(50, labels, seed=1)
    tok = train_wordpiece_tokenizer(texts, labels, vocab_size=60)
    torch.manual_seed(0)
    encoder = build_builtin_encoder(TINY, len(tok))
    model = DemuxModel(encoder, label_token_positions(tok, labels)).eval()
    batch = tok([label_text(labels)[0]] * 2, texts[:2], return_tensors="pt", padding=True)
    with torch.no_grad():
        _, emb = model(**batch)
        states = encoder(**batch).last_hidden_state
    for l, pos in enumerate(model.positions):
        assert torch.allclose(emb[:, l], states[:, pos].mean(dim=1), atol=1e-6)


# ---- training -----------------------------------------------------------------------------------
def test_demux_beats_a_constant_predictor_and_is_reproducible():
    tr_x, tr_y = cue_data(400, LABELS, seed=0)
    dv_x, dv_y = cue_data(80, LABELS, seed=1)
    te_x, te_y = cue_data(150, LABELS, seed=2)
    result = train_demux(tr_x, tr_y, dv_x, dv_y, LABELS, TINY, seed=0)
    q = predict_proba(result.model, result.tokenizer, LABELS, te_x, TINY)
    assert q.shape == te_y.shape and ((q >= 0) & (q <= 1)).all()
    prevalence = np.broadcast_to(tr_y.mean(axis=0), te_y.shape)
    assert log_loss(te_y.ravel(), q.ravel()) < 0.5 * log_loss(te_y.ravel(), prevalence.ravel())
    assert f1_score(te_y, q >= 0.5, average="micro") > 0.8
    # the best constant micro-F1 is predicting every label (recall 1, precision = prevalence)
    assert f1_score(te_y, q >= 0.5, average="micro") > f1_score(te_y, np.ones_like(te_y), average="micro") + 0.3
    again = train_demux(tr_x, tr_y, dv_x, dv_y, LABELS, TINY, seed=0)
    assert np.allclose(predict_proba(again.model, again.tokenizer, LABELS, te_x, TINY), q, atol=1e-5)


def test_early_stopping_stops_at_best_epoch_plus_patience_when_dev_f1_is_flat():
    tr_x, tr_y = cue_data(64, LABELS, seed=3)
    dv_x, dv_y = cue_data(32, LABELS, seed=4)
    settings = DemuxSettings(**{**TINY.__dict__, "lr": 0.0, "max_epochs": 40, "patience": 2})
    result = train_demux(tr_x, tr_y, dv_x, dv_y, LABELS, settings, seed=0)
    assert result.stopped_epoch == result.best_epoch + settings.patience < settings.max_epochs
    assert len(result.history) == result.stopped_epoch


def test_early_stopping_on_noisy_dev_labels_stops_and_restores_the_best_epoch():
    tr_x, tr_y = cue_data(160, LABELS, seed=5)
    dv_x, dv_y = cue_data(60, LABELS, seed=6)
    flip = np.random.default_rng(8).random(dv_y.shape) < 0.2  # dev F1 climbs, then plateaus below 1
    dv_y = np.where(flip, 1 - dv_y, dv_y)
    settings = DemuxSettings(**{**TINY.__dict__, "max_epochs": 40, "patience": 3})
    result = train_demux(tr_x, tr_y, dv_x, dv_y, LABELS, settings, seed=0)
    hist = result.history
    assert result.stopped_epoch == result.best_epoch + settings.patience < settings.max_epochs
    assert hist.dev_micro_f1.iloc[: result.best_epoch].max() > 0.5  # it learnt something first
    best_f1 = hist.loc[hist.epoch == result.best_epoch, "dev_micro_f1"].item()
    assert hist.dev_micro_f1.iloc[-1] != best_f1  # the last epoch's weights are not the best ones...
    q = predict_proba(result.model, result.tokenizer, LABELS, dv_x, settings)
    assert f1_score(dv_y, q >= 0.5, average="micro") == pytest.approx(best_f1)  # ...and were replaced


def test_label_correlation_loss():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    targets = torch.tensor([[1.0, 0.0, 0.0]])
    same = torch.stack([a, a, a])[None]
    orth = torch.stack([a, b, b])[None]
    opposite = torch.stack([a, -a, -a])[None]
    assert label_correlation_loss(same, targets).item() == pytest.approx(1.0)
    assert label_correlation_loss(orth, targets).item() == pytest.approx(0.0)
    assert label_correlation_loss(opposite, targets).item() == pytest.approx(-1.0)
    # examples with only gold or only non-gold labels contribute nothing
    assert label_correlation_loss(same, torch.ones(1, 3)).item() == 0.0
    both = torch.cat([same, orth])
    assert label_correlation_loss(both, torch.tensor([[1.0, 1, 1], [1, 0, 0]])).item() == pytest.approx(0.0)
    emb = orth.clone().requires_grad_(True)
    label_correlation_loss(emb + torch.tensor([0.5, 0.5]), targets).backward()
    assert emb.grad.abs().sum() > 0


def test_hub_encoder_is_loaded_with_auto_classes(monkeypatch):
    calls = []

    def fake(kind):
        def from_pretrained(name, *args, **kwargs):
            calls.append((kind, name))
            return "tokenizer" if kind == "tokenizer" else "model"
        return from_pretrained

    monkeypatch.setattr(demux.AutoTokenizer, "from_pretrained", fake("tokenizer"))
    monkeypatch.setattr(demux.AutoModel, "from_pretrained", fake("model"))
    assert build_encoder(DemuxSettings.from_config({**default_block("demux"), "encoder": "bert-base-uncased"}),
                         ["a text"], LABELS) == ("tokenizer", "model")
    assert calls == [("tokenizer", "bert-base-uncased"), ("model", "bert-base-uncased")]
    tok, enc = build_encoder(TINY, ["a text"], LABELS)
    assert tok.is_fast and enc.config.hidden_size == TINY.hidden_size and len(calls) == 2


# ---- the rule's function on files -------------------------------------------------------------
def _write_split(path, prefix, texts, y):
    records = []
    for i, (t, row) in enumerate(zip(texts, y)):
        labels = [LABELS[j] for j in np.flatnonzero(row)]
        p_ref = {l: float(l in labels) for l in LABELS} | {"none": float(not labels)}
        records.append({"id": f"{prefix}-{i}", "text": t, "labels": labels, "annotations": None, "p_ref": p_ref})
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_run_demux_writes_estimates_and_a_reloadable_model(tmp_path):
    files = {k: tmp_path / f"{k}.jsonl" for k in ("train", "dev", "test")}
    data = {}
    for (name, n, seed) in (("train", 240, 0), ("dev", 60, 1), ("test", 50, 2)):
        data[name] = cue_data(n, LABELS, seed)
        _write_split(files[name], name, *data[name])
    files["labels"] = tmp_path / "labels.json"
    files["labels"].write_text(json.dumps({"dataset": "cue", "labels": LABELS}))
    files["subsets"] = tmp_path / "subsets.json"
    main_ids = [f"test-{i}" for i in range(0, 50, 2)]
    dev_ids = [f"dev-{i}" for i in range(30)]
    files["subsets"].write_text(json.dumps({"main": main_ids, "dev": dev_ids, "multi": [], "train": []}))
    settings = DemuxSettings(**{**TINY.__dict__, "max_epochs": 6, "correlation_weight": 0.5})
    out = tmp_path / "est" / "demux.parquet"
    result = run_demux(data=files, estimates=out, model_dirs={1: tmp_path / "model"}, settings=settings)[1]

    assert result.history.train_correlation.abs().sum() > 0  # the correlation term was on
    table = pd.read_parquet(out)
    assert list(table.columns) == ["seed", "subset", "id", "label", "q"] and set(table.seed) == {1}
    for name, ids in (("main", main_ids), ("dev", dev_ids)):
        est = table[table.subset == name]
        assert len(est) == len(ids) * len(LABELS)
        assert list(est.id[:: len(LABELS)]) == sorted(ids) and list(est.label[: len(LABELS)]) == LABELS
        assert est.q.between(0, 1).all()

    meta = json.loads((tmp_path / "model" / "demux.json").read_text())
    assert meta["labels"] == LABELS and meta["best_epoch"] == result.best_epoch and meta["seed"] == 1
    assert (tmp_path / "model" / "training_log.csv").exists()
    model, tok, labels, loaded = load_demux(tmp_path / "model")
    texts = [t for i, t in enumerate(data["test"][0]) if i % 2 == 0]
    q = predict_proba(model, tok, labels, texts, loaded)
    est = table[table.subset == "main"].pivot(index="id", columns="label", values="q").loc[main_ids, LABELS]
    assert np.allclose(q, est.to_numpy(), atol=1e-5)


def test_run_demux_names_the_file_of_an_unknown_subset_id(tmp_path):
    texts, y = cue_data(10, LABELS, 0)
    files = {k: tmp_path / f"{k}.jsonl" for k in ("train", "dev", "test")}
    for name in ("train", "dev", "test"):
        _write_split(files[name], name, texts, y)
    files["labels"] = tmp_path / "labels.json"
    files["labels"].write_text(json.dumps({"dataset": "cue", "labels": LABELS}))
    files["subsets"] = tmp_path / "subsets.json"
    files["subsets"].write_text(json.dumps({"main": ["test-0", "nope"], "dev": ["dev-1"]}))
    with pytest.raises(demux.DataError, match="subsets.json"):
        run_demux(data=files, estimates=tmp_path / "m.parquet", model_dirs={0: tmp_path / "m"}, settings=TINY)


def test_sample_train_is_seeded_ordered_and_capped():
    from labeldist.demux import sample_train

    records = [{"id": str(i)} for i in range(50)]
    assert sample_train(records, "all", 0) is records and sample_train(records, 80, 0) is records
    a, b = sample_train(records, 10, 3), sample_train(records, 10, 3)
    assert a == b and len(a) == 10 and [int(r["id"]) for r in a] == sorted(int(r["id"]) for r in a)
    assert sample_train(records, 10, 4) != a
