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

// The one register-blocked kernel of both cores, for MR lane rows:
//   c[r, :] (+)= sum_x a[r * a_row + x * a_step] * b[x, :]     b: [steps, kTileQ] rows ldb apart,
//                                                              c: [MR, kTileQ] rows ldc apart
// Scores are (a = K rows, a_step = 1, b = transposed queries); the output update is (a = V columns,
// a_row = 1, b = probabilities). The linear core projects rows onto random features and sums
// phi(K)^T V with the same kernel, reading b and writing c as kTileQ-wide panels of wider rows.
// Each a element is broadcast once and feeds 2 FMAs.
template <class T, int MR, bool Accumulate>
EFFATTN_ALWAYS_INLINE void lane_block(const T* EFFATTN_RESTRICT a, Index a_row, Index a_step, Index steps,
                                      const T* EFFATTN_RESTRICT b, Index ldb, T* EFFATTN_RESTRICT c, Index ldc) {
  using S = Packet<T>;
  constexpr int W = S::size;
  typename S::P c0[MR], c1[MR];
  EFFATTN_UNROLL
  for (int r = 0; r < MR; ++r) {
    c0[r] = Accumulate ? S::load(c + r * ldc) : S::zero();
    c1[r] = Accumulate ? S::load(c + r * ldc + W) : S::zero();
  }
  for (Index x = 0; x < steps; ++x) {
    auto b0 = S::load(b + x * ldb);
    auto b1 = S::load(b + x * ldb + W);
    S::keep_in_register(b0);
    S::keep_in_register(b1);
    const T* ax = a + x * a_step;
    EFFATTN_UNROLL
    for (int r = 0; r < MR; ++r) {
      const auto ab = S::set1(ax[r * a_row]);
      c0[r] = S::fma(ab, b0, c0[r]);
      c1[r] = S::fma(ab, b1, c1[r]);
    }
  }
  EFFATTN_UNROLL
  for (int r = 0; r < MR; ++r) {
    S::store(c + r * ldc, c0[r]);
    S::store(c + r * ldc + W, c1[r]);
  }
}

// lane_block over `rows` rows of a and c. b and c rows are packet-aligned.
template <class T, bool Accumulate>
void lane_tile(const T* a, Index a_row, Index a_step, Index rows, Index steps, const T* b, T* c,
               Index ldb = kTileQ<T>, Index ldc = kTileQ<T>) noexcept {
  for_row_blocks<kTileRows>(rows, [&](auto mr, Index r) {
    lane_block<T, mr(), Accumulate>(a + r * a_row, a_row, a_step, steps, b, ldb, c + r * ldc, ldc);
  });
}

// s[j, :] = k[j, :] . qt for j < keys.  k: rows with stride ks; qt: [dim, kTileQ]; s: [keys, kTileQ].
template <class T>
void qk_tile(const T* k, Index ks, Index keys, const T* qt, Index dim, T* s) noexcept {
  lane_tile<T, false>(k, ks, 1, keys, dim, qt, s);
}

// ot[c, :] += sum_j v[j, c] * p[j, :] for c < dim_v.  v: rows with stride vs; p: [keys, kTileQ].
template <class T>
void pv_tile(const T* v, Index vs, Index keys, Index dim_v, const T* p, T* ot) noexcept {
  lane_tile<T, true>(v, 1, vs, dim_v, keys, p, ot);
}

}  // namespace detail
EFFATTN_END_NAMESPACE
