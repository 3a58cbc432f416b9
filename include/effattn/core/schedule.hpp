#pragma once
// The schedule of the quadratic core: which (query, key) blocks are visited.
// A call is a list of independent sequences (Segment); inside one, detail::Band (mask.hpp) gives
// each query its visible key range [lo(i), hi(i)), which covers causal alignment, sliding windows and
// key padding. A query tile visits only key tiles that meet its band, so skipped tiles cost nothing;
// tiles inside the band of every row skip the mask.
//
// The key blocks a pass visits come from a key schedule, a callable keys(j_begin, j_end, tile, f)
// that calls f(kb0, kb1) for each block [kb0, kb1) of at most `tile` keys, in a fixed order; each
// query tile of the pass cuts the block to its band. Two schedules:
//   DenseKeys   the fixed grid of `tile` keys over the pass's band (exact attention);
//   ListedKeys  one row of an explicit tile list grouped by query block: key blocks cols[0..count)
//               (increasing) of `block` keys each (MRA's selected tiles, block hypercube's neighbours).
// Sparsity lives in the list, so unlisted blocks cost nothing, and every kind runs the same tile loop.

#include <algorithm>

#include "effattn/attention.hpp"
#include "effattn/simd/packet.hpp"
#include "effattn/simd/tile_kernels.hpp"

EFFATTN_BEGIN_NAMESPACE
namespace detail {

// One independent sequence: batch b's, or one packed sequence of B = 1.
struct Segment {
  Index batch = 0;
  Index q0 = 0, len_q = 0;  // queries [q0, q0 + len_q) of the tensor
  Index k0 = 0, len_k = 0;  // visible keys [k0, k0 + len_k) (after padding)
};

inline Index num_segments(const Mask& m, const Problem& p) noexcept {
  return m.packed() ? static_cast<Index>(m.cu_seqlens_q.size()) - 1 : p.batch;
}

inline Segment segment(const Mask& m, const Problem& p, Index s) noexcept {
  const auto su = static_cast<std::size_t>(s);
  if (m.packed())
    return {0, m.cu_seqlens_q[su], m.cu_seqlens_q[su + 1] - m.cu_seqlens_q[su], m.cu_seqlens_k[su],
            m.cu_seqlens_k[su + 1] - m.cu_seqlens_k[su]};
  return {s, 0, p.len_q, 0, m.key_lengths.empty() ? p.len_k : m.key_lengths[su]};
}

struct DenseKeys {
  template <class F>
  void operator()(Index j_begin, Index j_end, Index tile, F&& f) const {
    for (Index jt = j_begin / tile * tile; jt < j_end; jt += tile) f(jt, jt + tile);
  }
};

struct ListedKeys {
  const Index* cols = nullptr;
  Index count = 0;
  Index block = 1;

  // Runs of consecutive listed blocks (sorted cols) are visited as one key range: fewer, longer score
  // tiles (a hypercube node's list holds runs like 4, 5, 6; MRA's selections cluster).
  template <class F>
  void operator()(Index /*j_begin*/, Index /*j_end*/, Index tile, F&& f) const {
    for (Index c = 0; c < count;) {
      Index e = c + 1;
      while (e < count && cols[e] == cols[e - 1] + 1) ++e;
      const Index b0 = cols[c] * block, b1 = cols[e - 1] * block + block;
      for (Index j = b0; j < b1; j += tile) f(j, std::min(b1, j + tile));
      c = e;
    }
  }
};

// FLOPs from the visible (query, key) pairs, each a Dqk dot product and a Dv axpy; bytes of q, k,
// v and out.
template <class T>
Cost quadratic_cost(const Problem& p, const Mask& m) noexcept {
  double pairs = 0;
  const bool valid_packed = !m.packed() || m.cu_seqlens_k.size() == m.cu_seqlens_q.size();
  const Index segs = valid_packed ? num_segments(m, p) : 0;
  for (Index s = 0; s < segs; ++s) {
    const Segment seg = segment(m, p, s);
    const Band band = make_band(m, seg.len_q, seg.len_k);
    for (Index i = 0; i < seg.len_q; ++i) pairs += static_cast<double>(std::max<Index>(0, band.hi(i) - band.lo(i)));
  }
  const double elems = static_cast<double>(p.batch) *
                       (static_cast<double>(p.heads) * static_cast<double>(p.len_q) * static_cast<double>(p.dim_qk + p.dim_v) +
                        static_cast<double>(p.kv_heads) * static_cast<double>(p.len_k) * static_cast<double>(p.dim_qk + p.dim_v));
  return {pairs * static_cast<double>(p.heads) * 2.0 * static_cast<double>(p.dim_qk + p.dim_v),
          elems * static_cast<double>(sizeof(T))};
}

// Sets to -inf the scores of a lane tile s [keys, kTileQ] (keys [j0, j0 + keys)) that lie outside
// each lane's band [lo[r], hi[r]). lo and hi are non-decreasing in the lane, so the lanes that see
// key j form one run [ra, rb) that only moves forward with j.
template <class T>
void mask_outside_band(T* s, Index j0, Index keys, const Index* lo, const Index* hi) noexcept {
  using S = Packet<T>;
  constexpr int W = S::size;
  constexpr Index TQ = kTileQ<T>;
  const auto ninf = S::set1(S::neg_inf());
  Index ra = 0, rb = 0;
  for (Index jj = 0; jj < keys; ++jj) {
    const Index j = j0 + jj;
    while (ra < TQ && hi[ra] <= j) ++ra;
    while (rb < TQ && lo[rb] <= j) ++rb;
    const auto a = S::set1(static_cast<T>(ra)), b = S::set1(static_cast<T>(rb));
    T* row = s + jj * TQ;
    for (Index c = 0; c < TQ; c += W) {
      const auto lane = S::iota(static_cast<T>(c));
      const auto keep = S::mask_and(S::le(a, lane), S::lt(lane, b));
      S::store(row + c, S::select(keep, S::load(row + c), ninf));
    }
  }
}

}  // namespace detail
EFFATTN_END_NAMESPACE
