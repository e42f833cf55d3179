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
    TokenTree,
    run_continuations,
    score_trees,
    tokens_in_context,
)

LABELS = ["joy", "optimism", "admiration", "surprise", "fear", "sadness", "anger"]
SPEC = PromptSpec.from_config(dict(
    instruction="Classify the following inputs into none, one, or multiple the following emotions per "
                "input: {labels}. Output exactly these emotions and no others.",
    k=3, label_format="comma",
))
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


# ---- the prompt string's own ids, whatever the boundary ----------------------------------------------
AWKWARD_QUERIES = ["her.\n\n", "  leading and trailing  ", "ends with punct!", "new\nline\n \n", "tab\t", "x"]


def _naive_choice(model, tok, text, answers, add_special_tokens=True):
    """P(answers[0]) from one full forward of the tokenized prompt string; also checks that the answers'
    ids (`answer_ids`) continue the string's ids exactly."""
    from labeldist.scoring import answer_ids

    ids = tok(text, add_special_tokens=add_special_tokens)["input_ids"]
    question = text[text.rfind("\n", 0, len(text) - 1) + 1:]
    ans = [list(answer_ids(tok, question, a)) for a in answers]
    for a, ids_a in zip(answers, ans):
        assert tok(text + a, add_special_tokens=add_special_tokens)["input_ids"] == ids + ids_a
    scores = torch.tensor([naive_logprob(model, ids, a) for a in ans])
    return torch.softmax(scores, dim=-1)[0].item()


def awkward_choice_prompts(instruction_pad: str = ""):
    """Unary and pairwise prompts (labeldist.prompts) whose queries end in whitespace, newlines or
    punctuation, or start with spaces: the prefix/suffix boundary falls inside a would-be token."""
    from labeldist.prompts import (PAIRWISE_ANSWERS, UNARY_ANSWERS, choice_prompt, pairwise_question_parts,
                                   unary_question)

    spec = PromptSpec(**{**SPEC.__dict__, "k": 1})
    demos = [("so sad", unary_question("sadness"), "reasonable")]
    out = []
    for i, q in enumerate(AWKWARD_QUERIES):
        if i % 2 == 0:
            questions, answers = [unary_question(l) for l in ("joy", "fear")], UNARY_ANSWERS
        else:
            questions, answers = [pairwise_question_parts(a, b) for a, b in (("joy", "fear"), ("joy", "none"))], \
                PAIRWISE_ANSWERS
        out.append(choice_prompt(spec, instruction_pad + "Say it.", demos, q, questions, answers))
    return out


def test_choice_probabilities_score_exactly_the_prompt_string_for_awkward_texts():
    """Queries ending in whitespace/newlines/punctuation: the scored ids are the tokenization of the
    whole prompt string (re-read from where prefix and prompt tokenizations part), so P equals a plain
    forward over the full string."""
    from labeldist.prompts import ChoicePrompt

    tok, model = tiny_tokenizer(), tiny_model()
    prompts = awkward_choice_prompts()
    # a prefix that stops inside a word: the suffix's first characters merge with its last token
    cut = ChoicePrompt(prompts[0].prefix + "Input: the da", [("y was long\nLabel: joy\nIs the label reasonable:",),
                                                             ("y\nLabel: fear\nIs the label reasonable:",)],
                       prompts[0].answer_texts)
    boundary_moves = 0
    for p in prompts + [cut]:
        own = tok(p.prefix)["input_ids"]
        full = tok(p.prefix + "".join(p.suffixes[0]))["input_ids"]
        boundary_moves += full[: len(own)] != own
        got = choice_probabilities(model, tok, [p.prefix], [p.suffixes], p.answer_texts)[0]
        for j, parts in enumerate(p.suffixes):
            assert got[j] == pytest.approx(_naive_choice(model, tok, p.prefix + "".join(parts), p.answer_texts),
                                           abs=1e-4)
    assert boundary_moves >= 1, "no prompt made the tokenizer merge across the prefix/suffix boundary"
    unary = prompts[::2]  # batched with left padding: the same as one prompt at a time
    batched = choice_probabilities(model, tok, [p.prefix for p in unary], [p.suffixes for p in unary],
                                   unary[0].answer_texts, batch_size=2)
    for p, got in zip(unary, batched):
        assert got == pytest.approx(choice_probabilities(model, tok, [p.prefix], [p.suffixes], p.answer_texts)[0],
                                    abs=1e-5)


# ---- sliding-window and hybrid attention ----------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def tiny_gemma(window: int = 8):
    """A tiny Gemma-3 (layers alternate sliding window `window` and full attention) on the tiny
    tokenizer, weights at std 0.15: prompts are many windows long."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    tok = tiny_tokenizer()
    cfg = Gemma3TextConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=window,
                           layer_types=["sliding_attention", "full_attention"] * 2, max_position_embeddings=512,
                           pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                           eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.15)
    return model.eval()


def test_hybrid_sliding_window_model_trees_and_choices_equal_full_forwards():
    """On a model whose sliding-window layers see 8 positions, packed trees below several prefix lengths
    and choice probabilities equal full forwards of the same sequences (prompts of 40-90 tokens)."""
    from labeldist.scoring import attention_windows

    tok, model = tiny_tokenizer(), tiny_gemma()
    assert attention_windows(model) == (8, True)
    prompts = prompts_of_different_lengths()
    enc = _encode(tok, prompts)
    cache, _ = encode_prefixes(model, enc["input_ids"], enc["attention_mask"])
    width = enc["input_ids"].shape[1]
    trees, queries, expected = [], [], []
    for b in range(len(prompts)):
        real = tok(prompts[b])["input_ids"]
        pad = width - len(real)
        tree = TokenTree(row=b, visible=cache.length)
        trunk = tree.add_chain([5, 6, 7, 8, 9, 10, 11, 12, 13, 14])  # deeper than the window
        short = tree.add_chain([15, 16], visible=pad + len(real) - 4)  # below a shorter prefix of the row
        trees.append(tree)
        queries.append([(trunk[-1], 20), (trunk[2], 21), (short[-1], 22)])
        expected.append([naive_logprob(model, real + [5, 6, 7, 8, 9, 10, 11, 12, 13, 14], [20]),
                         naive_logprob(model, real + [5, 6, 7], [21]),
                         naive_logprob(model, real[:-4] + [15, 16], [22])])
    for max_rows in (1, 8):
        for g, e in zip(score_trees(model, cache, trees, queries, max_rows=max_rows), expected):
            assert g.tolist() == pytest.approx(e, abs=2e-4)
    prompts = awkward_choice_prompts(instruction_pad="Read every input with care. " * 4)
    for kind in (prompts[::2], prompts[1::2]):  # unary, pairwise
        got = choice_probabilities(model, tok, [p.prefix for p in kind], [p.suffixes for p in kind],
                                   kind[0].answer_texts)
        for p, g in zip(kind, got):
            for j, parts in enumerate(p.suffixes):
                assert g[j] == pytest.approx(_naive_choice(model, tok, p.prefix + "".join(parts),
                                                            p.answer_texts), abs=1e-4)


@pytest.mark.parametrize("which", ["llama", "hybrid"])
def test_requests_continue_below_kept_extension_nodes(which):
    """Tokens kept from one packed call (`RequestScores.extension`) serve the next: requests attached
    below kept nodes, two calls deep, score like full forwards of the whole token sequences (the hybrid
    model's window is shorter than the chains)."""
    from labeldist.scoring import Request, score_requests

    tok = tiny_tokenizer()
    model = tiny_model() if which == "llama" else tiny_gemma()
    prompts = prompts_of_different_lengths()
    enc = _encode(tok, prompts)
    cache, last = encode_prefixes(model, enc["input_ids"], enc["attention_mask"])
    start = torch.log_softmax(last, dim=-1)
    real = [tok(p)["input_ids"] for p in prompts]
    first = score_requests(model, cache, [Request(row=b, visible=cache.length, context=(5, 6, 7),
                                                  targets=((8, 9, 10), (8, 11), (12,)), start=b)
                                          for b in range(3)], start_logprobs=start, keep_kv=True)
    for b in range(3):
        assert first.logprob[b] == pytest.approx([naive_logprob(model, real[b] + [5, 6, 7], t)
                                                  for t in ([8, 9, 10], [8, 11], [12])], abs=2e-4)
    # keep the chains 5 6 7 8 9 (row 0) and 5 6 7 8 (row 2); continue with 10 11 ... below them
    ext, where = first.extension([first.ends[0][0], first.ends[2][1]])
    second = score_requests(model, cache, [Request(row=0, visible=cache.length, context=(10, 13, 14, 15),
                                                   targets=((16, 17), (18,)), attach=where[first.ends[0][0]]),
                                           Request(row=2, visible=cache.length, context=(11,), targets=((19, 20),),
                                                   attach=where[first.ends[2][1]])],
                            extension=ext, keep_kv=True)
    base0, base2 = real[0] + [5, 6, 7, 8, 9, 10, 13, 14, 15], real[2] + [5, 6, 7, 8, 11]
    assert second.logprob[0] == pytest.approx([naive_logprob(model, base0, [16, 17]),
                                               naive_logprob(model, base0, [18])], abs=2e-4)
    assert second.logprob[1] == pytest.approx([naive_logprob(model, base2, [19, 20])], abs=2e-4)
    ext2, where2 = second.extension([second.ends[0][0]])  # row 0 only: row 2's nodes are dropped
    assert int(ext2.valid[2].sum()) == 0 and int(ext2.valid[0].sum()) == 10
    third = score_requests(model, cache, [Request(row=0, visible=cache.length, context=(17,), targets=((21,),),
                                                  attach=where2[second.ends[0][0]])], extension=ext2)
    assert third.logprob[0][0] == pytest.approx(naive_logprob(model, base0 + [16, 17], [21]), abs=2e-4)
