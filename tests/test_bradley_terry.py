"""Bradley-Terry fits: recover known strengths, stay finite at p = 0 or 1, match an exact solver."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import expit, log_expit

from labeldist.bradley_terry import fit_bradley_terry

K = 8
PAIRS = [(i, j) for i in range(K) for j in range(K) if i != j]  # both presentation orders
A = np.array([p[0] for p in PAIRS])
B = np.array([p[1] for p in PAIRS])


def batch(s_true: np.ndarray):
    n = s_true.shape[0]
    return np.tile(A, (n, 1)), np.tile(B, (n, 1)), expit(s_true[:, A] - s_true[:, B])


def test_recovers_known_strengths_and_their_order():
    rng = np.random.default_rng(0)
    s_true = rng.normal(0.0, 1.5, size=(40, K))
    ia, ib, p = batch(s_true)
    s = fit_bradley_terry(ia, ib, p, K, seed=0)
    assert s.shape == (40, K) and s.dtype == np.float64
    for e in range(40):
        assert np.corrcoef(s_true[e], s[e])[0, 1] > 0.95
        assert list(np.argsort(s[e])) == list(np.argsort(s_true[e]))


def study_objective(x, a, b, t, l2=0.01):
    """The study's Bradley-Terry loss: the SUM over pairs of BCE on sigmoid(s_a - s_b) + l2 ||s||^2."""
    d = x[a] - x[b]
    return -(t * log_expit(d) + (1 - t) * log_expit(-d)).sum() + l2 * (x**2).sum()


def exact_optimum(objective, n):
    return minimize(objective, np.zeros(n), method="BFGS", options={"gtol": 1e-10}).x


def test_default_fit_is_the_optimum_of_the_studys_summed_objective():
    rng = np.random.default_rng(1)
    s_true = rng.normal(0.0, 1.0, size=(3, K))
    ia, ib, p = batch(s_true)
    s = fit_bradley_terry(ia, ib, p, K, seed=0)
    for e in range(3):
        exact = exact_optimum(lambda x, t=p[e]: study_objective(x, A, B, t), K)
        assert s[e] == pytest.approx(exact, abs=1e-4)
    # the summed loss shrinks far less than a mean would: the optimum is near the true strengths
    centred = s_true - s_true.mean(axis=1, keepdims=True)
    assert np.abs(s - centred).max() < 0.1


def test_hard_outcomes_reach_the_studys_optimum_too():
    """Separable 0/1 targets: only the penalty keeps the optimum finite, and the fit still reaches it."""
    rng = np.random.default_rng(4)
    s_true = rng.normal(0.0, 2.0, size=(2, K))
    ia, ib, p = batch(s_true)
    hard = (p > 0.5).astype(float)
    s = fit_bradley_terry(ia, ib, hard, K, seed=0)
    for e in range(2):
        exact = exact_optimum(lambda x, t=hard[e]: study_objective(x, A, B, t), K)
        assert np.abs(exact).max() > 2.0  # far from 0: the summed loss dominates the 0.01 penalty
        assert s[e] == pytest.approx(exact, abs=1e-3)


def test_mean_reduction_is_our_earlier_objective_and_shrinks_more():
    rng = np.random.default_rng(1)
    s_true = rng.normal(0.0, 1.0, size=(2, K))
    ia, ib, p = batch(s_true)
    s_mean = fit_bradley_terry(ia, ib, p, K, reduction="mean", seed=0)
    s_sum = fit_bradley_terry(ia, ib, p, K, seed=0)
    for e in range(2):
        def loss(x, t=p[e]):
            return study_objective(x, A, B, t, l2=0.0) / len(A) + 0.01 * (x**2).sum()
        assert s_mean[e] == pytest.approx(exact_optimum(loss, K), abs=1e-4)
        assert np.abs(s_mean[e]).max() < np.abs(s_sum[e]).max()
    with pytest.raises(ValueError, match="reduction"):
        fit_bradley_terry(ia, ib, p, K, reduction="median")


def test_never_nan_on_probabilities_of_exactly_zero_or_one():
    rng = np.random.default_rng(2)
    s_true = rng.normal(0.0, 3.0, size=(5, K))
    ia, ib, p = batch(s_true)
    hard = (p > 0.5).astype(float)  # every outcome 0 or 1, a perfectly separable problem
    s = fit_bradley_terry(ia, ib, hard, K, seed=0)
    assert np.all(np.isfinite(s))
    for e in range(5):
        assert list(np.argsort(s[e])) == list(np.argsort(s_true[e]))
    # Without the penalty the optimum is at infinity; the fit still returns finite numbers.
    assert np.all(np.isfinite(fit_bradley_terry(ia, ib, hard, K, l2=0.0, seed=0)))


def test_padding_mask_and_seed():
    rng = np.random.default_rng(3)
    s_true = rng.normal(0.0, 1.0, size=(2, K))
    ia, ib, p = batch(s_true)
    mask = np.ones_like(ia, dtype=bool)
    mask[1, 10:] = False
    garbage = p.copy()
    garbage[1, 10:] = 1.0  # padded slots must not matter
    s_masked = fit_bradley_terry(ia, ib, garbage, K, mask, seed=0)
    s_alone = fit_bradley_terry(ia[1:, :10], ib[1:, :10], p[1:, :10], K, seed=0)
    assert s_masked[1] == pytest.approx(s_alone[0], abs=1e-6)
    # Same seed, same result; an example without real pairs stays near 0.
    assert np.array_equal(fit_bradley_terry(ia, ib, p, K, seed=5), fit_bradley_terry(ia, ib, p, K, seed=5))
    none = fit_bradley_terry(ia[:1], ib[:1], p[:1], K, np.zeros_like(mask[:1]), seed=0)
    assert np.abs(none).max() < 1e-3


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="probabilities"):
        fit_bradley_terry(A[None], B[None], np.full((1, len(A)), 1.5), K)
    with pytest.raises(ValueError, match="indices"):
        fit_bradley_terry(A[None], B[None], np.full((1, len(A)), 0.5), K - 1)
