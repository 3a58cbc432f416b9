#pragma once
// Normalisers of the quadratic core: how a tile of scores becomes weights on V.
//   OnlineSoftmax  running max and sum per query (FlashAttention's online softmax); the state
//                  (max, sum, acc) of disjoint key ranges merges exactly (softmax_state.hpp).
//   LinearScore    the score is the weight (phi(q).phi(k) of a feature map); each query tile
//                  starts from a carried prefix state (S, z) of earlier keys: the intra-chunk part
//                  of the linear core's causal mode.
//   InverseCdf     no output: draws keys from each query's softmax row (its log-partition known
//                  from an earlier OnlineSoftmax pass) by inverse transform sampling: RA's sampler.
// A normaliser is an object: begin() starts a query tile, absorb() turns a score tile into weights
// (updating the running sums), row_factor() gives the factor of a finished row's accumulator (or
// says the row needs finish_row()), finish_row() writes one row.

#include <algorithm>
#include <cmath>
#include <limits>

#include "effattn/simd/packet.hpp"
#include "effattn/simd/tile_kernels.hpp"

EFFATTN_BEGIN_NAMESPACE
namespace detail {

// OnlineSoftmax over query-lane tiles: absorbs a tile of scores, turning it into probabilities
// relative to the updated running max, and rescales the accumulator only when a row's max moves
// (after the first few tiles it rarely does).
template <class T>
struct OnlineSoftmax {
  using S = Packet<T>;
  static constexpr int W = S::size;
  static constexpr Index TQ = kTileQ<T>;

  // Starts a query tile (qt: its transposed queries, first row i0): nothing seen yet.
  void begin(const T* /*qt*/, Index /*dim_qk*/, Index /*i0*/, T* m, T* l, T* ot, Index dim_v) const noexcept {
    for (Index r = 0; r < TQ; ++r) m[r] = S::neg_inf(), l[r] = 0;
    std::fill(ot, ot + dim_v * TQ, T(0));
  }

  // s: [keys, TQ] scores of keys [j0, j0 + keys) for the tile's queries from i0. may_have_inf: some
  // scores are -inf (masked), so their probabilities are selected to exactly 0.
  void absorb(T* s, Index /*i0*/, Index /*j0*/, Index keys, T* m, T* l, T* ot, Index dim_v,
              bool may_have_inf) const noexcept {
    const auto ninf = S::set1(S::neg_inf());
    for (Index c = 0; c < TQ; c += W) {
      auto cm = ninf;
      for (Index j = 0; j < keys; ++j) cm = S::max(cm, S::load(s + j * TQ + c));
      const auto m_old = S::load(m + c);
      const auto m_new = S::max(m_old, cm);
      S::store(m + c, m_new);
      // A lane that has seen only masked keys keeps max -inf; subtracting 0 instead keeps it NaN-free.
      const auto m_use = S::select(S::eq(m_new, ninf), S::zero(), m_new);
      auto lsum = S::load(l + c);
      if (S::any(S::lt(m_old, m_new))) {
        // exp(-inf - m_use) is ~0 and multiplies an accumulator that is still exactly 0.
        const auto alpha = S::exp(S::sub(m_old, m_use));
        lsum = S::mul(lsum, alpha);
        for (Index r = 0; r < dim_v; ++r) S::store(ot + r * TQ + c, S::mul(S::load(ot + r * TQ + c), alpha));
      }
      if (may_have_inf) {
        for (Index j = 0; j < keys; ++j) {
          const auto x = S::load(s + j * TQ + c);
          const auto p = S::select(S::eq(x, ninf), S::zero(), S::exp(S::sub(x, m_use)));
          S::store(s + j * TQ + c, p);
          lsum = S::add(lsum, p);
        }
      } else {
        for (Index j = 0; j < keys; ++j) {
          const auto p = S::exp(S::sub(S::load(s + j * TQ + c), m_use));
          S::store(s + j * TQ + c, p);
          lsum = S::add(lsum, p);
        }
      }
      S::store(l + c, lsum);
    }
  }

  // The row's output is its accumulator times f; a query that saw no key has l = 0 and gives 0.
  // (false: the row needs finish_row; never for a softmax.)
  bool row_factor(T l, T& f) const noexcept {
    f = l > 0 ? T(1) / l : T(0);
    return true;
  }

  // o[c] = acc[c * stride] / l.
  void finish_row(const T* acc, Index stride, T l, T* o, Index dim_v) const noexcept {
    T inv;
    row_factor(l, inv);
    for (Index c = 0; c < dim_v; ++c) o[c] = acc[c * stride] * inv;
  }
};

// LinearScore over query-lane tiles. begin() seeds the tile with the carried state: ot = S^T qt and
// l = z . qt (st: S^T as [Dv, ld], z: [ld]), so the tile's keys then add the intra-chunk terms.
//
// Two optional per-pair factors, both <= 1 for every visible pair:
//  * power-of-two scales (exponential maps): key row j holds its features times 2^-key_exp[j], the
//    carried state times 2^-state_exp, and query i takes everything to its own scale 2^query_exp[i]
//    (the largest of the scales it can see): factors 2^(key_exp[j] - query_exp[i]) and
//    2^(state_exp - query_exp[i]), exact. A query's result then depends on no key it cannot see,
//    bit for bit, and a key far below a later (invisible) one is not flushed to 0.
//  * RFA's recency gate: key j counts (1 - g_j) prod_{j < t <= J(i)} g_t for query i (J(i) its last
//    visible key) and the carried state prod_{t <= J(i)} g_t; with cumulative log-gates A relative to
//    the chunk start, key_w[j] = 1 - g_j, key_log[j] = A_j, query_log[i] = A_J(i), the factors are
//    key_w[j] exp(query_log[i] - key_log[j]) and exp(query_log[i]).
// query_* arrays are indexed by the tile's query row and readable for whole tiles; key_* by the key.
template <class T>
struct LinearScore {
  using S = Packet<T>;
  static constexpr int W = S::size;
  static constexpr Index TQ = kTileQ<T>;

  const T* st = nullptr;  // [Dv, ld]; null: nothing carried
  const T* z = nullptr;   // [ld]
  Index ld = 0;
  T clamp = 0;  // out = num / max(den, clamp) when > 0
  const T* key_exp = nullptr;  // power-of-two scales; null: none
  const T* query_exp = nullptr;
  T state_exp = 0;
  const T* key_log = nullptr;  // gate; null: none
  const T* key_w = nullptr;
  const T* query_log = nullptr;

  void begin(const T* qt, Index dim_qk, Index i0, T* /*m*/, T* l, T* ot, Index dim_v) const noexcept {
    if (st == nullptr) {
      std::fill(l, l + TQ, T(0));
      std::fill(ot, ot + dim_v * TQ, T(0));
      return;
    }
    lane_tile<T, false>(st, ld, 1, dim_v, dim_qk, qt, ot);
    lane_block<T, 1, false>(z, 0, 1, dim_qk, qt, TQ, l, TQ);
    if (query_log == nullptr && !scaled_lanes(i0)) return;
    for (Index c = 0; c < TQ; c += W) {
      auto f = query_log ? S::exp(S::loadu(query_log + i0 + c)) : S::set1(T(1));
      if (query_exp) f = S::ldexp(f, S::sub(S::set1(state_exp), S::loadu(query_exp + i0 + c)));
      S::store(l + c, S::mul(S::load(l + c), f));
      for (Index r = 0; r < dim_v; ++r) S::store(ot + r * TQ + c, S::mul(S::load(ot + r * TQ + c), f));
    }
  }

  void absorb(T* s, Index i0, Index j0, Index keys, T* /*m*/, T* l, T* /*ot*/, Index /*dim_v*/,
              bool may_have_inf) const noexcept {
    const auto ninf = S::set1(S::neg_inf());
    // Scales differ inside the tile only where a key raised the running scale: rare after the first keys.
    const bool scaled = query_exp != nullptr && !(key_exp[j0] == query_exp[i0] && key_exp[j0 + keys - 1] == query_exp[i0] &&
                                                  query_exp[i0 + TQ - 1] == query_exp[i0]);
    const bool weighted = query_log != nullptr || scaled;
    for (Index c = 0; c < TQ; c += W) {
      auto lsum = S::load(l + c);
      const auto qlog = query_log ? S::loadu(query_log + i0 + c) : S::zero();
      const auto qexp = scaled ? S::loadu(query_exp + i0 + c) : S::zero();
      for (Index j = 0; j < keys; ++j) {
        auto x = S::load(s + j * TQ + c);
        const auto masked = S::eq(x, ninf);
        if (query_log != nullptr)  // masked pairs (j after J(i)) may get factors > 1: selected away below
          x = S::mul(x, S::mul(S::set1(key_w[j0 + j]), S::exp(S::sub(qlog, S::set1(key_log[j0 + j])))));
        if (scaled) x = S::ldexp(x, S::sub(S::set1(key_exp[j0 + j]), qexp));
        if (may_have_inf || weighted) x = S::select(masked, S::zero(), x);
        S::store(s + j * TQ + c, x);
        lsum = S::add(lsum, x);
      }
      S::store(l + c, lsum);
    }
  }

  // o[c] = acc[c * stride] / den, den = l (or max(l, clamp)); 0 when den is 0 (no key visible, or
  // features that all vanished). A denominator below the normal range is divided by directly: its
  // reciprocal would overflow.
  bool row_factor(T l, T& f) const noexcept {
    const T den = clamp > 0 ? std::max(l, clamp) : l;
    f = den == 0 ? T(0) : T(1) / den;
    return den == 0 || std::abs(den) >= std::numeric_limits<T>::min();
  }

  void finish_row(const T* acc, Index stride, T l, T* o, Index dim_v) const noexcept {
    const T den = clamp > 0 ? std::max(l, clamp) : l;
    if (den == 0) {
      std::fill(o, o + dim_v, T(0));
    } else if (std::abs(den) >= std::numeric_limits<T>::min()) {
      const T inv = T(1) / den;
      for (Index c = 0; c < dim_v; ++c) o[c] = acc[c * stride] * inv;
    } else {
      for (Index c = 0; c < dim_v; ++c) o[c] = acc[c * stride] / den;
    }
  }

 private:
  [[nodiscard]] bool scaled_lanes(Index i0) const noexcept {
    return query_exp != nullptr && !(query_exp[i0] == state_exp && query_exp[i0 + TQ - 1] == state_exp);
  }
};

// InverseCdf over query-lane tiles: key j is drawn for uniform u when the running sum of
// exp(s_j - lse) first reaches u, scanning keys in increasing order (the tile loop's order). Arrays
// are indexed by the query row, readable for whole tiles; key positions are held as T (exact below
// 2^24 in float). A draw the rounded sum never reaches takes the last key of nonzero probability.
template <class T>
struct InverseCdf {
  using S = Packet<T>;
  static constexpr int W = S::size;
  static constexpr Index TQ = kTileQ<T>;

  const T* lse = nullptr;  // [rows]
  const T* u = nullptr;    // [draws, ld] uniforms in (0, 1)
  T* key = nullptr;        // [draws, ld] drawn key positions; -1 until drawn
  T* last = nullptr;       // [ld] last key of nonzero probability; -1 before
  Index draws = 0, ld = 0;

  void begin(const T* /*qt*/, Index /*dim_qk*/, Index i0, T* /*m*/, T* l, T* /*ot*/, Index /*dim_v*/) const noexcept {
    std::fill(l, l + TQ, T(0));
    std::fill(last + i0, last + i0 + TQ, T(-1));
    for (Index d = 0; d < draws; ++d) std::fill(key + d * ld + i0, key + d * ld + i0 + TQ, T(-1));
  }

  void absorb(T* s, Index i0, Index j0, Index keys, T* /*m*/, T* l, T* /*ot*/, Index /*dim_v*/,
              bool /*may_have_inf*/) const noexcept {
    const auto ninf = S::set1(S::neg_inf());
    for (Index c = 0; c < TQ; c += W) {
      const auto ls = S::loadu(lse + i0 + c);
      auto cum = S::load(l + c);
      auto at = S::loadu(last + i0 + c);
      for (Index j = 0; j < keys; ++j) {
        const auto x = S::load(s + j * TQ + c);
        const auto p = S::select(S::eq(x, ninf), S::zero(), S::exp(S::sub(x, ls)));
        const auto pos = S::set1(static_cast<T>(j0 + j));
        cum = S::add(cum, p);
        at = S::select(S::lt(S::zero(), p), pos, at);
        for (Index d = 0; d < draws; ++d) {
          T* kd = key + d * ld + i0 + c;
          const auto kv = S::loadu(kd);
          const auto now = S::mask_and(S::le(S::loadu(u + d * ld + i0 + c), cum), S::lt(kv, S::zero()));
          S::storeu(kd, S::select(now, pos, kv));
        }
      }
      S::store(l + c, cum);
      S::storeu(last + i0 + c, at);
    }
  }

  bool row_factor(T /*l*/, T& f) const noexcept {
    f = 0;
    return true;
  }
  void finish_row(const T* /*acc*/, Index /*stride*/, T /*l*/, T* /*o*/, Index /*dim_v*/) const noexcept {}
};

}  // namespace detail
EFFATTN_END_NAMESPACE
