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


def test_batched_fit_equals_the_exact_per_example_optimum():
    rng = np.random.default_rng(1)
    s_true = rng.normal(0.0, 1.0, size=(3, K))
    ia, ib, p = batch(s_true)
    s = fit_bradley_terry(ia, ib, p, K, seed=0)
    for e in range(3):
        def loss(x, t=p[e]):
            d = x[A] - x[B]
            return -(t * log_expit(d) + (1 - t) * log_expit(-d)).mean() + 0.01 * (x**2).sum()
        exact = minimize(loss, np.zeros(K), method="BFGS", options={"gtol": 1e-10}).x
        assert s[e] == pytest.approx(exact, abs=1e-4)


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
