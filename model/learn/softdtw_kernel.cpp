// The soft-DTW recursion on CPU, built by model/learn/softdtw_cpu.py (torch.utils.cpp_extension).
// POSECOACH_LANES and POSECOACH_STRIP come from the build flags.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

constexpr int64_t L = POSECOACH_LANES;  // pairs a block, one SIMD lane each
constexpr int64_t S = POSECOACH_STRIP;  // rows a strip: cells on one anti-diagonal run interleaved
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

// exp(x) for x <= 0 at float precision: the same reduction, a degree-7 polynomial.
static inline float exp_neg(float x) {
    x = std::max(x, -87.0f);
    const float shifter = 12582912.0f;  // 1.5 * 2^23
    float kf = x * 1.44269504f + shifter;
    const int32_t kbits = __builtin_bit_cast(int32_t, kf);
    kf -= shifter;
    const float r = x - kf * 0.693145751953125f - kf * 1.428606765330187e-6f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int32_t scale_bits = (kbits - 0x4B400000 + 127) << 23;
    return p * __builtin_bit_cast(float, scale_bits);
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

// log(t) for t in [1, 3] at float precision: the same series, to s^10.
static inline float log_1_3(float t) {
    const float high = t > 1.5f ? 1.0f : 0.0f;
    const float f = t * (1.0f - 0.5f * high);
    const float s = (f - 1.0f) / (f + 1.0f);
    const float s2 = s * s;
    float p = 1.0f / 11.0f;
    p = p * s2 + 1.0f / 9.0f;
    p = p * s2 + 1.0f / 7.0f;
    p = p * s2 + 1.0f / 5.0f;
    p = p * s2 + 1.0f / 3.0f;
    p = p * s2 + 1.0f;
    return 2.0f * s * p + high * 0.693147181f;
}

// The pairs sorted by their lengths, so that a block's pairs have similar grids: block blk
// holds pairs order[blk * L + l].
static std::vector<int64_t> by_size(const int64_t* nl, const int64_t* ml, int64_t B) {
    std::vector<int64_t> order(B);
    for (int64_t b = 0; b < B; ++b) order[b] = b;
    std::stable_sort(order.begin(), order.end(), [&](int64_t p, int64_t q) {
        return nl[p] != nl[q] ? nl[p] < nl[q] : ml[p] < ml[q];
    });
    return order;
}

// Block blk's pairs (-1 past the batch), their lengths (0 there) and the largest lengths.
static void block_pairs(const std::vector<int64_t>& order, const int64_t* nl, const int64_t* ml,
                        int64_t blk, int64_t* pair, int64_t* lane_n, int64_t* lane_m,
                        int64_t& nb, int64_t& mb) {
    const int64_t B = order.size();
    nb = 1;
    mb = 1;
    for (int64_t l = 0; l < L; ++l) {
        pair[l] = blk * L + l < B ? order[blk * L + l] : -1;
        lane_n[l] = pair[l] >= 0 ? nl[pair[l]] : 0;
        lane_m[l] = pair[l] >= 0 ? ml[pair[l]] : 0;
        nb = std::max(nb, lane_n[l]);
        mb = std::max(mb, lane_m[l]);
    }
}

// Blocks are shared out as torch's threads ask for them, the largest (the last, pairs being
// sorted by length) first, so that no thread is left with the two largest.
static int64_t workers(int64_t blocks) {
    return std::max<int64_t>(1, std::min<int64_t>(blocks, at::get_num_threads()));
}

static int64_t next_block(std::atomic<int64_t>& taken, int64_t blocks) {
    const int64_t k = taken.fetch_add(1);
    return k < blocks ? blocks - 1 - k : -1;
}

// Copies each lane's pair of seq (B, T, D) into lanes, as F: out[(t D + k) L + l]; zero for
// lanes past the batch. out has room for J more frames, left zero, which the cost tiles read.
template <typename F>
static void to_lanes(const double* seq, int64_t T, int64_t D, const int64_t* pair,
                     std::vector<F>& out) {
    std::fill(out.begin(), out.end(), F(0));
    for (int64_t l = 0; l < L && pair[l] >= 0; ++l) {
        const double* src = seq + pair[l] * T * D;
        for (int64_t t = 0; t < T; ++t)
            for (int64_t k = 0; k < D; ++k) out[(t * D + k) * L + l] = F(src[t * D + k]);
    }
}

constexpr int64_t J = 4;  // cost cells a tile: independent sums, so their FMA chains overlap

// The cost |x_i - y_j|^2 of a block's cells i <= nb, j <= mb (j <= i if symmetric), summed in
// F from the differences (no cancellation), into lanes: C[(i W + j) L + l] (1-based cells;
// zero past a pair's own lengths).
template <typename F>
static void lane_cost(const std::vector<F>& xs, const std::vector<F>& ys, int64_t D, int64_t W,
                      int64_t nb, int64_t mb, bool symmetric, const int64_t* lane_n,
                      const int64_t* lane_m, std::vector<F>& C) {
    for (int64_t i = 1; i <= nb; ++i) {
        const int64_t last = symmetric ? i : mb;
        for (int64_t j0 = 1; j0 <= last; j0 += J) {
            F acc[J][L] = {};
            for (int64_t k = 0; k < D; ++k) {
                const F* xi = &xs[((i - 1) * D + k) * L];
#pragma GCC unroll 4
                for (int64_t jj = 0; jj < J; ++jj) {
                    const F* yj = &ys[((j0 + jj - 1) * D + k) * L];
#pragma omp simd
                    for (int64_t l = 0; l < L; ++l) {
                        const F d = xi[l] - yj[l];
                        acc[jj][l] += d * d;
                    }
                }
            }
            for (int64_t jj = 0; jj < J && j0 + jj <= last; ++jj)
                for (int64_t l = 0; l < L; ++l)
                    C[(i * W + j0 + jj) * L + l] =
                        (i <= lane_n[l] && j0 + jj <= lane_m[l]) ? acc[jj][l] : F(0);
        }
    }
}

// Sets the frame of a block's grid, rows 0 and nb + 1 and columns 0 and mb + 1, to value, and
// its corner (0, 0) to corner; the recursions read nothing else that they did not write.
static void frame(double* grid, int64_t W, int64_t nb, int64_t mb, double value, double corner) {
    for (int64_t j = 0; j <= mb + 1; ++j)
        for (int64_t l = 0; l < L; ++l) {
            grid[j * L + l] = value;
            grid[((nb + 1) * W + j) * L + l] = value;
        }
    for (int64_t i = 0; i <= nb + 1; ++i)
        for (int64_t l = 0; l < L; ++l) {
            grid[(i * W) * L + l] = value;
            grid[(i * W + mb + 1) * L + l] = value;
        }
    for (int64_t l = 0; l < L; ++l) grid[l] = corner;
}

// R[i, j] = cost[i, j] + softmin(R[i-1, j-1], R[i-1, j], R[i, j-1]) for every lane of one cell,
// the soft-min's exp and log at the precision of F; on the diagonal of a symmetric grid,
// R[i-1, i] is read as its mirror R[i, i-1].
template <typename F>
static inline void forward_cell(double* R, const F* C, int64_t W, int64_t i, int64_t j,
                                bool mirror, double gamma, double inv_gamma) {
    const int64_t c = (i * W + j) * L, cd = ((i - 1) * W + j - 1) * L, cl = (i * W + j - 1) * L,
                  cu = mirror ? cl : ((i - 1) * W + j) * L;
#pragma omp simd
    for (int64_t l = 0; l < L; ++l) {
        const double a = R[cd + l], u = R[cu + l], s = R[cl + l];
        const double low = std::min(std::min(a, u), s);
        const F total = exp_neg(F((low - a) * inv_gamma)) + exp_neg(F((low - u) * inv_gamma))
                        + exp_neg(F((low - s) * inv_gamma));
        R[c + l] = double(C[c + l]) + low - gamma * double(log_1_3(total));
    }
}

// E[i, j] = seed + sum over the successors s of E[s] exp((R[s] - cost[s] - R[i, j]) / gamma),
// the exp at the precision of F; on the diagonal of a symmetric grid, the successor (i, i+1) is
// read as its mirror (i+1, i).
template <typename F>
static inline void backward_cell(double* E, const double* R, const F* C, int64_t W,
                                 int64_t i, int64_t j, bool mirror, const int64_t* lane_n,
                                 const int64_t* lane_m, const double* lane_g, double inv_gamma) {
    const int64_t c = (i * W + j) * L, cd = ((i + 1) * W + j + 1) * L, cu = ((i + 1) * W + j) * L,
                  cl = mirror ? cu : (i * W + j + 1) * L;
#pragma omp simd
    for (int64_t l = 0; l < L; ++l) {
        const double seed = (lane_n[l] == i && lane_m[l] == j) ? lane_g[l] : 0.0;
        const double r = R[c + l];
        const F wu = exp_neg(F(std::min(0.0, (R[cu + l] - double(C[cu + l]) - r) * inv_gamma)));
        const F wl = exp_neg(F(std::min(0.0, (R[cl + l] - double(C[cl + l]) - r) * inv_gamma)));
        const F wd = exp_neg(F(std::min(0.0, (R[cd + l] - double(C[cd + l]) - r) * inv_gamma)));
        E[c + l] = seed + E[cu + l] * double(wu) + E[cl + l] * double(wl) + E[cd + l] * double(wd);
    }
}

// One block's R: rows in strips of S, within a strip the cells of one anti-diagonal in turn.
template <typename F>
static void forward_block(double* R, const F* C, int64_t W, int64_t nb, int64_t mb,
                          bool symmetric, double gamma) {
    const double inv_gamma = 1.0 / gamma;
    frame(R, W, nb, mb, BIG, 0.0);
    for (int64_t i0 = 1; i0 <= nb; i0 += S) {
        const int64_t rows = std::min(S, nb - i0 + 1);
        for (int64_t t = 1; t < mb + rows; ++t)
            for (int64_t s = 0; s < rows; ++s) {
                const int64_t i = i0 + s, j = t - s, last = symmetric ? i : mb;
                if (j >= 1 && j <= last)
                    forward_cell<F>(R, C, W, i, j, symmetric && j == i, gamma, inv_gamma);
            }
    }
}

// One block's E, from the last strip of rows back to the first.
template <typename F>
static void backward_block(double* E, const double* R, const F* C, int64_t W, int64_t nb,
                           int64_t mb, bool symmetric, const int64_t* lane_n,
                           const int64_t* lane_m, const double* lane_g, double gamma) {
    const double inv_gamma = 1.0 / gamma;
    frame(E, W, nb, mb, 0.0, 0.0);
    for (int64_t i0 = nb; i0 >= 1; i0 -= S) {
        const int64_t rows = std::min(S, i0);
        for (int64_t u = mb; u > -rows; --u)
            for (int64_t s = 0; s < rows; ++s) {
                const int64_t i = i0 - s, j = u + s, last = symmetric ? i : mb;
                if (j >= 1 && j <= last)
                    backward_cell<F>(E, R, C, W, i, j, symmetric && j == i, lane_n, lane_m,
                                     lane_g, inv_gamma);
            }
    }
}

// x (B, N, D), y (B, M, D) float64, lengths (B,) int64 -> values (B,) and, if keep, R
// (blocks, (N+2)(M+2), L) for the backward pass. Cost, exp and log in F; R in float64.
template <typename F>
static std::vector<at::Tensor> forward(at::Tensor x, at::Tensor y, at::Tensor n_len,
                                       at::Tensor m_len, double gamma, bool keep,
                                       bool symmetric) {
    const int64_t B = x.size(0), N = x.size(1), M = y.size(1), D = x.size(2);
    const int64_t blocks = (B + L - 1) / L, W = M + 2, cells = (N + 2) * (M + 2);
    auto values = at::zeros({B}, x.options());
    auto kept = at::empty({keep ? blocks : 0, cells, L}, x.options());
    const double* X = x.data_ptr<double>();
    const double* Y = y.data_ptr<double>();
    const int64_t* nl = n_len.data_ptr<int64_t>();
    const int64_t* ml = m_len.data_ptr<int64_t>();
    double* out = values.data_ptr<double>();
    double* K = kept.data_ptr<double>();
    const std::vector<int64_t> order = by_size(nl, ml, B);
    std::atomic<int64_t> taken{0};
    at::parallel_for(0, workers(blocks), 1, [&](int64_t, int64_t) {
        std::vector<double> scratch(keep ? 0 : cells * L);
        std::vector<F> C(cells * L), xs((N + J) * D * L), ys((M + J) * D * L);
        int64_t pair[L], lane_n[L], lane_m[L];
        for (int64_t blk; (blk = next_block(taken, blocks)) >= 0;) {
            int64_t nb, mb;
            block_pairs(order, nl, ml, blk, pair, lane_n, lane_m, nb, mb);
            to_lanes(X, N, D, pair, xs);
            to_lanes(Y, M, D, pair, ys);
            lane_cost(xs, ys, D, W, nb, mb, symmetric, lane_n, lane_m, C);
            double* R = keep ? K + blk * cells * L : scratch.data();
            forward_block(R, C.data(), W, nb, mb, symmetric, gamma);
            for (int64_t l = 0; l < L && pair[l] >= 0; ++l)
                out[pair[l]] = R[(lane_n[l] * W + lane_m[l]) * L + l];
        }
    });
    return {values, kept};
}

// R from forward, x, y, grad (B,) -> E = grad * d value / d cost (B, N, M), zero past each
// pair's lengths; a symmetric call computes the lower triangle and mirrors it.
template <typename F>
static at::Tensor backward(at::Tensor kept, at::Tensor x, at::Tensor y, at::Tensor n_len,
                           at::Tensor m_len, at::Tensor grad, double gamma, bool symmetric) {
    const int64_t B = x.size(0), N = x.size(1), M = y.size(1), D = x.size(2);
    const int64_t blocks = kept.size(0), W = M + 2, cells = (N + 2) * (M + 2);
    auto grad_cost = at::zeros({B, N, M}, x.options());
    const double* X = x.data_ptr<double>();
    const double* Y = y.data_ptr<double>();
    double* G = grad_cost.data_ptr<double>();
    const double* K = kept.data_ptr<double>();
    const int64_t* nl = n_len.data_ptr<int64_t>();
    const int64_t* ml = m_len.data_ptr<int64_t>();
    const double* g = grad.data_ptr<double>();
    const std::vector<int64_t> order = by_size(nl, ml, B);
    std::atomic<int64_t> taken{0};
    at::parallel_for(0, workers(blocks), 1, [&](int64_t, int64_t) {
        std::vector<double> E(cells * L);
        std::vector<F> C(cells * L), xs((N + J) * D * L), ys((M + J) * D * L);
        int64_t pair[L], lane_n[L], lane_m[L];
        double lane_g[L];
        for (int64_t blk; (blk = next_block(taken, blocks)) >= 0;) {
            int64_t nb, mb;
            block_pairs(order, nl, ml, blk, pair, lane_n, lane_m, nb, mb);
            for (int64_t l = 0; l < L; ++l) lane_g[l] = pair[l] >= 0 ? g[pair[l]] : 0.0;
            to_lanes(X, N, D, pair, xs);
            to_lanes(Y, M, D, pair, ys);
            lane_cost(xs, ys, D, W, nb, mb, symmetric, lane_n, lane_m, C);
            backward_block(E.data(), K + blk * cells * L, C.data(), W, nb, mb, symmetric,
                           lane_n, lane_m, lane_g, gamma);
            for (int64_t l = 0; l < L && pair[l] >= 0; ++l) {
                const int64_t b = pair[l];
                for (int64_t i = 1; i <= lane_n[l]; ++i)
                    for (int64_t j = 1; j <= (symmetric ? i : lane_m[l]); ++j) {
                        G[(b * N + i - 1) * M + j - 1] = E[(i * W + j) * L + l];
                        if (symmetric) G[(b * N + j - 1) * M + i - 1] = E[(i * W + j) * L + l];
                    }
            }
        }
    });
    return grad_cost;
}

// The entry points. symmetric: self terms (y is x, m_len is n_len), whose cost, R and E are
// symmetric, computed on the lower triangle j <= i. precise = false (float32 inputs) computes
// the cost, exp and log in float: relative errors ~1e-7, which reach R multiplied by gamma.
std::vector<at::Tensor> sdtw_forward(at::Tensor x, at::Tensor y, at::Tensor n_len,
                                     at::Tensor m_len, double gamma, bool keep, bool symmetric,
                                     bool precise) {
    return precise ? forward<double>(x, y, n_len, m_len, gamma, keep, symmetric)
                   : forward<float>(x, y, n_len, m_len, gamma, keep, symmetric);
}

at::Tensor sdtw_backward(at::Tensor kept, at::Tensor x, at::Tensor y, at::Tensor n_len,
                         at::Tensor m_len, at::Tensor grad, double gamma, bool symmetric,
                         bool precise) {
    return precise ? backward<double>(kept, x, y, n_len, m_len, grad, gamma, symmetric)
                   : backward<float>(kept, x, y, n_len, m_len, grad, gamma, symmetric);
}
