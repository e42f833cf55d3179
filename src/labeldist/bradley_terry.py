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
"""Weight of the L2 penalty on the strengths (METHODS.md section 4: BCE + 0.01 L2)."""


def fit_bradley_terry(
    idx_a: np.ndarray,
    idx_b: np.ndarray,
    target: np.ndarray,
    n_items: int,
    mask: np.ndarray | None = None,
    *,
    l2: float = L2_WEIGHT,
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

    Example e minimises  mean over its real pairs j of BCE(target[e, j], sigmoid(s[e, a_j] - s[e, b_j]))
    + l2 * sum_k s[e, k]^2, by Adam (learning rate `lr` annealed to 0 on a cosine schedule over `steps`)
    from a seeded small random start, on `threads` torch threads (restored afterwards: these tensors
    are small, and extra threads on a busy machine slow the fit down many times). The BCE is computed from logits (log-sigmoid), so targets of
    exactly 0 or 1 and large strength gaps stay finite. An example without real pairs keeps strengths
    near 0 (the penalty pulls them there).
    """
    idx_a = np.asarray(idx_a, dtype=np.int64)
    idx_b = np.asarray(idx_b, dtype=np.int64)
    target = np.asarray(target, dtype=np.float64)
    if idx_a.ndim != 2 or idx_a.shape != idx_b.shape or idx_a.shape != target.shape:
        raise ValueError(f"idx_a, idx_b and target must share one 2-D shape, got "
                         f"{idx_a.shape}, {idx_b.shape}, {target.shape}")
    mask = np.ones(idx_a.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
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
    weight = weight / weight.sum(dim=1, keepdim=True).clamp(min=1.0)  # mean over each example's pairs

    generator = torch.Generator().manual_seed(int(seed))
    init = 0.01 * torch.randn(n_examples, n_items, generator=generator, dtype=torch.float64)
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
    finally:
        torch.set_num_threads(previous_threads)
    return strengths.detach().numpy().astype(np.float64)
