#pragma once
// Randomized attention (RA) and linear randomized attention (LARA), Zheng et al., ICML 2022.
// Semantics, units and the injected draws: lara_config.hpp.
//
// Both are compositions of the quadratic core (attend_query_tiles with OnlineSoftmax):
//   f(w) = softmax_m(w.k'_m - |k'_m|^2/2) V is softmax attention of sample rows w over the keys with
//          the per-key term -|k'_m|^2/2 (KeyBiasTerm); its LSE comes with it.
//   RA     draws S samples per query around q'_n + (a key from the exact attention row: its LSE is a
//          core pass with no values; or the attention-weighted key: a core pass with V = K), then
//          averages f over them. Quadratic; O(rows of a pass x (D + S)) extra memory per thread.
//   LARA   pass 1: f and LSE of the C_eff S samples of C_eff shared proposals (per (batch, head));
//          pass 2: every query attends over the samples (keys w, values f(w)) with the additive score
//          log alpha + LSE - log proposal (LaraTerm). Linear in L.

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "effattn/attention.hpp"
#include "effattn/core/normalisers.hpp"
#include "effattn/core/quadratic_core.hpp"
#include "effattn/core/schedule.hpp"
#include "effattn/core/score_mods.hpp"
#include "effattn/kinds/lara_config.hpp"
#include "effattn/simd/row_ops.hpp"
#include "effattn/simd/tile_kernels.hpp"

EFFATTN_BEGIN_NAMESPACE
namespace detail {

// kb[m] = -scale |k_m|^2 / 2 for keys [0, n): the key term of f(w).
template <class T>
void key_half_norms(const HeadRows<const T>& k, Index n, Index dim, T scale, T* kb) noexcept {
  for (Index m = 0; m < n; ++m) kb[m] = T(-0.5) * scale * dot(k.row(m), k.row(m), dim);
}

template <class T>
T log_sum_exp(const T* x, Index n) noexcept {
  T m = -std::numeric_limits<T>::infinity();
  for (Index i = 0; i < n; ++i) m = std::max(m, x[i]);
  if (m == -std::numeric_limits<T>::infinity()) return m;
  T s = 0;
  for (Index i = 0; i < n; ++i) s += std::exp(x[i] - m);
  return m + std::log(s);
}

// ------------------------------------------------------------------------------------------------
// RA

struct RaShape {
  Problem p;
  Index rows = 0;  // query rows of one work item
  Index samples = 1;
};

template <class T>
struct RaScratch {
  TileScratch<T> ts;
  T* kb = nullptr;       // [Lk] key terms
  T* mu = nullptr;       // [rows, Dqk] proposal means without a drawn key (canonical units)
  T* w = nullptr;        // [rows, Dqk] one sample per row
  T* ex = nullptr;       // [rows, Dqk] attention-weighted keys (expected_key)
  T* lse = nullptr;      // [rows] log-partition of each query's exact row (sampled_key)
  T* u = nullptr;        // [S, rows] uniforms of the key draws
  T* key = nullptr;      // [S, rows] drawn keys
  T* last = nullptr;     // [rows]
  T* f = nullptr;        // [rows, Dv] f of one sample (S > 1)
  T* acc = nullptr;      // [rows, Dv] sum over samples (S > 1)
  double* eps = nullptr; // [Dqk]
  double* sum = nullptr; // [Dqk] running key sum (mean_key)

  template <class Visit>
  void fields(const RaShape& s, Visit&& visit) {
    Problem tiles = s.p;  // the expected_key pass takes K as its values
    tiles.dim_v = std::max(s.p.dim_v, s.p.dim_qk);
    ts.fields(tiles, visit);
    visit(kb, s.p.len_k);
    visit(mu, s.rows * s.p.dim_qk);
    visit(w, s.rows * s.p.dim_qk);
    visit(ex, s.rows * s.p.dim_qk);
    visit(lse, s.rows);
    visit(u, s.samples * s.rows);
    visit(key, s.samples * s.rows);
    visit(last, s.rows);
    visit(f, s.samples > 1 ? s.rows * s.p.dim_v : 0);
    visit(acc, s.samples > 1 ? s.rows * s.p.dim_v : 0);
    visit(eps, s.p.dim_qk);
    visit(sum, s.p.dim_qk);
  }
};

// Query rows per RA work item: whole passes of the core unless that leaves threads idle; always whole
// query tiles (the sampler's per-row arrays are read a tile at a time).
template <class T>
Index ra_rows(const Problem& p, int threads) noexcept {
  const Index pass = kQueryTilesPerPass * kTileQ<T>;
  const Index passes = (p.len_q + pass - 1) / pass;
  return p.batch * p.heads * passes >= 4 * static_cast<Index>(threads) ? pass : kTileQ<T>;
}

// One call of RA or LARA: the views, the configuration and the draws.
template <class T, class Config, class Draws>
struct SampledCall {
  Problem problem{};
  ConstTensor4<T> q, k, v;
  Tensor4<T> out;
  Layout layout = Layout::bhld;
  const Mask* mask = nullptr;
  const Config* config = nullptr;
  const Draws* draws = nullptr;
  std::uint64_t draw = 0;
};

template <class T>
using RaCall = SampledCall<T, RaConfig, RaDraws<T>>;

// One RA work item: queries [i0, i0 + n) of (b, h).
template <class T>
void ra_item(const RaCall<T>& c, const QuadraticCall<T>& qc, Index b, Index h, Index i0, Index n, Index rows,
             const RaScratch<T>& w) {
  const Problem& p = c.problem;
  const RaConfig& cfg = *c.config;
  const Index dq = p.dim_qk, dv = p.dim_v, S = cfg.samples;
  const double scale = attention_scale(cfg.scale, dq);
  const T rs = static_cast<T>(std::sqrt(scale));
  const T sigma = static_cast<T>(noise_sigma(cfg.noise, scale));
  const Segment seg = segment(*c.mask, p, b);
  const HeadCtx<T> head = head_ctx(qc, seg, h);
  const HeadCtx<T> x = rows_from(head, i0);
  const Index k_end = std::max<Index>(0, x.band.hi(n - 1));
  key_half_norms(x.k, std::max(k_end, x.band.hi(0)), dq, static_cast<T>(scale), w.kb);
  const CounterRng rng = draw_stream(cfg.seed, b, h, c.draw);

  if (cfg.mean == RaMean::expected_key) {
    HeadCtx<T> e = x;
    e.v = x.k;
    e.out = {w.ex, n, dq, dq};
    attend_softmax(e, 0, n, dq, dq, static_cast<T>(scale), w.ts);
  }
  if (cfg.mean == RaMean::sampled_key && !(c.draws && c.draws->key_index)) {
    // The row's log-partition, then one more pass over its scores draws all S keys at once.
    HeadCtx<T> e = x;
    e.v = {x.v.data, x.v.rows, 0, x.v.row_stride};
    e.out = {x.out.data, n, 0, x.out.row_stride};
    e.lse = w.lse;
    attend_softmax(e, 0, n, dq, 0, static_cast<T>(scale), w.ts);
    const Index ld = rows;
    std::fill(w.lse + n, w.lse + ld, T(0));
    for (Index s = 0; s < S; ++s)
      for (Index r = 0; r < ld; ++r)
        w.u[s * ld + r] = r < n ? static_cast<T>(rng.uniform(static_cast<std::uint64_t>(s * p.len_q + i0 + r))) : T(2);
    e.lse = nullptr;
    const InverseCdf<T> cdf{w.lse, w.u, w.key, w.last, S, ld};
    constexpr Index pass = TileScratch<T>::G * kTileQ<T>;
    for (Index r0 = 0; r0 < n; r0 += pass)
      attend_query_tiles<T>(e, r0, std::min(pass, n - r0), dq, 0, static_cast<T>(scale), w.ts, cdf);
  }
  // Proposal means without a drawn key: mu_r = q'_r, plus the mean or the attention-weighted key.
  std::fill(w.sum, w.sum + dq, 0.0);
  Index sum_lo = 0, sum_hi = 0;  // keys in w.sum (bands only move forward with the row)
  for (Index r = 0; r < n; ++r) {
    const Index lo = x.band.lo(r), hi = std::max(lo, x.band.hi(r));
    T* mu = w.mu + r * dq;
    for (Index d = 0; d < dq; ++d) mu[d] = rs * x.q.row(r)[d];
    if (hi <= lo) continue;  // sees no key: its output is 0 whatever the samples
    if (cfg.mean == RaMean::mean_key) {
      for (; sum_hi < hi; ++sum_hi)
        for (Index d = 0; d < dq; ++d) w.sum[d] += x.k.row(sum_hi)[d];
      for (; sum_lo < lo; ++sum_lo)
        for (Index d = 0; d < dq; ++d) w.sum[d] -= x.k.row(sum_lo)[d];
      const double f = static_cast<double>(rs) / static_cast<double>(hi - lo);
      for (Index d = 0; d < dq; ++d) mu[d] += static_cast<T>(f * w.sum[d]);
    } else if (cfg.mean == RaMean::expected_key) {
      for (Index d = 0; d < dq; ++d) mu[d] += rs * w.ex[r * dq + d];
    }
  }
  // Sample by sample (memory O(rows x D) for any S): w = mu (+ the drawn key) + sigma eps, then f(w).
  const KeyBiasTerm<T> term{w.kb};
  const bool drawn = cfg.mean == RaMean::sampled_key;
  const bool given_keys = c.draws && c.draws->key_index;
  const bool given_noise = c.draws && c.draws->noise;
  for (Index s = 0; s < S; ++s) {
    for (Index r = 0; r < n; ++r) {
      const Index i = i0 + r;
      T* row = w.w + r * dq;
      std::copy(w.mu + r * dq, w.mu + (r + 1) * dq, row);
      if (drawn && x.band.hi(r) > x.band.lo(r)) {
        const Index m = given_keys ? c.draws->key_index->data()[((s * p.batch + b) * p.heads + h) * p.len_q + i]
                                   : static_cast<Index>(w.key[s * rows + r] >= 0 ? w.key[s * rows + r] : w.last[r]);
        for (Index d = 0; d < dq; ++d) row[d] += rs * x.k.row(m)[d];
      }
      if (sigma == 0) continue;
      if (given_noise) {
        const T* e = c.draws->noise->data() + (((s * p.batch + b) * p.heads + h) * p.len_q + i) * dq;
        for (Index d = 0; d < dq; ++d) row[d] += sigma * e[d];
      } else {
        rng.normals(static_cast<std::uint64_t>((s * p.len_q + i) * dq), static_cast<std::size_t>(dq), w.eps);
        for (Index d = 0; d < dq; ++d) row[d] += sigma * static_cast<T>(w.eps[d]);
      }
    }
    HeadCtx<T> e = x;
    e.q = {w.w, n, dq, dq};
    if (S > 1) e.out = {w.f, n, dv, dv};
    attend_softmax(e, 0, n, dq, dv, rs, w.ts, term);
    if (S > 1) {
      if (s == 0) std::copy(w.f, w.f + n * dv, w.acc);
      else for (Index t = 0; t < n * dv; ++t) w.acc[t] += w.f[t];
    }
  }
  if (S > 1) {
    const T inv = T(1) / static_cast<T>(S);
    for (Index r = 0; r < n; ++r)
      for (Index d = 0; d < dv; ++d) x.out.row(r)[d] = w.acc[r * dv + d] * inv;
  }
}

template <class T>
void run_ra(const RaCall<T>& c, const Executor& exec, std::span<std::byte> workspace) {
  const Problem& p = c.problem;
  if (p.batch == 0 || p.heads == 0 || p.len_q == 0) return;
  const int threads = std::max(exec.num_threads(), 1);
  const RaShape shape{p, ra_rows<T>(p, threads), c.config->samples};
  const std::size_t per = plan_of<RaScratch<T>>(shape).bytes();
  Arena arena(workspace, per * static_cast<std::size_t>(threads));
  std::byte* scratch = arena.take<std::byte>(static_cast<Index>(per) * threads);
  QuadraticCall<T> qc;
  qc.problem = p;
  qc.q = c.q;
  qc.k = c.k;
  qc.v = c.v;
  qc.out = c.out;
  qc.layout = c.layout;
  qc.mask = c.mask;
  const Index passes = (p.len_q + shape.rows - 1) / shape.rows;
  exec.run(p.batch * p.heads * passes, threads, [&](int wk, Index item) {
    Arena a(std::span<std::byte>(scratch + per * static_cast<std::size_t>(wk), per), per);
    const auto w = take_from<RaScratch<T>>(a, shape);
    const Index b = item / (p.heads * passes), h = (item / passes) % p.heads, i0 = (item % passes) * shape.rows;
    ra_item(c, qc, b, h, i0, std::min(shape.rows, p.len_q - i0), shape.rows, w);
  });
}

// ------------------------------------------------------------------------------------------------
// LARA

// Segment c of n tokens cut into C contiguous segments: the first r = (g + 1) C - n have length
// g = n / C, the rest g + 1 (equal lengths when C divides n; single tokens when n = C).
inline std::pair<Index, Index> segment_range(Index n, Index C, Index c) noexcept {
  const Index g = n / C, r = (g + 1) * C - n;
  if (n % C == 0 || c < r) return {c * g, (c + 1) * g};
  const Index first = r * g + (c - r) * (g + 1);
  return {first, first + g + 1};
}

// Adaptive average pooling: output cell i of `out` over `in` covers [floor(i in / out), ceil((i + 1) in / out)).
inline std::pair<Index, Index> pool_range(Index in, Index out, Index i) noexcept {
  return {i * in / out, ((i + 1) * in + out - 1) / out};
}

// The tokens of one (sequence, head) that build its landmarks and r's normalisation.
struct LaraSides {
  Index q_len = 0, k_len = 0;      // tokens the landmarks are cut from
  Index q_valid = 0, k_valid = 0;  // of those, tokens that are not zeroed padding
  Index c_eff = 0;
};

inline LaraSides lara_sides(const LaraConfig& cfg, const Problem& p, const Mask& mask, Index b, Index given_c) noexcept {
  LaraSides s;
  const Index nk = mask.key_lengths.empty() ? p.len_k : mask.key_lengths[static_cast<std::size_t>(b)];
  const Index nq = !mask.key_lengths.empty() && p.len_q == p.len_k ? nk : p.len_q;
  const bool zero = cfg.padding == Padding::zero_compat;
  s.q_len = zero ? p.len_q : nq;
  s.k_len = zero ? p.len_k : nk;
  s.q_valid = nq;
  s.k_valid = nk;
  if (given_c > 0) {
    s.c_eff = given_c;
  } else if (cfg.grid.active()) {
    const auto side = static_cast<Index>(std::llround(std::sqrt(static_cast<double>(cfg.num_landmarks))));
    s.c_eff = std::min(side, cfg.grid.rows) * std::min(side, cfg.grid.cols);
  } else {
    s.c_eff = std::min({cfg.num_landmarks, s.q_len, s.k_len});
  }
  if (nk == 0) s.c_eff = 0;  // no visible key: every output is 0
  return s;
}

// The proposals of one (batch, head), shared by its query passes.
template <class T>
struct LaraBlock {
  T* keys = nullptr;   // [S_tot, Dqk] samples w (mis_biased: w + mu_own), canonical
  T* f = nullptr;      // [S_tot, Dv] f(w)
  T* bias = nullptr;   // [S_tot] LSE_m(w.k'_m - |k'_m|^2/2) - log proposal
  T* bh = nullptr;     // [S_tot] balance heuristic (mis_opt)
  T* qbar = nullptr;   // [C_eff, Dqk] query landmarks, canonical (mis_opt)
  T* rlse = nullptr;   // [C_eff] log of r's normaliser (mis_opt)
};

struct LaraShape {
  Problem p;
  Index c_max = 0, s_max = 0;
};

template <class T>
struct LaraBlockFields : LaraBlock<T> {
  template <class Visit>
  void fields(const LaraShape& s, Visit&& visit) {
    visit(this->keys, s.s_max * s.p.dim_qk);
    visit(this->f, s.s_max * s.p.dim_v);
    visit(this->bias, s.s_max);
    visit(this->bh, s.s_max);
    visit(this->qbar, s.c_max * s.p.dim_qk);
    visit(this->rlse, s.c_max);
  }
};

template <class T>
struct LaraScratch {
  TileScratch<T> ts;
  T* kb = nullptr;        // [Lk]
  T* kbar = nullptr;      // [C, Dqk]
  T* mu = nullptr;        // [C, Dqk]
  T* g = nullptr;         // [S_tot, C] log proposal densities (and the C x C mixing logits)
  T* r = nullptr;         // [G, C + 1, TQ] r of a pass's query tiles, and their mean
  T* zero = nullptr;      // [Dqk] the query of a zeroed padded token
  double* acc = nullptr;  // [Dqk]
  T* run = nullptr;       // [Dqk]

  template <class Visit>
  void fields(const LaraShape& s, Visit&& visit) {
    ts.fields(s.p, visit);
    visit(kb, s.p.len_k);
    visit(kbar, s.c_max * s.p.dim_qk);
    visit(mu, s.c_max * s.p.dim_qk);
    visit(g, std::max(s.s_max, s.c_max) * s.c_max);
    visit(r, TileScratch<T>::G * (s.c_max + 1) * kTileQ<T>);
    visit(zero, s.p.dim_qk);
    visit(acc, s.p.dim_qk);
    visit(run, s.p.dim_qk);
  }
};

// The additive score of pass 2 for sample s (a key) and query n (a lane):
//   log alpha_ns + LSE_s - log q_own(s)(w_s)        (the w_s.q'_n part is the core's own product)
// mis_opt needs r[own(s), n] = exp(qbar'_own(s).q'_n - R_own(s)) and its mean over landmarks: both are
// computed once per query tile from the core's transposed queries (C_eff more rows of the same micro-kernel).
template <class T>
struct LaraTerm {
  static constexpr bool active = true;
  static constexpr bool masks = false;
  const T* bias = nullptr;
  const T* bh = nullptr;  // null: log alpha is 0 or folded into the keys
  const T* qbar = nullptr;
  const T* rlse = nullptr;
  T* r = nullptr;
  Index c_eff = 1, dim = 0;
  T lambda = 0;

  void begin(Index t, const T* qt, Index) const noexcept {
    if (bh == nullptr) return;
    using S = Packet<T>;
    constexpr Index TQ = kTileQ<T>;
    T* rt = r + t * (c_eff + 1) * TQ;
    lane_tile<T, false>(qbar, dim, 1, c_eff, dim, qt, rt);
    T* mean = rt + c_eff * TQ;
    for (Index l = 0; l < TQ; l += S::size) {
      auto sum = S::zero();
      for (Index c = 0; c < c_eff; ++c) {
        // r <= 1 for the queries of the normalisation; a padded query (padding = exclude) is not
        // one of them, and its r is capped at 1 so that huge logits cannot overflow it.
        const auto x = S::exp(S::min(S::sub(S::load(rt + c * TQ + l), S::set1(rlse[c])), S::zero()));
        S::store(rt + c * TQ + l, x);
        sum = S::add(sum, x);
      }
      S::store(mean + l, S::mul(sum, S::set1(T(1) / static_cast<T>(c_eff))));
    }
  }

  void add(T* s, Index t, Index, Index j0, Index keys) const noexcept {
    using S = Packet<T>;
    constexpr Index TQ = kTileQ<T>;
    const T* rt = r + t * (c_eff + 1) * TQ;
    const T* mean = rt + c_eff * TQ;
    for (Index jj = 0; jj < keys; ++jj) {
      const Index j = j0 + jj;
      const auto b = S::set1(bias[j]);
      T* row = s + jj * TQ;
      if (bh == nullptr) {
        for (Index l = 0; l < TQ; l += S::size) S::store(row + l, S::add(S::load(row + l), b));
        continue;
      }
      // alpha can be negative once lambda > 0: the floor 1e-8 is the reference's.
      const T* rc = rt + (j % c_eff) * TQ;
      const auto h = S::set1(bh[j]), lam = S::set1(lambda), floor = S::set1(T(1e-8));
      for (Index l = 0; l < TQ; l += S::size) {
        const auto alpha = S::fma(lam, S::sub(S::load(rc + l), S::load(mean + l)), h);
        S::store(row + l, S::add(S::load(row + l), S::add(b, S::log(S::max(alpha, floor)))));
      }
    }
  }
};

template <class T>
using LaraCall = SampledCall<T, LaraConfig, LaraDraws<T>>;

// Mean of rows [first, last) of `rows` (those at or after `valid` count as zero rows), times
// factor. A segment of a long sequence holds thousands of rows: runs of 16 are summed in T with
// packets, the runs in double (a plain double loop cost 6% of a LARA call at L = 16384).
template <class T>
void mean_rows(const HeadRows<const T>& rows, Index first, Index last, Index valid, Index dim, double factor,
               double* EFFATTN_RESTRICT acc, T* EFFATTN_RESTRICT run, T* out) noexcept {
  std::fill(acc, acc + dim, 0.0);
  const Index end = std::min(last, valid);
  for (Index i = first; i < end; i += 16) {
    std::fill(run, run + dim, T(0));
    for (Index r = i; r < std::min(end, i + 16); ++r) {
      const T* EFFATTN_RESTRICT x = rows.row(r);
      for (Index d = 0; d < dim; ++d) run[d] += x[d];
    }
    for (Index d = 0; d < dim; ++d) acc[d] += static_cast<double>(run[d]);
  }
  const double f = factor / static_cast<double>(last - first);
  for (Index d = 0; d < dim; ++d) out[d] = static_cast<T>(f * acc[d]);
}

// Landmarks of one side (canonical units): 1-D segment means, grid pooling, or the caller's.
template <class T>
void landmarks(const LaraCall<T>& c, const HeadRows<const T>& rows, Index len, Index valid, Index c_eff,
               const std::optional<ConstTensor4<T>>& given, Index b, Index h, double rs, double* acc, T* run, T* out) {
  const Index dq = c.problem.dim_qk;
  const LaraConfig& cfg = *c.config;
  if (given) {
    const T* g = given->data() + (b * given->dimension(1) + h) * c_eff * dq;
    for (Index t = 0; t < c_eff * dq; ++t) out[t] = static_cast<T>(rs * static_cast<double>(g[t]));
    return;
  }
  if (!cfg.grid.active()) {
    for (Index cc = 0; cc < c_eff; ++cc) {
      const auto [first, last] = segment_range(len, c_eff, cc);
      mean_rows(rows, first, last, valid, dq, rs, acc, run, out + cc * dq);
    }
    return;
  }
  const auto side = static_cast<Index>(std::llround(std::sqrt(static_cast<double>(cfg.num_landmarks))));
  const Index out_r = std::min(side, cfg.grid.rows), out_c = std::min(side, cfg.grid.cols);
  for (Index i = 0; i < out_r; ++i)
    for (Index j = 0; j < out_c; ++j) {
      const auto [r0, r1] = pool_range(cfg.grid.rows, out_r, i);
      const auto [c0, c1] = pool_range(cfg.grid.cols, out_c, j);
      std::fill(acc, acc + dq, 0.0);
      for (Index y = r0; y < r1; ++y)
        for (Index x = c0; x < c1; ++x)
          for (Index d = 0; d < dq; ++d) acc[d] += rows.row(y * cfg.grid.cols + x)[d];
      const double f = rs / static_cast<double>((r1 - r0) * (c1 - c0));
      for (Index d = 0; d < dq; ++d) out[(i * out_c + j) * dq + d] = static_cast<T>(f * acc[d]);
    }
}

// Pass 1 for (b, h): landmarks, samples, f(w) and the per-sample score terms into blk.
template <class T>
void lara_proposals(const LaraCall<T>& c, Index b, Index h, const LaraSides& sd, const LaraBlock<T>& blk,
                    const LaraScratch<T>& w) {
  const Problem& p = c.problem;
  const LaraConfig& cfg = *c.config;
  const Index dq = p.dim_qk, dv = p.dim_v, C = sd.c_eff;
  const Index spp = cfg.sampling == Sampling::stochastic ? cfg.samples_per_proposal : 1;
  const Index noise_rows = C * spp, S_tot = noise_rows * (cfg.antithetic ? 2 : 1);
  const double scale = attention_scale(cfg.scale, dq);
  const double rs = std::sqrt(scale);
  const Index kvh = h / (p.heads / p.kv_heads);
  const HeadRows<const T> q = head_rows(c.q, c.layout, b, h);
  const HeadRows<const T> k = head_rows(c.k, c.layout, b, kvh);
  const HeadRows<const T> v = head_rows(c.v, c.layout, b, kvh);

  landmarks(c, q, sd.q_len, sd.q_valid, C, c.draws->query_landmarks, b, h, rs, w.acc, w.run, blk.qbar);
  landmarks(c, k, sd.k_len, sd.k_valid, C, c.draws->key_landmarks, b, h, rs, w.acc, w.run, w.kbar);
  if (cfg.mixed) {  // kbar_p <- sum_c softmax_c(kbar_p . kbar_c) kbar_c
    for (Index a = 0; a < C; ++a)
      for (Index e = 0; e < C; ++e) w.g[a * C + e] = dot(w.kbar + a * dq, w.kbar + e * dq, dq);
    for (Index a = 0; a < C; ++a) {
      T* row = w.g + a * C;
      const T lse = log_sum_exp(row, C);
      std::fill(w.acc, w.acc + dq, 0.0);
      for (Index e = 0; e < C; ++e) {
        const double pe = std::exp(static_cast<double>(row[e] - lse));
        for (Index d = 0; d < dq; ++d) w.acc[d] += pe * static_cast<double>(w.kbar[e * dq + d]);
      }
      for (Index d = 0; d < dq; ++d) w.mu[a * dq + d] = static_cast<T>(w.acc[d]);
    }
    std::copy(w.mu, w.mu + C * dq, w.kbar);
  }
  for (Index t = 0; t < C * dq; ++t) w.mu[t] = blk.qbar[t] + w.kbar[t];

  // Samples.
  const T sigma = cfg.sampling == Sampling::stochastic ? static_cast<T>(noise_sigma(cfg.noise, scale)) : T(0);
  const CounterRng rng = draw_stream(cfg.seed, b, h, c.draw);
  for (Index r = 0; r < noise_rows; ++r) {
    const T* mu = w.mu + (r % C) * dq;
    T* plus = blk.keys + r * dq;
    T* minus = cfg.antithetic ? blk.keys + (noise_rows + r) * dq : nullptr;
    if (sigma == 0) {
      std::copy(mu, mu + dq, plus);
      continue;
    }
    const T* given = c.draws->noise ? c.draws->noise->data() + ((b * p.heads + h) * c.draws->noise->dimension(2) + r) * dq
                                    : nullptr;
    if (!given) rng.normals(static_cast<std::uint64_t>(r * dq), static_cast<std::size_t>(dq), w.acc);
    for (Index d = 0; d < dq; ++d) {
      const T e = sigma * (given ? given[d] : static_cast<T>(w.acc[d]));
      plus[d] = mu[d] + e;
      if (minus) minus[d] = mu[d] - e;
    }
  }

  // f(w) and LSE_m(w.k'_m - |k'_m|^2/2): the samples attend over the visible keys.
  key_half_norms(k, sd.k_valid, dq, static_cast<T>(scale), w.kb);
  HeadCtx<T> x;
  x.q = {blk.keys, S_tot, dq, dq};
  x.k = k;
  x.v = v;
  x.out = {blk.f, S_tot, dv, dv};
  x.lse = blk.bias;
  x.band.len_q = S_tot;
  x.band.len_k = sd.k_valid;
  attend_softmax(x, 0, S_tot, dq, dv, static_cast<T>(rs), w.ts, KeyBiasTerm<T>{w.kb});

  // log q_c(w_s) up to a term common to all c: G[s, c] = w_s.mu_c - |mu_c|^2/2.
  for (Index s = 0; s < S_tot; ++s) {
    T* gs = w.g + s * C;
    for (Index cc = 0; cc < C; ++cc)
      gs[cc] = dot(blk.keys + s * dq, w.mu + cc * dq, dq) - T(0.5) * dot(w.mu + cc * dq, w.mu + cc * dq, dq);
    const T mixture = log_sum_exp(gs, C);
    T log_proposal = mixture;
    if (cfg.weighting == Weighting::mis_opt) {
      // Over the list of S_tot proposals (each landmark S_tot / C times) as HKUNLP's code builds it.
      log_proposal = gs[s % C];
      blk.bh[s] = std::exp(gs[s % C] - mixture) * static_cast<T>(C) / static_cast<T>(S_tot);
    }
    blk.bias[s] -= log_proposal;
  }
  if (cfg.weighting == Weighting::mis_biased)  // log alpha = mu'_own . q'_n folds into the keys
    for (Index s = 0; s < S_tot; ++s)
      for (Index d = 0; d < dq; ++d) blk.keys[s * dq + d] += w.mu[(s % C) * dq + d];
  if (cfg.weighting == Weighting::mis_opt) {
    // R_c = LSE over the normalising queries of qbar'_c . q'_n: the landmarks attend over the queries.
    HeadCtx<T> y;
    y.q = {blk.qbar, C, dq, dq};
    y.k = q;
    y.v = {q.data, q.rows, 0, q.row_stride};
    y.out = {blk.f, C, 0, 0};
    y.lse = blk.rlse;
    y.band.len_q = C;
    y.band.len_k = sd.q_valid;
    attend_softmax(y, 0, C, dq, 0, static_cast<T>(rs), w.ts);
    if (cfg.padding == Padding::zero_compat && sd.q_len > sd.q_valid) {  // zeroed queries: logit 0 each
      const T pad = std::log(static_cast<T>(sd.q_len - sd.q_valid));
      for (Index cc = 0; cc < C; ++cc) {
        const T a = blk.rlse[cc], hi = std::max(a, pad);
        blk.rlse[cc] = hi + std::log(std::exp(a - hi) + std::exp(pad - hi));
      }
    }
  }
}

template <class T>
void run_lara(const LaraCall<T>& c, const Executor& exec, std::span<std::byte> workspace) {
  const Problem& p = c.problem;
  const LaraConfig& cfg = *c.config;
  if (p.batch == 0 || p.heads == 0 || p.len_q == 0) return;
  const int threads = std::max(exec.num_threads(), 1);
  const Index given_c = c.draws->key_landmarks ? c.draws->key_landmarks->dimension(2) : 0;
  LaraShape shape{p, 0, 0};
  for (Index b = 0; b < p.batch; ++b) shape.c_max = std::max(shape.c_max, lara_sides(cfg, p, *c.mask, b, given_c).c_eff);
  const Index per_c = (cfg.sampling == Sampling::stochastic ? cfg.samples_per_landmark() : 1);
  shape.s_max = shape.c_max * per_c;
  const ArenaPlan block_plan = plan_of<LaraBlockFields<T>>(shape);
  const std::size_t per = plan_of<LaraScratch<T>>(shape).bytes();
  const std::size_t blocks = block_plan.bytes() * static_cast<std::size_t>(p.batch * p.heads);
  Arena arena(workspace, blocks + per * static_cast<std::size_t>(threads));
  std::byte* block_mem = arena.take<std::byte>(static_cast<Index>(blocks));
  std::byte* scratch = arena.take<std::byte>(static_cast<Index>(per) * threads);
  const auto block = [&](Index bh) {
    Arena a(std::span<std::byte>(block_mem + block_plan.bytes() * static_cast<std::size_t>(bh), block_plan.bytes()),
            block_plan.bytes());
    return static_cast<LaraBlock<T>>(take_from<LaraBlockFields<T>>(a, shape));
  };
  const auto worker = [&](int wk) {
    Arena a(std::span<std::byte>(scratch + per * static_cast<std::size_t>(wk), per), per);
    return take_from<LaraScratch<T>>(a, shape);
  };

  exec.run(p.batch * p.heads, threads, [&](int wk, Index bh) {
    const Index b = bh / p.heads, h = bh % p.heads;
    const LaraSides sd = lara_sides(cfg, p, *c.mask, b, given_c);
    if (sd.c_eff > 0) lara_proposals(c, b, h, sd, block(bh), worker(wk));
  });

  constexpr Index pass = TileScratch<T>::G * kTileQ<T>;
  const Index passes = (p.len_q + pass - 1) / pass;
  const double rs = std::sqrt(attention_scale(cfg.scale, p.dim_qk));
  exec.run(p.batch * p.heads * passes, threads, [&](int wk, Index item) {
    const Index bh = item / passes, b = bh / p.heads, h = bh % p.heads;
    const Index i0 = (item % passes) * pass, n = std::min(pass, p.len_q - i0);
    const LaraSides sd = lara_sides(cfg, p, *c.mask, b, given_c);
    const HeadRows<T> out = head_rows(c.out, c.layout, b, h);
    if (sd.c_eff == 0) {
      for (Index i = i0; i < i0 + n; ++i) std::fill(out.row(i), out.row(i) + p.dim_v, T(0));
      return;
    }
    const LaraBlock<T> blk = block(bh);
    const LaraScratch<T> w = worker(wk);
    const Index S_tot = sd.c_eff * per_c;
    LaraTerm<T> term;
    term.bias = blk.bias;
    if (cfg.weighting == Weighting::mis_opt) {
      term.bh = blk.bh;
      term.qbar = blk.qbar;
      term.rlse = blk.rlse;
      term.r = w.r;
      term.c_eff = sd.c_eff;
      term.dim = p.dim_qk;
      term.lambda = static_cast<T>(cfg.alpha_coeff);
    }
    HeadCtx<T> x;
    x.q = head_rows(c.q, c.layout, b, h);
    x.k = {blk.keys, S_tot, p.dim_qk, p.dim_qk};
    x.v = {blk.f, S_tot, p.dim_v, p.dim_v};
    x.out = out;
    x.band.len_q = p.len_q;
    x.band.len_k = S_tot;
    // zero_compat: a padded query is the zero vector (rows that all alias one zero row).
    const Index real = cfg.padding == Padding::zero_compat ? std::clamp(sd.q_valid - i0, Index{0}, n) : n;
    if (real > 0) attend_query_tiles<T>(x, i0, real, p.dim_qk, p.dim_v, static_cast<T>(rs), w.ts, OnlineSoftmax<T>{}, term);
    if (real < n) {
      std::fill(w.zero, w.zero + p.dim_qk, T(0));
      x.q = {w.zero, p.len_q, p.dim_qk, 0};
      attend_query_tiles<T>(x, i0 + real, n - real, p.dim_qk, p.dim_v, static_cast<T>(rs), w.ts, OnlineSoftmax<T>{}, term);
    }
  });
}

}  // namespace detail

// ------------------------------------------------------------------------------------------------

namespace detail {

// The face RA and LARA share: a configuration, a draw counter for stochastic runs, and check/forward
// with or without the caller's draws. Kind supplies check_call(q, k, v, out, mask, options, draws) and
// run(call, executor, workspace).
template <class Kind, class T, class ConfigT, class DrawsT>
class SampledAttention {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "RA and LARA: T is float or double");

 public:
  using Scalar = T;
  using Config = ConfigT;
  using Draws = DrawsT;

  SampledAttention() = default;
  explicit SampledAttention(Config config) : config_(std::move(config)) { config_.validate().raise(); }

  [[nodiscard]] const Config& config() const noexcept { return config_; }
  // How many times resample() advanced the generator (the draws of stochastic runs).
  [[nodiscard]] std::uint64_t draw() const noexcept { return draw_; }
  void resample() noexcept { ++draw_; }

  [[nodiscard]] Status check(ConstTensor4<T> q, ConstTensor4<T> k, ConstTensor4<T> v, Tensor4<T> out,
                             const Mask& mask = {}, const Options<T>& options = {}) const noexcept {
    return check(q, k, v, out, mask, options, Draws{});
  }
  [[nodiscard]] Status check(ConstTensor4<T> q, ConstTensor4<T> k, ConstTensor4<T> v, Tensor4<T> out, const Mask& mask,
                             const Options<T>& options, const Draws& draws) const noexcept {
    return guarded([&]() -> Status { return kind().check_call(q, k, v, out, mask, options, draws); });
  }

  void forward(ConstTensor4<T> q, ConstTensor4<T> k, ConstTensor4<T> v, Tensor4<T> out, const Mask& mask = {},
               const Options<T>& options = {}) const {
    forward(q, k, v, out, mask, options, Draws{});
  }
  // With the caller's draws (noise, key indices, landmarks) in place of the generator's.
  void forward(ConstTensor4<T> q, ConstTensor4<T> k, ConstTensor4<T> v, Tensor4<T> out, const Mask& mask,
               const Options<T>& options, const Draws& draws) const {
    kind().check_call(q, k, v, out, mask, options, draws).raise();
    SampledCall<T, Config, Draws> c;
    c.problem = Problem::of<T>(q, k, v, options.layout);
    c.q = q;
    c.k = k;
    c.v = v;
    c.out = out;
    c.layout = options.layout;
    c.mask = &mask;
    c.config = &config_;
    c.draws = &draws;
    c.draw = draw_;
    Kind::run(c, options.executor, options.workspace);
  }

 protected:
  Config config_{};

 private:
  [[nodiscard]] const Kind& kind() const noexcept { return static_cast<const Kind&>(*this); }
  std::uint64_t draw_ = 0;
};

}  // namespace detail

template <class T>
class RandomizedAttention : public detail::SampledAttention<RandomizedAttention<T>, T, RaConfig, RaDraws<T>> {
  using Base = detail::SampledAttention<RandomizedAttention<T>, T, RaConfig, RaDraws<T>>;
  friend Base;

 public:
  using typename Base::Config;
  static constexpr std::string_view name = "RandomizedAttention";
  static constexpr Complexity complexity = Complexity::quadratic;

  using Base::Base;

  // The mask's band (causal, window, key padding) restricts both the mixture and f; a per-pair bias
  // and packed sequences are refused.
  [[nodiscard]] bool supports(const Mask& mask) const noexcept { return !mask.bias.present() && !mask.packed(); }

  [[nodiscard]] Cost cost(const Problem& p, const Mask& mask = {}) const noexcept {
    // f's pass per sample, plus for the proposal means one more pass of Dqk-wide products and
    // outputs (expected_key: V = K) or two of scores only (sampled_key: the LSE, then the draw).
    Cost c = detail::quadratic_cost<T>(p, mask);
    const double visible_pairs = c.flops / (2.0 * static_cast<double>(std::max<Index>(p.dim_qk + p.dim_v, 1)));
    const double mean_flops = config_.mean == RaMean::mean_key ? 0.0 : 4.0 * static_cast<double>(p.dim_qk);
    c.flops = c.flops * static_cast<double>(config_.samples) + visible_pairs * mean_flops;
    return c;
  }

  [[nodiscard]] std::size_t workspace_bytes(const Problem& p, int threads) const noexcept {
    const int t = std::max(threads, 1);
    const detail::RaShape shape{p, detail::ra_rows<T>(p, t), config_.samples};
    return detail::ArenaPlan{}.add(static_cast<Index>(detail::plan_of<detail::RaScratch<T>>(shape).bytes()) * t, 1).span_bytes();
  }

 private:
  using Base::config_;
  static void run(const detail::RaCall<T>& c, const Executor& exec, std::span<std::byte> ws) { detail::run_ra(c, exec, ws); }

  Status check_call(ConstTensor4<T> q, ConstTensor4<T> k, ConstTensor4<T> v, Tensor4<T> out, const Mask& mask,
                    const Options<T>& options, const RaDraws<T>& draws) const {
    using detail::error;
    if (Status s = config_.validate(); !s) return s;
    if (Status s = detail::validate_call<T>(name, q, k, v, out, mask, options); !s) return s;
    if (options.lse) return error(ErrorCode::unsupported, name, "::forward: RA estimates the output only; leave Options::lse empty");
    if (mask.bias.present() || mask.packed())
      return error(ErrorCode::unsupported, name, "::forward: ", mask.bias.present() ? "mask.bias" : "packed sequences",
                   " cannot be honoured (the sampler draws keys from causal/window/padding bands only); use SoftmaxAttention");
    const Problem p = Problem::of<T>(q, k, v, options.layout);
    const Index S = config_.samples;
    if (config_.mean == RaMean::sampled_key && !draws.key_index && p.len_k > (Index{1} << std::numeric_limits<T>::digits))
      return error(ErrorCode::unsupported, name, "::forward: Lk = ", p.len_k, " keys: the sampler holds key positions in T, "
                                                 "exact up to 2^", std::numeric_limits<T>::digits, "; use double");
    if (draws.noise) {
      if (config_.noise == Noise::none)
        return error(ErrorCode::config, name, "::forward: noise was given but Config::noise is none (no noise is added)");
      const std::array<Index, 5> want{S, p.batch, p.heads, p.len_q, p.dim_qk};
      for (int a = 0; a < 5; ++a)
        if (draws.noise->dimension(a) != want[static_cast<std::size_t>(a)])
          return error(ErrorCode::shape, name, "::forward: draws.noise.dimension(", a, ") is ", draws.noise->dimension(a),
                       " but must be ", want[static_cast<std::size_t>(a)], "; expected noise [S,B,H,Lq,Dqk]");
      if (draws.noise->size() > 0 && draws.noise->data() == nullptr)
        return error(ErrorCode::shape, name, "::forward: draws.noise has a null data pointer");
      if (detail::overlaps(out, *draws.noise)) return error(ErrorCode::shape, name, "::forward: out overlaps draws.noise");
    }
    if (draws.key_index) {
      if (config_.mean != RaMean::sampled_key)
        return error(ErrorCode::config, name, "::forward: key indices were given but Config::mean is ",
                     to_string(config_.mean), "; they serve mean = sampled_key");
      const auto& ki = *draws.key_index;
      const std::array<Index, 4> want{S, p.batch, p.heads, p.len_q};
      for (int a = 0; a < 4; ++a)
        if (ki.dimension(a) != want[static_cast<std::size_t>(a)])
          return error(ErrorCode::shape, name, "::forward: draws.key_index.dimension(", a, ") is ", ki.dimension(a),
                       " but must be ", want[static_cast<std::size_t>(a)], "; expected key_index [S,B,H,Lq]");
      if (ki.size() > 0 && ki.data() == nullptr)
        return error(ErrorCode::shape, name, "::forward: draws.key_index has a null data pointer");
      for (Index b = 0; b < p.batch; ++b) {
        const detail::Segment seg = detail::segment(mask, p, b);
        const detail::Band band = detail::make_band(mask, seg.len_q, seg.len_k);
        for (Index s = 0; s < S; ++s)
          for (Index h = 0; h < p.heads; ++h)
            for (Index i = 0; i < p.len_q; ++i) {
              const Index m = ki.data()[((s * p.batch + b) * p.heads + h) * p.len_q + i];
              if (band.hi(i) > band.lo(i) && !band.visible(i, m))
                return error(ErrorCode::shape, name, "::forward: draws.key_index[", s, ",", b, ",", h, ",", i, "] is ", m,
                             " but query ", i, " sees keys [", band.lo(i), ", ", band.hi(i), ")");
            }
      }
    }
    return {};
  }

};

template <class T>
class LaraAttention : public detail::SampledAttention<LaraAttention<T>, T, LaraConfig, LaraDraws<T>> {
  using Base = detail::SampledAttention<LaraAttention<T>, T, LaraConfig, LaraDraws<T>>;
  friend Base;

 public:
  using typename Base::Config;
  static constexpr std::string_view name = "LaraAttention";
  static constexpr Complexity complexity = Complexity::linear;

  using Base::Base;

  // Non-causal, with key padding (not on a 2-D grid); a per-pair mask has no place in the shared proposals.
  [[nodiscard]] bool supports(const Mask& mask) const noexcept {
    return mask.causal == Causal::none && !mask.bias.present() && !mask.window.active() && !mask.packed() &&
           !(config_.grid.active() && !mask.key_lengths.empty());
  }

  [[nodiscard]] Cost cost(const Problem& p, const Mask& /*mask*/ = {}) const noexcept {
    const double C = static_cast<double>(config_.grid.active() ? config_.num_landmarks
                                                                : std::min({config_.num_landmarks, p.len_q, p.len_k}));
    const double s_tot = C * static_cast<double>(config_.sampling == Sampling::stochastic ? config_.samples_per_landmark() : 1);
    const double dq = static_cast<double>(p.dim_qk), dv = static_cast<double>(p.dim_v);
    const double bh = static_cast<double>(p.batch * p.heads);
    double flops = 2.0 * s_tot * (static_cast<double>(p.len_k) + static_cast<double>(p.len_q)) * (dq + dv);
    if (config_.weighting == Weighting::mis_opt) flops += 4.0 * C * static_cast<double>(p.len_q) * dq;
    const double elems = static_cast<double>(p.batch) *
                         (static_cast<double>(p.heads * p.len_q) * (dq + dv) + static_cast<double>(p.kv_heads * p.len_k) * (dq + dv));
    return {flops * bh, elems * sizeof(T)};
  }

  [[nodiscard]] std::size_t workspace_bytes(const Problem& p, int threads) const noexcept {
    detail::LaraShape shape{p, 0, 0};
    shape.c_max = config_.grid.active() ? config_.num_landmarks : std::min({config_.num_landmarks, p.len_q, p.len_k});
    shape.s_max = shape.c_max * (config_.sampling == Sampling::stochastic ? config_.samples_per_landmark() : 1);
    const std::size_t blocks = detail::plan_of<detail::LaraBlockFields<T>>(shape).bytes() * static_cast<std::size_t>(p.batch * p.heads);
    const std::size_t per = detail::plan_of<detail::LaraScratch<T>>(shape).bytes() * static_cast<std::size_t>(std::max(threads, 1));
    return detail::ArenaPlan{}.add(static_cast<Index>(blocks + per), 1).span_bytes();
  }

 private:
  using Base::config_;
  static void run(const detail::LaraCall<T>& c, const Executor& exec, std::span<std::byte> ws) {
    detail::run_lara(c, exec, ws);
  }

  Status check_call(ConstTensor4<T> q, ConstTensor4<T> k, ConstTensor4<T> v, Tensor4<T> out, const Mask& mask,
                    const Options<T>& options, const LaraDraws<T>& draws) const {
    using detail::error;
    if (Status s = config_.validate(); !s) return s;
    if (Status s = detail::validate_call<T>(name, q, k, v, out, mask, options); !s) return s;
    if (options.lse) return error(ErrorCode::unsupported, name, "::forward: LARA estimates the output only; leave Options::lse empty");
    if (mask.causal != Causal::none)
      return error(ErrorCode::unsupported, name,
                   "::forward: causal LARA is not supported: its proposals are built from landmarks pooled over the whole "
                   "sequence and its r weights normalise over all queries, so every query would see future tokens. Use "
                   "RandomizedAttention or SoftmaxAttention (causal), or RfaAttention for linear-time causal attention");
    if (mask.bias.present() || mask.window.active() || mask.packed())
      return error(ErrorCode::unsupported, name, "::forward: ", mask.bias.present() ? "mask.bias" : mask.window.active() ? "mask.window" : "packed sequences",
                   " cannot be honoured: LARA's proposals are shared by all queries; key_lengths is the supported mask");
    const Problem p = Problem::of<T>(q, k, v, options.layout);
    if (config_.padding == Padding::zero_compat && !mask.key_lengths.empty() && p.len_q != p.len_k)
      return error(ErrorCode::unsupported, name, "::forward: padding = zero_compat zeroes the padded tokens of a self-attention "
                                                 "sequence, but Lq = ", p.len_q, " differs from Lk = ", p.len_k, "; use padding = exclude");
    if (config_.grid.active()) {
      const Index tokens = config_.grid.rows * config_.grid.cols;
      if (p.len_q != tokens || p.len_k != tokens)
        return error(ErrorCode::shape, name, "::forward: Config::grid is ", config_.grid.rows, " x ", config_.grid.cols, " = ",
                     tokens, " tokens but Lq = ", p.len_q, " and Lk = ", p.len_k);
      if (!mask.key_lengths.empty())
        return error(ErrorCode::unsupported, name, "::forward: key padding on a 2-D grid is not supported (pooling cells "
                                                   "would straddle padding)");
    }
    if (draws.query_landmarks.has_value() != draws.key_landmarks.has_value())
      return error(ErrorCode::shape, name, "::forward: give both draws.query_landmarks and draws.key_landmarks, or neither");
    if (draws.key_landmarks) {
      for (auto [what, t] : {std::pair{"query_landmarks", *draws.query_landmarks}, std::pair{"key_landmarks", *draws.key_landmarks}}) {
        const Index C = draws.key_landmarks->dimension(2);
        const std::array<Index, 4> want{p.batch, p.heads, C, p.dim_qk};
        for (int a = 0; a < 4; ++a)
          if (t.dimension(a) != want[static_cast<std::size_t>(a)] || C < 1)
            return error(ErrorCode::shape, name, "::forward: draws.", what, ".dimension(", a, ") is ", t.dimension(a),
                         "; expected [B,H,C,Dqk] = [", p.batch, ",", p.heads, ",", C, ",", p.dim_qk, "] with C >= 1");
        if (t.size() > 0 && t.data() == nullptr)
          return error(ErrorCode::shape, name, "::forward: draws.", what, " has a null data pointer");
        if (detail::overlaps(out, t)) return error(ErrorCode::shape, name, "::forward: out overlaps draws.", what);
      }
    }
    if (draws.noise) {
      if (config_.sampling != Sampling::stochastic)
        return error(ErrorCode::config, name, "::forward: noise was given but Config::sampling is deterministic (w = mu)");
      const Index given_c = draws.key_landmarks ? draws.key_landmarks->dimension(2) : 0;
      Index c_max = 0;
      for (Index b = 0; b < p.batch; ++b) c_max = std::max(c_max, detail::lara_sides(config_, p, mask, b, given_c).c_eff);
      const std::array<Index, 4> want{p.batch, p.heads, c_max * config_.samples_per_proposal, p.dim_qk};
      for (int a = 0; a < 4; ++a)
        if (draws.noise->dimension(a) != want[static_cast<std::size_t>(a)])
          return error(ErrorCode::shape, name, "::forward: draws.noise.dimension(", a, ") is ", draws.noise->dimension(a),
                       " but must be ", want[static_cast<std::size_t>(a)], "; expected noise [B,H,C_eff*S,Dqk] with C_eff = ",
                       c_max, " landmarks for this call");
      if (draws.noise->size() > 0 && draws.noise->data() == nullptr)
        return error(ErrorCode::shape, name, "::forward: draws.noise has a null data pointer");
      if (detail::overlaps(out, *draws.noise)) return error(ErrorCode::shape, name, "::forward: out overlaps draws.noise");
    }
    return {};
  }

};

EFFATTN_END_NAMESPACE
