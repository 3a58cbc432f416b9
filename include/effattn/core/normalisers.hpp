#pragma once
// Normalisers of the quadratic core: how a tile of scores becomes weights on V.
//   OnlineSoftmax  running max and sum per query (FlashAttention's online softmax); the state
//                  (max, sum, acc) of disjoint key ranges merges exactly (softmax_state.hpp).

#include <algorithm>

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

  static void begin(T* m, T* l, T* ot, Index dim_v) noexcept {
    for (Index r = 0; r < TQ; ++r) m[r] = S::neg_inf(), l[r] = 0;
    std::fill(ot, ot + dim_v * TQ, T(0));
  }

  // s: [keys, TQ]. may_have_inf: some scores are -inf (masked), so their probabilities are
  // selected to exactly 0.
  static void absorb(T* s, Index keys, T* m, T* l, T* ot, Index dim_v, bool may_have_inf) noexcept {
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
};

}  // namespace detail
EFFATTN_END_NAMESPACE
