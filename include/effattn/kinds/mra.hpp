#pragma once
// MRA-2 multi-resolution attention (Zeng et al., ICML 2022): the semantics are stated in
// kinds/mra_config.hpp. A composition of the quadratic core, per (batch, head):
//   1. block means of Q, K, V over the real tokens (core/pooling.hpp) and the coarse logits
//      C = scale Qbar Kbar^T, with the core's own score micro-kernel;
//   2. the selection: one global top-k over all block pairs by (tier, C - rowmax, flat index), by an
//      exact radix selection (two linear passes where a sort would take n_b^2 log n_b^2), grouped by
//      query block into a tile list (CSR);
//   3. full mode: the coarse part, the core over the pooled tensors with the key term log c_J (the
//      real keys a block stands for) and -inf on the selected and empty pairs, giving each query
//      block's (out, lse);
//   4. per query block, the core over its listed key blocks (ListedKeys) at token resolution, giving
//      each row's (out, lse); then the two-state merge (softmax_state.hpp) with its block's coarse part.
// Masking is an exact -inf (the official kernels' -1e4 and +1e-6 are not reproduced), so the result is
// exact softmax over the modified logits up to rounding, which is what the tests check.
// Work items: phase 1-3 per (batch, head), phase 4 per (batch, head, query block); each is computed
// by one thread in a fixed order, so the output and the selection do not depend on the thread count.

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string_view>

#include "effattn/attention.hpp"
#include "effattn/core/pooling.hpp"
#include "effattn/core/quadratic_core.hpp"
#include "effattn/kinds/mra_config.hpp"

EFFATTN_BEGIN_NAMESPACE
namespace detail {

struct MraShape {
  Problem p;
  Index block = 1;
  Index nq = 0, nk = 0;  // query and key blocks
  Index tiles = 0;       // budget per (batch, head)
  bool coarse = true;    // full mode

  MraShape(const Problem& problem, const MraConfig& c) noexcept
      : p(problem),
        block(c.block),
        nq((problem.len_q + c.block - 1) / c.block),
        nk((problem.len_k + c.block - 1) / c.block),
        tiles(c.budget(nq, nk)),
        coarse(c.mode == MraMode::full) {}
};

// What the selection phase leaves for the fine phase, per (batch, head).
template <class T>
struct MraHead {
  Index* offsets = nullptr;  // [nq + 1] tile list by query block
  Index* cols = nullptr;     // [tiles]
  T* coarse = nullptr;       // [nq, Dv] coarse part of each query block (full mode)
  T* coarse_lse = nullptr;   // [nq]

  template <class Visit>
  void fields(const MraShape& s, Visit&& visit) {
    visit(offsets, s.nq + 1);
    visit(cols, s.tiles);
    visit(coarse, s.coarse ? s.nq * s.p.dim_v : 0);
    visit(coarse_lse, s.coarse ? s.nq : 0);
  }
};

inline constexpr int kRadixBits = 11;

template <class T>
struct MraScratch {
  TileScratch<T> ts;
  T* qbar = nullptr;             // [nq, Dqk]
  T* kbar = nullptr;             // [nk, Dqk]
  T* vbar = nullptr;             // [nk, Dv]
  T* qcount = nullptr;           // [nq] real queries per block
  T* kcount = nullptr;           // [nk] real keys per block, then their log
  T* p = nullptr;                // [nq, nk] coarse logits, then P = C - rowmax
  std::uint32_t* cand = nullptr; // [nq * nk] selection candidates
  Index* hist = nullptr;         // [2^kRadixBits]
  T* lse = nullptr;              // [block] fine lse of one query block's rows

  template <class Visit>
  void fields(const MraShape& s, Visit&& visit) {
    ts.fields(s.p, visit);
    visit(qbar, s.nq * s.p.dim_qk);
    visit(kbar, s.nk * s.p.dim_qk);
    visit(vbar, s.nk * s.p.dim_v);
    visit(qcount, s.nq);
    visit(kcount, s.nk);
    visit(p, s.nq * s.nk);
    visit(cand, s.nq * s.nk);
    visit(hist, Index{1} << kRadixBits);
    visit(lse, s.block);
  }
};

// An unsigned integer that orders like the value: larger x, larger key; -0 as +0; NaN lowest.
template <class T>
auto order_key(T x) noexcept {
  using U = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
  if (x != x) return U{0};
  const U u = std::bit_cast<U>(x + T(0));
  constexpr U sign = U{1} << (8 * sizeof(U) - 1);
  return (u & sign) ? U(~u) : U(u | sign);
}

// The selection rule's tiers (mra_config.hpp): priors earned, -2 for a pair with no real query or key.
struct MraTiers {
  Index prior_first = 0, prior_half_diag = -1;  // -1: no diagonal prior
  template <class T>
  int operator()(Index I, Index J, const T* qc, const T* kc) const noexcept {
    const Index d = I > J ? I - J : J - I;
    int t = (d <= prior_half_diag) + (I < prior_first) + (J < prior_first);
    if (qc[I] == T(0) || kc[J] == T(0)) t -= 2;
    return t;
  }
};

// Selects the `tiles` best pairs of P [nq, nk] by (tier, P, smaller flat index) and writes them as a
// tile list grouped by query block. The tier holding the last selected pair is found by counting;
// inside it, the threshold value by most-significant-digit radix selection over the candidates
// (compacted in place, stably, so tied values stay in flat order); a final pass in flat order takes
// everything above the threshold and the first tied entries.
template <class T>
void select_tiles(const MraShape& sh, const MraTiers& tier, const MraScratch<T>& w, const MraHead<T>& out) noexcept {
  const Index nq = sh.nq, nk = sh.nk, k = sh.tiles;
  std::fill(out.offsets, out.offsets + nq + 1, Index{0});
  if (k == 0) return;
  constexpr int kTiers = 6;  // -2 .. 3
  Index per_tier[kTiers] = {};
  for (Index I = 0; I < nq; ++I)
    for (Index J = 0; J < nk; ++J) ++per_tier[tier(I, J, w.qcount, w.kcount) + 2];
  int cut = kTiers - 1;
  Index need = k;
  while (per_tier[cut] < need) need -= per_tier[cut--];
  const int cut_tier = cut - 2;

  Index m = 0;
  for (Index I = 0; I < nq; ++I)
    for (Index J = 0; J < nk; ++J)
      if (tier(I, J, w.qcount, w.kcount) == cut_tier) w.cand[m++] = static_cast<std::uint32_t>(I * nk + J);
  using U = decltype(order_key(T(0)));
  int hi = 8 * static_cast<int>(sizeof(U));
  while (hi > 0) {
    const int width = std::min(kRadixBits, hi), shift = hi - width;
    const U mask = (U{1} << width) - 1;
    std::fill(w.hist, w.hist + (Index{1} << width), Index{0});
    for (Index i = 0; i < m; ++i) ++w.hist[(order_key(w.p[w.cand[i]]) >> shift) & mask];
    Index digit = static_cast<Index>(mask);
    while (w.hist[digit] < need) need -= w.hist[digit--];
    Index kept = 0;
    for (Index i = 0; i < m; ++i)
      if (static_cast<Index>((order_key(w.p[w.cand[i]]) >> shift) & mask) == digit) w.cand[kept++] = w.cand[i];
    m = kept;
    hi = shift;
  }
  const U threshold = order_key(w.p[w.cand[0]]);
  Index ties = need, n = 0;
  for (Index I = 0; I < nq; ++I) {
    for (Index J = 0; J < nk; ++J) {
      const int t = tier(I, J, w.qcount, w.kcount);
      bool take = t > cut_tier;
      if (t == cut_tier) {
        const U key = order_key(w.p[I * nk + J]);
        take = key > threshold;
        if (key == threshold && ties > 0) take = true, --ties;
      }
      if (take) out.cols[n++] = J;
    }
    out.offsets[I + 1] = n;
  }
}

// The coarse part's term: log c_J for key block J (-inf when empty), and -inf on the pairs the fine
// part computes exactly.
template <class T>
struct MraCoarseTerm {
  static constexpr bool active = true;
  static constexpr bool masks = true;
  const T* log_count = nullptr;  // [nk]
  const Index* offsets = nullptr;
  const Index* cols = nullptr;
  Index nq = 0;

  void begin(Index, const T*, Index) const noexcept {}
  void add(T* s, Index, Index i0, Index j0, Index keys) const noexcept {
    using S = Packet<T>;
    constexpr Index TQ = kTileQ<T>;
    for (Index jj = 0; jj < keys; ++jj) {
      const auto b = S::set1(log_count[j0 + jj]);
      for (Index c = 0; c < TQ; c += S::size) S::store(s + jj * TQ + c, S::add(S::load(s + jj * TQ + c), b));
    }
    for (Index r = 0; r < TQ && i0 + r < nq; ++r) {
      const Index* first = cols + offsets[i0 + r];
      const Index* last = cols + offsets[i0 + r + 1];
      for (const Index* c = std::lower_bound(first, last, j0); c != last && *c < j0 + keys; ++c)
        s[(*c - j0) * TQ + r] = S::neg_inf();
    }
  }
};

template <class T>
struct MraCall {
  QuadraticCall<T> qc;
  const MraConfig* config = nullptr;
};

// Real queries of sequence b: with Lq == Lk the key lengths pad the queries too.
inline Index mra_valid_queries(const Problem& p, const Mask& m, Index b) noexcept {
  if (m.key_lengths.empty() || p.len_q != p.len_k) return p.len_q;
  return m.key_lengths[static_cast<std::size_t>(b)];
}

// Phases 1-3 for (b, h).
template <class T>
void mra_select(const MraCall<T>& c, const MraShape& sh, Index b, Index h, const MraScratch<T>& w,
                const MraHead<T>& head) noexcept {
  const Problem& p = c.qc.problem;
  const MraConfig& cfg = *c.config;
  const Index dq = p.dim_qk, dv = p.dim_v, nq = sh.nq, nk = sh.nk;
  const Segment seg = segment(*c.qc.mask, p, b);
  const HeadCtx<T> x = head_ctx(c.qc, seg, h);
  const T scale = c.qc.scale;
  block_means(x.q, p.len_q, mra_valid_queries(p, *c.qc.mask, b), sh.block, dq, w.qbar, w.qcount);
  block_means(x.k, p.len_k, seg.len_k, sh.block, dq, w.kbar, w.kcount);
  block_means(x.v, p.len_k, seg.len_k, sh.block, dv, w.vbar, w.kcount);

  // Coarse logits, a query tile of pooled rows at a time through the core's score kernel.
  constexpr Index TQ = kTileQ<T>, TK = kTileK<T>;
  const HeadRows<const T> qbar{w.qbar, nq, dq, dq};
  for (Index i0 = 0; i0 < nq; i0 += TQ) {
    const Index count = std::min(TQ, nq - i0);
    transpose_rows(qbar, i0, count, dq, scale, w.ts.qt);
    for (Index j0 = 0; j0 < nk; j0 += TK) {
      const Index keys = std::min(TK, nk - j0);
      qk_tile(w.kbar + j0 * dq, dq, keys, w.ts.qt, dq, w.ts.s);
      for (Index r = 0; r < count; ++r)
        for (Index jj = 0; jj < keys; ++jj) w.p[(i0 + r) * nk + j0 + jj] = w.ts.s[jj * TQ + r];
    }
  }
  for (Index I = 0; I < nq; ++I) {
    T* row = w.p + I * nk;
    const T rho = max_of(row, nk);
    for (Index J = 0; J < nk; ++J) row[J] -= rho;
  }
  const MraTiers tier{cfg.prior_first, cfg.prior_diag > 0 ? cfg.prior_diag / 2 : Index{-1}};
  select_tiles(sh, tier, w, head);
  if (!sh.coarse) return;

  // The coarse part: pooled queries over pooled keys, each key block standing for its c_J real keys.
  for (Index J = 0; J < nk; ++J) w.kcount[J] = std::log(w.kcount[J]);
  HeadCtx<T> y;
  y.q = qbar;
  y.k = {w.kbar, nk, dq, dq};
  y.v = {w.vbar, nk, dv, dv};
  y.out = {head.coarse, nq, dv, dv};
  y.lse = head.coarse_lse;
  y.band.len_q = nq;
  y.band.len_k = nk;
  const MraCoarseTerm<T> term{w.kcount, head.offsets, head.cols, nq};
  attend_softmax(y, 0, nq, dq, dv, scale, w.ts, term);
}

// Phase 4 for query block I of (b, h): its tiles at token resolution, merged with its coarse part.
template <class T>
void mra_fine(const MraCall<T>& c, const MraShape& sh, Index b, Index h, Index I, const MraScratch<T>& w,
              const MraHead<T>& head) noexcept {
  const Problem& p = c.qc.problem;
  const Index dv = p.dim_v;
  const Segment seg = segment(*c.qc.mask, p, b);
  const Index i0 = I * sh.block;
  const Index rows = std::min(sh.block, p.len_q - i0);
  const Index real = std::clamp(mra_valid_queries(p, *c.qc.mask, b) - i0, Index{0}, rows);
  HeadCtx<T> x = rows_from(head_ctx(c.qc, seg, h), i0);
  T* user_lse = x.lse;
  x.lse = w.lse;
  const ListedKeys tiles{head.cols + head.offsets[I], head.offsets[I + 1] - head.offsets[I], sh.block};
  if (real > 0) attend_softmax(x, 0, real, p.dim_qk, dv, c.qc.scale, w.ts, NoScoreTerm{}, tiles);
  for (Index r = 0; r < rows; ++r) {
    T* o = x.out.row(r);
    T lse = Packet<T>::neg_inf();
    if (r >= real) {
      std::fill(o, o + dv, T(0));
    } else {
      lse = w.lse[r];
      if (sh.coarse) lse = merge_row(o, lse, head.coarse + I * dv, head.coarse_lse[I], o, dv);
    }
    if (user_lse) user_lse[r] = lse;
  }
}

template <class T>
void run_mra(const MraCall<T>& c, Executor exec, std::span<std::byte> workspace, MraSelection* report) {
  const Problem& p = c.qc.problem;
  const MraShape sh(p, *c.config);
  const Index heads = p.batch * p.heads;
  if (report) {  // sized for the call even when it has no work
    report->batch = p.batch;
    report->heads = p.heads;
    report->query_blocks = sh.nq;
    report->key_blocks = sh.nk;
    report->block = sh.block;
    report->offsets.assign(static_cast<std::size_t>(heads * (sh.nq + 1)), 0);
    report->cols.clear();
  }
  if (p.batch == 0 || p.heads == 0 || p.len_q == 0) return;
  const int threads = std::max(exec.num_threads(), 1);
  const std::size_t per_head = plan_of<MraHead<T>>(sh).bytes();
  const std::size_t per_thread = plan_of<MraScratch<T>>(sh).bytes();
  const std::size_t head_bytes = per_head * static_cast<std::size_t>(heads);
  Arena arena(workspace, head_bytes + per_thread * static_cast<std::size_t>(threads));
  std::byte* head_mem = arena.take<std::byte>(static_cast<Index>(head_bytes));
  std::byte* scratch = arena.take<std::byte>(static_cast<Index>(per_thread) * threads);
  const auto head = [&](Index bh) {
    Arena a(std::span<std::byte>(head_mem + per_head * static_cast<std::size_t>(bh), per_head), per_head);
    return take_from<MraHead<T>>(a, sh);
  };
  const auto worker = [&](int wk) {
    Arena a(std::span<std::byte>(scratch + per_thread * static_cast<std::size_t>(wk), per_thread), per_thread);
    return take_from<MraScratch<T>>(a, sh);
  };

  exec.run(heads, threads, [&](int wk, Index bh) { mra_select(c, sh, bh / p.heads, bh % p.heads, worker(wk), head(bh)); });
  exec.run(heads * sh.nq, threads, [&](int wk, Index item) {
    const Index bh = item / sh.nq;
    mra_fine(c, sh, bh / p.heads, bh % p.heads, item % sh.nq, worker(wk), head(bh));
  });

  if (report) {
    for (Index bh = 0; bh < heads; ++bh) {
      const MraHead<T> hd = head(bh);
      for (Index I = 0; I <= sh.nq; ++I)
        report->offsets[static_cast<std::size_t>(bh * (sh.nq + 1) + I)] = static_cast<Index>(report->cols.size()) + hd.offsets[I];
      report->cols.insert(report->cols.end(), hd.cols, hd.cols + hd.offsets[sh.nq]);
    }
  }
}

}  // namespace detail

template <class T>
class MraAttention {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "MraAttention<T>: T is float or double");

 public:
  using Scalar = T;
  using Config = MraConfig;
  static constexpr std::string_view name = "MraAttention";
  static constexpr Complexity complexity = Complexity::block_sparse;

  MraAttention() = default;
  explicit MraAttention(Config config) : config_(std::move(config)) { config_.validate().raise(); }

  [[nodiscard]] const Config& config() const noexcept { return config_; }

  // Key padding only: blocks are positional, and a causal or per-pair mask would cut through them.
  [[nodiscard]] bool supports(const Mask& mask) const noexcept {
    return mask.causal == Causal::none && !mask.bias.present() && !mask.window.active() && !mask.packed();
  }

  // The budget's tiles at token resolution (an upper bound: the last blocks may be partial), the coarse
  // logits twice (selection and coarse part) and the coarse products.
  [[nodiscard]] Cost cost(const Problem& p, const Mask& /*mask*/ = {}) const noexcept {
    const detail::MraShape sh(p, config_);
    const double b = static_cast<double>(sh.block), bh = static_cast<double>(p.batch * p.heads);
    const double dq = static_cast<double>(p.dim_qk), dv = static_cast<double>(p.dim_v);
    const double blocks = static_cast<double>(sh.nq) * static_cast<double>(sh.nk);
    double flops = static_cast<double>(sh.tiles) * b * b * 2.0 * (dq + dv) + blocks * 2.0 * dq;
    if (sh.coarse) flops += blocks * 2.0 * (dq + dv);
    const double elems = static_cast<double>(p.batch) * (static_cast<double>(p.heads * p.len_q) * (dq + dv) +
                                                         static_cast<double>(p.kv_heads * p.len_k) * (dq + dv));
    return {flops * bh, elems * sizeof(T)};
  }

  [[nodiscard]] std::size_t workspace_bytes(const Problem& p, int threads) const noexcept {
    const detail::MraShape sh(p, config_);
    const std::size_t heads = detail::plan_of<detail::MraHead<T>>(sh).bytes() * static_cast<std::size_t>(p.batch * p.heads);
    const std::size_t per = detail::plan_of<detail::MraScratch<T>>(sh).bytes() * static_cast<std::size_t>(std::max(threads, 1));
    return detail::ArenaPlan{}.add(static_cast<Index>(heads + per), 1).span_bytes();
  }

  [[nodiscard]] Status check(ConstTensor4<T> q, ConstTensor4<T> k, ConstTensor4<T> v, Tensor4<T> out,
                             const Mask& mask = {}, const Options<T>& options = {}) const noexcept {
    return detail::guarded([&]() -> Status { return check_call(q, k, v, out, mask, options); });
  }

  void forward(ConstTensor4<T> q, ConstTensor4<T> k, ConstTensor4<T> v, Tensor4<T> out, const Mask& mask = {},
               const Options<T>& options = {}) const {
    run(q, k, v, out, mask, options, nullptr);
  }
  // Also reports the tiles computed exactly.
  void forward(ConstTensor4<T> q, ConstTensor4<T> k, ConstTensor4<T> v, Tensor4<T> out, const Mask& mask,
               const Options<T>& options, MraSelection& selection) const {
    run(q, k, v, out, mask, options, &selection);
  }

 private:
  void run(ConstTensor4<T> q, ConstTensor4<T> k, ConstTensor4<T> v, Tensor4<T> out, const Mask& mask,
           const Options<T>& options, MraSelection* selection) const {
    check_call(q, k, v, out, mask, options).raise();
    detail::MraCall<T> c;
    c.qc.problem = Problem::of<T>(q, k, v, options.layout);
    c.qc.q = q;
    c.qc.k = k;
    c.qc.v = v;
    c.qc.out = out;
    c.qc.lse = options.lse;
    c.qc.layout = options.layout;
    c.qc.mask = &mask;
    c.qc.scale = static_cast<T>(detail::attention_scale(config_.scale, c.qc.problem.dim_qk));
    c.config = &config_;
    if (selection) *selection = MraSelection{};
    detail::run_mra(c, options.executor, options.workspace, selection);
  }

  Status check_call(ConstTensor4<T> q, ConstTensor4<T> k, ConstTensor4<T> v, Tensor4<T> out, const Mask& mask,
                    const Options<T>& options) const {
    using detail::error;
    if (Status s = config_.validate(); !s) return s;
    if (Status s = detail::validate_call<T>(name, q, k, v, out, mask, options); !s) return s;
    if (mask.causal != Causal::none)
      return error(ErrorCode::unsupported, name,
                   "::forward: causal MRA is not supported: a block's pooled keys and its coarse logit include future "
                   "tokens, and neither the paper nor the official code defines a causal variant. Use SoftmaxAttention "
                   "(causal) or RfaAttention for linear-time causal attention");
    if (mask.bias.present() || mask.window.active() || mask.packed())
      return error(ErrorCode::unsupported, name, "::forward: ",
                   mask.bias.present() ? "mask.bias" : mask.window.active() ? "mask.window" : "packed sequences",
                   " cannot be honoured: MRA's blocks and their coarse logits are positional; key_lengths is the "
                   "supported mask");
    const Problem p = Problem::of<T>(q, k, v, options.layout);
    if (config_.prior_diag > 0 && p.len_q != p.len_k)
      return error(ErrorCode::unsupported, name, "::forward: Config::prior_diag = ", config_.prior_diag,
                   " needs self-attention, but Lq = ", p.len_q, " differs from Lk = ", p.len_k,
                   "; set prior_diag = 0 for cross-attention");
    const detail::MraShape sh(p, config_);
    if (static_cast<double>(sh.nq) * static_cast<double>(sh.nk) >= 4294967296.0)
      return error(ErrorCode::unsupported, name, "::forward: ", sh.nq, " x ", sh.nk,
                   " block pairs exceed 2^32; use a larger Config::block");
    return {};
  }

  Config config_{};
};

EFFATTN_END_NAMESPACE
