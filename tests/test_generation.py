"""The generation stage (labeldist.generation): data and demo pool, seeded demos, every prompting mode,
and the files exactly as docs/formats.md "Generations" says."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from labeldist.errors import DataError
from labeldist.generation import choose_demos, demo_rng, generate_file, load_task_data
from labeldist.io import read_jsonl, write_json, write_jsonl
from labeldist.prompts import (
    PAIRWISE_ANSWERS,
    UNARY_ANSWERS,
    PromptSpec,
    choice_prompt,
    pairwise_demos,
    pairwise_instruction,
    pairwise_question,
    unary_demos,
    unary_instruction,
    unary_question,
)
from labeldist.scoring import tokens_in_context

from .test_scoring import SPEC, TINY_CFG, WORDS, naive_last, naive_logprob, tiny_model, tiny_tokenizer

LABELS3 = ["joy", "fear", "anger"]
PROMPT_CFG = {**SPEC.__dict__, "k": 4}
GEN_CFG = {"max_new_tokens": 5, "batch_size": 4, "marginal": True, "marginal_top_p": 0.99,
           "marginal_min_prob": 0.01, "marginal_max_depth": 2, "icl_sweep_ratios": [0.0, 1.0],
           "hidden_layers": "all"}
MODEL_CFG = {"dtype": "float32", "load_in_4bit": False}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread (two spin against other jobs on the shared 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _records(split: str, n: int, rng: random.Random) -> list[dict]:
    out = []
    for i in range(n):
        labels = sorted(rng.sample(LABELS3, [0, 1, 1, 2, 2, 3][i % 6]), key=LABELS3.index)
        p_ref = {l: float(l in labels) for l in LABELS3} | {"none": float(not labels)}
        out.append({"id": f"syn-{split}-{i:03d}", "text": " ".join(rng.choices(WORDS, k=5)),
                    "labels": labels, "annotations": None, "p_ref": p_ref})
    return out


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict:
    """Data-stage files for a 3-label dataset and a saved tiny model folder."""
    root = tmp_path_factory.mktemp("gen")
    rng = random.Random(0)
    splits = {"train": _records("train", 30, rng), "dev": _records("dev", 4, rng), "test": _records("test", 6, rng)}
    files = {split: str(root / f"{split}.jsonl") for split in splits}
    for split, recs in splits.items():
        write_jsonl(files[split], recs)
    files["labels"] = str(root / "labels.json")
    write_json(files["labels"], {"dataset": "toy", "labels": LABELS3, "none_label": "none",
                                 "task": "multilabel", "p_ref_source": "gold"})
    files["subsets"] = str(root / "subsets.json")
    write_json(files["subsets"], {"main": [r["id"] for r in splits["test"][:4]],
                                  "multi": [r["id"] for r in splits["test"] if len(r["labels"]) >= 2],
                                  "dev": [r["id"] for r in splits["dev"]],
                                  "train": [r["id"] for r in splits["train"][:8]]})
    model_dir = root / "model"
    tiny_model().save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    return {"root": root, "files": files, "model": str(model_dir), "splits": splits}


def _run(ws, prompting, seed, name, subset="main", hidden=False):
    out = ws["root"] / f"{name}.jsonl"
    hid = ws["root"] / f"{name}.hidden.safetensors" if hidden else None
    generate_file(ws["model"], ws["files"], prompting, subset, seed, GEN_CFG, PROMPT_CFG, MODEL_CFG,
                  out, hid, device="cpu")
    return out, hid


def test_baseline_files_same_seed_identical_other_seed_other_demos(workspace):
    a, ha = _run(workspace, "baseline", 0, "b0", hidden=True)
    b, hb = _run(workspace, "baseline", 0, "b0again", hidden=True)
    c, _ = _run(workspace, "baseline", 1, "b1", hidden=True)
    assert a.read_bytes() == b.read_bytes() and ha.read_bytes() == hb.read_bytes()
    recs, recs1 = read_jsonl(a), read_jsonl(c)
    assert recs[0]["demo_ids"] != recs1[0]["demo_ids"]
    main = json.loads(Path(workspace["files"]["subsets"]).read_text())["main"]
    assert [r["id"] for r in recs] == main
    keys = ["id", "demo_ids", "truncated", "output_text", "labels", "unknown", "repeated", "n_tokens",
            "hit_max_tokens", "no_label", "steps", "marginal"]
    for rec in recs:
        assert list(rec) == keys
        assert rec["truncated"] is False  # every prompt fits: nothing shortened
        assert len(rec["demo_ids"]) == 4 and len(set(rec["demo_ids"])) == 4
        assert len(rec["marginal"]) == len(LABELS3) + 1
        for step in rec["steps"]:
            assert list(step) == ["position", "label", "first_token_logits", "whole_label_logprobs",
                                  "label_logprob"]
            assert len(step["first_token_logits"]) == len(step["whole_label_logprobs"]) == len(LABELS3) + 1
    with safe_open(str(ha), framework="pt") as fh:
        hidden, layers = fh.get_tensor("hidden"), fh.get_tensor("layers")
        meta = fh.metadata()
    assert hidden.dtype == torch.float32
    assert hidden.shape == (len(main), TINY_CFG["num_layers"] + 1, TINY_CFG["hidden_size"])
    assert json.loads(meta["ids"]) == main and layers.tolist() == [0, 1, 2]


def test_demos_come_from_train_minus_train_subset_and_follow_the_seed(workspace):
    data = load_task_data(workspace["files"], "dev")
    excluded = set(json.loads(Path(workspace["files"]["subsets"]).read_text())["train"])
    assert len(data.pool) == 30 - 8 and not excluded & set(data.pool)
    assert [e["id"] for e in data.examples] == [r["id"] for r in workspace["splits"]["dev"]]
    spec = PromptSpec.from_config(PROMPT_CFG)
    d0 = choose_demos(data, spec, demo_rng("baseline", 0))
    assert d0 == choose_demos(data, spec, demo_rng("baseline", 0))
    assert d0 != choose_demos(data, spec, demo_rng("baseline", 1))
    assert set(d0) <= set(data.pool)
    # the train subset itself is generated from the train split (probe features)
    assert len(load_task_data(workspace["files"], "train").examples) == 8


def test_icl_sweep_one_record_per_example_and_ratio(workspace):
    out, _ = _run(workspace, "icl_sweep", 0, "sweep")
    recs = read_jsonl(out)
    assert len(recs) == 4 * 2 and [r["ratio"] for r in recs] == [0.0] * 4 + [1.0] * 4
    pool = {r["id"]: r["labels"] for r in workspace["splits"]["train"]}
    for rec in recs:
        assert "marginal" not in rec and list(rec)[:3] == ["id", "demo_ids", "ratio"]
        n_multi = sum(len(pool[i]) >= 2 for i in rec["demo_ids"])
        assert n_multi == (4 if rec["ratio"] == 1.0 else 0)


def _naive_choice(ws, text, demos_marked, instruction, question, answers):
    tok, model = tiny_tokenizer(), tiny_model()
    spec = PromptSpec.from_config(PROMPT_CFG)
    prompt = choice_prompt(spec, instruction, demos_marked, text, [question], answers)
    text = prompt.prefix + "".join(prompt.suffixes[0])
    ids = tok(text)["input_ids"]
    answer_ids = [list(tokens_in_context(tok, text, a)) for a in prompt.answer_texts]
    if len(answer_ids[0]) == len(answer_ids[1]) == 1:
        scores = naive_last(model, ids)[0][[a[0] for a in answer_ids]]
    else:  # this tokenizer spells an answer with several tokens: whole answers are compared
        scores = torch.tensor([naive_logprob(model, ids, a) for a in answer_ids])
    return torch.softmax(scores, dim=-1)[0].item()


def test_unary_and_pairwise_records_equal_naive_prompts(workspace):
    data = load_task_data(workspace["files"], "main")
    spec = PromptSpec.from_config(PROMPT_CFG)
    demo_ids = choose_demos(data, spec, demo_rng("baseline", 0))
    demos = [data.pool[i] for i in demo_ids]

    out, _ = _run(workspace, "unary", 0, "unary")
    recs = read_jsonl(out)
    assert [r["id"] for r in recs] == [e["id"] for e in data.examples]
    marked = unary_demos(demos, LABELS3, random.Random("unary:0"))
    for rec, ex in zip(recs, data.examples):
        assert rec["demo_ids"] == demo_ids and list(rec["p_reasonable"]) == LABELS3
        assert all(0.0 <= p <= 1.0 for p in rec["p_reasonable"].values())
    ex = data.examples[1]
    naive = _naive_choice(workspace, ex["text"], marked, unary_instruction(spec, LABELS3),
                          unary_question("fear"), UNARY_ANSWERS)
    assert recs[1]["p_reasonable"]["fear"] == pytest.approx(naive, abs=1e-4)

    out, _ = _run(workspace, "pairwise", 0, "pairwise")
    recs = read_jsonl(out)
    options = LABELS3 + ["none"]
    marked = pairwise_demos(demos, LABELS3, random.Random("pairwise:0"))
    for rec in recs:
        pairs = [(p["a"], p["b"]) for p in rec["pairs"]]
        assert len(pairs) == len(options) * (len(options) - 1) == len(set(pairs))
        assert all((b, a) in pairs for a, b in pairs)
        assert all(0.0 <= p["p_a"] <= 1.0 for p in rec["pairs"])
    ex = data.examples[2]
    pair = next(p for p in recs[2]["pairs"] if p["a"] == "none" and p["b"] == "anger")
    naive = _naive_choice(workspace, ex["text"], marked, pairwise_instruction(spec, LABELS3),
                          pairwise_question("none", "anger"), PAIRWISE_ANSWERS)
    assert pair["p_a"] == pytest.approx(naive, abs=1e-4)


def test_bad_split_record_names_file_line_and_field(workspace, tmp_path):
    files = dict(workspace["files"])
    bad = tmp_path / "test.jsonl"
    recs = read_jsonl(files["test"])
    recs[2].pop("text")
    write_jsonl(bad, recs)
    files["test"] = str(bad)
    with pytest.raises(DataError, match=r"test\.jsonl, line 3, field 'text'"):
        load_task_data(files, "main")


def test_one_order_asks_each_pair_once_in_the_studys_order_with_the_same_answers(workspace):
    """generation.pairwise_orders: one asks the study's pairs (itertools.combinations over labels + none,
    written out here), half the prompts, and each answer is the both-order run's answer to that prompt."""
    from labeldist.generation import one_order, pairwise_keys, pairwise_pairs

    study = [("joy", "fear"), ("joy", "anger"), ("joy", "none"), ("fear", "anger"), ("fear", "none"),
             ("anger", "none")]
    assert pairwise_keys(LABELS3, {"pairwise_orders": "one"}, 0) == study
    assert len(pairwise_keys(LABELS3, {"pairwise_orders": "both"}, 0)) == 12
    # with a pair budget (many labels) each chosen unordered pair is kept once
    many = [f"l{i}" for i in range(30)]
    pairs = pairwise_pairs(many, 3, random.Random(0))
    kept = one_order(pairs, many)
    assert 2 * len(kept) == len(pairs) and {frozenset(p) for p in kept} == {frozenset(p) for p in pairs}
    assert all(b == "none" for a, b in kept if "none" in (a, b))

    both, _ = _run(workspace, "pairwise", 0, "pairwise_both")
    one = workspace["root"] / "pairwise_one.jsonl"
    generate_file(workspace["model"], workspace["files"], "pairwise", "main", 0,
                  {**GEN_CFG, "pairwise_orders": "one"}, PROMPT_CFG, MODEL_CFG, one, device="cpu")
    for rec_one, rec_both in zip(read_jsonl(one), read_jsonl(both)):
        assert rec_one["id"] == rec_both["id"] and rec_one["demo_ids"] == rec_both["demo_ids"]
        assert [(p["a"], p["b"]) for p in rec_one["pairs"]] == study
        answers = {(p["a"], p["b"]): p["p_a"] for p in rec_both["pairs"]}
        assert [p["p_a"] for p in rec_one["pairs"]] == pytest.approx([answers[ab] for ab in study], abs=1e-5)


# ---- prompts against the model's context (labeldist.context; the tiny model has 512 positions) ----------
def test_a_text_longer_than_the_context_is_cut_marked_and_logged_in_every_mode(workspace, tmp_path, caplog):
    """The stage end to end on a 3,000-word text: every mode's record of that example says `truncated`,
    the others do not, the job log counts it, the reader reads the flag, and outputs are produced."""
    from labeldist.artifacts.generations import read_generations, read_pairwise, read_unary
    from labeldist.metrics import generation_counts

    files = dict(workspace["files"])
    recs = read_jsonl(files["test"])
    main = json.loads(Path(files["subsets"]).read_text())["main"]
    long_id = main[1]
    next(r for r in recs if r["id"] == long_id)["text"] = " ".join(random.Random(5).choices(WORDS, k=3000))
    files["test"] = str(tmp_path / "test.jsonl")
    write_jsonl(files["test"], recs)
    ws = {**workspace, "files": files, "root": tmp_path}
    with caplog.at_level("INFO", logger="labeldist"):
        base, _ = _run(ws, "baseline", 0, "long_baseline")
    assert [r["truncated"] for r in read_jsonl(base)] == [i == long_id for i in main]
    assert "dataset 'toy', model" in caplog.text and "1 of 4 prompts were over the 507 tokens" in caplog.text
    gens = read_generations(base, LABELS3)
    assert generation_counts(gens)["truncated"] == 1
    assert read_jsonl(base)[1]["n_tokens"] >= 1  # generated on the cut prompt
    for mode, reader in (("unary", read_unary), ("pairwise", read_pairwise)):
        out, _ = _run(ws, mode, 0, f"long_{mode}")
        assert [r.truncated for r in reader(out, LABELS3)] == [i == long_id for i in main], mode


def test_a_prompt_too_long_without_its_query_text_stops_the_run_naming_dataset_model_and_numbers(workspace):
    from labeldist.errors import ContextError

    long_instruction = " ".join(random.Random(6).choices(WORDS, k=600)) + " {labels}"
    with pytest.raises(ContextError) as err:
        generate_file(workspace["model"], workspace["files"], "baseline", "main", 0, GEN_CFG,
                      {**PROMPT_CFG, "instruction": long_instruction}, MODEL_CFG,
                      workspace["root"] / "never.jsonl", device="cpu")
    message = str(err.value)
    assert message.startswith(f"dataset 'toy', model '{workspace['model']}': the prompt without its query text")
    assert "over the 507 the model can attend to (512 positions, max_position_embeddings, minus " \
           "generation.max_new_tokens 5)" in message
    assert not (workspace["root"] / "never.jsonl").exists()
