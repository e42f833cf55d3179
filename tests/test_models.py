"""Base models: the built-in tiny Llama (tokenizer, annotator-vote corpus, pretraining), model_ref.json
for hub/local sources, and load_causal_lm."""

from __future__ import annotations

import csv
import json
import random
import re
from pathlib import Path

import pytest
import torch

from labeldist.data.records import p_ref_from_annotations, p_ref_from_gold
from labeldist.errors import DataError, LabeldistError
from labeldist.io import read_json, write_json, write_jsonl
from labeldist.models import (
    CHAT_TEMPLATE,
    CHOICE_FRACTION,
    MODEL_REF,
    PRETRAIN_LOG,
    build_builtin_model,
    build_pretrain_corpus,
    build_tiny_llama,
    load_causal_lm,
    make_base_model,
    pretrain,
    resolve_device,
    train_tokenizer,
    write_model_ref,
)
from labeldist.prompts import NONE_LABEL, PromptSpec, build_prompt, parse_labels
from labeldist.scoring import tokens_in_context

# One thread: on a shared 2-core machine two OpenMP threads spin against other jobs and run slower.
torch.set_num_threads(1)

LABELS = ["cat", "dog", "bird"]
PROMPT = {
    "instruction": "Name the animals in each input, from: {labels}.",
    "k": 3,
    "label_format": "comma",
    "demo_sampling": "random",
    "input_prefix": "Input: ",
    "output_prefix": "Labels: ",
}
TINY = {
    "pretrain_dataset": "toy",
    "vocab_size": 400,
    "hidden_size": 32,
    "num_layers": 2,
    "num_heads": 2,
    "num_kv_heads": 1,
    "intermediate_size": 64,
    "max_position_embeddings": 256,
    "steps": 150,
    "batch_size": 16,
    "lr": 2.0e-2,
    "seed": 0,
}
PLACES = ["garden", "park", "house", "field", "street", "yard"]


def toy_records(n: int = 60, seed: int = 0) -> list[dict]:
    """Records whose text names exactly the gold animals; annotators agree except one who adds or drops
    a label, so a sampled annotator vote often differs from the gold set."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        gold = [lab for lab in LABELS if rng.random() < 0.4]
        place = rng.choice(PLACES)
        text = f"in the {place} {i} I saw " + (" and ".join(f"a {lab}" for lab in gold) if gold else "nothing")
        odd = [lab for lab in LABELS if (lab in gold) != (lab == LABELS[i % 3])]
        annotations = [gold, gold, odd] if i % 5 else None
        p_ref = p_ref_from_annotations(annotations, LABELS) if annotations else p_ref_from_gold(gold, LABELS)
        records.append({"id": f"toy-{i:03d}", "text": text, "labels": gold, "annotations": annotations,
                        "p_ref": p_ref})
    return records


def write_toy_data(folder: Path, records: list[dict]) -> tuple[Path, Path]:
    train, labels = folder / "train.jsonl", folder / "labels.json"
    write_jsonl(train, records)
    write_json(labels, {"dataset": "toy", "labels": LABELS, "none_label": "none", "task": "multilabel",
                        "p_ref_source": "annotators"})
    return train, labels


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory) -> tuple[Path, Path, list[dict]]:
    folder = tmp_path_factory.mktemp("toy_data")
    records = toy_records()
    train, labels = write_toy_data(folder, records)
    return train, labels, records


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory, toy_data) -> Path:
    """The builtin base folder made exactly as the rule makes it."""
    train, labels, _ = toy_data
    folder = tmp_path_factory.mktemp("models") / "tiny" / "base"
    make_base_model(folder, {"source": "builtin", "builtin": TINY}, train, labels, PROMPT, threads=1)
    return folder


def test_base_folder_is_a_save_pretrained_folder_with_a_log(tiny_base):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert (tiny_base / "config.json").exists() and (tiny_base / PRETRAIN_LOG).exists()
    assert not any(p.name.endswith(".tmp") for p in tiny_base.parent.iterdir())
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    tok = AutoTokenizer.from_pretrained(tiny_base)
    assert model.config.model_type == "llama" and model.config.hidden_size == 32
    assert model.config.vocab_size == len(tok)
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    with open(tiny_base / PRETRAIN_LOG) as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == list(range(1, TINY["steps"] + 1))
    losses = [float(r["loss"]) for r in rows]
    # it learned something: the last steps' loss is far below the first steps'
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:5]) / 5
    assert float(rows[-1]["learning_rate"]) < float(rows[10]["learning_rate"])


def test_generation_follows_the_prompt_format(tiny_base, toy_data):
    _, _, records = toy_data
    model, tok = load_causal_lm(tiny_base, device="cpu")
    assert tok.padding_side == "left" and not model.training
    spec = PromptSpec.from_config(PROMPT)
    prompts = []
    for i in range(8):
        gold = [lab for j, lab in enumerate(LABELS) if (i >> j) & 1]
        query = f"in the {PLACES[i % len(PLACES)]} {100 + i} I saw " + (
            " and ".join(f"a {lab}" for lab in gold) if gold else "nothing")
        demos = [(r["text"], r["labels"]) for r in records[i: i + 2]]
        prompts.append(build_prompt(spec, LABELS, demos, query))
    enc = tok(prompts, return_tensors="pt", padding=True)
    out = model.generate(**enc, max_new_tokens=10, do_sample=False)
    texts = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    for text in texts:
        parsed = parse_labels(text, "comma", LABELS)
        assert text.startswith(" "), text
        assert not parsed.unknown, text
        assert parsed.labels or parsed.said_none, text


def test_tokenizer_round_trip_and_chat_template(tiny_base):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_base)
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token) == ("<s>", "</s>", "<pad>", "<unk>")
    assert len({tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id}) == 4
    text = "Input: a cat, a dog!\nLabels: cat, dog\n"
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok.chat_template == CHAT_TEMPLATE
    messages = [{"role": "system", "content": "Name the animals."},
                {"role": "user", "content": "Input: a cat"},
                {"role": "assistant", "content": "cat"}]
    rendered = tok.apply_chat_template(messages, tokenize=False)
    assert rendered.startswith("<s>") and rendered.endswith("cat</s>\n")
    prompt = tok.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|assistant|>\n")
    # the {% generation %} block marks exactly the assistant's content and its end-of-turn token
    enc = tok.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    marked = [i for i, m in zip(enc["input_ids"], enc["assistant_masks"]) if m]
    assert tok.decode(marked) == "cat</s>"


def test_corpus_labels_are_single_annotator_votes(toy_data):
    _, _, records = toy_data
    spec = PromptSpec.from_config(PROMPT)
    docs = build_pretrain_corpus(records, LABELS, spec, n_docs=300, seed=3)
    by_text = {r["text"]: r for r in records}
    pairs = [pair for doc in docs for pair in re.findall(r"Input: (.*)\nLabels: (.*)\n", doc)]
    assert len(pairs) > 600
    n_not_gold = 0
    for text, line in pairs:
        rec = by_text[text]
        shown = parse_labels(line, "comma", LABELS).labels
        allowed = [sorted(a) for a in rec["annotations"]] if rec["annotations"] else [sorted(rec["labels"])]
        assert sorted(shown) in allowed, (text, line)
        n_not_gold += sorted(shown) != sorted(rec["labels"])
    # the odd annotator is drawn about a third of the time for annotated records
    assert 0.15 < n_not_gold / len(pairs) < 0.45
    # documents have varying demo counts (0..k) and some are a single example
    n_blocks = [doc.count("Input: ") for doc in docs]
    assert set(n_blocks) == {1, 2, 3, 4}
    assert sum(not doc.startswith("Name the animals") for doc in docs) > 20


UNARY_BLOCK = re.compile(r"Input: (.*)\nLabel: (.*)\nIs the label reasonable: (\w+)\n")
PAIR_BLOCK = re.compile(r"Input: (.*)\na: (.*)\nb: (.*)\nAnswer: (\w+)\n")


def test_corpus_unary_and_pairwise_answers_are_annotator_votes(toy_data):
    _, _, records = toy_data
    spec = PromptSpec.from_config(PROMPT)
    docs = build_pretrain_corpus(records, LABELS, spec, n_docs=1200, seed=5, choice_fraction=0.5)
    assert docs == build_pretrain_corpus(records, LABELS, spec, n_docs=1200, seed=5, choice_fraction=0.5)
    unary = [d for d in docs if "Is the label reasonable:" in d]
    pairwise = [d for d in docs if "\nAnswer: " in d]
    assert len(unary) == len(pairwise) == 300
    # they are mixed in among the label-list documents, not appended at the end
    assert any("Is the label reasonable:" in d for d in docs[:100])
    by_text = {r["text"]: r for r in records}

    def votes(text):  # the label sets one annotator could have given (`none` stands for an empty set)
        rec = by_text[text]
        return [set(v) or {NONE_LABEL} for v in (rec["annotations"] or [rec["labels"]])]

    def p_ref(text, label):
        return sum(label in v for v in votes(text)) / len(votes(text))

    unary_queries, pair_queries = [], []
    for doc in unary:
        blocks = UNARY_BLOCK.findall(doc)
        assert len(blocks) == spec.k + 1 and doc.endswith(blocks[-1][2] + "\n")
        for text, label, answer in blocks:
            assert answer in ("reasonable", "unreasonable")
            # every answer is one annotator's vote: some annotator put the label in (or left it out)
            assert any((label in v) == (answer == "reasonable") for v in votes(text)), (text, label, answer)
        text, label, answer = blocks[-1]
        unary_queries.append((p_ref(text, label), answer == "reasonable"))
    for doc in pairwise:
        blocks = PAIR_BLOCK.findall(doc)
        assert len(blocks) == spec.k + 1
        for j, (text, a, b, answer) in enumerate(blocks):
            chosen, other = (a, b) if answer == "a" else (b, a)
            assert answer in ("a", "b") and a != b
            if j < spec.k:  # demos: a label of one annotator's set against one outside it
                assert any(chosen in v and other not in v for v in votes(text)), (text, a, b, answer)
            else:  # the query: never against a vote that prefers the other label
                assert any(not (chosen not in v and other in v) for v in votes(text)), (text, a, b, answer)
        text, a, b, answer = blocks[-1]
        pair_queries.append((0.5 + 0.5 * (p_ref(text, a) - p_ref(text, b)), answer == "a"))
    # the query's answer has the annotators' frequency: P(reasonable) = p_ref(label),
    # P(a) = 1/2 + (p_ref(a) - p_ref(b)) / 2 (a coin when both or neither are voted for)
    for queries in (unary_queries, pair_queries):
        for sure in (0.0, 1.0):
            assert all(ans == bool(sure) for p, ans in queries if p == sure)
            assert sum(p == sure for p, _ in queries) > 20
        buckets: dict[float, list[bool]] = {}
        for p, ans in queries:
            if 0 < p < 1:
                buckets.setdefault(round(p, 3), []).append(ans)
        assert sum(len(b) for b in buckets.values()) > 60
        for p, answers in buckets.items():
            if len(answers) >= 10:  # within 3 standard errors of the vote share
                assert abs(sum(answers) / len(answers) - p) < 3 * (p * (1 - p) / len(answers)) ** 0.5, p
    # the asked labels are not only the ones the annotators chose
    assert 0.2 < sum(ans for _, ans in unary_queries) / len(unary_queries) < 0.8


def test_base_tokenizer_has_the_choice_answers_as_tokens(tiny_base, toy_data):
    """Unary/pairwise prompts are part of the corpus the tokenizer learns from, so their answers and
    question words are one or two tokens, as in a real LLM's vocabulary (not spelled letter by letter)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_base)
    for context, text, most in [("Is the label reasonable:", " reasonable", 2),
                                ("Is the label reasonable:", " unreasonable", 2),
                                ("b: cat\nAnswer:", " a", 1), ("b: cat\nAnswer:", " b", 1),
                                ("b: cat\n", "Answer:", 2), ("", "reasonable", 2)]:
        ids = tokens_in_context(tok, context, text)
        assert 1 <= len(ids) <= most, (text, tok.convert_ids_to_tokens(list(ids)))
    # without those documents (label lists only) the same tokenizer spells them in pieces
    _, _, records = toy_data
    assert CHOICE_FRACTION > 0
    plain = build_pretrain_corpus(records, LABELS, PromptSpec.from_config(PROMPT), 2400, seed=0)
    only_labels = train_tokenizer(plain, TINY["vocab_size"])
    assert len(tokens_in_context(only_labels, "Is the label reasonable:", " unreasonable")) > 2


def test_pretraining_is_deterministic_for_a_seed(toy_data):
    train, labels, _ = toy_data
    short = {**TINY, "steps": 6}
    a = build_builtin_model(train, labels, PROMPT, short).log_rows
    b = build_builtin_model(train, labels, PROMPT, short).log_rows
    c = build_builtin_model(train, labels, PROMPT, {**short, "seed": 1}).log_rows
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    assert [r["loss"] for r in a] != [r["loss"] for r in c]


def test_padding_is_masked_out_of_the_loss(toy_data):
    """The first step's loss on a padded batch of two documents equals the token-weighted mean of the
    documents' losses computed one at a time (no padding)."""
    _, _, records = toy_data
    tok = train_tokenizer([r["text"] for r in records], 300)
    docs = [records[0]["text"], records[1]["text"] + " and then many more words were written here"]
    model = build_tiny_llama(tok, TINY, seed=0)
    singles = [tok(d)["input_ids"] + [tok.eos_token_id] for d in docs]
    with torch.no_grad():
        total = sum(model(input_ids=torch.tensor([s]), labels=torch.tensor([s])).loss.item() * (len(s) - 1)
                    for s in singles)
    expected = total / sum(len(s) - 1 for s in singles)
    rows = pretrain(model, tok, docs, steps=1, batch_size=2, lr=1e-3, seed=0)
    assert len(singles[0]) != len(singles[1])
    assert rows[0]["loss"] == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("token_weighted", [False, True])
def test_token_weighted_loss_weighs_every_token_the_same(toy_data, token_weighted):
    """One document per batch: a step's gradient is that of the document's mean token loss, or, token
    weighted, of its summed token loss over the corpus's mean tokens per batch (a long document counts
    more). The logged loss is the document's mean token loss either way."""
    _, _, records = toy_data
    tok = train_tokenizer([r["text"] for r in records], 300)
    docs = [records[0]["text"], records[1]["text"] + " and then many more words were written here"]
    seqs = [tok(d)["input_ids"] + [tok.eos_token_id] for d in docs]
    per_batch = sum(len(s) - 1 for s in seqs) / len(seqs)
    model, ref = build_tiny_llama(tok, TINY, seed=0), build_tiny_llama(tok, TINY, seed=0)
    seen = []
    model.model.embed_tokens.weight.register_hook(lambda grad: seen.append(grad.clone()))
    rows = pretrain(model, tok, docs, steps=1, batch_size=1, lr=1e-3, seed=0, token_weighted=token_weighted)
    losses = [ref(input_ids=torch.tensor([s]), labels=torch.tensor([s])).loss for s in seqs]
    j = min(range(2), key=lambda i: abs(losses[i].item() - rows[0]["loss"]))
    assert rows[0]["loss"] == pytest.approx(losses[j].item(), rel=1e-5)
    assert abs((len(seqs[j]) - 1) / per_batch - 1.0) > 0.1  # so the two weightings differ
    scale = (len(seqs[j]) - 1) / per_batch if token_weighted else 1.0
    (losses[j] * scale).backward()
    assert len(seen) == 1
    assert torch.allclose(seen[0], ref.model.embed_tokens.weight.grad, rtol=1e-4, atol=1e-7)


def test_model_ref_for_hub_and_local(tmp_path, tiny_base, monkeypatch):
    hub = write_model_ref(tmp_path / "hub" / "base", {"source": "hub", "hub_id": "org/not-a-model",
                                                       "revision": "abc123"})
    assert read_json(tmp_path / "hub" / "base" / MODEL_REF) == {"hub_id": "org/not-a-model", "revision": "abc123"}
    assert hub["hub_id"] == "org/not-a-model"
    assert list((tmp_path / "hub" / "base").iterdir()) == [tmp_path / "hub" / "base" / MODEL_REF]

    local_base = tmp_path / "local" / "base"
    make_base_model(local_base, {"source": "local", "path": str(tiny_base.name)}, base_dir=tiny_base.parent)
    ref = read_json(local_base / MODEL_REF)
    assert ref == {"path": str(tiny_base.resolve())}
    via_ref, tok_ref = load_causal_lm(local_base, device="cpu")
    direct, _ = load_causal_lm(tiny_base, device="cpu", dtype="float32")
    ids = tok_ref("Input: a cat\nLabels:", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(via_ref(ids).logits, direct(ids).logits)

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LabeldistError, match="HF_HUB_OFFLINE"):
        load_causal_lm(tmp_path / "hub" / "base", device="cpu")
    with pytest.raises(LabeldistError, match="folder not found"):
        write_model_ref(tmp_path / "x", {"source": "local", "path": "missing"}, base_dir=tmp_path)


def test_loader_options_and_errors(tmp_path, tiny_base):
    model, tok = load_causal_lm(tiny_base, device="cpu", dtype="bfloat16")
    assert model.dtype == torch.bfloat16 and tok.pad_token == "<pad>"
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(LabeldistError, match="CUDA"):
            resolve_device("cuda")
        with pytest.raises(LabeldistError, match="load_in_4bit needs a CUDA GPU"):
            load_causal_lm(tiny_base, device="cpu", load_in_4bit=True)
    with pytest.raises(DataError, match="model folder not found"):
        load_causal_lm(tmp_path / "nothing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / MODEL_REF).write_text(json.dumps({"weights": "x"}))
    with pytest.raises(DataError, match="hub_id"):
        load_causal_lm(tmp_path / "bad")


def test_bad_training_record_names_file_line_and_field(tmp_path):
    records = toy_records(5)
    records[3]["annotations"] = [["cat"], ["zebra"]]
    train, labels = write_toy_data(tmp_path, records)
    with pytest.raises(DataError, match=r"train.jsonl, line 4, field 'annotations\[1\]'"):
        build_builtin_model(train, labels, PROMPT, TINY)
