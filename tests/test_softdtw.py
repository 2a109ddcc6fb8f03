"""Soft-DTW against a plain per-pair numpy recursion: values, gradients, lengths, dtypes, backends.

Tolerances: the cost matrix and the recursion run in float64 whatever the input dtype, so
float64 inputs match the reference to ~1e-9 and float32 inputs only differ by the final rounding
to float32 (relative ~1e-6). A float32 recursion would not: at gamma = 0.01 every soft-min
divides by gamma, so float32 rounding of R (~1e-7 x |R|) grows to errors of ~1e-3 and beyond.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from model.learn import softdtw
from model.learn.softdtw import pairwise_divergence, soft_dtw, soft_dtw_divergence, soft_dtw_self
from model.learn.softdtw_cpu import build_lock

GAMMA = 0.01
TOL = {torch.float64: dict(rtol=1e-9, atol=1e-9), torch.float32: dict(rtol=2e-6, atol=2e-5)}


def reference(x: np.ndarray, y: np.ndarray, gamma: float) -> tuple[float, np.ndarray, np.ndarray]:
    """sdtw(x, y) and its gradients w.r.t. x and y, float64, by the textbook R and E recursions."""
    n, m = len(x), len(y)
    cost = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    r = np.full((n + 2, m + 2), np.inf)
    r[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            prev = np.array([r[i - 1, j - 1], r[i - 1, j], r[i, j - 1]])
            low = prev.min()
            r[i, j] = cost[i - 1, j - 1] + low - gamma * np.log(np.exp(-(prev - low) / gamma).sum())
    c = np.zeros((n + 2, m + 2))
    c[1 : n + 1, 1 : m + 1] = cost
    e = np.zeros((n + 2, m + 2))
    e[n + 1, m + 1] = 1.0
    r[n + 1, :] = -np.inf
    r[:, m + 1] = -np.inf
    r[n + 1, m + 1] = r[n, m]
    for i in range(n, 0, -1):
        for j in range(m, 0, -1):
            e[i, j] = sum(
                e[a, b] * np.exp((r[a, b] - r[i, j] - c[a, b]) / gamma)
                for a, b in ((i + 1, j), (i, j + 1), (i + 1, j + 1))
            )
    grad_cost = e[1 : n + 1, 1 : m + 1]
    grad_x = 2 * (grad_cost.sum(1)[:, None] * x - grad_cost @ y)
    grad_y = 2 * (grad_cost.sum(0)[:, None] * y - grad_cost.T @ x)
    return float(r[n, m]), grad_x, grad_y


def batch(seed: int, n: int = 14, m: int = 11, dim: int = 5, pairs: int = 4):
    """Smooth random motions padded with garbage (which must not matter), unequal lengths."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(pairs, n, dim)).cumsum(1) * 0.1
    y = rng.normal(size=(pairs, m, dim)).cumsum(1) * 0.1
    x_lens = rng.integers(3, n + 1, pairs)
    y_lens = rng.integers(3, m + 1, pairs)
    x_lens[0], y_lens[0] = n, m
    for b in range(pairs):
        x[b, x_lens[b] :] = 7.0
        y[b, y_lens[b] :] = -3.0
    return x, y, x_lens, y_lens


@pytest.fixture(params=["kernel", "torch"])
def backend(request, monkeypatch) -> str:
    """Run each test on the C++ kernel and on the pure-torch recursion."""
    if request.param == "torch":
        monkeypatch.setattr(softdtw.softdtw_cpu, "load", lambda: None)
    elif softdtw.softdtw_cpu.load() is None:
        pytest.skip("C++ kernel could not be built here")
    return request.param


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_values_and_gradients_match_reference(backend: str, dtype: torch.dtype) -> None:
    x, y, x_lens, y_lens = batch(seed=1)
    x, y = x.astype(np.float32).astype(np.float64), y.astype(np.float32).astype(np.float64)
    xt = torch.tensor(x, dtype=dtype, requires_grad=True)
    yt = torch.tensor(y, dtype=dtype, requires_grad=True)
    weights = torch.tensor([1.0, -0.5, 2.0, 0.25], dtype=dtype)
    values = soft_dtw(xt, yt, x_lens, y_lens, GAMMA)
    (values * weights).sum().backward()
    assert values.dtype == dtype and xt.grad.dtype == dtype
    for b in range(len(x)):
        n, m = x_lens[b], y_lens[b]
        value, grad_x, grad_y = reference(x[b, :n], y[b, :m], GAMMA)
        torch.testing.assert_close(values[b].item(), value, **TOL[dtype])
        w = weights[b].item()
        got_x, got_y = xt.grad[b].double().numpy(), yt.grad[b].double().numpy()
        np.testing.assert_allclose(got_x[:n], w * grad_x, **TOL[dtype])
        np.testing.assert_allclose(got_y[:m], w * grad_y, **TOL[dtype])
        assert not got_x[n:].any() and not got_y[m:].any(), "padding must get no gradient"


def test_divergence_matches_reference_terms(backend: str) -> None:
    x, y, x_lens, y_lens = batch(seed=2, n=9, m=13)
    got = soft_dtw_divergence(torch.tensor(x), torch.tensor(y), x_lens, y_lens, GAMMA)
    for b in range(len(x)):
        xb, yb = x[b, : x_lens[b]], y[b, : y_lens[b]]
        expected = reference(xb, yb, GAMMA)[0] - (
            reference(xb, xb, GAMMA)[0] + reference(yb, yb, GAMMA)[0]
        ) / 2
        assert got[b].item() == pytest.approx(expected, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("y_needs_grad", [False, True])
def test_divergence_gradients_match_reference_terms(backend: str, y_needs_grad: bool) -> None:
    x, y, x_lens, y_lens = batch(seed=6, n=10, m=8)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.tensor(y, requires_grad=y_needs_grad)
    soft_dtw_divergence(xt, yt, x_lens, y_lens, GAMMA).sum().backward()
    assert (yt.grad is not None) == y_needs_grad
    for b in range(len(x)):
        n, m = x_lens[b], y_lens[b]
        xb, yb = x[b, :n], y[b, :m]
        _, gx_xy, gy_xy = reference(xb, yb, GAMMA)
        _, gx_xx, gy_xx = reference(xb, xb, GAMMA)
        _, gx_yy, gy_yy = reference(yb, yb, GAMMA)
        np.testing.assert_allclose(xt.grad[b, :n].numpy(), gx_xy - (gx_xx + gy_xx) / 2,
                                   **TOL[torch.float64])
        assert not xt.grad[b, n:].any()
        if y_needs_grad:
            np.testing.assert_allclose(yt.grad[b, :m].numpy(), gy_xy - (gx_yy + gy_yy) / 2,
                                       **TOL[torch.float64])


def test_a_sequence_against_itself_at_other_lengths_gets_both_sides_gradients(backend) -> None:
    x, _, x_lens, _ = batch(seed=7, n=9, m=9)
    xt = torch.tensor(x, requires_grad=True)
    other = np.maximum(x_lens - 2, 3)
    soft_dtw(xt, xt, x_lens, other, GAMMA).sum().backward()
    for b in range(len(x)):
        _, grad_x, grad_y = reference(x[b, : x_lens[b]], x[b, : other[b]], GAMMA)
        expected = np.zeros_like(x[b])
        expected[: x_lens[b]] += grad_x
        expected[: other[b]] += grad_y
        np.testing.assert_allclose(xt.grad[b].numpy(), expected, **TOL[torch.float64])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_self_terms_match_reference(backend: str, dtype: torch.dtype) -> None:
    x, _, x_lens, _ = batch(seed=5, n=13)
    x = x.astype(np.float32).astype(np.float64)
    xt = torch.tensor(x, dtype=dtype, requires_grad=True)
    weights = torch.tensor([1.0, -0.5, 2.0, 0.25], dtype=dtype)
    values = soft_dtw_self(xt, x_lens, GAMMA)
    (values * weights).sum().backward()
    for b in range(len(x)):
        n = x_lens[b]
        value, grad_x, grad_y = reference(x[b, :n], x[b, :n], GAMMA)
        torch.testing.assert_close(values[b].item(), value, **TOL[dtype])
        got = xt.grad[b].double().numpy()
        np.testing.assert_allclose(got[:n], weights[b].item() * (grad_x + grad_y), **TOL[dtype])
        assert not got[n:].any(), "padding must get no gradient"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_divergence_is_zero_on_itself_symmetric_and_positive(backend: str, dtype) -> None:
    x, y, x_lens, y_lens = batch(seed=3, n=12, m=12)
    xt, yt = torch.tensor(x, dtype=dtype), torch.tensor(y, dtype=dtype)
    itself = soft_dtw_divergence(xt, xt, x_lens, x_lens)
    rounding = {torch.float64: 1e-12, torch.float32: 1e-7}[dtype]  # float32: cost and exp in float
    torch.testing.assert_close(itself, torch.zeros(4, dtype=dtype), rtol=0, atol=rounding)
    forward = soft_dtw_divergence(xt, yt, x_lens, y_lens)
    backward = soft_dtw_divergence(yt, xt, y_lens, x_lens)
    torch.testing.assert_close(forward, backward, **TOL[dtype])
    assert (forward > 0).all()


def test_divergence_gradient_vanishes_at_the_target(backend: str) -> None:
    x, _, x_lens, _ = batch(seed=4)
    xt = torch.tensor(x, requires_grad=True)
    soft_dtw_divergence(xt, torch.tensor(x), x_lens, x_lens).sum().backward()
    assert xt.grad.abs().max().item() < 1e-9


def test_pairwise_divergence_matches_pair_by_pair(backend: str) -> None:
    rng = np.random.default_rng(5)
    xs = [torch.tensor(rng.normal(size=(t, 4)).cumsum(0) * 0.1) for t in (6, 9, 4)]
    ys = [torch.tensor(rng.normal(size=(t, 4)).cumsum(0) * 0.1) for t in (8, 5)]
    table = pairwise_divergence(xs, ys, GAMMA, batch_size=2)
    assert table.shape == (3, 2)
    for i, a in enumerate(xs):
        for j, b in enumerate(ys):
            one = soft_dtw_divergence(a[None], b[None], gamma=GAMMA)[0]
            assert table[i, j].item() == pytest.approx(one.item(), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("threads", [1, 2])
def test_many_blocks_of_pairs_match_reference_on_each_thread_count(threads: int) -> None:
    """37 pairs: five blocks of lanes of different sizes, shared out among the threads."""
    if softdtw.softdtw_cpu.load() is None:
        pytest.skip("C++ kernel could not be built here")
    x, y, x_lens, y_lens = batch(seed=8, n=16, m=12, dim=3, pairs=37)
    xt = torch.tensor(x, requires_grad=True)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        values = soft_dtw_divergence(xt, torch.tensor(y), x_lens, y_lens, GAMMA)
        values.sum().backward()
    finally:
        torch.set_num_threads(before)
    for b in range(len(x)):
        n, m = x_lens[b], y_lens[b]
        xy, grad_xy, _ = reference(x[b, :n], y[b, :m], GAMMA)
        xx, grad_xx, grad_xx_other = reference(x[b, :n], x[b, :n], GAMMA)
        yy, _, _ = reference(y[b, :m], y[b, :m], GAMMA)
        assert values[b].item() == pytest.approx(xy - (xx + yy) / 2, rel=1e-9, abs=1e-9)
        expected = grad_xy - (grad_xx + grad_xx_other) / 2
        np.testing.assert_allclose(xt.grad[b, :n].numpy(), expected, rtol=1e-9, atol=1e-9)


def test_bad_inputs_are_refused_with_the_argument_named() -> None:
    x = torch.zeros(2, 5, 3)
    with pytest.raises(ValueError, match="x_lens must lie in 1..5"):
        soft_dtw(x, x, x_lens=[5, 6])
    with pytest.raises(ValueError, match="y_lens has 1 entries for a batch of 2"):
        soft_dtw(x, x, y_lens=[5])
    with pytest.raises(ValueError, match="differ in batch or feature size"):
        soft_dtw(x, torch.zeros(2, 5, 4))
    with pytest.raises(ValueError, match="gamma must be > 0"):
        soft_dtw_divergence(x, x, gamma=0.0)
    with pytest.raises(ValueError, match=r"must be \(B, T, D\)"):
        soft_dtw(x[0], x[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cuda_matches_cpu(dtype: torch.dtype) -> None:
    x, y, x_lens, y_lens = batch(seed=6)
    grads = []
    for device in ("cpu", "cuda"):
        xt = torch.tensor(x, dtype=dtype, device=device, requires_grad=True)
        yt = torch.tensor(y, dtype=dtype, device=device)
        value = soft_dtw_divergence(xt, yt, x_lens, y_lens, GAMMA)
        value.sum().backward()
        grads.append((value.detach().cpu(), xt.grad.cpu()))
    torch.testing.assert_close(grads[0][0], grads[1][0], **TOL[dtype])
    torch.testing.assert_close(grads[0][1], grads[1][1], **TOL[dtype])


def test_a_killed_builds_lock_is_cleared_and_a_live_build_is_waited_for(tmp_path):
    folder = tmp_path / "posecoach_softdtw_x"
    folder.mkdir()
    (folder / "lock").touch()  # torch's lock, left by a build that was killed
    with build_lock(folder):
        assert not (folder / "lock").exists()
        (folder / "lock").touch()  # this build's own lock: another process must wait for it
        entered = threading.Event()

        def second() -> None:
            with build_lock(folder):
                entered.set()

        other = threading.Thread(target=second, daemon=True)
        other.start()
        assert not entered.wait(0.5)
        assert (folder / "lock").exists()
        (folder / "lock").unlink()
    assert entered.wait(10)
    other.join(10)
