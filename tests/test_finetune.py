"""Finetuning regimes: SFT and GRPO on a tiny Llama, the reward function, atomic output folders."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

LABELS = ["joy", "fear", "anger", "sadness"]
CUES = {
    "joy": ["happy", "glad", "smile"],
    "fear": ["scared", "afraid", "dark"],
    "anger": ["angry", "mad", "shout"],
    "sadness": ["sad", "cry", "lonely"],
}
FILLER = ["the", "a", "day", "we", "went", "home", "it", "was", "very", "so", "and", "then", "today"]


def synthetic_records(n: int, seed: int, prefix: str) -> list[dict]:
    """Texts whose cue words reveal their gold labels (0-2 labels each), in label order."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        k = rng.choice([0, 1, 1, 1, 2, 2])
        gold = [l for l in LABELS if l in rng.sample(LABELS, k)]
        words = rng.sample(FILLER, 3) + [rng.choice(CUES[l]) for l in gold]
        rng.shuffle(words)
        out.append({"id": f"{prefix}-{i:04d}", "text": " ".join(words), "labels": gold})
    return out


TINY = {"hidden_size": 64, "intermediate_size": 128, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2,
        "max_position_embeddings": 512}


def build_weak_base(folder: Path, records: list[dict], prompt_texts: list[str], steps: int = 30,
                    seed: int = 0) -> Path:
    """A ~0.1M-parameter Llama (labeldist.models' tokenizer and architecture) pretrained briefly on the
    prompts and texts only, never on a label line: it knows the words but not the task (a weak base)."""
    from labeldist.models import build_tiny_llama, pretrain, train_tokenizer

    docs = prompt_texts + [r["text"] for r in records]
    tokenizer = train_tokenizer(docs + [" ".join(LABELS) + " none"], vocab_size=400)
    model = build_tiny_llama(tokenizer, TINY, seed)
    pretrain(model, tokenizer, docs, steps=steps, batch_size=16, lr=3e-3, seed=seed, log_every=1000)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


SPEC_CFG = {"instruction": "Classify into none, one or more of: {labels}.", "k": 2, "label_format": "comma",
            "demo_sampling": "multilabel", "multilabel_ratio": 0.5}


def write_stage_data(folder: Path, train: list[dict], dev: list[dict], test: list[dict]) -> dict[str, Path]:
    """The data stage's files (docs/formats.md) for synthetic records; returns the paths by key."""
    from labeldist.io import write_json, write_jsonl

    paths = {s: folder / f"{s}.jsonl" for s in ("train", "dev", "test")}
    for split, recs in (("train", train), ("dev", dev), ("test", test)):
        write_jsonl(paths[split], recs)
    paths["labels"] = folder / "labels.json"
    write_json(paths["labels"], {"dataset": "toy", "labels": LABELS, "none_label": "none"})
    paths["subsets"] = folder / "subsets.json"
    write_json(paths["subsets"], {"main": [r["id"] for r in test[:20]], "dev": [r["id"] for r in dev[:10]],
                                  "multi": [], "train": [r["id"] for r in train[:50]]})
    return paths


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: these models are tiny, and a shared 2-core machine makes 2 threads slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Train/test records, prompt records for both, and a weak base model folder."""
    import torch

    torch.set_num_threads(1)
    from labeldist.finetune import prompt_records
    from labeldist.prompts import PromptSpec

    root = tmp_path_factory.mktemp("finetune")
    spec = PromptSpec.from_config(SPEC_CFG)
    train = synthetic_records(300, 0, "tr")
    test = synthetic_records(40, 1, "te")
    train_ex = prompt_records(train, train, spec, LABELS, seed=0)
    test_ex = prompt_records(test, train, spec, LABELS, seed=1)
    base = build_weak_base(root / "base", train, [e["prompt"] for e in train_ex], steps=150)
    return {"root": root, "spec": spec, "train": train, "test": test, "train_ex": train_ex,
            "test_ex": test_ex, "base": base}


def greedy_f1(folder: Path, examples: list[dict]) -> float:
    """Mean label-set F1 of greedy completions (10 new tokens) of the model in `folder`."""
    import torch

    from labeldist.finetune import mean_f1
    from labeldist.models import load_causal_lm

    model, tok = load_causal_lm(folder, device="cpu")
    enc = tok([e["prompt"] for e in examples], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=10, do_sample=False)
    texts = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return mean_f1(texts, [e["gold"] for e in examples], LABELS, "comma")


@pytest.fixture(scope="module")
def sft_folder(toy):
    """SFT of the weak base (60 steps; 4-bit asked for, which on CPU falls back to full precision)."""
    from labeldist.finetune import SFTSettings, train_sft

    out = toy["root"] / "sft"
    settings = SFTSettings(lora_r=16, lora_alpha=32, lora_dropout=0.0, lr=1e-2, max_steps=60, batch_size=8,
                           load_in_4bit=True, seed=0)
    start = time.perf_counter()
    frame = train_sft(toy["base"], out, toy["train_ex"], settings, device="cpu")
    print(f"\nSFT: 60 steps in {time.perf_counter() - start:.1f} s")
    return out, frame


# ---- prompts and records ------------------------------------------------------------------------
def test_prompt_records_use_the_generation_prompt_format():
    from labeldist.finetune import completion_for, prompt_records
    from labeldist.prompts import PromptSpec, build_prompt, parse_labels

    spec = PromptSpec.from_config(SPEC_CFG)
    recs = synthetic_records(30, 0, "tr")
    out = prompt_records(recs, recs, spec, LABELS, seed=3)
    assert [o["id"] for o in out] == [r["id"] for r in recs]
    by_text = {r["text"]: r for r in recs}
    for rec, ex in zip(recs, out):
        assert ex["gold"] == rec["labels"]
        # the prompt is build_prompt(...) for the demos it shows, ending at the query's output prefix
        blocks = ex["prompt"].split("\n\n")
        demo_texts = [b.split("\n")[0][len(spec.input_prefix):] for b in blocks[1:-1]]
        assert len(demo_texts) == spec.k and rec["text"] not in demo_texts
        demos = [(t, by_text[t]["labels"]) for t in demo_texts]
        assert ex["prompt"] == build_prompt(spec, LABELS, demos, rec["text"])
        # prompt + completion reads exactly like a demo block, and parses back to the gold labels
        assert (ex["prompt"] + ex["completion"]).endswith(f"Labels: {', '.join(rec['labels']) or 'none'}\n")
        parsed = parse_labels(ex["completion"], "comma", LABELS)
        assert parsed.labels == rec["labels"] and parsed.said_none == (not rec["labels"])
    again = prompt_records(recs, recs, spec, LABELS, seed=3)
    other = prompt_records(recs, recs, spec, LABELS, seed=4)
    assert again == out and other != out


def test_chat_prompts_end_at_the_assistant_turn():
    from labeldist.finetune import prompt_records
    from labeldist.models import train_tokenizer
    from labeldist.prompts import PromptSpec, chat_messages

    spec = PromptSpec.from_config({**SPEC_CFG, "use_chat_template": True, "label_format": "json"})
    recs = synthetic_records(10, 0, "tr")
    tok = train_tokenizer([r["text"] for r in recs], vocab_size=300)
    ex = prompt_records(recs[:1], recs, spec, LABELS, seed=0, tokenizer=tok)[0]
    assert ex["prompt"].endswith("<|assistant|>\n") and ex["prompt"].count(recs[0]["text"]) == 1
    assert ex["completion"] == '{"label": ' + (str(recs[0]["labels"]).replace("'", '"') if recs[0]["labels"]
                                                else '["none"]') + "}"
    # the completion is what the template renders for an assistant turn (before its end-of-turn token)
    turn = tok.apply_chat_template([{"role": "assistant", "content": ex["completion"]}], tokenize=False)
    assert ex["completion"] + tok.eos_token in turn
    assert len(chat_messages(spec, LABELS, [], "x")) == 2


def test_demo_pool_leaves_out_the_train_subset():
    from labeldist.finetune import demo_pool

    recs = synthetic_records(10, 0, "tr")
    pool = demo_pool(recs, {"train": [recs[0]["id"], recs[1]["id"]]})
    assert [r["id"] for r in pool] == [r["id"] for r in recs[2:]]
    assert demo_pool(recs[:1], {"train": [recs[0]["id"]]}) == recs[:1]


def test_read_split_names_file_line_and_field(tmp_path):
    from labeldist.errors import DataError
    from labeldist.finetune import read_split

    path = tmp_path / "train.jsonl"
    path.write_text('{"id": "a", "text": "x", "labels": ["joy"]}\n{"id": "b", "text": "y", "labels": ["zzz"]}\n')
    with pytest.raises(DataError, match=r"train.jsonl, line 2, field 'labels'.*zzz"):
        read_split(path, LABELS)
    path.write_text('{"id": "a", "labels": []}\n')
    with pytest.raises(DataError, match=r"line 1, field 'text'"):
        read_split(path, LABELS)


# ---- reward -------------------------------------------------------------------------------------
def test_reward_on_hand_cases():
    from labeldist.finetune import label_reward, label_set_f1, make_reward_func

    fmt = 0.5
    assert label_reward(" joy, fear\n", ["joy", "fear"], LABELS, "comma", fmt) == pytest.approx(1.5)
    assert label_reward(" fear, joy", ["joy", "fear"], LABELS, "comma", fmt) == pytest.approx(1.5)
    assert label_reward(" none\n", [], LABELS, "comma", fmt) == pytest.approx(1.5)
    # F1 by hand: predicted {joy, fear}, gold {joy}: P = 1/2, R = 1, F1 = 2/3
    assert label_reward(" joy, fear", ["joy"], LABELS, "comma", fmt) == pytest.approx(2 / 3 + 0.5)
    # predicted {joy}, gold {joy, anger, sadness}: P = 1, R = 1/3, F1 = 1/2
    assert label_reward(" joy", ["joy", "anger", "sadness"], LABELS, "comma", fmt) == pytest.approx(1.0)
    # saying none when there are labels, or labels when there are none: F1 0, format fine
    assert label_reward(" none", ["joy"], LABELS, "comma", fmt) == pytest.approx(0.5)
    assert label_reward(" anger", [], LABELS, "comma", fmt) == pytest.approx(0.5)
    # unparsable: nothing from the label set, an unknown string, or no output at all: the penalty
    assert label_reward(" banana split", ["joy"], LABELS, "comma", fmt) == pytest.approx(-0.5)
    assert label_reward("", [], LABELS, "comma", fmt) == pytest.approx(-0.5)
    assert label_reward(" joy, banana", ["joy"], LABELS, "comma", fmt) == pytest.approx(1.0 - 0.5)
    # json format and the format weight
    assert label_reward('{"label": ["anger"]}', ["anger"], LABELS, "json", 0.2) == pytest.approx(1.2)
    assert label_set_f1(["joy", "fear", "anger"], ["fear", "anger", "sadness"], LABELS) == pytest.approx(2 / 3)
    # the TRL signature: completions plus the dataset's extra column `gold` and other keyword arguments
    reward = make_reward_func(LABELS, "comma", fmt)
    got = reward(completions=[" joy", " none", "??"], gold=[["joy"], ["joy"], []], prompts=["p"] * 3,
                 completion_ids=[[1]] * 3, trainer_state=None)
    assert got == pytest.approx([1.5, 0.5, -0.5])
    assert reward.__name__ == "label_f1_reward"


def test_rl_batch_must_hold_whole_generation_groups():
    from labeldist.errors import ConfigError
    from labeldist.finetune import RLSettings

    assert RLSettings.from_config({"batch_size": 8, "num_generations": 4, "unknown": 1}).batch_size == 8
    with pytest.raises(ConfigError, match=r"finetune.rl.batch_size \(6\) must be a multiple of .*num_generations \(4"):
        RLSettings.from_config({"batch_size": 6, "num_generations": 4})


def test_training_log_frame_keeps_steps_and_orders_columns():
    from labeldist.finetune import training_log_frame

    history = [
        {"loss": 2.0, "learning_rate": 1e-3, "step": 1, "epoch": 0.1, "zeta": 3, "note": "x"},
        {"reward": 0.4, "loss": 1.5, "kl": 0.01, "learning_rate": 5e-4, "step": 2, "epoch": 0.2},
        {"train_runtime": 3.0, "train_loss": 1.7, "step": 2, "epoch": 0.2},
    ]
    frame = training_log_frame(history)
    assert list(frame.columns) == ["step", "epoch", "loss", "reward", "kl", "learning_rate", "zeta"]
    assert frame["step"].tolist() == [1, 2] and frame["loss"].tolist() == [2.0, 1.5]


# ---- training -----------------------------------------------------------------------------------
def test_sft_beats_the_weak_base_and_saves_a_standalone_folder(toy, sft_folder):
    import pandas as pd
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, frame = sft_folder
    assert not (out / "adapter_config.json").exists(), "the LoRA adapter must be merged"
    AutoModelForCausalLM.from_pretrained(out)
    AutoTokenizer.from_pretrained(out)
    log = pd.read_csv(out / "training_log.csv")
    assert {"step", "loss", "learning_rate"} <= set(log.columns)
    assert log["step"].tolist() == list(range(1, 61))
    assert log["loss"].iloc[-10:].mean() < log["loss"].iloc[:10].mean()
    base_f1 = greedy_f1(toy["base"], toy["test_ex"])
    sft_f1 = greedy_f1(out, toy["test_ex"])
    print(f"\nheld-out mean F1: base {base_f1:.3f}, sft {sft_f1:.3f}; "
          f"SFT loss {log['loss'].iloc[0]:.3f} -> {log['loss'].iloc[-1]:.3f}")
    assert sft_f1 > base_f1
    assert sft_f1 > 0.3


def test_rl_raises_the_reward(toy, sft_folder):
    import pandas as pd
    from transformers import AutoModelForCausalLM

    from labeldist.finetune import LoraSettings, RLSettings, train_rl

    out = toy["root"] / "rl"
    settings = RLSettings(start_from="sft", max_steps=28, num_generations=8, batch_size=16, beta=0.0, lr=2e-3,
                          max_completion_length=8, format_reward=0.5, seed=0)
    start = time.perf_counter()
    frame = train_rl(sft_folder[0], out, toy["train_ex"], LABELS, "comma", settings, LoraSettings(), device="cpu")
    seconds = time.perf_counter() - start
    log = pd.read_csv(out / "training_log.csv")
    assert {"step", "reward", "loss", "learning_rate"} <= set(log.columns)
    assert len(log) == 28 and log.equals(pd.read_csv(out / "training_log.csv"))
    quarter = len(log) // 4
    first, last = log["reward"].iloc[:quarter].mean(), log["reward"].iloc[-quarter:].mean()
    print(f"\nGRPO: 28 steps in {seconds:.1f} s; mean reward first quarter {first:.3f}, last quarter {last:.3f}")
    assert last > first + 0.1
    assert frame["reward"].tolist() == pytest.approx(log["reward"].tolist())
    AutoModelForCausalLM.from_pretrained(out)
    assert not (out / "adapter_config.json").exists()


def _raise_at(step: int):
    from transformers import TrainerCallback

    class Boom(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= step:
                raise KeyboardInterrupt("simulated interruption")

    return Boom()


def test_interrupted_training_leaves_no_output_folder(toy):
    from labeldist.finetune import LoraSettings, RLSettings, SFTSettings, train_rl, train_sft

    root = toy["root"] / "interrupted"
    root.mkdir()
    with pytest.raises(KeyboardInterrupt):
        train_sft(toy["base"], root / "sft", toy["train_ex"][:32], SFTSettings(max_steps=20, batch_size=4),
                  device="cpu", callbacks=[_raise_at(2)])
    rl = RLSettings(max_steps=20, num_generations=2, batch_size=4, max_completion_length=4)
    with pytest.raises(KeyboardInterrupt):
        train_rl(toy["base"], root / "rl", toy["train_ex"][:8], LABELS, "comma", rl, LoraSettings(),
                 device="cpu", callbacks=[_raise_at(1)])
    assert list(root.iterdir()) == [], "no output folder and no temporary leftovers"


def test_sft_and_rl_from_stage_files(toy, tmp_path):
    """The rules' entry points on data-stage files; the folders load with labeldist.models.load_causal_lm."""
    import pandas as pd

    from labeldist.finetune import rl_from_files, sft_from_files
    from labeldist.models import load_causal_lm

    files = write_stage_data(tmp_path / "data", toy["train"][:60], toy["test"][:10], toy["test"][10:])
    common = {"train_path": files["train"], "labels_path": files["labels"], "subsets_path": files["subsets"],
              "prompt_cfg": SPEC_CFG, "device": "cpu", "threads": 1}
    sft_cfg = {"lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "lr": 1e-3, "max_steps": 3, "batch_size": 4,
               "load_in_4bit": False, "seed": 0}
    sft_from_files(toy["base"], out_dir=tmp_path / "sft", sft_cfg=sft_cfg, **common)
    rl_cfg = {"start_from": "sft", "max_steps": 2, "num_generations": 2, "batch_size": 4, "beta": 0.1,
              "lr": 1e-4, "max_completion_length": 4, "format_reward": 0.5, "seed": 0}
    rl_from_files(tmp_path / "sft", out_dir=tmp_path / "rl", rl_cfg=rl_cfg, sft_cfg=sft_cfg, **common)
    for regime in ("sft", "rl"):
        model, tok = load_causal_lm(tmp_path / regime, device="cpu")
        assert model.config.vocab_size == len(tok)
    rl_log = pd.read_csv(tmp_path / "rl" / "training_log.csv")
    assert "kl" in rl_log.columns  # beta > 0 logs the KL term
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "rl", "sft"]
