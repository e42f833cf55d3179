"""labeldist.cost: GPU-hour estimates follow the grid's arithmetic and the documented heuristics."""

from __future__ import annotations

import copy
import math

import pytest

from labeldist import cost
from labeldist.config import load_config

from .conftest import REPO, needs_shared_data

pytestmark = needs_shared_data

# Pure compute: no memory-bound steps, no overheads, no checkpoint loading.
COMPUTE_ONLY = cost.Hardware(mem_bandwidth_gbs=math.inf, step_overhead_s=0.0, train_step_overhead_s=0.0,
                             disk_gbps=math.inf)


@pytest.fixture(scope="module")
def study() -> dict:
    return load_config(REPO / "config" / "study.yaml", base_dir=REPO)


def test_generation_follows_flop_arithmetic(study):
    cfg = copy.deepcopy(study)
    m = cfg["models"]["llama31_8b"]
    ds = cfg["datasets"]["goemotions"]
    n, n_ex = cost.n_labels(ds), ds["subsets"]["main_size"]
    plen = cost.prompt_tokens(cfg["prompts"][ds["prompt"]], n)
    rate = COMPUTE_ONLY.peak_tflops * 1e12 * COMPUTE_ONLY.mfu
    # unary: one prompt per (example, label), one new token, label suffix on the prompt
    expected = 2 * m["size_b"] * 1e9 * n_ex * n * (plen + cost.LABEL_TOKENS + 8 + 1) / rate
    got = cost.generation_seconds(cfg, "goemotions", "llama31_8b", "unary", "main", COMPUTE_ONLY)
    assert got == pytest.approx(expected)
    # pairwise prompts grow as L(L+1) with both presentation orders (the default), unary as L; the study's
    # one order (config/study.yaml) asks half of them
    assert cfg["generation"]["pairwise_orders"] == "one"
    pair = cost.generation_seconds(cfg, "goemotions", "llama31_8b", "pairwise", "main", COMPUTE_ONLY)
    ratio = (plen + 2 * cost.LABEL_TOKENS + 9) / (plen + cost.LABEL_TOKENS + 9)
    assert pair / got == pytest.approx((n + 1) / 2 * ratio)
    cfg["generation"]["pairwise_orders"] = "both"
    pair = cost.generation_seconds(cfg, "goemotions", "llama31_8b", "pairwise", "main", COMPUTE_ONLY)
    assert pair / got == pytest.approx((n + 1) * ratio)
    # twice the parameters, twice the compute; 4-bit is slower by quant_slowdown
    m["size_b"] *= 2
    assert cost.generation_seconds(cfg, "goemotions", "llama31_8b", "unary", "main", COMPUTE_ONLY) \
        == pytest.approx(2 * got)
    m["load_in_4bit"] = True
    assert cost.generation_seconds(cfg, "goemotions", "llama31_8b", "unary", "main", COMPUTE_ONLY) \
        == pytest.approx(2 * got * COMPUTE_ONLY.quant_slowdown)


def test_stage_job_counts_match_the_grid(study):
    costs = {c.stage: c for c in cost.stage_costs(study)}
    d, m, r, s = (len(study[k]) for k in ("datasets", "models", "regimes", "seeds"))
    subsets = {"baseline": 4, "unary": 2, "pairwise": 2, "icl_sweep": 1}  # linear_probe adds train
    for prompting in study["prompting"]:
        assert costs[prompting].jobs == d * m * r * s * subsets[prompting]
    assert costs["sft"].jobs == costs["rl"].jobs == d * m
    assert costs["seq_cls_head"].jobs == d * m * s
    assert costs["demux"].jobs == d * s
    # every study model needs a GPU; pairwise prompting costs most
    assert all(c.gpu_jobs == c.jobs for c in costs.values())
    assert max(costs.values(), key=lambda c: c.gpu_hours).stage == "pairwise"


def test_cpu_models_cost_no_gpu_hours():
    cfg = load_config(REPO / "config.yaml", base_dir=REPO)  # the tiny built-in model, gpu_mem_gb 0
    costs = cost.stage_costs(cfg)
    assert costs and all(c.gpu_hours == 0 and c.gpu_jobs == 0 for c in costs)
    assert sum(c.jobs for c in costs) > 0


def test_table_has_a_row_per_stage_and_the_total(study, capsys):
    costs = cost.stage_costs(study)
    table = cost.cost_table(costs)
    rows = table.splitlines()
    assert len(rows) == 2 + len(costs) + 1
    assert f"**{sum(c.gpu_hours for c in costs):,.0f}**" in rows[-1]
    cost.main([str(REPO / "config" / "study.yaml"), "--base-dir", str(REPO)])
    assert capsys.readouterr().out.strip() == table


def test_resource_requests_grow_with_attempt(study):
    assert cost.runtime_minutes(1.0) == cost.RUNTIME_MIN_MIN
    assert cost.runtime_minutes(3600) % 5 == 0 and cost.runtime_minutes(3600) >= 3 * 60
    assert cost.runtime_minutes(3600, attempt=3) == 2 * cost.runtime_minutes(3600)
    assert cost.runtime_minutes(3600) < cost.runtime_minutes(3600, attempt=2) < cost.runtime_minutes(3600, attempt=3)
    big, small = study["models"]["llama31_70b"], study["models"]["llama32_1b"]
    assert cost.host_mem_mb(big) > cost.host_mem_mb(small)
    assert cost.host_mem_mb(big, attempt=3) == pytest.approx(2 * cost.host_mem_mb(big), rel=0.01)
    assert cost.gpus_needed(0) == 0 and cost.gpus_needed(48) == 1 and cost.gpus_needed(100) == 2


def test_readme_shows_the_current_estimate(study):
    """README's "Expected cost" table is the one `python -m labeldist.cost config/study.yaml` prints."""
    assert cost.cost_table(cost.stage_costs(study)) in (REPO / "README.md").read_text()


def test_pairwise_prompts_halve_with_one_presentation_order(study):
    """generation.pairwise_orders: one asks each unordered pair once: (L + 1) L / 2 prompts per example."""
    assert cost.pairwise_prompts(3, "both") == 12 and cost.pairwise_prompts(3, "one") == 6
    assert cost.pairwise_prompts(11, "both") == 132 and cost.pairwise_prompts(11, "one") == 66
    with pytest.raises(ValueError, match="pairwise_orders"):
        cost.pairwise_prompts(3, "all")
    cfg = copy.deepcopy(study)
    seconds = {}
    for orders in ("both", "one"):
        cfg["generation"]["pairwise_orders"] = orders
        seconds[orders] = cost.generation_seconds(cfg, "goemotions", "llama31_8b", "pairwise", "main", COMPUTE_ONLY)
    assert seconds["one"] == pytest.approx(seconds["both"] / 2)  # compute only: proportional to the prompts
    jobs = {orders: {c.stage: c for c in cost.stage_costs({**cfg, "generation": {**cfg["generation"],
                                                                                 "pairwise_orders": orders}})}
            for orders in ("both", "one")}
    assert jobs["one"]["pairwise"].jobs == jobs["both"]["pairwise"].jobs
    assert jobs["one"]["pairwise"].gpu_hours < 0.55 * jobs["both"]["pairwise"].gpu_hours
    assert jobs["one"]["unary"].gpu_hours == jobs["both"]["unary"].gpu_hours
