"""Batched soft-DTW (Cuturi & Blondel 2017) and the soft-DTW divergence, squared Euclidean cost.

    sdtw(x, y) = softmin_gamma over alignments of the summed costs |x_i - y_j|^2
    D(x, y)    = sdtw(x, y) - (sdtw(x, x) + sdtw(y, y)) / 2      (Blondel et al. 2021)

A batch holds pairs of different lengths: x (B, N, D) and y (B, M, D) are padded, and x_lens /
y_lens give each pair's true lengths. R and E are float64 whatever the input dtype (gamma = 0.01
turns float32 rounding of R into visible errors). The backward pass is the analytic E-matrix
recursion (E = d sdtw / d cost), not autograd through the loop; the gradients w.r.t. x and y are
matrix products of E. On CPU the recursion runs in a small C++ kernel (model/softdtw_cpu.py)
when it builds: it sums each cell's cost from the differences, and for float32 inputs takes the
cost, exp and log in float32, whose relative error (~1e-7) reaches R multiplied by gamma.
Elsewhere (CUDA, or no compiler) the cost is a matrix product and the recursion runs in plain
torch along anti-diagonals, vectorised over the batch and the diagonal, all in float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from model.learn import softdtw_cpu

BIG = 1e10
"""Stands for +inf outside the grid: finite, so that the soft-min never computes inf - inf."""


def soft_dtw(
    x: Tensor,
    y: Tensor,
    x_lens: Tensor | Sequence[int] | None = None,
    y_lens: Tensor | Sequence[int] | None = None,
    gamma: float = 0.01,
) -> Tensor:
    """Soft-DTW value of each pair (x[b, :x_lens[b]], y[b, :y_lens[b]]) -> (B,), x's dtype."""
    x_lens, y_lens = _check(x, y, x_lens, y_lens, gamma)
    return _sdtw(x, y, x_lens, y_lens, gamma).to(x.dtype)


def soft_dtw_self(
    x: Tensor, lens: Tensor | Sequence[int] | None = None, gamma: float = 0.01
) -> Tensor:
    """sdtw(x[b, :lens[b]], x[b, :lens[b]]) per sequence -> (B,), x's dtype; the same values as
    soft_dtw(x, x, lens, lens), cheaper: the cost matrix, and so R and E, are symmetric."""
    lens, _ = _check(x, x, lens, lens, gamma)
    return _sdtw_self(x, lens, gamma).to(x.dtype)


def soft_dtw_divergence(
    x: Tensor,
    y: Tensor,
    x_lens: Tensor | Sequence[int] | None = None,
    y_lens: Tensor | Sequence[int] | None = None,
    gamma: float = 0.01,
) -> Tensor:
    """sdtw(x, y) - (sdtw(x, x) + sdtw(y, y)) / 2 per pair -> (B,); zero (to rounding) when x
    equals y.

    A term whose side needs no gradient (sdtw(y, y) for a fixed target) keeps nothing for a
    backward pass.
    """
    x_lens, y_lens = _check(x, y, x_lens, y_lens, gamma)
    xy = _sdtw(x, y, x_lens, y_lens, gamma)
    xx, yy = _sdtw_self(x, x_lens, gamma), _sdtw_self(y, y_lens, gamma)
    return (xy - (xx + yy) / 2).to(x.dtype)


@torch.no_grad()
def pairwise_divergence(
    xs: Sequence[Tensor],
    ys: Sequence[Tensor],
    gamma: float = 0.01,
    batch_size: int = 64,
) -> Tensor:
    """Divergence of every x in xs (T_i, D) to every y in ys (T_j, D) -> (len(xs), len(ys)).

    Each self term sdtw(x, x), sdtw(y, y) is computed once; the cross terms run in batches of
    `batch_size` pairs, sorted by length so that padding stays small. No gradients.
    """
    if not xs or not ys:
        return torch.zeros(len(xs), len(ys), dtype=torch.float64)
    self_x = _batched_sdtw([(a, a) for a in xs], gamma, batch_size)
    self_y = _batched_sdtw([(b, b) for b in ys], gamma, batch_size)
    pairs = [(a, b) for a in xs for b in ys]
    cross = _batched_sdtw(pairs, gamma, batch_size).view(len(xs), len(ys))
    return cross - (self_x[:, None] + self_y[None, :]) / 2


def _sdtw(x: Tensor, y: Tensor, x_lens: Tensor, y_lens: Tensor, gamma: float) -> Tensor:
    """Checked inputs -> (B,) float64: the C++ kernel where it serves, else torch."""
    kernel = softdtw_cpu.load() if x.device.type == "cpu" else None
    if kernel is None:
        return _SoftDTW.apply(squared_distances(x, y), x_lens, y_lens, gamma)
    precise = x.dtype == torch.float64 or y.dtype == torch.float64
    x64, y64 = x.to(torch.float64).contiguous(), y.to(torch.float64).contiguous()
    return _KernelSoftDTW.apply(x64, y64, x_lens, y_lens, gamma, kernel, precise)


def _sdtw_self(x: Tensor, lens: Tensor, gamma: float) -> Tensor:
    """sdtw(x, x) of checked inputs -> (B,) float64."""
    kernel = softdtw_cpu.load() if x.device.type == "cpu" else None
    if kernel is None:
        return _SoftDTW.apply(squared_distances(x, x), lens, lens, gamma)
    x64 = x.to(torch.float64).contiguous()
    return _KernelSelfSoftDTW.apply(x64, lens, gamma, kernel, x.dtype == torch.float64)


def squared_distances(x: Tensor, y: Tensor) -> Tensor:
    """|x_i - y_j|^2 for every frame pair -> (B, N, M) float64 (differentiable)."""
    x64, y64 = x.to(torch.float64), y.to(torch.float64)
    cost = torch.bmm(x64, y64.transpose(1, 2)).mul_(-2)
    cost.add_((x64 * x64).sum(-1).unsqueeze(2)).add_((y64 * y64).sum(-1).unsqueeze(1))
    return cost.clamp_min_(0)


def _batched_sdtw(pairs: list[tuple[Tensor, Tensor]], gamma: float, batch_size: int) -> Tensor:
    """Soft-DTW of a list of unpadded (a, b) pairs, in length-sorted batches -> (len(pairs),)."""
    out = torch.empty(len(pairs), dtype=torch.float64)
    order = sorted(range(len(pairs)), key=lambda k: (len(pairs[k][0]), len(pairs[k][1])))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        a = torch.nn.utils.rnn.pad_sequence([pairs[k][0] for k in chunk], batch_first=True)
        b = torch.nn.utils.rnn.pad_sequence([pairs[k][1] for k in chunk], batch_first=True)
        a_lens = [len(pairs[k][0]) for k in chunk]
        b_lens = [len(pairs[k][1]) for k in chunk]
        out[chunk] = soft_dtw(a, b, a_lens, b_lens, gamma).to(torch.float64).cpu()
    return out


def _check(
    x: Tensor,
    y: Tensor,
    x_lens: Tensor | Sequence[int] | None,
    y_lens: Tensor | Sequence[int] | None,
    gamma: float,
) -> tuple[Tensor, Tensor]:
    """Validate shapes, lengths and gamma; return the lengths as int64 tensors on x's device."""
    if x.dim() != 3 or y.dim() != 3:
        raise ValueError(
            f"soft-DTW: x and y must be (B, T, D); got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    if x.shape[0] != y.shape[0] or x.shape[2] != y.shape[2]:
        raise ValueError(
            f"soft-DTW: x {tuple(x.shape)} and y {tuple(y.shape)} differ in batch or feature size"
        )
    if x.device != y.device:
        raise ValueError(f"soft-DTW: x is on {x.device}, y on {y.device}")
    if not gamma > 0:
        raise ValueError(f"soft-DTW: gamma must be > 0, got {gamma}")
    return _lengths(x_lens, x, "x_lens"), _lengths(y_lens, y, "y_lens")


def _lengths(lens: Tensor | Sequence[int] | None, seq: Tensor, name: str) -> Tensor:
    batch, frames = seq.shape[0], seq.shape[1]
    if lens is None:
        return torch.full((batch,), frames, dtype=torch.int64, device=seq.device)
    out = torch.as_tensor(lens, dtype=torch.int64).to(seq.device).reshape(-1)
    if out.numel() != batch:
        raise ValueError(f"soft-DTW: {name} has {out.numel()} entries for a batch of {batch}")
    if out.numel() and (int(out.min()) < 1 or int(out.max()) > frames):
        raise ValueError(f"soft-DTW: {name} must lie in 1..{frames}, got {out.tolist()}")
    return out


def _skew_index(n: int, m: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Indices between the padded grid (n+1, m+1) and its anti-diagonal layout (n+m+1, n+1).

    Diagonal layout: [d, i] holds grid cell (i, d - i). `to_diag` gathers the grid (flattened)
    into the layout, pointing cells off the grid at (0, 0); `to_grid` gathers the layout back
    into the (n, m) interior.
    """
    d = torch.arange(n + m + 1, device=device)[:, None]
    i = torch.arange(n + 1, device=device)[None, :]
    j = d - i
    on_grid = (j >= 0) & (j <= m)
    to_diag = torch.where(on_grid, i * (m + 1) + j, torch.zeros_like(j))
    gi = torch.arange(1, n + 1, device=device)[:, None]
    gj = torch.arange(1, m + 1, device=device)[None, :]
    to_grid = (gi + gj) * (n + 1) + gi
    return to_diag.reshape(-1), to_grid.reshape(-1)


class _KernelSoftDTW(torch.autograd.Function):
    """Soft-DTW of float64 x (B, N, D), y (B, M, D) on the C++ kernel -> (B,) float64.

    The kernel gives E = d value / d cost; the gradients are then matrix products:
    d/dx_i = 2 (sum_j E_ij x_i - sum_j E_ij y_j), and likewise for y (for float32 inputs the
    product E y runs in float32). R is kept for the backward
    pass only when x or y wants a gradient.
    """

    @staticmethod
    def forward(ctx, x, y, x_lens, y_lens, gamma, kernel, precise):
        keep = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        values, kept = kernel.sdtw_forward(x, y, x_lens, y_lens, gamma, keep, False, precise)
        ctx.save_for_backward(kept, x, y, x_lens, y_lens)
        ctx.gamma, ctx.kernel, ctx.precise = gamma, kernel, precise
        return values

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        kept, x, y, x_lens, y_lens = ctx.saved_tensors
        grad = grad_out.to(torch.float64).contiguous()
        e = ctx.kernel.sdtw_backward(kept, x, y, x_lens, y_lens, grad, ctx.gamma, False,
                                     ctx.precise)
        grad_x = grad_y = None
        if ctx.needs_input_grad[0]:
            grad_x = 2 * (e.sum(2, keepdim=True) * x - _product(e, y, ctx.precise))
        if ctx.needs_input_grad[1]:
            grad_y = 2 * (e.sum(1).unsqueeze(2) * y - _product(e.transpose(1, 2), x, ctx.precise))
        return grad_x, grad_y, None, None, None, None, None


class _KernelSelfSoftDTW(torch.autograd.Function):
    """sdtw(x, x) of float64 x (B, N, D) on the C++ kernel -> (B,) float64.

    The cost is symmetric, and so are R and E: the kernel computes half of each grid, and both
    sides' gradients are equal: d/dx_i = 4 (sum_j E_ij x_i - (E x)_i).
    """

    @staticmethod
    def forward(ctx, x, lens, gamma, kernel, precise):
        keep = ctx.needs_input_grad[0]
        values, kept = kernel.sdtw_forward(x, x, lens, lens, gamma, keep, True, precise)
        ctx.save_for_backward(kept, x, lens)
        ctx.gamma, ctx.kernel, ctx.precise = gamma, kernel, precise
        return values

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        kept, x, lens = ctx.saved_tensors
        grad = grad_out.to(torch.float64).contiguous()
        e = ctx.kernel.sdtw_backward(kept, x, x, lens, lens, grad, ctx.gamma, True, ctx.precise)
        grad = 4 * (e.sum(2, keepdim=True) * x - _product(e, x, ctx.precise))
        return grad, None, None, None, None


def _product(e: Tensor, seq: Tensor, precise: bool) -> Tensor:
    """e @ seq in float64, or (for float32 inputs, whose gradients end in float32) in float32."""
    if precise:
        return torch.bmm(e, seq)
    return torch.bmm(e.to(torch.float32), seq.to(torch.float32)).to(torch.float64)


class _SoftDTW(torch.autograd.Function):
    """Soft-DTW from a cost matrix (B, N, M) float64 with per-pair lengths -> (B,) float64."""

    @staticmethod
    def forward(ctx, cost: Tensor, x_lens: Tensor, y_lens: Tensor, gamma: float) -> Tensor:
        batch, n, m = cost.shape
        to_diag, to_grid = _skew_index(n, m, cost.device)
        grid = torch.full((batch, n + 1, m + 1), BIG, dtype=torch.float64, device=cost.device)
        grid[:, 1:, 1:] = cost
        diag_cost = grid.reshape(batch, -1)[:, to_diag].view(batch, n + m + 1, n + 1)
        r = _forward_diagonals(diag_cost, gamma)
        ctx.save_for_backward(diag_cost, r, x_lens, y_lens, to_grid)
        ctx.gamma, ctx.shape = gamma, (n, m)
        return r[torch.arange(batch, device=cost.device), x_lens + y_lens, x_lens]

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        diag_cost, r, x_lens, y_lens, to_grid = ctx.saved_tensors
        n, m = ctx.shape
        grad_out = grad_out.to(torch.float64)
        e = _backward_diagonals(diag_cost, r, x_lens, y_lens, grad_out, ctx.gamma)
        grad = e[:, : n + m + 1, : n + 1].reshape(e.shape[0], -1)[:, to_grid]
        return grad.view(-1, n, m), None, None, None


def _forward_diagonals(diag_cost: Tensor, gamma: float) -> Tensor:
    """R by anti-diagonals: R[d, i] = cost[d, i] + softmin(R[d-2, i-1], R[d-1, i-1], R[d-1, i])."""
    r = torch.full_like(diag_cost, BIG)
    r[:, 0, 0] = 0.0
    for d in range(2, diag_cost.shape[1]):
        r[:, d, 1:] = diag_cost[:, d, 1:] + _softmin(
            r[:, d - 2, :-1], r[:, d - 1, :-1], r[:, d - 1, 1:], gamma
        )
    return r


def _softmin(a: Tensor, b: Tensor, c: Tensor, gamma: float) -> Tensor:
    """-gamma log(e^(-a/gamma) + e^(-b/gamma) + e^(-c/gamma)), with the min factored out."""
    low = torch.minimum(torch.minimum(a, b), c)
    total = ((low - a) / gamma).exp_() + ((low - b) / gamma).exp_() + ((low - c) / gamma).exp_()
    return low - gamma * total.log_()


def _backward_diagonals(
    diag_cost: Tensor, r: Tensor, x_lens: Tensor, y_lens: Tensor, grad_out: Tensor, gamma: float
) -> Tensor:
    """E = dR_end/dR[d, i] scaled by grad_out, along anti-diagonals from the end back.

    Each step weight is the soft-min probability with which a cell chose its predecessor,
    exp((R[cell] - cost[cell] - R[pred]) / gamma); they are computed for the whole layout at once,
    so that the loop only multiplies and adds.
    """
    batch, diags, width = r.shape
    inside = diag_cost < BIG / 2
    base = r - diag_cost
    w_diag = torch.zeros(batch, diags + 2, width + 1, dtype=r.dtype, device=r.device)
    w_up, w_left = torch.zeros_like(w_diag), torch.zeros_like(w_diag)
    w_diag[:, 2:diags, 1:width] = _weight(base[:, 2:, 1:], r[:, :-2, :-1], inside[:, 2:, 1:], gamma)
    w_up[:, 1:diags, 1:width] = _weight(base[:, 1:, 1:], r[:, :-1, :-1], inside[:, 1:, 1:], gamma)
    w_left[:, 1:diags, 1:width] = _weight(base[:, 1:, 1:], r[:, :-1, 1:], inside[:, 1:, 1:], gamma)
    e = torch.zeros_like(w_diag)
    rows = torch.arange(batch, device=r.device)
    e[rows, x_lens + y_lens, x_lens] = grad_out
    for d in range(diags - 1, 0, -1):
        cur = e[:, d, :width]
        cur.addcmul_(e[:, d + 1, 1:], w_up[:, d + 1, 1:])
        cur.addcmul_(e[:, d + 1, :width], w_left[:, d + 1, :width])
        cur.addcmul_(e[:, d + 2, 1:], w_diag[:, d + 2, 1:])
    return e


def _weight(base: Tensor, pred: Tensor, inside: Tensor, gamma: float) -> Tensor:
    return torch.where(inside, ((base - pred) / gamma).exp(), torch.zeros_like(base))
