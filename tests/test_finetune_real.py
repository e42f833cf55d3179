"""Finetuning on a real LLM (SmolLM2-135M-Instruct from its wheel): SFT's loss mask under the real chat
template, LoRA on the real architecture, the merged folder against the PEFT model, and a GRPO step whose
completions are unparseable, empty or name unknown labels. A few steps each: these check the plumbing a
study run goes through, not what training learns (the default run's training log shows that)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from labeldist.config import default_block

LABELS = ["Care", "Equality", "Proportionality", "Loyalty", "Authority", "Purity"]
TEXTS = [
    ("We should look after the people who cannot look after themselves.", ["Care"]),
    ("Everyone deserves the same pay for the same work, no exceptions.", ["Equality"]),
    ("He cheated and still got the promotion; that is not what he earned.", ["Proportionality"]),
    ("I will never turn my back on my family or my team.", ["Loyalty"]),
    ("The rules are there for a reason and the referee's call is final.", ["Authority"]),
    ("What a lovely day at the beach.", []),
]
PROMPT = {"instruction": "Classify the following inputs into none, one, or multiple the following moral "
                         "foundations per input: {labels}. Output exactly these moral foundations and no others.",
          "k": 0, "label_format": "json", "use_chat_template": True}


def records() -> list[dict]:
    return [{"id": f"ex{i}", "text": t, "labels": g} for i, (t, g) in enumerate(TEXTS)]


@pytest.fixture(scope="module")
def sft_run(smollm2_dir, tmp_path_factory):
    """Two LoRA SFT steps of SmolLM2 on chat-template prompts: (trainer, tokenizer, examples, logits of the
    base model on a probe batch)."""
    import torch

    from labeldist.finetune import SFTSettings, prompt_records, sft_trainer
    from labeldist.hf import load_model
    from labeldist.prompts import PromptSpec

    torch.manual_seed(0)
    model, tokenizer = load_model(smollm2_dir, device="cpu")
    spec = PromptSpec.from_config(PROMPT)
    examples = prompt_records(records(), records(), spec, LABELS, seed=0, tokenizer=tokenizer)
    settings = replace(SFTSettings.from_config(default_block("finetune.sft")), lr=1e-3, max_steps=2,
                       batch_size=2, lora_r=8, lora_alpha=16, lora_dropout=0.0)
    probe = tokenizer([e["prompt"] + e["completion"] for e in examples[:2]], return_tensors="pt", padding=True)
    with torch.no_grad():
        base_logits = model(**probe).logits
    trainer = sft_trainer(model, tokenizer, examples, settings, "cpu", tmp_path_factory.mktemp("scratch"))
    return trainer, tokenizer, examples, probe, base_logits


def test_sft_loss_falls_on_the_completion_tokens_only(sft_run):
    """The tokens that carry loss in TRL's collated batch are exactly the tokenizer's tokens of the
    completion and the end-of-turn EOS; the chat template's system/user turns and the assistant header
    carry none."""
    trainer, tokenizer, examples, _, _ = sft_run
    assert "<|im_start|>assistant\n" in examples[0]["prompt"], "the prompt is rendered with the chat template"
    assert examples[0]["prompt"].endswith("<|im_start|>assistant\n")
    rows = [trainer.train_dataset[i] for i in range(len(examples))]
    batch = trainer.data_collator(rows)
    for i, example in enumerate(examples):
        ids, labels = batch["input_ids"][i], batch["labels"][i]
        scored = ids[labels != -100].tolist()
        completion_ids = tokenizer(example["completion"] + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        prompt_ids = tokenizer(example["prompt"], add_special_tokens=False)["input_ids"]
        assert scored == completion_ids, (example["completion"], tokenizer.decode(scored))
        kept = ids[batch["attention_mask"][i].bool()].tolist()
        assert kept == prompt_ids + completion_ids  # the prompt's tokens come first, unscored
    assert tokenizer.eos_token == "<|im_end|>"  # the template's end of turn, as at evaluation


def test_lora_targets_every_linear_layer_of_the_real_architecture(sft_run):
    trainer = sft_run[0]
    model = trainer.model
    n_layers = model.config.num_hidden_layers
    wrapped = {name.removesuffix(".lora_A") for name, _ in model.named_modules() if name.endswith(".lora_A")}
    for proj in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                 "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):
        layers = [n for n in wrapped if n.endswith(proj)]
        assert len(layers) == n_layers, proj
    assert not [n for n in wrapped if "lm_head" in n or "embed" in n]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_merged_folder_reloads_with_the_peft_models_logits(sft_run, tmp_path):
    """After two steps the merged save_pretrained folder, reloaded on its own, gives the PEFT model's logits
    (and no longer the base model's: the adapter was trained and merged)."""
    import torch

    from labeldist.finetune import MERGE_IN_PLACE, finish_model, save_folder
    from labeldist.hf import load_model, training_log_frame

    trainer, tokenizer, _, probe, base_logits = sft_run
    trainer.train()
    peft_model = trainer.model.eval()
    with torch.no_grad():
        peft_logits = peft_model(**probe).logits
    merged = finish_model(peft_model, "unused", MERGE_IN_PLACE)
    save_folder(merged, tokenizer, training_log_frame(trainer.state.log_history), tmp_path / "sft")
    assert not (tmp_path / "sft" / "adapter_config.json").exists()
    reloaded, _ = load_model(tmp_path / "sft", device="cpu")
    with torch.no_grad():
        logits = reloaded(**probe).logits
    real = probe["attention_mask"].bool()  # padded positions carry no meaning
    merge_error = (logits - peft_logits)[real].abs().max()
    trained = (peft_logits - base_logits)[real].abs().max()
    print(f"max |logit| change: training {trained:.4f}, merging {merge_error:.6f}")
    # merging W + BA reorders float32 sums through 30 layers: far below what two steps changed
    assert merge_error < 1e-3 and trained > 100 * merge_error


def test_reward_of_bad_completions_in_the_chat_format():
    """The documented reward: label-set F1 against gold, plus format_reward when the output names at least
    one label (or none) and nothing outside the label set, minus it otherwise (unparseable, empty, unknown
    label); a list cut at the token cap counts the labels whose strings were closed."""
    from labeldist.finetune import make_reward_func

    reward = make_reward_func(LABELS, "json", 0.5)
    gold = ["Care", "Purity"]
    cases = {
        '["Care", "Purity"]': 1.0 + 0.5,
        '["Care"]': 2 / 3 + 0.5,                 # precision 1, recall 1/2
        '["Care", "Bananas"]': 2 / 3 - 0.5,      # an unknown label: not a valid answer
        '["Care", "Pur': 2 / 3 + 0.5,            # cut at the token cap: the closed strings are read
        '["Pur': 0.0 - 0.5,                      # cut inside the first label: no label named
        "": 0.0 - 0.5,
        "I think it is about caring.": 0.0 - 0.5,
        '["none"]': 0.0 + 0.5,                   # parsable, wrong
    }
    got = reward(list(cases), [gold] * len(cases))
    assert got == pytest.approx(list(cases.values()))
    assert reward(['["none"]'], [[]]) == pytest.approx([1.5])  # none is the empty gold set's answer


def test_grpo_step_on_smollm2_with_unparseable_completions(smollm2_dir, tmp_path):
    """One GRPO step from the real model with completions cut at 3 tokens (so none is a closed JSON list):
    every completion gets the documented reward, training logs it, and the merged folder loads."""
    import pandas as pd

    from labeldist import finetune
    from labeldist.finetune import RLSettings, label_reward, prompt_records, train_rl
    from labeldist.hf import LoraSettings, load_model, load_tokenizer
    from labeldist.prompts import PromptSpec

    seen: list[tuple[str, list[str], float]] = []
    make = finetune.make_reward_func

    def recording(label_set, fmt, format_reward):
        inner = make(label_set, fmt, format_reward)

        def label_f1_reward(completions, gold, **kwargs):
            out = inner(completions, gold, **kwargs)
            seen.extend(zip(completions, gold, out))
            return out

        return label_f1_reward

    tokenizer = load_tokenizer(smollm2_dir)
    examples = prompt_records(records()[:2], records(), PromptSpec.from_config(PROMPT), LABELS, seed=0,
                              tokenizer=tokenizer)
    settings = replace(RLSettings.from_config(default_block("finetune.rl")), max_steps=1, num_generations=2,
                       batch_size=2, max_completion_length=3, lr=1e-5)
    finetune.make_reward_func = recording
    try:
        frame = train_rl(smollm2_dir, tmp_path / "rl", examples, LABELS, "json", settings,
                         LoraSettings(8, 16, 0.0), device="cpu")
    finally:
        finetune.make_reward_func = make
    assert len(seen) >= 2
    for text, gold, got in seen:
        assert not text.rstrip().endswith("]"), "3 tokens cannot close a JSON list of these labels"
        assert got == pytest.approx(label_reward(text, gold, LABELS, "json", 0.5))
    log = pd.read_csv(tmp_path / "rl" / "training_log.csv")
    assert log["reward"].iloc[0] == pytest.approx(sum(r for *_, r in seen) / len(seen), abs=1e-4)
    assert frame["reward"].tolist() == pytest.approx(log["reward"].tolist())
    model, _ = load_model(tmp_path / "rl", device="cpu")
    assert model.config.num_hidden_layers == 30
