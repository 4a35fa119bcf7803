"""Bradley-Terry ratings from pairwise outcomes (ties count as half a win each way), numpy only.

P(a beats b) = sigmoid(r_a - r_b). Fitted by Newton's method on the L2-regularised log-likelihood, which is
convex, so the result is deterministic and does not depend on record order.
"""

from __future__ import annotations

import numpy as np


def sigmoid(x: np.ndarray | float) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def fit_bradley_terry(
    a: np.ndarray, b: np.ndarray, target: np.ndarray, n_models: int, l2: float = 1e-2, iters: int = 50
) -> np.ndarray:
    """Ratings (mean 0) from model indices ``a``/``b`` and ``target`` = 1 (a won), 0.5 (tie), 0 (b won)."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    t = np.asarray(target, dtype=np.float64)
    r = np.zeros(n_models)
    rows = np.arange(len(a))
    x = np.zeros((len(a), n_models))
    x[rows, a] += 1.0
    x[rows, b] -= 1.0
    for _ in range(iters):
        p = sigmoid(x @ r)
        grad = x.T @ (p - t) + l2 * r
        hess = (x * (p * (1 - p))[:, None]).T @ x + l2 * np.eye(n_models)
        step = np.linalg.solve(hess, grad)
        r -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return r - r.mean()


def fit_logistic_offset(
    x: np.ndarray, target: np.ndarray, offset: np.ndarray, l2: float, iters: int = 30
) -> np.ndarray:
    """Weights w minimising the soft-label log-loss of sigmoid(offset + x @ w) plus l2/2·|w|² (Newton)."""
    w = np.zeros(x.shape[1])
    t = np.asarray(target, dtype=np.float64)
    for _ in range(iters):
        p = sigmoid(offset + x @ w)
        grad = x.T @ (p - t) + l2 * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + l2 * np.eye(x.shape[1])
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-9:
            break
    return w
