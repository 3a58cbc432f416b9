#pragma once
// Score modifiers of the quadratic core: what happens to a logit between q.k and the mask.
// Order, as FlashAttention applies them: softcap, then ALiBi, then the additive or boolean bias.
// Bias values are read in the tensor coordinates of the call; everything else in the coordinates of
// one sequence.

#include <cmath>
#include <cstdlib>
#include <limits>

#include "effattn/core/mask.hpp"
#include "effattn/simd/packet.hpp"
#include "effattn/simd/tile_kernels.hpp"

EFFATTN_BEGIN_NAMESPACE
namespace detail {

// The modifiers of one (sequence, head).
template <class T>
struct ScoreMods {
  T softcap = 0;
  T alibi = 0;       // slope of this head
  Index shift = 0;   // query i sits at key position i + shift for ALiBi distances
  const Bias* bias = nullptr;
  Index bias_b = 0, bias_h = 0;  // this (batch, head) in the bias
  Index q_off = 0, k_off = 0;    // tensor position of the sequence's first query and key

  [[nodiscard]] bool any() const noexcept { return softcap > 0 || alibi != 0 || bias != nullptr; }
  // A bias may turn scores into -inf (boolean, or an additive -inf).
  [[nodiscard]] bool may_mask() const noexcept { return bias != nullptr; }
  [[nodiscard]] bool boolean_bias() const noexcept { return bias != nullptr && bias->kind() == Bias::Kind::boolean; }

  // The bias term of query i, key j: additive value, or -inf / 0 for a boolean mask.
  [[nodiscard]] T bias_at(Index i, Index j) const noexcept {
    const Index off = bias->row_offset(bias_b, bias_h, q_off + i) + k_off + j;
    switch (bias->kind()) {
      case Bias::Kind::boolean:
        return static_cast<const bool*>(bias->data())[off] ? T(0) : -std::numeric_limits<T>::infinity();
      case Bias::Kind::additive_f32: return static_cast<T>(static_cast<const float*>(bias->data())[off]);
      case Bias::Kind::additive_f64: return static_cast<T>(static_cast<const double*>(bias->data())[off]);
      case Bias::Kind::none: break;
    }
    return T(0);
  }

  // One score (the row kernel).
  [[nodiscard]] T apply(T s, Index i, Index j) const noexcept {
    if (softcap > 0) s = softcap * std::tanh(s / softcap);
    if (alibi != 0) s -= alibi * static_cast<T>(std::abs(i + shift - j));
    if (bias != nullptr) s += bias_at(i, j);
    return s;
  }

  // A lane tile s [keys, kTileQ] of queries [i0, i0 + n) and keys [j0, j0 + keys).
  void apply(T* s, Index i0, Index n, Index j0, Index keys) const noexcept {
    using S = Packet<T>;
    constexpr int W = S::size;
    constexpr Index TQ = kTileQ<T>;
    for (Index jj = 0; jj < keys; ++jj) {
      const Index j = j0 + jj;
      T* row = s + jj * TQ;
      if (softcap > 0) {
        const auto inv = S::set1(T(1) / softcap), cap = S::set1(softcap);
        for (Index c = 0; c < TQ; c += W) S::store(row + c, S::mul(cap, S::tanh(S::mul(S::load(row + c), inv))));
      }
      if (alibi != 0) {
        const auto slope = S::set1(-alibi);
        for (Index c = 0; c < TQ; c += W) {
          const auto dist = S::abs(S::iota(static_cast<T>(i0 + c + shift - j)));
          S::store(row + c, S::fma(slope, dist, S::load(row + c)));
        }
      }
      // The bias runs along the query axis with stride Lk: a scalar gather.
      if (bias != nullptr)
        for (Index r = 0; r < n; ++r) row[r] += bias_at(i0 + r, j);
    }
  }
};

// Score terms: additive terms of a whole query tile, for kinds whose logits are more than q.k plus
// ScoreMods (LARA's importance weights, RA's and LARA's key norms). attend_query_tiles calls
// begin(t, qt, i0) once per query tile t of a pass (qt: its transposed, scaled queries, first row
// i0) and add(s, t, i0, j0, keys) on each of its score tiles, before the mask. `masks`: the term may
// write -inf (the normaliser then selects those probabilities to exactly 0).
struct NoScoreTerm {
  static constexpr bool active = false;
  static constexpr bool masks = false;
  template <class T>
  void begin(Index, const T*, Index) const noexcept {}
  template <class T>
  void add(T*, Index, Index, Index, Index) const noexcept {}
};

// A per-key additive term b[j] (the same for every query).
template <class T>
struct KeyBiasTerm {
  static constexpr bool active = true;
  static constexpr bool masks = false;
  const T* bias = nullptr;  // [keys of the sequence]

  void begin(Index, const T*, Index) const noexcept {}
  void add(T* s, Index, Index, Index j0, Index keys) const noexcept {
    using S = Packet<T>;
    for (Index jj = 0; jj < keys; ++jj) {
      const auto b = S::set1(bias[j0 + jj]);
      for (Index c = 0; c < kTileQ<T>; c += S::size) S::store(s + jj * kTileQ<T> + c, S::add(S::load(s + jj * kTileQ<T> + c), b));
    }
  }
};

}  // namespace detail
EFFATTN_END_NAMESPACE
