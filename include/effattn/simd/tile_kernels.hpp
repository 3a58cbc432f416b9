#pragma once
// Register-blocked micro-kernels of the quadratic core, in "query lanes" form: a tile row holds
// kTileQ queries (two packets), one row per key (score tiles) or per value column (output tiles).
//
// Why queries in the lanes: K and V are then read in their natural row-major layout as broadcast
// scalars, so nothing is packed per head (only the query tile is transposed, once per work item);
// and the softmax row reductions (max, sum over keys) become element-wise operations between tile
// rows, with no horizontal reductions. Each k or v element loaded feeds 2 FMAs, each q or p packet
// loaded feeds MR FMAs; MR x 2 accumulators fill 16 of AVX-512's 32 registers (8 of AVX2's 16).

#include <type_traits>

#include "effattn/core/tensor.hpp"
#include "effattn/simd/packet.hpp"

EFFATTN_BEGIN_NAMESPACE
namespace detail {

template <class T>
inline constexpr int kTileQ = 2 * kPacketSize<T>;  // queries per tile: two packets
#ifdef EFFATTN_TILE_ROWS
inline constexpr int kTileRows = EFFATTN_TILE_ROWS;
#else
inline constexpr int kTileRows = EIGEN_ARCH_DEFAULT_NUMBER_OF_REGISTERS >= 32 ? 8 : 4;  // MR
#endif

// Calls f(std::integral_constant<int, mr>{}, first_row) over [0, n) in blocks of MR rows, then one
// block each of MR/2, MR/4, ... for the remainder, so every micro-kernel has a compile-time height.
template <int MR, class F>
EFFATTN_ALWAYS_INLINE void for_row_blocks(Index n, F&& f) {
  Index r = 0;
  for (; r + MR <= n; r += MR) f(std::integral_constant<int, MR>{}, r);
  if constexpr (MR > 1) {
    if (r < n) for_row_blocks<MR / 2>(n - r, [&](auto mr, Index rr) { f(mr, r + rr); });
  }
}

// s[r, :] = sum_d k[r, d] * qt[d, :] for r < MR. k: MR rows with stride ks; qt: [dim, kTileQ]; s: [MR, kTileQ].
template <class T, int MR>
EFFATTN_ALWAYS_INLINE void qk_block(const T* EFFATTN_RESTRICT k, Index ks, const T* EFFATTN_RESTRICT qt, Index dim,
                                    T* EFFATTN_RESTRICT s) {
  using S = Packet<T>;
  constexpr int W = S::size;
  constexpr int TQ = kTileQ<T>;
  typename S::P a0[MR], a1[MR];
  EFFATTN_UNROLL
  for (int r = 0; r < MR; ++r) a0[r] = a1[r] = S::zero();
  for (Index d = 0; d < dim; ++d) {
    const auto q0 = S::load(qt + d * TQ);
    const auto q1 = S::load(qt + d * TQ + W);
    EFFATTN_UNROLL
    for (int r = 0; r < MR; ++r) {
      const auto kb = S::set1(k[r * ks + d]);
      a0[r] = S::fma(kb, q0, a0[r]);
      a1[r] = S::fma(kb, q1, a1[r]);
    }
  }
  EFFATTN_UNROLL
  for (int r = 0; r < MR; ++r) {
    S::store(s + r * TQ, a0[r]);
    S::store(s + r * TQ + W, a1[r]);
  }
}

// s[j, :] = k[j, :] . qt for j < keys
template <class T>
void qk_tile(const T* k, Index ks, Index keys, const T* qt, Index dim, T* s) noexcept {
  for_row_blocks<kTileRows>(keys, [&](auto mr, Index j) { qk_block<T, mr()>(k + j * ks, ks, qt, dim, s + j * kTileQ<T>); });
}

// ot[r, :] += sum_j v[j, r] * p[j, :] for r < MR. v: first of MR columns, rows with stride vs;
// p: [keys, kTileQ]; ot: MR rows of [kTileQ].
template <class T, int MR>
EFFATTN_ALWAYS_INLINE void pv_block(const T* EFFATTN_RESTRICT v, Index vs, Index keys, const T* EFFATTN_RESTRICT p,
                                    T* EFFATTN_RESTRICT ot) {
  using S = Packet<T>;
  constexpr int W = S::size;
  constexpr int TQ = kTileQ<T>;
  typename S::P a0[MR], a1[MR];
  EFFATTN_UNROLL
  for (int r = 0; r < MR; ++r) {
    a0[r] = S::load(ot + r * TQ);
    a1[r] = S::load(ot + r * TQ + W);
  }
  for (Index j = 0; j < keys; ++j) {
    const auto p0 = S::load(p + j * TQ);
    const auto p1 = S::load(p + j * TQ + W);
    EFFATTN_UNROLL
    for (int r = 0; r < MR; ++r) {
      const auto vb = S::set1(v[j * vs + r]);
      a0[r] = S::fma(vb, p0, a0[r]);
      a1[r] = S::fma(vb, p1, a1[r]);
    }
  }
  EFFATTN_UNROLL
  for (int r = 0; r < MR; ++r) {
    S::store(ot + r * TQ, a0[r]);
    S::store(ot + r * TQ + W, a1[r]);
  }
}

// ot[c, :] += sum_j v[j, c] * p[j, :] for c < dim_v
template <class T>
void pv_tile(const T* v, Index vs, Index keys, Index dim_v, const T* p, T* ot) noexcept {
  for_row_blocks<kTileRows>(dim_v, [&](auto mr, Index c) { pv_block<T, mr()>(v + c, vs, keys, p, ot + c * kTileQ<T>); });
}

}  // namespace detail
EFFATTN_END_NAMESPACE
