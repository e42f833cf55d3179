"""Many labels (issue 8): 120 multi-token labels, labels absent from training, bounded memory, the pairwise
pair budget, and config/many_labels.yaml.

Whole-label scoring is compared with scoring each label separately by a full forward (as in
test_scoring.py, there with 39 labels); the data stage, the generation stage and every zero-shot
estimator run on a 120-label synthetic dataset whose last 10 labels never occur in its train split.
"""

from __future__ import annotations

import collections
import functools
import json
import random

import numpy as np
import pytest
import torch

from labeldist.config import default_block, load_config
from labeldist.data import load_labelled_data, prepare_data
from labeldist.data.synthetic import many_label_names, unseen_labels
from labeldist.demux import DemuxSettings, input_length, predict_proba, train_demux
from labeldist.artifacts.generations import parse_pairwise
from labeldist.estimators import ESTIMATOR_NAMES, estimate, pairwise_bt
from labeldist.extraction import build_label_table
from labeldist.generation import generate_file, pairwise_pairs
from labeldist.io import read_jsonl
from labeldist.models import build_tiny_llama
from labeldist.probes import fit_probes, multi_hot, predict_probes
from labeldist.prompts import NONE_LABEL, PromptSpec, build_prompt, pairwise_question_parts, unary_question
from labeldist.scoring import Continuation, choice_probabilities, encode_prefixes, run_continuations

from .conftest import REPO
from .test_scoring import SPEC, TINY_CFG, WORDS, naive_last, naive_logprob, tiny_tokenizer

L = 120
N_UNSEEN = 10
LABELS = many_label_names(L)
UNSEEN = LABELS[-N_UNSEEN:]
SPEC120 = PromptSpec.from_config(dict(instruction=SPEC.instruction, k=2, label_format="comma"))
SYN_CFG = {"loader": "synthetic",
           "synthetic": {"labels": LABELS, "unseen_labels": N_UNSEEN, "n_train": 60, "n_dev": 12, "n_test": 12,
                         "annotators": [3, 5], "seed": 0},
           "subsets": {"main_size": 4, "multi_size": 2, "dev_size": 4, "train_size": 10, "seed": 0}}


@functools.lru_cache(maxsize=None)
def long_model(scale: float = 0.15):
    """test_scoring's tiny Llama with 2,048 positions (a prompt listing 120 labels is ~1,300 tokens with
    the test tokenizer), weights redrawn at std `scale` so that scores depend strongly on context."""
    torch.manual_seed(1)
    model = build_tiny_llama(tiny_tokenizer(), {**TINY_CFG, "max_position_embeddings": 2048}, seed=1)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, scale)
    return model.eval()


class ForwardShapes:
    """Records (rows, new tokens, cached positions) of every forward call of a model."""

    def __init__(self, model):
        self.calls: list[tuple[int, int, int]] = []
        self.handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        ids = kwargs["input_ids"]
        past = kwargs.get("past_key_values")
        cached = past.get_seq_length() if past is not None else 0
        self.calls.append((int(ids.shape[0]), int(ids.shape[1]), int(cached)))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


# ---- data --------------------------------------------------------------------------------------------
def test_many_label_names_are_distinct_multi_word_and_share_first_words():
    names = many_label_names(300)
    assert len(set(names)) == 300 and names[:L] == LABELS
    assert all(len(n.split()) == 2 for n in names)
    firsts = collections.Counter(n.split()[0] for n in LABELS)
    assert len(firsts) == 20 and min(firsts.values()) >= 6  # first tokens collide, whole labels do not
    with pytest.raises(ValueError):
        many_label_names(301)


def test_unseen_labels_never_occur_in_train_but_do_in_test_and_generation_is_deterministic():
    cfg = {"loader": "synthetic", "synthetic": {"labels": LABELS, "unseen_labels": N_UNSEEN, "n_train": 600, "n_dev": 50,
                         "n_test": 400, "seed": 3}}
    data = load_labelled_data("syn", cfg)
    assert unseen_labels(LABELS, N_UNSEEN) == UNSEEN
    for ex in data.splits["train"]:
        assert not set(ex.labels) & set(UNSEEN)
        assert not any(set(a) & set(UNSEEN) for a in ex.annotations)
        assert all(ex.p_ref[u] == 0.0 and ex.extra["intensity"][u] == 0.0 for u in UNSEEN)
    seen_in_train = {l for ex in data.splits["train"] for l in ex.labels}
    assert len(seen_in_train) > 60  # the other labels do occur
    voted_in_test = {l for ex in data.splits["test"] for a in ex.annotations for l in a}
    assert len(voted_in_test & set(UNSEEN)) >= 5, "dev/test keep the unseen labels"
    assert any("never occur in the train split" in n for n in data.notes)
    again = load_labelled_data("syn", cfg)
    for split in ("train", "dev", "test"):
        assert [e.to_record() for e in again.splits[split]] == [e.to_record() for e in data.splits[split]]
    # the same data without held-out labels differs only because those labels are active again in train
    plain = load_labelled_data("syn", {"loader": "synthetic", "synthetic": {**cfg["synthetic"], "unseen_labels": 0}})
    assert [e.to_record() for e in plain.splits["test"]] == [e.to_record() for e in data.splits["test"]]
    assert any(set(e.labels) & set(UNSEEN) for e in plain.splits["train"])


def test_many_labels_config_validates_and_lists_the_generated_names():
    cfg = load_config(REPO / "config" / "many_labels.yaml", base_dir=REPO)
    (name, ds), = cfg["datasets"].items()
    assert ds["synthetic"]["labels"] == LABELS and ds["synthetic"]["unseen_labels"] == N_UNSEEN
    model = cfg["models"]["tiny"]["builtin"]
    assert model["pretrain_dataset"] == name and model["max_position_embeddings"] >= 1024
    assert cfg["generation"]["pairwise_opponents"] < L and "pairwise" in cfg["prompting"]


# ---- whole-label scoring at L = 120 -------------------------------------------------------------------
def test_whole_label_scores_of_120_multi_token_labels_equal_scoring_each_label_separately():
    tok, model = tiny_tokenizer(), long_model()
    table = build_label_table(tok, SPEC120, LABELS)
    assert all(len(ids) >= 2 for ids in table.first[:-1] + table.later[:-1]), "every label spans several tokens"
    assert len({ids[0] for ids in table.first}) < L / 2, "first tokens collide"
    rng = random.Random(0)
    demos = [(" ".join(rng.choices(WORDS, k=6)), LABELS[i:i + 2]) for i in (0, 50)]
    # short prompts (the instruction does not list the labels) keep the 484 separate forwards fast; the
    # stage test below runs the full 120-label prompts
    short = PromptSpec.from_config(dict(instruction="Classify the input.", k=2, label_format="comma"))
    prompts = [build_prompt(short, LABELS, demos, "my friend left"),
               build_prompt(short, LABELS, demos[:1], "the day was long and I felt so happy then sad")]
    enc = tok(prompts, return_tensors="pt", padding=True)
    assert (enc["attention_mask"] == 0).any()
    prefix, last = encode_prefixes(model, enc["input_ids"], enc["attention_mask"])
    start = torch.log_softmax(last, dim=-1)
    # slot 0 (right after the prompt) and slot 1 (after the first label and the separator)
    after_first = table.first[5] + table.sep
    items, sequences = [], []
    for b, prompt in enumerate(prompts):
        real = tok(prompt)["input_ids"]
        for ids in table.first:
            items.append(Continuation(row=b, visible=prefix.length, targets=ids, start=b))
            sequences.append((real, list(ids)))
        for ids in table.later:
            items.append(Continuation(row=b, visible=prefix.length, feed=after_first, targets=ids))
            sequences.append((real + list(after_first), list(ids)))
    max_rows, max_kv = 32, 3 * prefix.length
    with ForwardShapes(model) as shapes:
        res = run_continuations(model, prefix, items, start_logprobs=start, hidden_layers=None,
                                max_rows=max_rows, max_kv_tokens=max_kv)
    # memory is bounded by the chunk settings, not by L: at most 3 rows of cached prompt per forward
    assert len(shapes.calls) >= len(items) // 3
    assert all(rows <= min(max_rows, max_kv // prefix.length) for rows, _, _ in shapes.calls)
    expected = torch.tensor([naive_logprob(model, ctx, tgt) for ctx, tgt in sequences])
    assert torch.allclose(res.logprob, expected, atol=2e-4), (res.logprob - expected).abs().max()
    assert res.logprob.std() > 0.5  # proper, label-dependent scores


def test_packed_choice_trees_stay_bounded_and_equal_the_unbounded_packing_and_full_prompts():
    """Unary/pairwise suffixes of 120 labels split over several bounded trees per prompt give the same
    probabilities as one big tree and as full prompts; no forward call exceeds the bound."""
    tok, model = tiny_tokenizer(), long_model()
    prefixes = [build_prompt(SPEC120, LABELS, [], q) + "\n" for q in ("my friend left", "so happy then sad")]
    pairs = pairwise_pairs(LABELS, 2, random.Random(0))[:150]
    suffixes = [[(unary_question(l),) for l in LABELS], [pairwise_question_parts(a, b) for a, b in pairs]]
    answers = (" joy", " fear")
    with ForwardShapes(model) as shapes:
        bounded = choice_probabilities(model, tok, prefixes, suffixes, answers, max_tree_tokens=256)
    trees = shapes.calls[1:]  # after the one prefix pass: packed trees, at most 256 nodes each
    assert shapes.calls[0][2] == 0 and all(new <= 256 and rows * new <= 4096 for rows, new, _ in trees)
    assert sum(rows for rows, _, _ in trees) >= 2 * 4  # each prompt's suffixes needed several trees
    with ForwardShapes(model) as shapes:
        big = choice_probabilities(model, tok, prefixes, suffixes, answers, max_tree_tokens=10 ** 6)
    assert max(new for _, new, _ in shapes.calls[1:]) > 1000  # one tree per prompt: grows with L
    assert [len(b) for b in bounded] == [L, len(pairs)]
    for got, ref in zip(bounded, big):
        assert got == pytest.approx(ref, abs=1e-4)
    for i, j in ((0, 0), (0, L - 1), (1, 7), (1, len(pairs) - 1)):
        ids = tok(prefixes[i] + "".join(suffixes[i][j]))["input_ids"]
        ans = [tok(prefixes[i] + "".join(suffixes[i][j]) + a, add_special_tokens=True)["input_ids"][len(ids):]
               for a in answers]
        if all(len(a) == 1 for a in ans):
            scores = naive_last(model, ids)[0][[a[0] for a in ans]]
        else:
            scores = torch.tensor([naive_logprob(model, ids, a) for a in ans])
        assert bounded[i][j] == pytest.approx(torch.softmax(scores, 0)[0].item(), abs=1e-4)


# ---- the pairwise pair budget -------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 4, 11])
def test_pair_budget_covers_every_label_and_is_seeded(k):
    pairs = pairwise_pairs(LABELS, k, random.Random(5))
    unordered = {frozenset(p) for p in pairs}
    assert len(pairs) == 2 * len(unordered) and all((b, a) in pairs for a, b in pairs)
    assert all(frozenset((l, NONE_LABEL)) in unordered for l in LABELS)  # every label meets none
    degree = collections.Counter(x for u in unordered for x in u)
    assert min(degree[l] for l in LABELS) >= k and max(degree[l] for l in LABELS) <= k + 2
    assert len(unordered) <= L * (k + 1) / 2 + L  # linear in L, not L (L + 1) / 2
    assert pairs == pairwise_pairs(LABELS, k, random.Random(5))
    if k > 1:
        assert pairs != pairwise_pairs(LABELS, k, random.Random(6))
    firsts = [a for a, _ in pairs]  # grouped by first item (shared prompt parts)
    assert firsts == sorted(firsts, key=(LABELS + [NONE_LABEL]).index)


def test_small_label_sets_keep_all_pairs_in_the_original_order():
    labels = ["joy", "fear", "anger"]
    options = labels + [NONE_LABEL]
    everything = [(a, b) for a in options for b in options if a != b]
    assert pairwise_pairs(labels, 11, random.Random(0)) == everything
    assert pairwise_pairs(labels, 3, random.Random(0)) == everything
    assert pairwise_pairs(LABELS, "all", random.Random(0)) == [
        (a, b) for a in LABELS + [NONE_LABEL] for b in LABELS + [NONE_LABEL] if a != b]
    assert len(pairwise_pairs(labels, 2, random.Random(0))) < len(everything)


def test_bradley_terry_recovers_strengths_from_budgeted_pairs():
    rng = np.random.default_rng(0)
    strength = rng.normal(0.0, 2.0, L + 1)
    index = {l: i for i, l in enumerate(LABELS + [NONE_LABEL])}
    pairs = pairwise_pairs(LABELS, 4, random.Random(0))
    p_a = [float(1 / (1 + np.exp(strength[index[b]] - strength[index[a]]))) for a, b in pairs]
    record = parse_pairwise({"id": "x", "pairs": [{"a": a, "b": b, "p_a": p} for (a, b), p in zip(pairs, p_a)]},
                            LABELS)
    q = pairwise_bt([record], LABELS, seed=0)["q"].to_numpy()
    truth = strength[:-1] - strength[-1]
    rank = lambda x: np.argsort(np.argsort(x))  # noqa: E731
    # the order of the labels is recovered from ~3% of the pairs; the values are shrunk towards 0.5 by
    # the fit's L2 term (0.01 * ||s||^2 against the summed pair losses, as the study: docs/methods.md)
    assert np.corrcoef(rank(q), rank(truth))[0, 1] > 0.9
    assert np.isfinite(q).all() and q.std() > 0.01


# ---- labels absent from training: every estimator scores them -----------------------------------------
@pytest.fixture(scope="module")
def stage_files(tmp_path_factory) -> dict:
    """The data stage on the 120-label synthetic set (10 unseen labels), a saved 2,048-position tiny
    model, and the generation files of baseline (main, dev), unary and pairwise (main)."""
    root = tmp_path_factory.mktemp("many")
    files = {k: str(root / f"{k}.{'jsonl' if k in ('train', 'dev', 'test') else 'json'}")
             for k in ("train", "dev", "test", "labels", "subsets")}
    prepare_data("syn120", SYN_CFG, files)
    model_dir = root / "model"
    long_model().save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    gen_cfg = {"max_new_tokens": 6, "batch_size": 4, "marginal": True, "marginal_top_p": 0.99,
               "marginal_min_prob": 0.01, "marginal_max_depth": 2, "hidden_layers": [2],
               "pairwise_opponents": 2}
    prompt_cfg = {**SPEC120.__dict__}
    out = {}
    for prompting, subset in (("baseline", "main"), ("baseline", "dev"), ("unary", "main"), ("pairwise", "main")):
        path = root / f"{prompting}_{subset}.jsonl"
        hidden = root / f"{prompting}_{subset}.hidden.safetensors" if prompting == "baseline" else None
        generate_file(model_dir, files, prompting, subset, 0, gen_cfg, prompt_cfg,
                      {"dtype": "float32", "load_in_4bit": False}, path, hidden, device="cpu")
        out[(prompting, subset)] = str(path)
    return {"data": files, "gen": out, "model": str(model_dir)}


def test_data_stage_writes_the_unseen_labels_into_labels_json_but_not_into_train(stage_files):
    files = stage_files["data"]
    info = json.loads(open(files["labels"]).read())
    assert info["labels"] == LABELS and any("never occur in the train split" in n for n in info["notes"])
    for rec in read_jsonl(files["train"]):
        assert not set(rec["labels"]) & set(UNSEEN) and all(rec["p_ref"][u] == 0.0 for u in UNSEEN)


def test_every_zero_shot_estimator_scores_unseen_labels(stage_files):
    gens, data = stage_files["gen"], stage_files["data"]
    baseline = read_jsonl(gens[("baseline", "main")])
    assert any(rec["steps"] for rec in baseline), "the test needs label steps to score"
    pairs = read_jsonl(gens[("pairwise", "main")])[0]["pairs"]
    assert len(pairs) == len(pairwise_pairs(LABELS, 2, random.Random("pairwise_pairs:0")))
    for name in ESTIMATOR_NAMES:  # every estimator of labeldist.estimators (the zero-shot ones)
        prompting = "unary" if name == "unary" else "pairwise" if name.startswith("pairwise") else "baseline"
        frame = estimate(name, gens[(prompting, "main")], data["labels"], dev_generations=gens[("baseline", "dev")],
                         dev_data=data["dev"])
        unseen = frame[frame["label"].isin(UNSEEN)]
        assert len(unseen) == N_UNSEEN * len(baseline), name
        assert np.isfinite(unseen["q"]).all() and unseen["q"].between(0, 1).all(), name
    # what they are computed from: every label's scores at every step, unary and pairwise probabilities
    u_index = [LABELS.index(u) for u in UNSEEN]
    for rec in baseline + read_jsonl(gens[("baseline", "dev")]):
        for step in rec["steps"]:
            for key in ("first_token_logits", "whole_label_logprobs"):
                assert np.isfinite(np.asarray(step[key])[u_index]).all()
        assert np.isfinite(np.asarray(rec["marginal"])[u_index]).all()
    for rec in read_jsonl(gens[("unary", "main")]):
        assert all(0.0 <= rec["p_reasonable"][u] <= 1.0 for u in UNSEEN)
    compared = collections.Counter(x for p in pairs for x in (p["a"], p["b"]))
    assert all(compared[u] >= 2 * 2 for u in UNSEEN)  # >= 2 opponents, both orders


def test_probes_give_unseen_labels_their_training_prevalence_zero():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 8))
    y = multi_hot([[LABELS[i % 5]] for i in range(40)], LABELS[:5] + UNSEEN[:2])
    probes = fit_probes(x, y, max_svd_dim=4)
    q = predict_probes(probes, rng.normal(size=(6, 8)))
    assert np.isfinite(q).all() and (q[:, 5:] == 0.0).all() and (q[:, :5] > 0).all()


def test_demux_scores_unseen_labels_through_their_label_tokens_at_120_labels():
    data = load_labelled_data("syn", SYN_CFG)
    train, dev = data.splits["train"], data.splits["dev"]
    settings = DemuxSettings.from_config({**default_block("demux"), "hidden_size": 32, "num_layers": 1,
                                          "num_heads": 2, "max_epochs": 1, "patience": 1, "batch_size": 32})
    result = train_demux([e.text for e in train], multi_hot([e.labels for e in train], LABELS),
                         [e.text for e in dev], multi_hot([e.labels for e in dev], LABELS), LABELS, settings, seed=0)
    # 120 label names do not fit the default 256 tokens: the inputs and the encoder grow to hold them
    assert input_length(result.tokenizer, LABELS, settings.max_length) > settings.max_length
    q = predict_proba(result.model, result.tokenizer, LABELS, [e.text for e in dev], settings)
    unseen = q[:, -N_UNSEEN:]
    assert q.shape == (len(dev), L) and np.isfinite(q).all()
    assert len(np.unique(np.round(unseen, 8))) > N_UNSEEN  # per label and example, not one constant


def test_seq_cls_head_scores_unseen_labels_with_its_own_head_rows(stage_files):
    from labeldist.seq_cls import SeqClsSettings, predict_estimates, train_seq_cls_head

    train = read_jsonl(stage_files["data"]["train"])
    test = read_jsonl(stage_files["data"]["test"])[:6]
    settings = SeqClsSettings.from_config({"lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "lr": 5e-3,
                                           "max_steps": 3, "batch_size": 8, "seed": 0})
    trainer, tok, _ = train_seq_cls_head(stage_files["model"], train, LABELS, settings, 0, "cpu")
    frame = predict_estimates(trainer, tok, test, LABELS)
    unseen = frame[frame["label"].isin(UNSEEN)]["q"]
    assert len(unseen) == N_UNSEEN * len(test) and np.isfinite(unseen).all() and unseen.between(0, 1).all()
    assert unseen.nunique() > 1  # one head row per label, applied to each text
