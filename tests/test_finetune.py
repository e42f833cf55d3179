"""Finetuning regimes: SFT and GRPO on a tiny Llama, the reward function, atomic output folders."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from labeldist.config import default_block
from labeldist.hf import LoraSettings

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
        p_ref = {l: float(l in gold) for l in LABELS} | {"none": float(not gold)}
        out.append({"id": f"{prefix}-{i:04d}", "text": " ".join(words), "labels": gold, "annotations": None,
                    "p_ref": p_ref})
    return out


def default_lora() -> LoraSettings:
    """The LoRA settings of the schema's `finetune.sft` defaults."""
    from labeldist.finetune import SFTSettings

    return SFTSettings.from_config(default_block("finetune.sft")).lora


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
                           load_in_4bit=True, seed=0, k=None)
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

    rl = default_block("finetune.rl")
    assert RLSettings.from_config({**rl, "batch_size": 8, "num_generations": 4, "unknown": 1}).batch_size == 8
    with pytest.raises(ConfigError, match=r"finetune.rl.batch_size \(6\) must be a multiple of .*num_generations \(4"):
        RLSettings.from_config({**rl, "batch_size": 6, "num_generations": 4})


def test_settings_need_every_config_key():
    """Defaults live in the config schema only: a block without a key is a ConfigError naming it."""
    from labeldist.errors import ConfigError
    from labeldist.finetune import RLSettings, SFTSettings

    sft = default_block("finetune.sft")
    assert SFTSettings.from_config(sft).lora == LoraSettings(sft["lora_r"], sft["lora_alpha"], sft["lora_dropout"])
    del sft["lr"]
    with pytest.raises(ConfigError, match=r"^finetune\.sft\.lr: missing from the config block"):
        SFTSettings.from_config(sft)
    with pytest.raises(ConfigError, match=r"^finetune\.rl\.start_from: missing .*\(and max_steps, "):
        RLSettings.from_config({})


def test_training_log_frame_keeps_steps_and_orders_columns():
    from labeldist.hf import training_log_frame

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

    from labeldist.finetune import RLSettings, train_rl

    out = toy["root"] / "rl"
    settings = RLSettings(start_from="sft", max_steps=28, num_generations=8, batch_size=16, beta=0.0, lr=2e-3,
                          max_completion_length=8, format_reward=0.5, seed=0, k=None)
    start = time.perf_counter()
    frame = train_rl(sft_folder[0], out, toy["train_ex"], LABELS, "comma", settings, default_lora(), device="cpu")
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
    from labeldist.finetune import RLSettings, SFTSettings, train_rl, train_sft

    root = toy["root"] / "interrupted"
    root.mkdir()
    with pytest.raises(KeyboardInterrupt):
        train_sft(toy["base"], root / "sft", toy["train_ex"][:32],
                  SFTSettings.from_config({**default_block("finetune.sft"), "max_steps": 20, "batch_size": 4}),
                  device="cpu", callbacks=[_raise_at(2)])
    rl = RLSettings.from_config({**default_block("finetune.rl"), "max_steps": 20, "num_generations": 2,
                                 "batch_size": 4, "max_completion_length": 4})
    with pytest.raises(KeyboardInterrupt):
        train_rl(toy["base"], root / "rl", toy["train_ex"][:8], LABELS, "comma", rl, default_lora(),
                 device="cpu", callbacks=[_raise_at(1)])
    assert list(root.iterdir()) == [], "no output folder and no temporary leftovers"


def test_sft_and_rl_from_stage_files(toy, tmp_path, caplog):
    """The rules' entry points on data-stage files: the folders load with labeldist.models.load_causal_lm,
    the training prompts carry finetune.*.k demos, and each log holds the dev F1 before and after training,
    equal to the F1 of the saved model's greedy outputs on the generation stage's dev prompts."""
    import logging

    import pandas as pd

    from labeldist.config import default_block
    from labeldist.finetune import dev_evaluator, rl_from_files, sft_from_files
    from labeldist.models import load_causal_lm
    from labeldist.prompts import PromptSpec

    files = write_stage_data(tmp_path / "data", toy["train"][:60], toy["test"][:10], toy["test"][10:])
    gen_cfg = {**default_block("generation"), "max_new_tokens": 8}
    common = {"data_files": files, "prompt_cfg": SPEC_CFG, "gen_cfg": gen_cfg, "device": "cpu", "threads": 1}
    sft_cfg = {"lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "lr": 1e-3, "max_steps": 3, "batch_size": 4,
               "load_in_4bit": False, "seed": 0, "k": 0}
    with caplog.at_level(logging.INFO, logger="labeldist.finetune"):
        sft_from_files(toy["base"], out_dir=tmp_path / "sft", sft_cfg=sft_cfg, **common)
    assert "60 training prompts with 0 demos each" in caplog.text
    rl_cfg = {"start_from": "sft", "max_steps": 2, "num_generations": 2, "batch_size": 4, "beta": 0.1,
              "lr": 1e-4, "max_completion_length": 4, "format_reward": 0.5, "seed": 0, "k": None}
    rl_from_files(tmp_path / "sft", out_dir=tmp_path / "rl", rl_cfg=rl_cfg, sft_cfg=sft_cfg, **common)
    evaluate = dev_evaluator(files, PromptSpec.from_config(SPEC_CFG), gen_cfg, seed=0)
    f1 = {}
    for regime in ("sft", "rl"):
        model, tok = load_causal_lm(tmp_path / regime, device="cpu")
        assert model.config.vocab_size == len(tok)
        f1[regime] = evaluate(model, tok)
        log = pd.read_csv(tmp_path / regime / "training_log.csv")
        dev = log.dropna(subset=["dev_f1"])
        assert dev["step"].tolist() == [0, log["step"].max()], "dev F1 before (step 0) and after (last step)"
        assert dev["dev_f1"].iloc[-1] == pytest.approx(f1[regime], abs=1e-9)
    base_model, base_tok = load_causal_lm(toy["base"], device="cpu")
    sft_log = pd.read_csv(tmp_path / "sft" / "training_log.csv").dropna(subset=["dev_f1"])
    assert sft_log["dev_f1"].iloc[0] == pytest.approx(evaluate(base_model, base_tok), abs=1e-9)
    rl_log = pd.read_csv(tmp_path / "rl" / "training_log.csv")
    assert rl_log.dropna(subset=["dev_f1"])["dev_f1"].iloc[0] == pytest.approx(f1["sft"], abs=1e-9)
    assert "kl" in rl_log.columns  # beta > 0 logs the KL term
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "rl", "sft"]


def test_training_needs_labelled_train_examples(toy, tmp_path):
    """An empty train split, or one whose examples are all 'none', is one error naming the file."""
    from labeldist.errors import DataError
    from labeldist.finetune import sft_from_files

    sft_cfg = {**default_block("finetune.sft"), "max_steps": 1}
    unlabelled = [{**r, "labels": [], "p_ref": {**{l: 0.0 for l in LABELS}, "none": 1.0}} for r in toy["train"][:20]]
    for name, train in (("empty", []), ("unlabelled", unlabelled)):
        files = write_stage_data(tmp_path / name, train, toy["test"][:10], toy["test"][10:])
        with pytest.raises(DataError, match=r"train\.jsonl.*(no records|no train example has a gold label)"):
            sft_from_files(toy["base"], files, tmp_path / name / "sft", SPEC_CFG, sft_cfg, device="cpu")
        assert not (tmp_path / name / "sft").exists()


def test_with_dev_f1_puts_before_at_step_0_and_after_on_the_last_step():
    import pandas as pd

    from labeldist.finetune import with_dev_f1

    frame = pd.DataFrame({"step": [1, 2, 3], "loss": [3.0, 2.0, 1.0]})
    out = with_dev_f1(frame, 0.25, 0.5)
    assert out["step"].tolist() == [0, 1, 2, 3]
    assert out["dev_f1"].tolist()[0] == 0.25 and out["dev_f1"].tolist()[-1] == 0.5
    assert out["dev_f1"].isna().tolist() == [False, True, True, False]
    assert with_dev_f1(frame, None, None).equals(frame)
    empty = with_dev_f1(pd.DataFrame({"step": pd.Series(dtype="int64")}), 0.1, 0.2)
    assert empty["dev_f1"].tolist() == [0.1, 0.2]


# ---- study scale: 4-bit loading and where adapters are merged -----------------------------------
def test_quantization_plan_needs_request_cuda_and_bitsandbytes():
    from labeldist.hf import can_load_4bit, quantization_plan

    assert quantization_plan(True, cuda_available=True, bnb_available=True) is True
    for requested, cuda, bnb in [(False, True, True), (True, False, True), (True, True, False), (True, False, False)]:
        assert quantization_plan(requested, cuda, bnb) is False, (requested, cuda, bnb)
    assert can_load_4bit("cpu") is False  # no CUDA in these tests, whatever is installed


def test_rl_lora_and_merge_plans():
    from labeldist.finetune import (
        LORA_MIN_PARAMS, MERGE_IN_PLACE, MERGE_NONE, MERGE_ON_CPU, merge_dtype, merge_plan, rl_uses_lora,
    )

    # the tiny path: full finetuning, saved as is
    assert rl_uses_lora(100_000, quantized=False) is False
    assert merge_plan(use_lora=False, quantized=False) == MERGE_NONE
    # big unquantized models: LoRA merged where the model is
    assert rl_uses_lora(LORA_MIN_PARAMS + 1, quantized=False) is True
    assert merge_plan(use_lora=True, quantized=False) == MERGE_IN_PLACE
    # 4-bit: always LoRA (4-bit weights are not trainable), merged into an unquantized reload on the CPU
    assert rl_uses_lora(100_000, quantized=True) is True
    assert merge_plan(use_lora=True, quantized=True) == MERGE_ON_CPU
    assert merge_dtype("auto") == "bfloat16" and merge_dtype("float16") == "float16"


def test_qlora_settings_and_seq_cls_head_stays_unquantized():
    import torch
    from transformers import BitsAndBytesConfig, LlamaConfig, LlamaForSequenceClassification
    from transformers.quantizers.base import get_keys_to_not_convert

    from labeldist.hf import bnb_4bit_settings
    from labeldist.seq_cls import seq_cls_load_kwargs

    cfg = BitsAndBytesConfig(**bnb_4bit_settings())
    assert cfg.load_in_4bit and cfg.bnb_4bit_quant_type == "nf4" and cfg.bnb_4bit_use_double_quant
    assert cfg.bnb_4bit_compute_dtype == torch.bfloat16
    kwargs = seq_cls_load_kwargs("cuda", quantized=True)
    assert kwargs["device_map"] == {"": 0} and kwargs["quantization_config"].load_in_4bit
    # no skip list: transformers then keeps the last module (the fresh head) out of 4-bit conversion
    assert kwargs["quantization_config"].llm_int8_skip_modules is None
    tiny = LlamaForSequenceClassification(LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, num_labels=3))
    assert "score" in get_keys_to_not_convert(tiny)
    assert seq_cls_load_kwargs("cpu", quantized=False) == {}
    with pytest.raises(ValueError, match="needs CUDA"):
        seq_cls_load_kwargs("cpu", quantized=True)


def _tiny_causal_lm(folder: Path, seed: int = 0) -> Path:
    """A ~20k-parameter Llama saved in float32 (no tokenizer: the merge needs none)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64))
    model.save_pretrained(folder)
    return folder


def _random_adapter(base: Path, seed: int = 1):
    """A LoRA PeftModel over the model in `base` with random (non-zero) A and B, so merging changes weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                            init_lora_weights=False))


def test_cpu_merge_equals_in_place_merge(tmp_path, monkeypatch):
    """MERGE_ON_CPU (adapter saved, start model reloaded on the CPU, merged there) gives the weights of an
    in-place merge; 'auto' reloads in bf16; the folder is sharded safetensors that loads on its own, also
    when the start folder is a model_ref.json pointing elsewhere."""
    import pandas as pd
    import torch
    from transformers import AutoModelForCausalLM

    from labeldist import finetune
    from labeldist.finetune import MERGE_IN_PLACE, MERGE_NONE, MERGE_ON_CPU, finish_model, save_folder
    from labeldist.io import write_json

    base = _tiny_causal_lm(tmp_path / "base")
    base_sd = {k: v.clone() for k, v in AutoModelForCausalLM.from_pretrained(base).state_dict().items()}
    ref = tmp_path / "ref"  # a base-model folder as the models stage writes it for a local model
    ref.mkdir()
    write_json(ref / "model_ref.json", {"path": str(base)})

    expected = finish_model(_random_adapter(base), base, MERGE_IN_PLACE).state_dict()
    on_cpu = finish_model(_random_adapter(base), ref, MERGE_ON_CPU, dtype="float32")
    assert not hasattr(on_cpu, "peft_config") and type(on_cpu).__name__ == "LlamaForCausalLM"
    got = on_cpu.state_dict()
    assert set(got) == set(expected) == set(base_sd)
    for name in expected:
        assert got[name].device.type == "cpu" and got[name].dtype == torch.float32
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6)
    changed = [n for n in expected if not torch.equal(expected[n], base_sd[n])]
    assert any("q_proj" in n for n in changed) and any("down_proj" in n for n in changed)

    in_bf16 = finish_model(_random_adapter(base), base, MERGE_ON_CPU)  # dtype "auto"
    assert {p.dtype for p in in_bf16.parameters()} == {torch.bfloat16}
    for name in changed:
        torch.testing.assert_close(in_bf16.state_dict()[name].float(), expected[name], rtol=2e-2, atol=2e-2)

    full = _random_adapter(base).get_base_model()
    assert finish_model(full, base, MERGE_NONE) is full
    with pytest.raises(ValueError, match="unknown merge plan"):
        finish_model(full, base, "gpu")

    from labeldist.models import train_tokenizer

    monkeypatch.setattr(finetune, "MAX_SHARD_SIZE", "40KB")
    out = tmp_path / "merged"
    out.mkdir()
    save_folder(on_cpu, train_tokenizer(["a tiny corpus", "of two lines"], vocab_size=300),
                pd.DataFrame({"step": [1]}), out)
    shards = sorted(p.name for p in out.glob("model-*.safetensors"))
    assert len(shards) > 1 and (out / "model.safetensors.index.json").exists()
    reloaded = AutoModelForCausalLM.from_pretrained(out).state_dict()
    for name in expected:
        torch.testing.assert_close(reloaded[name], expected[name], rtol=1e-5, atol=1e-6)


def _weights(folder: Path) -> dict:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder).state_dict()


def test_sft_and_rl_follow_the_cpu_merge_plan(toy, tmp_path, monkeypatch):
    """train_sft / train_rl wired to MERGE_ON_CPU (what a 4-bit run does) save the same weights as the
    in-place merge of an identically seeded run, merging into a CPU reload of their start folder."""
    import torch

    from labeldist import finetune
    from labeldist.finetune import MERGE_NONE, MERGE_ON_CPU, RLSettings, SFTSettings

    sft = SFTSettings.from_config({**default_block("finetune.sft"), "lora_r": 4, "lora_alpha": 8,
                                   "lora_dropout": 0.0, "lr": 1e-2, "max_steps": 3, "batch_size": 4, "seed": 0})
    rl = RLSettings.from_config({**default_block("finetune.rl"), "max_steps": 2, "num_generations": 2,
                                 "batch_size": 4, "max_completion_length": 4, "lr": 1e-2, "seed": 0})
    examples = toy["train_ex"][:16]

    def run(tag: str) -> tuple[Path, Path]:
        finetune.train_sft(toy["base"], tmp_path / f"sft_{tag}", examples, sft, device="cpu", dtype="float32")
        finetune.train_rl(tmp_path / f"sft_{tag}", tmp_path / f"rl_{tag}", examples, LABELS, "comma", rl,
                          LoraSettings(4, 8, 0.0), device="cpu", dtype="float32")
        return tmp_path / f"sft_{tag}", tmp_path / f"rl_{tag}"

    # RL on the tiny model would finetune all weights: make it take the LoRA route of a 4-bit run
    monkeypatch.setattr(finetune, "rl_uses_lora", lambda n_params, quantized: True)
    in_place = run("in_place")

    calls = []
    real_merge = finetune.merge_adapter_on_cpu
    monkeypatch.setattr(finetune, "merge_plan",
                        lambda use_lora, quantized: MERGE_ON_CPU if use_lora else MERGE_NONE)
    monkeypatch.setattr(finetune, "merge_adapter_on_cpu",
                        lambda adapter_dir, start, dtype="auto": calls.append(Path(start)) or
                        real_merge(adapter_dir, start, dtype))
    on_cpu = run("cpu")
    assert calls == [toy["base"], tmp_path / "sft_cpu"]  # each regime merges into its own start folder
    for a, b in zip(in_place, on_cpu):
        assert not (b / "adapter_config.json").exists()
        wa, wb = _weights(a), _weights(b)
        assert set(wa) == set(wb)
        for name in wa:
            torch.testing.assert_close(wb[name], wa[name], rtol=1e-5, atol=1e-6)
    start = _weights(toy["base"])
    assert any(not torch.equal(start[n], w) for n, w in _weights(on_cpu[0]).items()), "SFT changed nothing"
