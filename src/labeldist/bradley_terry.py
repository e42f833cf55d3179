"""Bradley-Terry strengths from pairwise preference probabilities, one independent fit per example.

Hand-written on torch: no library we use fits Bradley-Terry with soft (probability) targets for a whole
batch of independent problems at once. Every example's strengths are its own rows of one parameter
tensor and Adam's update is element-wise, so fitting all examples in one batch gives exactly the fits
one would get example by example, at the cost of one.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

L2_WEIGHT = 0.01
"""Weight of the L2 penalty on the strengths (docs/methods.md, `pairwise_bt`: the study's 0.01)."""

REDUCTIONS = ("sum", "mean")
"""How an example's pair losses are combined: `sum` (the study's objective, the default) or `mean`."""


def fit_bradley_terry(
    idx_a: np.ndarray,
    idx_b: np.ndarray,
    target: np.ndarray,
    n_items: int,
    mask: np.ndarray | None = None,
    *,
    l2: float = L2_WEIGHT,
    reduction: str = "sum",
    lr: float = 0.1,
    steps: int = 400,
    seed: int = 0,
    threads: int = 1,
    progress: bool = False,
) -> np.ndarray:
    """Return fitted strengths, a float64 array of shape [n_examples, n_items].

    `idx_a`, `idx_b` (int, [n_examples, n_pairs]) index the two items of each comparison, `target`
    (float in [0, 1], same shape) is the probability that a beats b (hard 0/1 outcomes are the special
    case), and `mask` (bool, same shape) marks real comparisons in a padded batch (default: all real).

    Example e minimises  sum over its real pairs j of BCE(target[e, j], sigmoid(s[e, a_j] - s[e, b_j]))
    + l2 * sum_k s[e, k]^2  (the study's objective; docs/methods.md, Decision "Bradley-Terry").
    `reduction="mean"` averages the pair losses instead (this module's earlier objective: its L2 term
    weighs ~n_pairs times more, which shrinks every strength towards 0). Minimised by Adam (learning
    rate `lr` annealed to 0 on a cosine schedule over `steps`) from a seeded small random start, to the
    objective's optimum (then Newton steps, `_newton_polish`; the study stops Adam early instead), projecting every step onto mean-zero
    strengths (where the optimum lies: a common shift changes no difference, only the penalty, and
    Adam's per-coordinate steps would otherwise leave a slowly decaying shift), on `threads` torch threads (restored
    afterwards: these tensors are small, and extra threads on a busy machine slow the fit down many
    times). The BCE is computed from logits (log-sigmoid; the study adds 1e-7 inside the log), so
    targets of exactly 0 or 1 and large strength gaps stay finite. An example without real pairs keeps
    strengths near 0 (the penalty pulls them there).
    """
    idx_a = np.asarray(idx_a, dtype=np.int64)
    idx_b = np.asarray(idx_b, dtype=np.int64)
    target = np.asarray(target, dtype=np.float64)
    if idx_a.ndim != 2 or idx_a.shape != idx_b.shape or idx_a.shape != target.shape:
        raise ValueError(f"idx_a, idx_b and target must share one 2-D shape, got "
                         f"{idx_a.shape}, {idx_b.shape}, {target.shape}")
    mask = np.ones(idx_a.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if mask.shape != idx_a.shape:
        raise ValueError(f"mask shape {mask.shape} differs from the pairs' shape {idx_a.shape}")
    real_targets = target[mask]
    if not np.all(np.isfinite(real_targets)) or np.any((real_targets < 0) | (real_targets > 1)):
        raise ValueError("pair targets must be finite probabilities in [0, 1]")
    if mask.any() and (idx_a[mask].min() < 0 or max(idx_a[mask].max(), idx_b[mask].max()) >= n_items
                       or idx_b[mask].min() < 0):
        raise ValueError(f"pair indices must lie in [0, {n_items})")
    n_examples = idx_a.shape[0]
    if n_examples == 0:
        return np.zeros((0, n_items), dtype=np.float64)

    # Padded slots point at item 0 and carry weight 0; they never touch the loss.
    a = torch.from_numpy(np.where(mask, idx_a, 0))
    b = torch.from_numpy(np.where(mask, idx_b, 0))
    t = torch.from_numpy(np.where(mask, target, 0.5))
    weight = torch.from_numpy(mask.astype(np.float64))
    if reduction == "mean":
        weight = weight / weight.sum(dim=1, keepdim=True).clamp(min=1.0)  # mean over each example's pairs

    generator = torch.Generator().manual_seed(int(seed))
    init = 0.01 * torch.randn(n_examples, n_items, generator=generator, dtype=torch.float64)
    init -= init.mean(dim=1, keepdim=True)
    strengths = torch.nn.Parameter(init)
    optimizer = torch.optim.Adam([strengths], lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    try:
        for _ in tqdm(range(steps), desc="Bradley-Terry fit", disable=not progress, mininterval=5.0):
            optimizer.zero_grad()
            logits = torch.gather(strengths, 1, a) - torch.gather(strengths, 1, b)
            bce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
            loss = (bce * weight).sum() + l2 * (strengths**2).sum()
            loss.backward()
            optimizer.step()
            scheduler.step()
            with torch.no_grad():  # the optimum has mean 0 (a shift changes no difference, only the penalty)
                strengths -= strengths.mean(dim=1, keepdim=True)
        result = strengths.detach().clone()
        if l2 > 0:
            result = _newton_polish(result, a, b, t, weight, l2)
    finally:
        torch.set_num_threads(previous_threads)
    return result.numpy().astype(np.float64)


NEWTON_STEPS = 30
NEWTON_TOL = 1e-10


def _newton_polish(s: torch.Tensor, a: torch.Tensor, b: torch.Tensor, t: torch.Tensor,
                   weight: torch.Tensor, l2: float) -> torch.Tensor:
    """Return `s` moved to the exact optimum by Newton steps, all examples at once.

    With l2 > 0 the objective is strictly convex and smooth, so Newton's method converges quadratically
    from Adam's end point; it removes what Adam leaves in flat directions (separable hard outcomes,
    where only the weak penalty bounds the strengths). Gradient and Hessian are the textbook ones of a
    weighted logistic loss in the differences s_a - s_b. A step that would not lower an example's
    objective is not taken for that example (Adam's point is kept).
    """
    n, k = s.shape
    rows = torch.arange(n).unsqueeze(1).expand_as(a)
    eye = torch.eye(k, dtype=s.dtype).expand(n, k, k)

    def objective(x: torch.Tensor) -> torch.Tensor:
        d = torch.gather(x, 1, a) - torch.gather(x, 1, b)
        return (F.binary_cross_entropy_with_logits(d, t, reduction="none") * weight).sum(1) + l2 * (x**2).sum(1)

    for _ in range(NEWTON_STEPS):
        d = torch.gather(s, 1, a) - torch.gather(s, 1, b)
        sig = torch.sigmoid(d)
        g_pair = weight * (sig - t)
        h_pair = weight * sig * (1.0 - sig)
        grad = 2.0 * l2 * s
        grad = grad.index_put((rows, a), g_pair, accumulate=True).index_put((rows, b), -g_pair, accumulate=True)
        hess = 2.0 * l2 * eye.clone()
        for i, j, sign in ((a, a, 1.0), (b, b, 1.0), (a, b, -1.0), (b, a, -1.0)):
            hess = hess.index_put((rows, i, j), sign * h_pair, accumulate=True)
        step = torch.linalg.solve(hess, grad.unsqueeze(-1)).squeeze(-1)
        candidate = s - step
        better = objective(candidate) <= objective(s)
        s = torch.where(better.unsqueeze(1), candidate, s)
        taken = step[better]
        if taken.numel() == 0 or float(taken.abs().max()) < NEWTON_TOL:
            break
    return s
