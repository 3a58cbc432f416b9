#pragma once
// Row primitives, written once against Packet<T>: the decode kernel and the finalisation steps use
// them. They take arbitrary (unaligned, unpadded) rows, so each has a scalar tail.

#include "effattn/core/tensor.hpp"
#include "effattn/simd/packet.hpp"

EFFATTN_BEGIN_NAMESPACE
namespace detail {

// sum_i a[i] * b[i]. Four accumulators hide the FMA latency on rows of 64+ elements.
template <class T>
T dot(const T* EFFATTN_RESTRICT a, const T* EFFATTN_RESTRICT b, Index n) noexcept {
  using S = Packet<T>;
  constexpr Index W = S::size;
  auto a0 = S::zero(), a1 = S::zero(), a2 = S::zero(), a3 = S::zero();
  Index i = 0;
  for (; i + 4 * W <= n; i += 4 * W) {
    a0 = S::fma(S::loadu(a + i), S::loadu(b + i), a0);
    a1 = S::fma(S::loadu(a + i + W), S::loadu(b + i + W), a1);
    a2 = S::fma(S::loadu(a + i + 2 * W), S::loadu(b + i + 2 * W), a2);
    a3 = S::fma(S::loadu(a + i + 3 * W), S::loadu(b + i + 3 * W), a3);
  }
  for (; i + W <= n; i += W) a0 = S::fma(S::loadu(a + i), S::loadu(b + i), a0);
  T s = S::sum(S::add(S::add(a0, a1), S::add(a2, a3)));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// y[i] += alpha * x[i]
template <class T>
void axpy(T alpha, const T* EFFATTN_RESTRICT x, T* EFFATTN_RESTRICT y, Index n) noexcept {
  using S = Packet<T>;
  constexpr Index W = S::size;
  const auto va = S::set1(alpha);
  Index i = 0;
  for (; i + W <= n; i += W) S::storeu(y + i, S::fma(va, S::loadu(x + i), S::loadu(y + i)));
  for (; i < n; ++i) y[i] += alpha * x[i];
}

// y[i] *= alpha
template <class T>
void scale(T* y, T alpha, Index n) noexcept {
  using S = Packet<T>;
  constexpr Index W = S::size;
  const auto va = S::set1(alpha);
  Index i = 0;
  for (; i + W <= n; i += W) S::storeu(y + i, S::mul(va, S::loadu(y + i)));
  for (; i < n; ++i) y[i] *= alpha;
}

// max_i x[i] (-inf for n = 0)
template <class T>
T max_of(const T* x, Index n) noexcept {
  using S = Packet<T>;
  constexpr Index W = S::size;
  T m = S::neg_inf();
  Index i = 0;
  if (n >= W) {
    auto vm = S::loadu(x);
    for (i = W; i + W <= n; i += W) vm = S::max(vm, S::loadu(x + i));
    m = S::hmax(vm);
  }
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

// x[i] = exp(x[i] - m), exactly 0 where x[i] is -inf; returns the sum. m must be finite.
template <class T>
T exp_sub_sum(T* x, T m, Index n) noexcept {
  using S = Packet<T>;
  constexpr Index W = S::size;
  const auto vm = S::set1(m);
  const auto ninf = S::set1(S::neg_inf());
  auto acc = S::zero();
  Index i = 0;
  for (; i + W <= n; i += W) {
    const auto s = S::loadu(x + i);
    const auto p = S::select(S::eq(s, ninf), S::zero(), S::exp(S::sub(s, vm)));
    S::storeu(x + i, p);
    acc = S::add(acc, p);
  }
  T total = S::sum(acc);
  for (; i < n; ++i) {
    x[i] = x[i] == S::neg_inf() ? T(0) : std::exp(x[i] - m);
    total += x[i];
  }
  return total;
}

}  // namespace detail
EFFATTN_END_NAMESPACE
