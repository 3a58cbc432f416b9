#pragma once
// Online softmax states and their merge.
//
// A partial result over a key range is (out, lse): out the softmax-weighted mean of v over those keys,
// lse the log-sum-exp of their logits (-inf when none was visible). Two partial results over
// disjoint key ranges combine exactly into the result over their union:
//   m = max(lse_a, lse_b), w_x = exp(lse_x - m), out = (w_a out_a + w_b out_b) / (w_a + w_b),
//   lse = m + log(w_a + w_b).
// This is what split-KV decode, ring attention and MRA's coarse/fine combination build on.

#include <cmath>

#include "effattn/core/errors.hpp"
#include "effattn/core/tensor.hpp"

EFFATTN_BEGIN_NAMESPACE
namespace detail {

// Combines one row: writes out[0:n] and returns the merged lse. out may alias out_a or out_b.
template <class T>
T merge_row(const T* out_a, T lse_a, const T* out_b, T lse_b, T* out, Index n) noexcept {
  constexpr T ninf = -std::numeric_limits<T>::infinity();
  const T m = lse_a > lse_b ? lse_a : lse_b;
  if (m == ninf) {
    for (Index c = 0; c < n; ++c) out[c] = T(0);
    return ninf;
  }
  const T wa = lse_a == ninf ? T(0) : std::exp(lse_a - m);
  const T wb = lse_b == ninf ? T(0) : std::exp(lse_b - m);
  const T total = wa + wb;
  const T ca = wa / total, cb = wb / total;
  for (Index c = 0; c < n; ++c) out[c] = ca * out_a[c] + cb * out_b[c];
  return m + std::log(total);
}

}  // namespace detail

// Merges two partial results over disjoint key ranges: out/lse may alias out_a/lse_a or out_b/lse_b.
// Shapes: out_* and out [B,H,Lq,Dv] (or [B,Lq,H,Dv] with Layout::blhd), lse_* and lse [B,H,Lq].
template <class T>
void merge(ConstTensor4<T> out_a, ConstTensor3<T> lse_a, ConstTensor4<T> out_b, ConstTensor3<T> lse_b, Tensor4<T> out,
           Tensor3<T> lse, Layout layout = Layout::bhld) {
  const auto e = detail::bhld_extents(out, layout);
  for (auto [name, t] : {std::pair{"out_a", out_a}, std::pair{"out_b", out_b}})
    if (t.dimensions() != out.dimensions())
      throw shape_error(detail::cat("effattn::merge: ", name, " and out differ in shape; all three must be equal"));
  const std::array<Index, 3> want{e[0], e[1], e[2]};
  for (auto [name, t] : {std::pair{"lse_a", lse_a}, std::pair{"lse_b", lse_b}, std::pair{"lse", ConstTensor3<T>(lse)}})
    if (t.dimensions() != want)
      throw shape_error(detail::cat("effattn::merge: ", name, " has shape [", t.dimension(0), ",", t.dimension(1), ",",
                                    t.dimension(2), "] but must be [B,H,Lq] = [", e[0], ",", e[1], ",", e[2], "]"));
  for (Index b = 0; b < e[0]; ++b)
    for (Index h = 0; h < e[1]; ++h) {
      const auto oa = detail::head_rows(out_a, layout, b, h);
      const auto ob = detail::head_rows(out_b, layout, b, h);
      const auto o = detail::head_rows(out, layout, b, h);
      const Index base = (b * e[1] + h) * e[2];
      for (Index i = 0; i < e[2]; ++i)
        lse.data()[base + i] =
            detail::merge_row(oa.row(i), lse_a.data()[base + i], ob.row(i), lse_b.data()[base + i], o.row(i), e[3]);
    }
}

EFFATTN_END_NAMESPACE
