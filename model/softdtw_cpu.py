"""The CPU kernel of the soft-DTW recursion: C++ built once with torch.utils.cpp_extension.

Pairs are taken eight at a time and run in lockstep, one SIMD lane each, so that the cost, the
recursion's exp and log, and the gradients w.r.t. x and y vectorise; groups of eight run in
parallel on torch's intra-op threads. The forward pass keeps R (one grid a pair, and only for
pairs whose gradient will be asked for); the backward E-matrix recursion recomputes each step's
soft-min probability from R and the cost, which costs three exps a cell but writes and reads a
third of the memory that stored probabilities would (on a loaded machine, fresh memory is what
costs most).
The build is cached in torch's extension folder ($TORCH_EXTENSIONS_DIR, default
~/.cache/torch_extensions) under a name that hashes the source, flags and machine; where it
cannot be built, `load()` returns None and model.softdtw runs its pure-torch recursion instead.
"""

from __future__ import annotations

import hashlib
import platform
import warnings
from functools import cache
from types import ModuleType

LANES = 8

SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cstdint>
#include <vector>

constexpr int64_t L = LANES_VALUE;
constexpr double BIG = 1e10;

// exp(x) for x <= 0: 2^k e^r with |r| <= ln2 / 2, degree-12 Taylor polynomial (< 1 ulp error).
static inline double exp_neg(double x) {
    x = std::max(x, -700.0);
    const double shifter = 6755399441055744.0;  // 1.5 * 2^52: rounds to an integer in the low bits
    double kd = x * 1.4426950408889634 + shifter;
    const int64_t kbits = __builtin_bit_cast(int64_t, kd);
    kd -= shifter;
    double r = x - kd * 0.6931471805599453 - kd * 2.3190468138462996e-17;
    double p = 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    int64_t scale_bits = (kbits - 0x4338000000000000LL + 1023) << 52;
    return p * __builtin_bit_cast(double, scale_bits);
}

// log(t) for t in [1, 3]: t = 2^e f with f in [0.75, 1.5], log f = 2 atanh(s), s = (f-1)/(f+1).
static inline double log_1_3(double t) {
    const double high = t > 1.5 ? 1.0 : 0.0;  // arithmetic, not a branch: it vectorises
    const double f = t * (1.0 - 0.5 * high);
    const double s = (f - 1.0) / (f + 1.0);
    const double s2 = s * s;
    double p = 1.0 / 23.0;
    p = p * s2 + 1.0 / 21.0;
    p = p * s2 + 1.0 / 19.0;
    p = p * s2 + 1.0 / 17.0;
    p = p * s2 + 1.0 / 15.0;
    p = p * s2 + 1.0 / 13.0;
    p = p * s2 + 1.0 / 11.0;
    p = p * s2 + 1.0 / 9.0;
    p = p * s2 + 1.0 / 7.0;
    p = p * s2 + 1.0 / 5.0;
    p = p * s2 + 1.0 / 3.0;
    p = p * s2 + 1.0;
    return 2.0 * s * p + high * 0.6931471805599453;
}

// Copies pair blk*L + l of seq (B, T, D) into lanes: out[(t * D + k) * L + l], zero past B.
static void to_lanes(const double* seq, int64_t B, int64_t T, int64_t D, int64_t blk,
                     std::vector<double>& out) {
    for (int64_t t = 0; t < T; ++t)
        for (int64_t k = 0; k < D; ++k)
            for (int64_t l = 0; l < L; ++l) {
                const int64_t b = blk * L + l;
                out[(t * D + k) * L + l] = b < B ? seq[(b * T + t) * D + k] : 0.0;
            }
}

// The lane cost |x_i - y_j|^2 of cells i <= nb, j <= mb into lane_cost ((N+2)(M+2) cells x L);
// every other cell is zero.
static void block_cost(const std::vector<double>& xs, const std::vector<double>& ys, int64_t D,
                       int64_t W, int64_t nb, int64_t mb, std::vector<double>& lane_cost) {
    std::fill(lane_cost.begin(), lane_cost.end(), 0.0);
    for (int64_t i = 1; i <= nb; ++i)
        for (int64_t j = 1; j <= mb; ++j) {
            double* c = &lane_cost[(i * W + j) * L];
            for (int64_t k = 0; k < D; ++k) {
                const double* xi = &xs[((i - 1) * D + k) * L];
                const double* yj = &ys[((j - 1) * D + k) * L];
#pragma omp simd
                for (int64_t l = 0; l < L; ++l) {
                    const double diff = xi[l] - yj[l];
                    c[l] += diff * diff;
                }
            }
        }
}

// Whether any pair of block blk has its flag set.
static bool any_lane(const bool* flag, int64_t B, int64_t blk) {
    for (int64_t l = 0; l < L && blk * L + l < B; ++l)
        if (flag[blk * L + l]) return true;
    return false;
}

// Lengths (0 past the batch) and the largest of them, for block blk.
static void block_lengths(const int64_t* nl, const int64_t* ml, int64_t B, int64_t blk,
                          int64_t* lane_n, int64_t* lane_m, int64_t& nb, int64_t& mb) {
    nb = 1;
    mb = 1;
    for (int64_t l = 0; l < L; ++l) {
        const int64_t b = blk * L + l;
        lane_n[l] = b < B ? nl[b] : 0;
        lane_m[l] = b < B ? ml[b] : 0;
        nb = std::max(nb, lane_n[l]);
        mb = std::max(mb, lane_m[l]);
    }
}

// gx (and with Y, gy) of a block from E: d cost_ij / d x_i = 2 (x_i - y_j) = -d cost_ij / d y_j.
template <bool Y>
static void accumulate(const std::vector<double>& E, const std::vector<double>& xs,
                       const std::vector<double>& ys, int64_t D, int64_t W, int64_t nb,
                       int64_t mb, std::vector<double>& gx, std::vector<double>& gy) {
    std::fill(gx.begin(), gx.end(), 0.0);
    if (Y) std::fill(gy.begin(), gy.end(), 0.0);
    for (int64_t i = 1; i <= nb; ++i)
        for (int64_t j = 1; j <= mb; ++j) {
            const double* e = &E[(i * W + j) * L];
            for (int64_t k = 0; k < D; ++k) {
                const int64_t xi = ((i - 1) * D + k) * L, yj = ((j - 1) * D + k) * L;
#pragma omp simd
                for (int64_t l = 0; l < L; ++l) {
                    const double term = 2.0 * e[l] * (xs[xi + l] - ys[yj + l]);
                    gx[xi + l] += term;
                    if (Y) gy[yj + l] -= term;
                }
            }
        }
}

// x (B, N, D), y (B, M, D) float64, lengths (B,) int64, keep (B,) bool -> values (B,) and
// R (blocks, (N+2)(M+2), L) for the backward pass, written only for blocks holding a pair to
// keep (cells past a block's lengths hold BIG; the other blocks are never touched).
std::vector<at::Tensor> sdtw_forward(at::Tensor x, at::Tensor y, at::Tensor n_len,
                                     at::Tensor m_len, double gamma, at::Tensor keep) {
    const int64_t B = x.size(0), N = x.size(1), M = y.size(1), D = x.size(2);
    const int64_t blocks = (B + L - 1) / L, W = M + 2, cells = (N + 2) * (M + 2);
    auto values = at::zeros({B}, x.options());
    const bool* keep_pair = keep.data_ptr<bool>();
    const bool keep_any = keep.any().item<bool>();
    auto kept = at::empty({keep_any ? blocks : 0, cells, L}, x.options());
    const double* X = x.data_ptr<double>();
    const double* Y = y.data_ptr<double>();
    const int64_t* nl = n_len.data_ptr<int64_t>();
    const int64_t* ml = m_len.data_ptr<int64_t>();
    double* out = values.data_ptr<double>();
    double* K = kept.data_ptr<double>();
    const double inv_gamma = 1.0 / gamma;
    at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
        std::vector<double> R(cells * L), lane_cost(cells * L), xs(N * D * L), ys(M * D * L);
        int64_t lane_n[L], lane_m[L];
        for (int64_t blk = begin; blk < end; ++blk) {
            int64_t nb, mb;
            block_lengths(nl, ml, B, blk, lane_n, lane_m, nb, mb);
            to_lanes(X, B, N, D, blk, xs);
            to_lanes(Y, B, M, D, blk, ys);
            block_cost(xs, ys, D, W, nb, mb, lane_cost);
            std::fill(R.begin(), R.end(), BIG);
            for (int64_t l = 0; l < L; ++l) R[l] = 0.0;
            for (int64_t i = 1; i <= nb; ++i) {
                for (int64_t j = 1; j <= mb; ++j) {
                    const int64_t c = (i * W + j) * L, cd = ((i - 1) * W + j - 1) * L,
                                  cu = ((i - 1) * W + j) * L, cl = (i * W + j - 1) * L;
#pragma omp simd
                    for (int64_t l = 0; l < L; ++l) {
                        const double a = R[cd + l], u = R[cu + l], s = R[cl + l];
                        const double low = std::min(std::min(a, u), s);
                        const double total = exp_neg((low - a) * inv_gamma)
                                             + exp_neg((low - u) * inv_gamma)
                                             + exp_neg((low - s) * inv_gamma);
                        R[c + l] = lane_cost[c + l] + low - gamma * log_1_3(total);
                    }
                }
            }
            for (int64_t l = 0; l < L && blk * L + l < B; ++l) {
                const int64_t b = blk * L + l;
                out[b] = R[(nl[b] * W + ml[b]) * L + l];
            }
            if (any_lane(keep_pair, B, blk)) std::copy(R.begin(), R.end(), K + blk * cells * L);
        }
    });
    return {values, kept};
}

// R from sdtw_forward, grad (B,), need_x / need_y (B,) bool -> gradients w.r.t. x (B, N, D) and
// y (B, M, D), computed for the pairs that need them (zero elsewhere): E = d value / d cost by
// the backward recursion, each step weight exp((R[next] - cost[next] - R[cell]) / gamma)
// recomputed from R and the cost.
std::vector<at::Tensor> sdtw_backward(at::Tensor kept, at::Tensor x, at::Tensor y,
                                      at::Tensor n_len, at::Tensor m_len, at::Tensor grad,
                                      double gamma, at::Tensor need_x, at::Tensor need_y) {
    const int64_t B = x.size(0), N = x.size(1), M = y.size(1), D = x.size(2);
    const int64_t blocks = kept.size(0), W = M + 2, cells = (N + 2) * (M + 2);
    auto grad_x = at::zeros({B, N, D}, x.options());
    auto grad_y = at::zeros({B, M, D}, x.options());
    const bool* nx = need_x.data_ptr<bool>();
    const bool* ny = need_y.data_ptr<bool>();
    const double* X = x.data_ptr<double>();
    const double* Y = y.data_ptr<double>();
    double* GX = grad_x.data_ptr<double>();
    double* GY = grad_y.data_ptr<double>();
    const double* K = kept.data_ptr<double>();
    const int64_t* nl = n_len.data_ptr<int64_t>();
    const int64_t* ml = m_len.data_ptr<int64_t>();
    const double* g = grad.data_ptr<double>();
    const double inv_gamma = 1.0 / gamma;
    at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
        std::vector<double> E(cells * L), lane_cost(cells * L), xs(N * D * L), ys(M * D * L),
            gx(N * D * L), gy(M * D * L);
        int64_t lane_n[L], lane_m[L];
        double lane_g[L];
        for (int64_t blk = begin; blk < end; ++blk) {
            const bool block_x = any_lane(nx, B, blk), block_y = any_lane(ny, B, blk);
            if (!block_x && !block_y) continue;
            int64_t nb, mb;
            block_lengths(nl, ml, B, blk, lane_n, lane_m, nb, mb);
            for (int64_t l = 0; l < L; ++l) lane_g[l] = blk * L + l < B ? g[blk * L + l] : 0.0;
            to_lanes(X, B, N, D, blk, xs);
            to_lanes(Y, B, M, D, blk, ys);
            block_cost(xs, ys, D, W, nb, mb, lane_cost);
            const double* R = K + blk * cells * L;
            std::fill(E.begin(), E.end(), 0.0);
            for (int64_t i = nb; i >= 1; --i) {
                for (int64_t j = mb; j >= 1; --j) {
                    const int64_t c = (i * W + j) * L, cd = ((i + 1) * W + j + 1) * L,
                                  cu = ((i + 1) * W + j) * L, cl = (i * W + j + 1) * L;
#pragma omp simd
                    for (int64_t l = 0; l < L; ++l) {
                        const double seed = (lane_n[l] == i && lane_m[l] == j) ? lane_g[l] : 0.0;
                        const double r = R[c + l];
                        const double wu = exp_neg(
                            std::min(0.0, (R[cu + l] - lane_cost[cu + l] - r) * inv_gamma));
                        const double wl = exp_neg(
                            std::min(0.0, (R[cl + l] - lane_cost[cl + l] - r) * inv_gamma));
                        const double wd = exp_neg(
                            std::min(0.0, (R[cd + l] - lane_cost[cd + l] - r) * inv_gamma));
                        E[c + l] = seed + E[cu + l] * wu + E[cl + l] * wl + E[cd + l] * wd;
                    }
                }
            }
            if (block_y)
                accumulate<true>(E, xs, ys, D, W, nb, mb, gx, gy);
            else
                accumulate<false>(E, xs, ys, D, W, nb, mb, gx, gy);
            for (int64_t l = 0; l < L && blk * L + l < B; ++l) {
                const int64_t b = blk * L + l;
                if (nx[b])
                    for (int64_t t = 0; t < lane_n[l]; ++t)
                        for (int64_t k = 0; k < D; ++k)
                            GX[(b * N + t) * D + k] = gx[(t * D + k) * L + l];
                if (ny[b])
                    for (int64_t t = 0; t < lane_m[l]; ++t)
                        for (int64_t k = 0; k < D; ++k)
                            GY[(b * M + t) * D + k] = gy[(t * D + k) * L + l];
            }
        }
    });
    return {grad_x, grad_y};
}
""".replace("LANES_VALUE", str(LANES))

FLAGS = ["-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math"]


@cache
def load() -> ModuleType | None:
    """Build (first call on a machine, about a minute) or load the kernel; None if that fails."""
    from torch.utils.cpp_extension import load_inline

    digest = hashlib.sha256((SOURCE + " ".join(FLAGS) + platform.machine()).encode()).hexdigest()
    try:
        return load_inline(
            name=f"posecoach_softdtw_{digest[:12]}",
            cpp_sources=[SOURCE],
            functions=["sdtw_forward", "sdtw_backward"],
            extra_cflags=FLAGS,
            verbose=False,
        )
    except (RuntimeError, OSError, ImportError) as exc:
        warnings.warn(f"soft-DTW: C++ kernel unavailable ({exc}); using pure torch", stacklevel=2)
        return None
