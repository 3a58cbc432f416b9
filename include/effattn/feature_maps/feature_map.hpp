#pragma once
// The FeatureMap concept: what the linear core needs from a feature map phi. A map turns blocks of
// query or key rows into rows of features, phi[r * ld() + f] for f < features() (zero up to ld(), a
// multiple of the lane tile so kTileQ-wide panels of a row are aligned).
//
// Stabilisers. Exponential maps overflow for large |x| unless a scalar is subtracted inside the exp;
// any factor shared by all features of one query row cancels in out = phi_q.S / phi_q.z, and so does
// one factor shared by all keys of a state. Three modes:
//   row    each row divided by its own largest term (queries; exact, the factor cancels);
//   pow2   each row divided by 2^e[r], e[r] = floor(log2 of its largest term), written to e: the
//          linear core brings rows and states to one shared exponent by multiplying with powers of
//          two, which is exact in binary floating point, so a key's contribution is bit-for-bit the
//          same whatever keys come before or after it (causal prefix invariance);
//   fixed  the public implementations' form: subtract one given shift (their max over the
//          sequence, from bound()) and add their eps; the shift then does not cancel and must match.

#include <algorithm>
#include <concepts>
#include <vector>

#include <Eigen/Core>

#include "effattn/core/tensor.hpp"
#include "effattn/simd/tile_kernels.hpp"

EFFATTN_BEGIN_NAMESPACE

enum class Stabiliser { row, pow2, fixed };

template <class T>
using AlignedVector = std::vector<T, Eigen::aligned_allocator<T>>;

namespace detail {
// Row stride of feature rows and of S^T: a whole number of lane tiles, and an odd number of cache
// lines. A power-of-two stride (256 floats = 1 KiB) puts the rows of a lane panel into a few L1 sets,
// which then evict each other: with this stride and contiguous W^T panels the global mode went from
// 35% to 44% of FMA peak (F = 256, D = 64, L = 4096, one Zen core).
template <class T>
Index feature_ld(Index features) noexcept {
  constexpr Index lane = kTileQ<T>;
  constexpr Index line = static_cast<Index>(64 / sizeof(T));
  const Index ld = (features + lane - 1) / lane * lane;
  return (ld / line) % 2 == 0 ? ld + std::max(line, static_cast<Index>(kPacketSize<T>)) : ld;
}
}  // namespace detail

template <class M>
concept FeatureMap = requires(const M& m, const typename M::Scalar* x, typename M::Scalar* buf, int* e, Index n) {
  { m.features() } -> std::convertible_to<Index>;
  { m.ld() } -> std::convertible_to<Index>;
  { m.dim() } -> std::convertible_to<Index>;
  { m.heads() } -> std::convertible_to<Index>;     // 1: shared by every head
  { m.exponential() } -> std::same_as<bool>;       // needs a stabiliser
  { m.nonnegative() } -> std::same_as<bool>;       // outputs are convex combinations of v rows
  { m.scratch_elems(n) } -> std::convertible_to<Index>;
  { m.flops_per_row() } -> std::convertible_to<double>;
  // max over rows x[0, n) (stride n) of the quantity the fixed mode's shift is the max of
  { m.bound(x, n, n, n, buf) } -> std::same_as<typename M::Scalar>;
  // map(x, stride, rows, head, mode, shift, phi, e, scratch)
  m.map(x, n, n, n, Stabiliser::row, typename M::Scalar{}, buf, e, buf);
};

EFFATTN_END_NAMESPACE
