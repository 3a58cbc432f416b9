#pragma once
// Normalisers of the quadratic core: how a tile of scores becomes weights on V.
//   OnlineSoftmax  running max and sum per query (FlashAttention's online softmax); the state
//                  (max, sum, acc) of disjoint key ranges merges exactly (softmax_state.hpp).
//   LinearScore    the score is the weight (phi(q).phi(k) of a feature map); each query tile
//                  starts from a carried prefix state (S, z) of earlier keys: the intra-chunk part
//                  of the linear core's causal mode.
// A normaliser is an object: begin() starts a query tile, absorb() turns a score tile into weights
// (updating the running sums), inverse() gives the final 1 / sum.

#include <algorithm>
#include <cmath>

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

  // 1 / (sum of weights); a query that saw no key has sum 0 and gives 0.
  [[nodiscard]] T inverse(T l) const noexcept { return l > 0 ? T(1) / l : T(0); }
};

// LinearScore over query-lane tiles. begin() seeds the tile with the carried state: ot = S^T qt and
// l = z . qt (st: S^T as [Dv, ld], z: [ld]), so the tile's keys then add the intra-chunk terms.
// An optional recency gate (RFA-Gate) weighs key j for query i by (1 - g_j) prod_{j < t <= J(i)} g_t
// (J(i) the query's last visible key) and the carried state by prod_{t <= J(i)} g_t: with cumulative
// log-gates A (relative to the chunk start), key_w[j] = 1 - g_j, key_log[j] = A_j and query_log[i] =
// A_J(i), the factors are key_w[j] exp(query_log[i] - key_log[j]) and exp(query_log[i]), all <= 1.
template <class T>
struct LinearScore {
  using S = Packet<T>;
  static constexpr int W = S::size;
  static constexpr Index TQ = kTileQ<T>;

  const T* st = nullptr;  // [Dv, ld]; null: nothing carried
  const T* z = nullptr;   // [ld]
  Index ld = 0;
  T clamp = 0;                   // out = num / max(den, clamp) when > 0
  const T* key_log = nullptr;    // gate, indexed by the tile's key position; null: no gate
  const T* key_w = nullptr;
  const T* query_log = nullptr;  // indexed by query row, readable for whole tiles

  void begin(const T* qt, Index dim_qk, Index i0, T* /*m*/, T* l, T* ot, Index dim_v) const noexcept {
    if (st == nullptr) {
      std::fill(l, l + TQ, T(0));
      std::fill(ot, ot + dim_v * TQ, T(0));
      return;
    }
    lane_tile<T, false>(st, ld, 1, dim_v, dim_qk, qt, ot);
    lane_block<T, 1, false>(z, 0, 1, dim_qk, qt, TQ, l, TQ);
    if (query_log == nullptr) return;
    for (Index c = 0; c < TQ; c += W) {
      const auto decay = S::exp(S::loadu(query_log + i0 + c));
      S::store(l + c, S::mul(S::load(l + c), decay));
      for (Index r = 0; r < dim_v; ++r) S::store(ot + r * TQ + c, S::mul(S::load(ot + r * TQ + c), decay));
    }
  }

  void absorb(T* s, Index i0, Index j0, Index keys, T* /*m*/, T* l, T* /*ot*/, Index /*dim_v*/,
              bool may_have_inf) const noexcept {
    const auto ninf = S::set1(S::neg_inf());
    for (Index c = 0; c < TQ; c += W) {
      auto lsum = S::load(l + c);
      const auto qlog = query_log ? S::loadu(query_log + i0 + c) : S::zero();
      for (Index j = 0; j < keys; ++j) {
        auto x = S::load(s + j * TQ + c);
        const auto masked = S::eq(x, ninf);
        if (query_log != nullptr) {
          // Masked pairs (j after J(i)) may have a positive exponent: select them away after.
          const auto decay = S::exp(S::sub(qlog, S::set1(key_log[j0 + j])));
          x = S::mul(x, S::mul(S::set1(key_w[j0 + j]), decay));
        }
        if (may_have_inf || query_log != nullptr) x = S::select(masked, S::zero(), x);
        S::store(s + j * TQ + c, x);
        lsum = S::add(lsum, x);
      }
      S::store(l + c, lsum);
    }
  }

  // Positive features give den > 0 unless no key is visible (then num = 0 too, and the output 0);
  // trigonometric ones can give any sign, which the clamp (when set) bounds away from 0.
  [[nodiscard]] T inverse(T l) const noexcept {
    if (clamp > 0) return T(1) / std::max(l, clamp);
    return l != 0 ? T(1) / l : T(0);
  }
};

}  // namespace detail
EFFATTN_END_NAMESPACE
