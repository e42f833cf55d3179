"""KV-cache-shared scoring (labeldist.scoring) against plain full forward passes, one sequence at a time.

The helpers at the top (tiny tokenizer/model, naive scoring) are reused by test_extraction.py and
test_generation.py.
"""

from __future__ import annotations

import functools
import itertools
import random

import pytest
import torch

from labeldist.models import build_tiny_llama, train_tokenizer
from labeldist.prompts import PromptSpec, build_prompt
from labeldist.scoring import (
    Continuation,
    choice_probabilities,
    encode_prefixes,
    extend_prefix,
    TokenTree,
    run_continuations,
    score_trees,
    tokens_in_context,
)

LABELS = ["joy", "optimism", "admiration", "surprise", "fear", "sadness", "anger"]
SPEC = PromptSpec(
    instruction="Classify the following inputs into none, one, or multiple the following emotions per "
                "input: {labels}. Output exactly these emotions and no others.",
    k=3, label_format="comma",
)
WORDS = "the day was long and I felt so happy then sad about my friend who left the town".split()
TINY_CFG = dict(hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
                max_position_embeddings=512)


def corpus_texts(n: int = 150, seed: int = 0) -> list[str]:
    """Prompt-format documents over LABELS (both label formats) to train the tiny tokenizer."""
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        fmt = "comma" if i % 2 else "json"
        spec = PromptSpec(**{**SPEC.__dict__, "label_format": fmt})
        demos = [(" ".join(rng.choices(WORDS, k=6)), rng.sample(LABELS, rng.randint(0, 2))) for _ in range(2)]
        docs.append(build_prompt(spec, LABELS, demos, " ".join(rng.choices(WORDS, k=7))) + " joy, fear\n")
    return docs


@functools.lru_cache(maxsize=None)
def tiny_tokenizer():
    """A byte-level BPE tokenizer from the model builder (labeldist.models), vocabulary 420."""
    return train_tokenizer(corpus_texts(), 420)


@functools.lru_cache(maxsize=None)
def tiny_model(scale: float = 0.15):
    """The builder's tiny Llama with weights redrawn at std `scale`, so outputs depend strongly on
    context (with the default 0.02 init, a masking bug would hide under float tolerance)."""
    torch.manual_seed(0)
    model = build_tiny_llama(tiny_tokenizer(), TINY_CFG, seed=0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, scale)
    return model.eval()


def odd_labels(n: int, seed: int = 0) -> list[str]:
    """n made-up label words absent from the tokenizer corpus (so they split into several tokens)."""
    rng = random.Random(seed)
    syll = ["ka", "lo", "mi", "ru", "ten", "vu", "zo", "pex", "qa", "bri"]
    out: list[str] = []
    while len(out) < n:
        w = "".join(rng.choices(syll, k=3))
        if w not in out:
            out.append(w)
    return out


def naive_logprob(model, ids: list[int], targets: list[int]) -> float:
    """log P(targets | ids) from one unpadded full forward pass."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids + targets])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    return float(sum(logp[len(ids) - 1 + j, t] for j, t in enumerate(targets)))


def naive_last(model, ids: list[int], hidden: bool = False):
    """(logits at the last position [V], hidden states at the last position [layers+1, H])."""
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), output_hidden_states=hidden)
    hs = torch.stack([h[0, -1] for h in out.hidden_states]) if hidden else None
    return out.logits[0, -1].float(), hs


def prompts_of_different_lengths() -> list[str]:
    demos = [("I felt so happy", ["joy"]), ("the town was sad and long", ["sadness", "fear"])]
    return [
        build_prompt(SPEC, LABELS, demos, "my friend left"),
        build_prompt(SPEC, LABELS, demos[:1], "the day was long and I felt so happy then sad"),
        build_prompt(SPEC, LABELS, [], "so"),
    ]


# ---- tests -----------------------------------------------------------------------------------------------
@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: on the shared 2-core machine two OpenMP threads spin against other jobs and
    run tiny forwards ~100x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _encode(tok, prompts):
    enc = tok(prompts, return_tensors="pt", padding=True)
    assert (enc["attention_mask"] == 0).any(), "the test needs left padding"
    return enc


def test_whole_label_logprobs_equal_separate_full_forwards_with_chunking():
    tok, model = tiny_tokenizer(), tiny_model()
    labels = LABELS + odd_labels(32) + ["none"]
    prompts = prompts_of_different_lengths()
    context = prompts[0]
    label_ids = [tokens_in_context(tok, context, " " + l) for l in labels]
    assert sum(len(ids) > 1 for ids in label_ids) >= 30, "need >= 30 multi-token labels"
    enc = _encode(tok, prompts)
    prefix, last = encode_prefixes(model, enc["input_ids"], enc["attention_mask"])
    start = torch.log_softmax(last, dim=-1)
    items = [Continuation(row=b, visible=prefix.length, targets=ids, start=b)
             for b in range(len(prompts)) for ids in label_ids]
    # small chunks: several forward calls, each with its own cache copy
    res = run_continuations(model, prefix, items, start_logprobs=start, max_rows=7, max_kv_tokens=400)
    for j, item in enumerate(items):
        ids = tok(prompts[item.row])["input_ids"]
        assert res.logprob[j].item() == pytest.approx(naive_logprob(model, ids, list(item.targets)), abs=2e-4)
    # whole-label scores are proper log-probabilities and differ between labels
    assert (res.logprob < 0).all() and res.logprob.std() > 0.5


def test_masked_cache_prefix_equals_truncated_sequence():
    """A continuation that sees only the first `visible` cached positions equals a fresh forward on
    the truncated sequence (the way label steps reuse generate's cache)."""
    tok, model = tiny_tokenizer(), tiny_model()
    prompts = prompts_of_different_lengths()
    enc = _encode(tok, prompts)
    prefix, _ = encode_prefixes(model, enc["input_ids"], enc["attention_mask"])
    target = tokens_in_context(tok, "Labels:", " sadness, fear")
    items, expected = [], []
    width = enc["input_ids"].shape[1]
    for b in range(len(prompts)):
        real = enc["input_ids"][b][enc["attention_mask"][b].bool()].tolist()
        pad = width - len(real)
        for cut in (2, len(real) // 2, len(real) - 1):
            feed = (real[cut],)
            items.append(Continuation(row=b, visible=pad + cut, feed=feed, targets=target))
            expected.append(naive_logprob(model, real[:cut] + list(feed), list(target)))
    res = run_continuations(model, prefix, items, max_rows=4)
    assert res.logprob.tolist() == pytest.approx(expected, abs=2e-4)
    # sensitivity: seeing one position less changes the score
    shifted = [Continuation(row=c.row, visible=c.visible - 1, feed=c.feed, targets=c.targets) for c in items]
    res2 = run_continuations(model, prefix, shifted)
    assert (res2.logprob - res.logprob).abs().max() > 1e-3


def test_hidden_and_read_equal_direct_forward():
    tok, model = tiny_tokenizer(), tiny_model()
    prompts = prompts_of_different_lengths()
    enc = _encode(tok, prompts)
    prefix, _ = encode_prefixes(model, enc["input_ids"], enc["attention_mask"])
    width = enc["input_ids"].shape[1]
    read_ids = [5, 17, 40]
    items, seqs = [], []
    for b in range(len(prompts)):
        real = enc["input_ids"][b][enc["attention_mask"][b].bool()].tolist()
        a = len(real) - 3
        items.append(Continuation(row=b, visible=width - len(real) + a, feed=(real[a],), read=True, hidden=True))
        seqs.append(real[: a + 1])
    res = run_continuations(model, prefix, items, read_ids=read_ids, hidden_layers="all")
    for j, ids in enumerate(seqs):
        logits, hs = naive_last(model, ids, hidden=True)
        assert torch.allclose(res.read[j], logits[read_ids], atol=2e-4)
        assert res.hidden[j].shape == (TINY_CFG["num_layers"] + 1, TINY_CFG["hidden_size"])
        assert torch.allclose(res.hidden[j], hs, atol=2e-4)
    picked = run_continuations(model, prefix, items, read_ids=read_ids, hidden_layers=[0, 2])
    assert torch.allclose(picked.hidden[1], res.hidden[1][[0, 2]])


@pytest.mark.parametrize("answers", [(" joy", " fear"), (" yes", " yesterday")])
def test_choice_probabilities_equal_naive(answers):
    """Shared-prefix unary/pairwise probabilities equal one full forward of the whole prompt text;
    suffixes in two parts share their first part. One-token answers compare logits, longer ones (the
    second case) whole answer sequences."""
    tok, model = tiny_tokenizer(), tiny_model()
    prefixes = [p + "\n" for p in prompts_of_different_lengths()]
    pairs = list(itertools.permutations(["joy", "fear", "none"], 2))
    suffixes = [[(f"Which label fits the input better? a: {a}, b:", f" {b}\nAnswer:") for a, b in pairs]
                for _ in prefixes]
    suffixes[2] = [(f"Label: {a}\nIs the label reasonable:",) for a in ["joy", "fear", "anger"]]
    got = choice_probabilities(model, tok, prefixes[:2], suffixes[:2], answers, batch_size=2, max_rows=5)
    got += choice_probabilities(model, tok, prefixes[2:], suffixes[2:], answers)
    ans = [tokens_in_context(tok, prefixes[0] + "".join(suffixes[0][0]), a) for a in answers]
    whole = answers[1] == " yesterday"
    assert whole == (len(ans[0]) > 1 or len(ans[1]) > 1)
    for i, prefix in enumerate(prefixes):
        assert len(got[i]) == len(suffixes[i])
        for j, parts in enumerate(suffixes[i]):
            ids = tok(prefix + "".join(parts))["input_ids"]
            if whole:
                scores = torch.tensor([naive_logprob(model, ids, list(a)) for a in ans])
            else:
                scores = naive_last(model, ids)[0][[a[0] for a in ans]]
            expected = torch.softmax(scores, dim=-1)[0].item()
            assert 0.0 <= got[i][j] <= 1.0
            assert got[i][j] == pytest.approx(expected, abs=1e-4)


def test_extension_rows_continue_their_parent_rows():
    """Scoring on an extension of an extension equals a full forward of the concatenated tokens."""
    tok, model = tiny_tokenizer(), tiny_model()
    prompts = prompts_of_different_lengths()
    enc = _encode(tok, prompts)
    root, _ = encode_prefixes(model, enc["input_ids"], enc["attention_mask"])
    feeds1 = [(5, 6, 7), (8,), (9, 10)]
    ext1, last1 = extend_prefix(model, root, [Continuation(row=b, visible=root.length, feed=f)
                                              for b, f in enumerate(feeds1)], max_rows=2)
    ext2, last2 = extend_prefix(model, ext1, [Continuation(row=2, visible=ext1.length, feed=(11, 12)),
                                              Continuation(row=0, visible=ext1.length, feed=(13,))])
    target = (20, 21, 22)
    res = run_continuations(model, ext2, [Continuation(row=0, visible=ext2.length, targets=target, start=0),
                                          Continuation(row=1, visible=ext2.length, targets=target, start=1)],
                            start_logprobs=last2)
    real = [tok(p)["input_ids"] for p in prompts]
    expected = [naive_logprob(model, real[2] + [9, 10, 11, 12], list(target)),
                naive_logprob(model, real[0] + [5, 6, 7, 13], list(target))]
    assert res.logprob.tolist() == pytest.approx(expected, abs=2e-4)
    logits, _ = naive_last(model, real[1] + [8])
    assert torch.allclose(last1[1], torch.log_softmax(logits, -1), atol=2e-4)


def test_packed_trees_equal_full_forwards():
    """Branching continuations packed into one row per prefix (4-D ancestor mask) score like separate
    full forwards of each root-to-node path."""
    tok, model = tiny_tokenizer(), tiny_model()
    prompts = prompts_of_different_lengths()
    enc = _encode(tok, prompts)
    cache, _ = encode_prefixes(model, enc["input_ids"], enc["attention_mask"])
    trees, queries, expected = [], [], []
    for b in range(len(prompts)):
        real = tok(prompts[b])["input_ids"]
        tree = TokenTree(row=b, visible=cache.length)
        trunk = tree.add_chain([5, 6, 7])
        branch = tree.add_chain([8, 9], trunk[0])          # shares token 5 with the trunk
        other = tree.add_chain([10 + b], -1)               # a second root below the prefix
        trees.append(tree)
        queries.append([(trunk[-1], 20), (branch[-1], 21), (trunk[0], 22), (other[0], 23)])
        expected.append([naive_logprob(model, real + [5, 6, 7], [20]), naive_logprob(model, real + [5, 8, 9], [21]),
                         naive_logprob(model, real + [5], [22]), naive_logprob(model, real + [10 + b], [23])])
    for max_rows in (1, 8):
        got = score_trees(model, cache, trees, queries, max_rows=max_rows)
        for g, e in zip(got, expected):
            assert g.tolist() == pytest.approx(e, abs=2e-4)
