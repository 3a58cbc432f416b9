#pragma once
// The quadratic core: softmax-style attention over (query tile x key tile) blocks, never holding an
// Lq x Lk matrix.
//
// Work item = (sequence, head, query tile) for prefill, (sequence, KV head, key chunk) for decode;
// items are independent and each is computed start to finish by one thread in a fixed order, so the
// output does not depend on the thread count. Per item:
//   Schedule    (schedule.hpp) which key tiles a query tile visits, and which of them need the mask;
//   ScoreMods   (score_mods.hpp) softcap, ALiBi, additive and boolean bias, before the mask;
//   Normaliser  (normalisers.hpp) OnlineSoftmax: running max and sum per query.
// Masked scores are an explicit -inf and probabilities are selected to 0 after the exp (Eigen's
// vectorised exp(-inf) is a denormal, not 0). A row whose max is still -inf saw no key: output 0.

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <span>

#include "effattn/attention.hpp"
#include "effattn/core/normalisers.hpp"
#include "effattn/core/schedule.hpp"
#include "effattn/core/score_mods.hpp"
#include "effattn/core/softmax_state.hpp"
#include "effattn/simd/row_ops.hpp"
#include "effattn/simd/tile_kernels.hpp"

EFFATTN_BEGIN_NAMESPACE
namespace detail {

// Keys per score tile. The score tile (kTileK x kTileQ) plus the transposed query and output tiles
// stay in L1/L2 for D <= 128.
template <class T>
inline constexpr Index kTileK = 128;
// At or below this many query rows a sequence takes the row (decode) kernel: the query-lane tiles
// would leave most lanes empty. The row kernel costs about n * (2D/W + 8) vector ops per key against
// 2D for a tile, so it wins up to n ~ W/2; 4 keeps it a decode path for AVX2 as well.
inline constexpr Index kDecodeMaxRows = 4;
// Keys per decode block: a block of K and V rows stays in L1 while every query head sharing the KV
// head reads it.
inline constexpr Index kDecodeBlock = 64;

inline bool decode_shaped(const Mask& m, const Problem& p) noexcept {
  return !m.packed() && p.len_q <= kDecodeMaxRows;
}

template <class T>
struct QuadraticCall {
  Problem problem{};
  ConstTensor4<T> q, k, v;
  Tensor4<T> out;
  std::optional<Tensor3<T>> lse;
  Layout layout = Layout::bhld;
  const Mask* mask = nullptr;
  T scale = 1;
  T softcap = 0;
  std::span<const double> alibi_slopes;
  Index split_kv = 0;
};

// Query tiles that share one pass over K and V. Once a head's K and V outgrow L2 (Lk (Dqk + Dv) of
// 2 MiB at L = 16384, D = 64) each key tile is fetched from L3 once per pass: sharing the pass among
// 4 query tiles cut that traffic 4x and lifted L = 16384, D = 128 from 59% to 82% of FMA peak (and
// L = 16384, D = 64 from 78% to 81%) on a Zen 4 core with 1 MiB of L2.
inline constexpr Index kQueryTilesPerPass = 4;

// Per-thread scratch of the prefill (query-lane tile) kernel: one score tile, and per query tile of
// the pass its transposed queries, output accumulator and softmax state.
template <class T>
struct TileScratch {
  T* qt = nullptr;      // [G, Dqk, TQ] scaled queries, transposed
  T* s = nullptr;       // [TK, TQ] scores, then probabilities
  T* ot = nullptr;      // [G, Dv, TQ] unnormalised output, transposed
  T* m = nullptr;       // [G, TQ] running max
  T* l = nullptr;       // [G, TQ] running sum
  Index* lo = nullptr;  // [G, TQ] first visible key per query
  Index* hi = nullptr;  // [G, TQ] one past the last visible key

  static constexpr Index G = kQueryTilesPerPass;
  static constexpr Index TQ = kTileQ<T>;
  template <class Visit>
  void fields(const Problem& p, Visit&& visit) {
    visit(qt, G * p.dim_qk * TQ);
    visit(s, kTileK<T> * TQ);
    visit(ot, G * p.dim_v * TQ);
    visit(m, G * TQ);
    visit(l, G * TQ);
    visit(lo, G * TQ);
    visit(hi, G * TQ);
  }
};

// Per-thread scratch of the decode (row) kernel: all query rows of one KV head.
template <class T>
struct RowScratch {
  T* qs = nullptr;                   // [R, Dqk] scaled queries
  T* acc = nullptr;                  // [R, Dv]
  SoftmaxState<T>* state = nullptr;  // [R]
  T* sc = nullptr;                   // [kDecodeBlock] scores of one row

  static Index rows(const Problem& p) noexcept { return (p.kv_heads > 0 ? p.heads / p.kv_heads : 0) * p.len_q; }
  template <class Visit>
  void fields(const Problem& p, Visit&& visit) {
    visit(qs, rows(p) * p.dim_qk);
    visit(acc, rows(p) * p.dim_v);
    visit(state, rows(p));
    visit(sc, kDecodeBlock);
  }
};

inline Index split_chunks(const Problem& p, Index split_kv) noexcept {
  if (split_kv <= 1) return 1;
  const Index blocks = std::max<Index>(1, (p.len_k + kDecodeBlock - 1) / kDecodeBlock);
  return std::min(split_kv, blocks);
}

// Scratch of one thread: room for either kernel the problem's shape may take.
template <class T>
std::size_t scratch_per_thread(const Problem& p) noexcept {
  const bool decode = p.len_q <= kDecodeMaxRows;
  return std::max(plan_of<TileScratch<T>>(p).bytes(), decode ? plan_of<RowScratch<T>>(p).bytes() : 0);
}

template <class T>
ArenaPlan quadratic_plan(const Problem& p, int threads, Index split_kv) noexcept {
  ArenaPlan a;
  a.add(static_cast<Index>(scratch_per_thread<T>(p)) * std::max(threads, 1), 1);
  const Index chunks = p.len_q <= kDecodeMaxRows ? split_chunks(p, split_kv) : 1;
  if (chunks > 1) a.add(p.batch * p.heads * p.len_q * chunks * (p.dim_v + 1), sizeof(T));
  return a;
}

template <class T>
std::size_t quadratic_workspace_bytes(const Problem& p, int threads, Index split_kv) noexcept {
  return quadratic_plan<T>(p, threads, split_kv).span_bytes();
}

// The heads of one call, resolved to row pointers.
template <class T>
struct HeadCtx {
  HeadRows<const T> q, k, v;
  HeadRows<T> out;
  T* lse = nullptr;  // [Lq] of this (batch, head), or null
  ScoreMods<T> mods;
  Band band;
  Segment seg;
};

template <class T>
HeadCtx<T> head_ctx(const QuadraticCall<T>& c, const Segment& seg, Index h) noexcept {
  const Problem& p = c.problem;
  const Index kvh = h / (p.heads / p.kv_heads);
  HeadCtx<T> x;
  x.seg = seg;
  x.q = head_rows(c.q, c.layout, seg.batch, h);
  x.k = head_rows(c.k, c.layout, seg.batch, kvh);
  x.v = head_rows(c.v, c.layout, seg.batch, kvh);
  x.out = head_rows(c.out, c.layout, seg.batch, h);
  x.q.data += seg.q0 * x.q.row_stride;
  x.out.data += seg.q0 * x.out.row_stride;
  x.k.data += seg.k0 * x.k.row_stride;
  x.v.data += seg.k0 * x.v.row_stride;
  if (c.lse) x.lse = c.lse->data() + (seg.batch * p.heads + h) * p.len_q + seg.q0;
  x.band = make_band(*c.mask, seg.len_q, seg.len_k);
  x.mods.softcap = c.softcap;
  x.mods.alibi = c.alibi_slopes.empty() ? T(0) : static_cast<T>(c.alibi_slopes[static_cast<std::size_t>(h)]);
  // ALiBi distances follow the bottom-right alignment unless the mask asks for top-left.
  x.mods.shift = c.mask->causal == Causal::top_left ? 0 : seg.len_k - seg.len_q;
  if (c.mask->bias.present()) {
    x.mods.bias = &c.mask->bias;
    x.mods.bias_b = seg.batch;
    x.mods.bias_h = h;
    x.mods.q_off = seg.q0;
    x.mods.k_off = seg.k0;
  }
  return x;
}

// The logit scale of a kind's Config: the given one, or 1 / sqrt(Dqk).
inline double attention_scale(const std::optional<double>& scale, Index dim) noexcept {
  return scale ? *scale : 1.0 / std::sqrt(static_cast<double>(std::max<Index>(dim, 1)));
}

// A head's rows seen from row i0 on: rows, outputs, lse and band re-based so that the core's row 0 is i0.
template <class T>
HeadCtx<T> rows_from(HeadCtx<T> x, Index i0) noexcept {
  x.q.data += i0 * x.q.row_stride;
  x.out.data += i0 * x.out.row_stride;
  if (x.lse) x.lse += i0;
  x.band.shift += i0;
  return x;
}

// qt [dim, TQ] = scale * rows [first, first + count) of q, transposed; lanes >= count are 0. Whole
// packet-square blocks go through register transposes: with a feature map's 256-wide rows (the
// linear core) the scalar loop cost a fifth of a query tile's time.
template <class T>
void transpose_rows(const HeadRows<const T>& q, Index first, Index count, Index dim, T scale, T* qt) noexcept {
  using S = Packet<T>;
  constexpr int W = S::size;
  constexpr Index TQ = kTileQ<T>;
  const auto vs = S::set1(scale);
  for (Index r0 = 0; r0 < TQ; r0 += W) {
    Index d0 = 0;
    if (r0 + W <= count) {
      for (; d0 + W <= dim; d0 += W) {
        typename S::P block[W];
        for (int i = 0; i < W; ++i) block[i] = S::mul(vs, S::loadu(q.row(first + r0 + i) + d0));
        S::transpose(block);
        for (int i = 0; i < W; ++i) S::store(qt + (d0 + i) * TQ + r0, block[i]);
      }
    }
    for (Index r = r0; r < r0 + W; ++r) {
      const T* qr = q.row(first + std::min(r, count - 1));
      const T f = r < count ? scale : T(0);
      for (Index d = d0; d < dim; ++d) qt[d * TQ + r] = f * qr[d];
    }
  }
}

// Writes the rows of a finished tile, ot [Dv, TQ], transposed back through registers: the strided
// scalar loop cost a few percent where a tile sees few keys (LARA's 49-64 samples). False: some
// row needs the normaliser's finish_row, or the tile is partial (the caller then writes it).
template <class T, class Normaliser>
bool finish_tile(const HeadCtx<T>& x, Index i, Index count, Index dim_v, const T* ot, const T* l,
                 const Normaliser& norm) noexcept {
  using S = Packet<T>;
  constexpr int W = S::size;
  constexpr Index TQ = kTileQ<T>;
  if (count != TQ) return false;
  T f[TQ];
  for (Index r = 0; r < TQ; ++r)
    if (!norm.row_factor(l[r], f[r])) return false;
  for (Index r0 = 0; r0 < TQ; r0 += W) {
    Index c0 = 0;
    for (; c0 + W <= dim_v; c0 += W) {
      typename S::P block[W];
      for (int c = 0; c < W; ++c) block[c] = S::load(ot + (c0 + c) * TQ + r0);
      S::transpose(block);
      for (int r = 0; r < W; ++r) S::storeu(x.out.row(i + r0 + r) + c0, S::mul(block[r], S::set1(f[r0 + r])));
    }
    for (Index r = r0; r < r0 + W; ++r)
      for (Index c = c0; c < dim_v; ++c) x.out.row(i + r)[c] = ot[c * TQ + r] * f[r];
  }
  return true;
}

// Prefill: queries [i0, i0 + n) of one (sequence, head), n <= G * TQ, in query tiles of TQ rows.
// Key blocks come from the key schedule (schedule.hpp): by default a fixed grid (multiples of TK),
// cut to each query tile's band, so what a query computes does not depend on how many query tiles
// share a pass: the pass is a cache blocking only. A tile list gives each pass its own blocks.
template <class T, class Normaliser, class Term = NoScoreTerm, class Keys = DenseKeys>
void attend_query_tiles(const HeadCtx<T>& x, Index i0, Index n, Index dim_qk, Index dim_v, T scale,
                        const TileScratch<T>& w, const Normaliser& norm, const Term& term = {},
                        const Keys& key_blocks = {}) noexcept {
  constexpr Index TQ = kTileQ<T>;
  constexpr Index TK = kTileK<T>;
  const Index tiles = (n + TQ - 1) / TQ;
  for (Index t = 0; t < tiles; ++t) {
    // Transposed, scaled queries; empty lanes are zero and repeat the last row's band, so they stay
    // finite and keep lo/hi monotone.
    const Index count = std::min(TQ, n - t * TQ);
    T* qt = w.qt + t * dim_qk * TQ;
    Index* lo = w.lo + t * TQ;
    Index* hi = w.hi + t * TQ;
    transpose_rows(x.q, i0 + t * TQ, count, dim_qk, scale, qt);
    for (Index r = 0; r < TQ; ++r) {
      const Index i = i0 + t * TQ + std::min(r, count - 1);
      lo[r] = x.band.lo(i);
      hi[r] = x.band.hi(i);
    }
    norm.begin(qt, dim_qk, i0 + t * TQ, w.m + t * TQ, w.l + t * TQ, w.ot + t * dim_v * TQ, dim_v);
    if constexpr (Term::active) term.begin(t, qt, i0 + t * TQ);
  }
  const bool mods = x.mods.any();
  const bool may_mask = x.mods.may_mask() || Term::masks;
  const Index j_begin = w.lo[0];
  const Index j_end = w.hi[(tiles - 1) * TQ + TQ - 1];
  key_blocks(j_begin, j_end, TK, [&](Index kb0, Index kb1) {
    for (Index t = 0; t < tiles; ++t) {
      const Index* lo = w.lo + t * TQ;
      const Index* hi = w.hi + t * TQ;
      const Index j0 = std::max(kb0, lo[0]);
      const Index j1 = std::min(kb1, hi[TQ - 1]);
      if (j0 >= j1) continue;
      const Index keys = j1 - j0;
      const bool interior = lo[TQ - 1] <= j0 && hi[0] >= j1;
      T* ot = w.ot + t * dim_v * TQ;
      qk_tile(x.k.row(j0), x.k.row_stride, keys, w.qt + t * dim_qk * TQ, dim_qk, w.s);
      if (mods) x.mods.apply(w.s, i0 + t * TQ, std::min(TQ, n - t * TQ), j0, keys);
      if constexpr (Term::active) term.add(w.s, t, i0 + t * TQ, j0, keys);
      if (!interior) mask_outside_band(w.s, j0, keys, lo, hi);
      norm.absorb(w.s, i0 + t * TQ, j0, keys, w.m + t * TQ, w.l + t * TQ, ot, dim_v, !interior || may_mask);
      pv_tile(x.v.row(j0), x.v.row_stride, keys, dim_v, w.s, ot);
    }
  });
  for (Index t = 0; t < tiles; ++t) {
    const Index first = t * TQ, count = std::min(TQ, n - first);
    if (!finish_tile(x, i0 + first, count, dim_v, w.ot + t * dim_v * TQ, w.l + first, norm))
      for (Index r = first; r < first + count; ++r)
        norm.finish_row(w.ot + t * dim_v * TQ + r % TQ, TQ, w.l[r], x.out.row(i0 + r), dim_v);
    if (x.lse)
      for (Index r = first; r < first + count; ++r) x.lse[i0 + r] = w.l[r] > 0 ? w.m[r] + std::log(w.l[r]) : Packet<T>::neg_inf();
  }
}


// Rows [i0, i0 + n) of x under OnlineSoftmax, in passes of whole query-tile groups, against one key
// schedule.
template <class T, class Term = NoScoreTerm, class Keys = DenseKeys>
void attend_softmax(const HeadCtx<T>& x, Index i0, Index n, Index dim_qk, Index dim_v, T scale,
                    const TileScratch<T>& ts, const Term& term = {}, const Keys& key_blocks = {}) noexcept {
  constexpr Index pass = TileScratch<T>::G * kTileQ<T>;
  for (Index r = i0; r < i0 + n; r += pass)
    attend_query_tiles<T>(x, r, std::min(pass, i0 + n - r), dim_qk, dim_v, scale, ts, OnlineSoftmax<T>{}, term,
                          key_blocks);
}

// The row kernel: one query row (qs, already scaled) against keys key_at(0), ..., key_at(n - 1) at any
// positions, each score passed through mod(s, j), absorbed into the row's state and accumulator. sc
// holds n scores. Decode reads a contiguous block; hypercube's token level gathers its neighbours.
template <class T, class KeyAt, class Mod>
void absorb_keys(const T* qs, const HeadRows<const T>& k, const HeadRows<const T>& v, Index dim_qk, Index dim_v,
                 Index n, KeyAt&& key_at, Mod&& mod, T* sc, SoftmaxState<T>& state, T* acc) noexcept {
  for (Index jj = 0; jj < n; ++jj) {
    const Index j = key_at(jj);
    sc[jj] = mod(dot(qs, k.row(j), dim_qk), j);
  }
  state.absorb(sc, n, acc, dim_v, [&](Index jj) { return v.row(key_at(jj)); });
}


// Decode: every query row of the heads sharing one KV head, over keys [kc0, kc1) of the sequence.
// Writes the final rows, or with `partial` the rows and their lse as [rows, Dv + 1] for a later merge.
template <class T>
void attend_rows(const QuadraticCall<T>& c, Index b, Index kvh, Index kc0, Index kc1, const RowScratch<T>& w,
                 T* partial) noexcept {
  const Problem& p = c.problem;
  const Index group = p.heads / p.kv_heads;
  const Segment seg = segment(*c.mask, p, b);
  const Index dq = p.dim_qk, dv = p.dim_v;
  // Contexts differ per head only in q/out/lse/mods; K and V are shared.
  for (Index g = 0; g < group; ++g) {
    const HeadCtx<T> x = head_ctx(c, seg, kvh * group + g);
    for (Index i = 0; i < p.len_q; ++i) {
      const Index r = g * p.len_q + i;
      const T* qr = x.q.row(i);
      for (Index d = 0; d < dq; ++d) w.qs[r * dq + d] = c.scale * qr[d];
      std::construct_at(w.state + r);
      std::fill(w.acc + r * dv, w.acc + (r + 1) * dv, T(0));
    }
  }
  for (Index jb = kc0; jb < kc1; jb += kDecodeBlock) {
    const Index je = std::min(kc1, jb + kDecodeBlock);
    for (Index g = 0; g < group; ++g) {
      const HeadCtx<T> x = head_ctx(c, seg, kvh * group + g);
      for (Index i = 0; i < p.len_q; ++i) {
        const Index r = g * p.len_q + i;
        const Index lo = std::max(jb, x.band.lo(i)), hi = std::min(je, x.band.hi(i));
        if (lo >= hi) continue;
        const bool mods = x.mods.any();
        absorb_keys(
            w.qs + r * dq, x.k, x.v, dq, dv, hi - lo, [lo](Index jj) { return lo + jj; },
            [&](T s, Index j) { return mods ? x.mods.apply(s, i, j) : s; }, w.sc, w.state[r], w.acc + r * dv);
      }
    }
  }
  for (Index g = 0; g < group; ++g) {
    const HeadCtx<T> x = head_ctx(c, seg, kvh * group + g);
    for (Index i = 0; i < p.len_q; ++i) {
      const Index r = g * p.len_q + i;
      T* o = partial ? partial + r * (dv + 1) : x.out.row(i);
      const T lse = w.state[r].finish(w.acc + r * dv, o, dv);
      if (partial) o[dv] = lse;
      else if (x.lse) x.lse[i] = lse;
    }
  }
}

template <class T, class Normaliser>
void run_quadratic(const QuadraticCall<T>& c, const Normaliser& norm, const Executor& exec,
                   std::span<std::byte> workspace) {
  const Problem& p = c.problem;
  const Mask& mask = *c.mask;
  if (p.batch == 0 || p.heads == 0 || p.len_q == 0) return;
  const int threads = exec.num_threads();
  const ArenaPlan plan = quadratic_plan<T>(p, threads, c.split_kv);
  Arena arena(workspace, plan.bytes());
  const bool decode = decode_shaped(mask, p);
  const std::size_t per_thread = scratch_per_thread<T>(p);
  std::byte* scratch = arena.take<std::byte>(static_cast<Index>(per_thread) * std::max(threads, 1));
  const auto worker_arena = [&](int w) {
    return Arena(std::span<std::byte>(scratch + per_thread * static_cast<std::size_t>(w), per_thread), per_thread);
  };

  if (decode) {
    const Index chunks = split_chunks(p, c.split_kv);
    const Index group = p.heads / p.kv_heads;
    const Index rows = group * p.len_q;
    T* partial = chunks > 1 ? arena.take<T>(p.batch * p.heads * p.len_q * chunks * (p.dim_v + 1)) : nullptr;
    exec.run(p.batch * p.kv_heads * chunks, threads, [&](int w, Index item) {
      Arena a = worker_arena(w);
      const auto rs = take_from<RowScratch<T>>(a, p);
      const Index ch = item % chunks, bk = item / chunks;
      const Index b = bk / p.kv_heads, kvh = bk % p.kv_heads;
      const Index len_k = segment(mask, p, b).len_k;
      const Index per = (len_k + chunks - 1) / chunks;
      const Index k0 = std::min(len_k, ch * per), k1 = std::min(len_k, k0 + per);
      attend_rows(c, b, kvh, k0, k1, rs, partial ? partial + (bk * chunks + ch) * rows * (p.dim_v + 1) : nullptr);
    });
    if (chunks > 1) {
      // Fixed left-to-right merge order: the result depends on split_kv, never on the thread count.
      exec.run(p.batch * p.kv_heads, threads, [&](int, Index bk) {
        const Index b = bk / p.kv_heads, kvh = bk % p.kv_heads;
        const Segment seg = segment(mask, p, b);
        for (Index g = 0; g < group; ++g) {
          const HeadCtx<T> x = head_ctx(c, seg, kvh * group + g);
          for (Index i = 0; i < p.len_q; ++i) {
            const Index r = g * p.len_q + i;
            const T* first = partial + (bk * chunks) * rows * (p.dim_v + 1) + r * (p.dim_v + 1);
            T* o = x.out.row(i);
            std::copy(first, first + p.dim_v, o);
            T lse = first[p.dim_v];
            for (Index ch = 1; ch < chunks; ++ch) {
              const T* part = first + ch * rows * (p.dim_v + 1);
              lse = merge_row(o, lse, part, part[p.dim_v], o, p.dim_v);
            }
            if (x.lse) x.lse[i] = lse;
          }
        }
      });
    }
    return;
  }

  constexpr Index TQ = kTileQ<T>;
  const Index segs = num_segments(mask, p);
  if (mask.packed()) {
    // Rows after the last packed sequence belong to none: they see no key.
    for (Index h = 0; h < p.heads; ++h) {
      const HeadRows<T> o = head_rows(c.out, c.layout, 0, h);
      for (Index i = mask.cu_seqlens_q.back(); i < p.len_q; ++i) {
        std::fill(o.row(i), o.row(i) + p.dim_v, T(0));
        if (c.lse) c.lse->data()[h * p.len_q + i] = Packet<T>::neg_inf();
      }
    }
  }
  // Dense batches: one item per pass of up to G query tiles, interleaved over threads so causal work
  // balances; a pass shrinks to one tile when there would be too few items for the threads (the
  // result does not depend on it). Packed sequences: one item per (sequence, head), its passes in order.
  const Index tiles = (p.len_q + TQ - 1) / TQ;
  const Index min_items = 4 * static_cast<Index>(threads);
  const Index rows_per_pass =
      TQ * (p.batch * p.heads * ((tiles + TileScratch<T>::G - 1) / TileScratch<T>::G) >= min_items ? TileScratch<T>::G : 1);
  const Index passes = (p.len_q + rows_per_pass - 1) / rows_per_pass;
  const Index items = mask.packed() ? segs * p.heads : p.batch * p.heads * passes;
  exec.run(items, threads, [&](int w, Index item) {
    Arena a = worker_arena(w);
    const auto ts = take_from<TileScratch<T>>(a, p);
    const Index s = mask.packed() ? item / p.heads : item / (p.heads * passes);
    const Index h = mask.packed() ? item % p.heads : (item / passes) % p.heads;
    const Segment seg = segment(mask, p, s);
    const HeadCtx<T> x = head_ctx(c, seg, h);
    const Index first = mask.packed() ? 0 : (item % passes) * rows_per_pass;
    const Index end = mask.packed() ? seg.len_q : std::min(seg.len_q, first + rows_per_pass);
    for (Index i0 = first; i0 < end; i0 += rows_per_pass)
      attend_query_tiles<T>(x, i0, std::min(rows_per_pass, end - i0), p.dim_qk, p.dim_v, c.scale, ts, norm);
  });
}

}  // namespace detail
EFFATTN_END_NAMESPACE
