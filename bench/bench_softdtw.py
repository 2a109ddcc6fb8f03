"""Soft-DTW divergence, forward + backward, for a batch of 32 pairs of 100-130 frames x 57 values.

Subject: model.learn.softdtw.soft_dtw_divergence (one call for the batch). Baselines, on the same
inputs and in the same run:
  (a) numba: a numba-compiled recursion (forward R, backward E) called per pair and per term,
      three terms a pair, as the paper's code computes the divergence;
  (b) pysdtw's SoftDTW on CPU (lengths as PackedSequences), three calls;
  (c) tslearn's SoftDTWLossPyTorch(normalize=True), which gives the divergence but takes no
      lengths: it gets the padded 130-frame batch (more cells than the others, wrong values for
      the padded pairs; it is timed, not checked).
The gradient is taken with respect to x (the corrected motion); y is the fixed target.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from pysdtw import SoftDTW
from torch.nn.utils.rnn import pack_padded_sequence
from tslearn.metrics import SoftDTWLossPyTorch

from bench import Row, median_seconds
from model.learn.softdtw import soft_dtw_divergence

PAIRS, MIN_FRAMES, MAX_FRAMES, VALUES, GAMMA = 32, 100, 130, 57, 0.01
REPEATS = 5


def make_inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Smooth random motions (a random walk per value), padded: x, y (32, 130, 57), lengths."""
    gen = torch.Generator().manual_seed(seed)
    x_lens = torch.randint(MIN_FRAMES, MAX_FRAMES + 1, (PAIRS,), generator=gen)
    y_lens = torch.randint(MIN_FRAMES, MAX_FRAMES + 1, (PAIRS,), generator=gen)
    walk = torch.randn(2, PAIRS, MAX_FRAMES, VALUES, generator=gen).cumsum(2) * 0.02
    x, y = walk[0].clone(), walk[1].clone()
    for b in range(PAIRS):
        x[b, x_lens[b] :] = 0
        y[b, y_lens[b] :] = 0
    return x, y, x_lens, y_lens


@numba.njit(cache=True)
def _numba_forward(cost: np.ndarray, gamma: float) -> np.ndarray:
    n, m = cost.shape
    r = np.full((n + 2, m + 2), np.inf)
    r[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            r0, r1, r2 = -r[i - 1, j - 1] / gamma, -r[i - 1, j] / gamma, -r[i, j - 1] / gamma
            rmax = max(max(r0, r1), r2)
            rsum = np.exp(r0 - rmax) + np.exp(r1 - rmax) + np.exp(r2 - rmax)
            r[i, j] = cost[i - 1, j - 1] - gamma * (np.log(rsum) + rmax)
    return r


@numba.njit(cache=True)
def _numba_backward(cost: np.ndarray, r: np.ndarray, gamma: float) -> np.ndarray:
    n, m = cost.shape
    d = np.zeros((n + 2, m + 2))
    e = np.zeros((n + 2, m + 2))
    d[1 : n + 1, 1 : m + 1] = cost
    e[n + 1, m + 1] = 1.0
    r[:, m + 1] = -np.inf
    r[n + 1, :] = -np.inf
    r[n + 1, m + 1] = r[n, m]
    for j in range(m, 0, -1):
        for i in range(n, 0, -1):
            a = np.exp((r[i + 1, j] - r[i, j] - d[i + 1, j]) / gamma)
            b = np.exp((r[i, j + 1] - r[i, j] - d[i, j + 1]) / gamma)
            c = np.exp((r[i + 1, j + 1] - r[i, j] - d[i + 1, j + 1]) / gamma)
            e[i, j] = e[i + 1, j] * a + e[i, j + 1] * b + e[i + 1, j + 1] * c
    return e[1 : n + 1, 1 : m + 1]


def _numba_term(a: np.ndarray, b: np.ndarray, grad: bool) -> tuple[float, np.ndarray | None]:
    """sdtw(a, b) and, if asked, E (d sdtw / d cost) for one pair."""
    cost = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    r = _numba_forward(cost, GAMMA)
    value = r[len(a), len(b)]
    return value, (_numba_backward(cost, r, GAMMA) if grad else None)


def numba_divergence(xs: list[np.ndarray], ys: list[np.ndarray]) -> tuple[np.ndarray, list]:
    """Divergence per pair and its gradient w.r.t. each x: three numba recursions a pair."""
    values, grads = np.empty(len(xs)), []
    for k, (x, y) in enumerate(zip(xs, ys, strict=True)):
        xy, e_xy = _numba_term(x, y, grad=True)
        xx, e_xx = _numba_term(x, x, grad=True)
        yy, _ = _numba_term(y, y, grad=False)
        values[k] = xy - (xx + yy) / 2
        g_xy = 2 * (e_xy.sum(1)[:, None] * x - e_xy @ y)
        g_xx = 2 * ((e_xx.sum(1) + e_xx.sum(0))[:, None] * x - (e_xx + e_xx.T) @ x)
        grads.append(g_xy - g_xx / 2)
    return values, grads


def run(threads: int) -> list[Row]:
    torch.set_num_threads(threads)
    numba.set_num_threads(threads)
    x, y, x_lens, y_lens = make_inputs()
    xs = [x[b, : x_lens[b]].double().numpy() for b in range(PAIRS)]
    ys = [y[b, : y_lens[b]].double().numpy() for b in range(PAIRS)]
    pysdtw = SoftDTW(gamma=GAMMA, use_cuda=False)
    tslearn = SoftDTWLossPyTorch(gamma=GAMMA, normalize=True)

    def ours() -> torch.Tensor:
        xg = x.clone().requires_grad_()
        value = soft_dtw_divergence(xg, y, x_lens, y_lens, GAMMA)
        value.sum().backward()
        return value

    def with_pysdtw() -> torch.Tensor:
        xg = x.clone().requires_grad_()
        px = pack_padded_sequence(xg, x_lens, batch_first=True, enforce_sorted=False)
        py = pack_padded_sequence(y, y_lens, batch_first=True, enforce_sorted=False)
        value = pysdtw(px, py) - (pysdtw(px, px) + pysdtw(py, py)) / 2
        value.sum().backward()
        return value

    def with_tslearn() -> torch.Tensor:
        xg = x.clone().requires_grad_()
        value = tslearn(xg, y)
        value.sum().backward()
        return value

    reference, _ = numba_divergence(xs, ys)
    ours_error = float(np.abs(ours().detach().double().numpy() - reference).max())
    pysdtw_error = float(np.abs(with_pysdtw().detach().double().numpy() - reference).max())
    timings = {
        "ours": median_seconds(ours, REPEATS),
        "numba per pair x3": median_seconds(lambda: numba_divergence(xs, ys), REPEATS),
        "pysdtw": median_seconds(with_pysdtw, REPEATS),
        "tslearn": median_seconds(with_tslearn, REPEATS),
    }
    notes = {
        "ours": f"max |ours - numba| {ours_error:.1e} (float32 out)",
        "numba per pair x3": "1 thread, float64; the paper's way",
        "pysdtw": f"numba prange; max |pysdtw - numba| {pysdtw_error:.1e}",
        "tslearn": "numba prange; padded to 130 frames (no lengths)",
    }
    return [
        Row("softdtw divergence fwd+bwd 32x(100-130)x57", name, t, t / timings["ours"], notes[name])
        for name, t in timings.items()
    ]
