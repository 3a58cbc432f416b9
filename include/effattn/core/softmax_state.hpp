#pragma once
// Online softmax states and their merge.
//
// A partial result over a key range is (out, lse): out the softmax-weighted mean of v over those keys,
// lse the log-sum-exp of their logits (-inf when none was visible). Two partial results over
// disjoint key ranges combine exactly into the result over their union:
//   m = max(lse_a, lse_b), w_x = exp(lse_x - m), out = (w_a out_a + w_b out_b) / (w_a + w_b),
//   lse = m + log(w_a + w_b).
// This is what split-KV decode, ring attention and MRA's coarse/fine combination build on.
//
// SoftmaxState is the same thing before normalisation, for one query row: the running maximum m of
// the logits seen so far and l = sum exp(s - m), next to an accumulator acc = sum exp(s - m) v that
// the caller owns. It absorbs blocks of scores and merges with another state exactly.

#include <cmath>

#include "effattn/core/errors.hpp"
#include "effattn/core/tensor.hpp"
#include "effattn/simd/row_ops.hpp"

EFFATTN_BEGIN_NAMESPACE
template <class T>
struct SoftmaxState {
  T max = -std::numeric_limits<T>::infinity();
  T sum = 0;

  // Natural-log sum of exp over every key absorbed; -inf when none was visible.
  [[nodiscard]] T lse() const noexcept { return sum > 0 ? max + std::log(sum) : -std::numeric_limits<T>::infinity(); }

  // Raises the running maximum to m, rescaling sum and acc[0:dim_v]: the accumulator is only touched
  // when the maximum moves, which after the first blocks is rare.
  void raise_max(T m, T* acc, Index dim_v) noexcept {
    if (!(m > max)) return;
    if (sum > 0) {
      const T alpha = std::exp(max - m);
      sum *= alpha;
      detail::scale(acc, alpha, dim_v);
    }
    max = m;
  }

  // Absorbs the logits s[0:n] (-inf = masked) of keys whose value rows are value_row(0..n-1);
  // s is overwritten with the probabilities relative to the new maximum.
  template <class ValueRow>
  void absorb(T* s, Index n, T* acc, Index dim_v, ValueRow&& value_row) noexcept {
    const T block_max = detail::max_of(s, n);
    if (block_max == -std::numeric_limits<T>::infinity()) return;  // every key masked
    raise_max(block_max, acc, dim_v);
    sum += detail::exp_sub_sum(s, max, n);
    for (Index j = 0; j < n; ++j)
      if (s[j] != T(0)) detail::axpy(s[j], value_row(j), acc, dim_v);
  }

  // out[0:dim_v] = acc / sum (0 when no key was visible); returns the lse.
  T finish(const T* acc, T* out, Index dim_v) const noexcept {
    const T inv = sum > 0 ? T(1) / sum : T(0);
    for (Index c = 0; c < dim_v; ++c) out[c] = acc[c] * inv;
    return lse();
  }
};

// Folds state b (with its accumulator acc_b) into a (acc_a): afterwards a is the state over the keys
// of both.
template <class T>
void merge_into(SoftmaxState<T>& a, T* acc_a, const SoftmaxState<T>& b, const T* acc_b, Index dim_v) noexcept {
  if (!(b.sum > 0)) return;
  a.raise_max(b.max, acc_a, dim_v);
  const T wb = std::exp(b.max - a.max);
  a.sum += wb * b.sum;
  detail::axpy(wb, acc_b, acc_a, dim_v);
}

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
