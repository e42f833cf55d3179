"""The sequence-classification-head baseline: LoRA + multi-label head on the base LLM, estimates out."""

from __future__ import annotations

import time

import pytest

from .test_finetune import LABELS, _one_thread, build_weak_base, synthetic_records, write_stage_data  # noqa: F401


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Stage data files (cue-word texts) and a weak base model folder."""
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("seq_cls")
    train, dev, test = synthetic_records(300, 0, "tr"), synthetic_records(40, 2, "dv"), synthetic_records(60, 1, "te")
    files = write_stage_data(root / "data", train, dev, test)
    base = build_weak_base(root / "base", train, [r["text"] for r in train], steps=40)
    return {"root": root, "files": files, "base": base, "train": train, "test": test}


CFG = {"lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "lr": 5e-3, "max_steps": 80, "batch_size": 16, "seed": 0}


def test_seq_cls_head_writes_estimates_that_rank_gold_labels_first(setup):
    import numpy as np
    import pandas as pd
    from sklearn.metrics import f1_score, roc_auc_score

    from labeldist.io import read_json
    from labeldist.seq_cls import seq_cls_from_files

    out = setup["root"] / "estimates"
    path = out / "seq_cls_head.parquet"
    start = time.perf_counter()
    seq_cls_from_files(setup["base"], setup["files"], path, CFG, seeds=[0], device="cpu", threads=1)
    seconds = time.perf_counter() - start
    subsets = read_json(setup["files"]["subsets"])
    gold = {r["id"]: r["labels"] for r in setup["test"]}
    table = pd.read_parquet(path)
    assert list(table.columns) == ["seed", "subset", "id", "label", "q"] and set(table["seed"]) == {0}
    for subset in ("main", "dev"):
        est = table[table["subset"] == subset]
        assert str(est["q"].dtype) == "float64" and est["q"].between(0, 1).all()
        assert est["id"].drop_duplicates().tolist() == sorted(subsets[subset])
        assert (est.groupby("id")["label"].apply(list) == pd.Series({i: LABELS for i in subsets[subset]})).all()
    main = table[table["subset"] == "main"].pivot(index="id", columns="label", values="q")
    y_true = np.array([[int(l in gold[i]) for l in LABELS] for i in subsets["main"]])
    q = main.loc[subsets["main"], LABELS].to_numpy()
    auc = roc_auc_score(y_true.ravel(), q.ravel())
    f1 = f1_score(y_true, (q >= 0.5).astype(int), average="micro", zero_division=0.0)
    print(f"\nseq_cls_head: {CFG['max_steps']} steps + 2 subsets in {seconds:.1f} s; main micro ROC-AUC {auc:.3f}, "
          f"micro F1@0.5 {f1:.3f}")
    assert auc > 0.8
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["seq_cls_head.parquet"], \
        "nothing but the estimates is saved"


def test_seq_cls_head_is_seeded_and_trains_the_head(setup):
    from labeldist.seq_cls import SeqClsSettings, predict_estimates, train_seq_cls_head

    settings = SeqClsSettings.from_config({**CFG, "max_steps": 4})
    records = setup["test"][:8]
    runs = []
    for seed in (0, 0, 1):
        trainer, tok, log = train_seq_cls_head(setup["base"], setup["train"][:64], LABELS, settings, seed, "cpu")
        runs.append(predict_estimates(trainer, tok, records, LABELS)["q"].to_numpy())
    assert (runs[0] == runs[1]).all(), "same seed, same estimates"
    assert not (runs[0] == runs[2]).all(), "the seed wildcard changes the run"
    model = trainer.model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("score" in n for n in trainable), "the classification head is trained (modules_to_save)"
    assert any("lora_" in n for n in trainable)
    assert model.base_model.model.config.problem_type == "multi_label_classification"
    assert {"step", "loss"} <= set(log.columns)


def test_missing_subset_is_a_data_error(setup, tmp_path):
    from labeldist.errors import DataError
    from labeldist.seq_cls import seq_cls_from_files

    with pytest.raises(DataError, match="subsets.json.*'nope'"):
        seq_cls_from_files(setup["base"], setup["files"], tmp_path / "x.parquet", {**CFG, "max_steps": 1},
                           seeds=[0], device="cpu", subsets=("main", "nope"))
