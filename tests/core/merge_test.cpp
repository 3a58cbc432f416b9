// effattn::merge: two forward passes over disjoint key ranges, merged by their LSEs, give the pass
// over all keys, including when one range is fully masked (LSE -inf) or both are.

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <effattn/core/softmax_state.hpp>
#include <effattn/kinds/softmax.hpp>

#include "support/softmax_case.hpp"

namespace effattn_test {
namespace {

using ::testing::HasSubstr;

template <class T>
class Merge : public ::testing::Test {};
TYPED_TEST_SUITE(Merge, Scalars);

// Keys [j0, j1) of every input: k, v, the bias columns and the key lengths that fall inside.
template <class T>
Inputs<T> slice_keys(const Inputs<T>& in, Index j0, Index j1) {
  const CaseSpec& s = in.spec;
  Inputs<T> r;
  r.spec = s;
  r.spec.Lk = j1 - j0;
  for (Index& len : r.spec.key_lengths) len = std::clamp<Index>(len - j0, 0, j1 - j0);
  r.q = Buffer<T>(in.q.size(), s.offset);
  std::copy_n(in.q.data(), in.q.size(), r.q.data());
  const auto keys = [&](const Buffer<T>& src, Index D) {
    Buffer<T> dst(s.B * s.Hkv * (j1 - j0) * D, s.offset);
    for (Index b = 0; b < s.B; ++b)
      for (Index h = 0; h < s.Hkv; ++h)
        for (Index j = j0; j < j1; ++j)
          for (Index d = 0; d < D; ++d) {
            const auto at = [&](Index L, Index jj) {
              return s.layout == Layout::bhld ? ((b * s.Hkv + h) * L + jj) * D + d : ((b * L + jj) * s.Hkv + h) * D + d;
            };
            dst[at(j1 - j0, j - j0)] = src[at(s.Lk, j)];
          }
    return dst;
  };
  r.k = keys(in.k, s.Dqk);
  r.v = keys(in.v, s.Dv);
  if (s.bias != BiasKind::none) {
    const auto e = s.bias_extents();
    r.spec.bias_shape = {e[0], e[1], e[2], j1 - j0};
    const Index rows = e[0] * e[1] * e[2];
    r.keep = Buffer<bool>(rows * (j1 - j0));
    r.bias_f32 = Buffer<float>(rows * (j1 - j0));
    r.bias_f64 = Buffer<double>(rows * (j1 - j0));
    for (Index row = 0; row < rows; ++row)
      for (Index j = j0; j < j1; ++j) {
        const Index to = row * (j1 - j0) + j - j0, from = row * s.Lk + j;
        if (s.bias == BiasKind::boolean) r.keep[to] = in.keep[from];
        if (s.bias == BiasKind::additive_f32) r.bias_f32[to] = in.bias_f32[from];
        if (s.bias == BiasKind::additive_f64) r.bias_f64[to] = in.bias_f64[from];
      }
  }
  return r;
}

template <class T>
::testing::AssertionResult merge_equals_full(const CaseSpec& spec, Index split) {
  const Inputs<T> in = make_inputs<T>(spec);
  const Inputs<T> lo = slice_keys(in, 0, split), hi = slice_keys(in, split, spec.Lk);
  const KernelResult<T> a = run_kernel(lo), b = run_kernel(hi);
  KernelResult<T> merged{Buffer<T>(in.out_size(), spec.offset), Buffer<T>(in.lse_size(), spec.offset)};
  const auto od = in.out_dims();
  const auto v4 = [&](const Buffer<T>& x) { return effattn::ConstTensor4<T>(x.data(), od); };
  const auto v3 = [&](const Buffer<T>& x) { return effattn::ConstTensor3<T>(x.data(), spec.B, spec.H, spec.Lq); };
  effattn::merge<T>(v4(a.out), v3(a.lse), v4(b.out), v3(b.lse), effattn::Tensor4<T>(merged.out.data(), od),
                    effattn::Tensor3<T>(merged.lse.data(), spec.B, spec.H, spec.Lq), spec.layout);
  const RefResult want = reference(in);
  auto r = compare(in, merged, want);
  if (!r) r << "\n  (merge of keys [0," << split << ") and [" << split << "," << spec.Lk << "))";
  return r;
}

TYPED_TEST(Merge, TwoKeyRangesEqualTheWhole) {
  using T = TypeParam;
  std::uint64_t seed = 8000;
  for (Layout layout : {Layout::bhld, Layout::blhd})
    for (Index split : {1, 64, 75, 149}) {
      CaseSpec s{.B = 2, .H = 3, .Hkv = 3, .Lq = 37, .Lk = 150, .Dqk = 33, .Dv = 20, .layout = layout};
      s.seed = seed++;
      EXPECT_TRUE(merge_equals_full<T>(s, split));
      s.bias = BiasKind::additive_f64;
      s.bias_shape = {2, 1, 37, 150};
      s.config.softcap = 4.0;
      s.seed = seed++;
      EXPECT_TRUE(merge_equals_full<T>(s, split));
      // Decode shape with GQA.
      CaseSpec d{.B = 2, .H = 4, .Hkv = 2, .Lq = 1, .Lk = 150, .Dqk = 64, .Dv = 64, .layout = layout};
      d.seed = seed++;
      EXPECT_TRUE(merge_equals_full<T>(d, split));
    }
}

// Padding puts every key of the upper range (or of both ranges, for one batch) out of reach: that
// half's LSE is -inf and contributes nothing.
TYPED_TEST(Merge, FullyMaskedHalf) {
  using T = TypeParam;
  std::uint64_t seed = 8100;
  for (Layout layout : {Layout::bhld, Layout::blhd}) {
    CaseSpec s{.B = 3, .H = 2, .Hkv = 1, .Lq = 20, .Lk = 90, .Dqk = 16, .Dv = 12, .layout = layout};
    s.key_lengths = {40, 0, 90};
    s.seed = seed++;
    EXPECT_TRUE(merge_equals_full<T>(s, 50));
    // A boolean bias that hides all of the lower range for some rows.
    s.key_lengths.clear();
    s.bias = BiasKind::boolean;
    s.keep_prob = 0.02;
    s.seed = seed++;
    EXPECT_TRUE(merge_equals_full<T>(s, 30));
  }
}

TYPED_TEST(Merge, BothHalvesMaskedGiveZeroAndMinusInfinity) {
  using T = TypeParam;
  constexpr T ninf = -std::numeric_limits<T>::infinity();
  const std::vector<T> out_a(2 * 3, T(5)), out_b(2 * 3, T(7));
  const std::vector<T> lse_a(2, ninf), lse_b(2, ninf);
  std::vector<T> out(2 * 3, T(1)), lse(2, T(1));
  effattn::merge<T>(effattn::ConstTensor4<T>(out_a.data(), 1, 1, 2, 3), effattn::ConstTensor3<T>(lse_a.data(), 1, 1, 2),
                    effattn::ConstTensor4<T>(out_b.data(), 1, 1, 2, 3), effattn::ConstTensor3<T>(lse_b.data(), 1, 1, 2),
                    effattn::Tensor4<T>(out.data(), 1, 1, 2, 3), effattn::Tensor3<T>(lse.data(), 1, 1, 2));
  for (T x : out) EXPECT_EQ(x, T(0));
  for (T x : lse) EXPECT_EQ(x, ninf);
}

// The merged result may overwrite the first partial in place.
TYPED_TEST(Merge, InPlace) {
  using T = TypeParam;
  CaseSpec s{.B = 1, .H = 2, .Hkv = 2, .Lq = 9, .Lk = 40, .Dqk = 8, .Dv = 8, .seed = 8200};
  const Inputs<T> in = make_inputs<T>(s);
  const Inputs<T> lo = slice_keys(in, 0, 13), hi = slice_keys(in, 13, 40);
  KernelResult<T> a = run_kernel(lo);
  const KernelResult<T> b = run_kernel(hi);
  const auto od = in.out_dims();
  effattn::merge<T>(effattn::ConstTensor4<T>(a.out.data(), od), effattn::ConstTensor3<T>(a.lse.data(), 1, 2, 9),
                    effattn::ConstTensor4<T>(b.out.data(), od), effattn::ConstTensor3<T>(b.lse.data(), 1, 2, 9),
                    effattn::Tensor4<T>(a.out.data(), od), effattn::Tensor3<T>(a.lse.data(), 1, 2, 9));
  EXPECT_TRUE(compare(in, a, reference(in)));
}

TYPED_TEST(Merge, RefusesMismatchedShapes) {
  using T = TypeParam;
  std::vector<T> x(64), y(64), z(64), la(8), lb(8), l(8);
  const effattn::ConstTensor4<T> a(x.data(), 1, 2, 4, 3), b(y.data(), 1, 2, 4, 2);
  const effattn::ConstTensor3<T> lsa(la.data(), 1, 2, 4), lsb(lb.data(), 1, 2, 4), bad(lb.data(), 1, 2, 3);
  EXPECT_THAT([&] { effattn::merge<T>(a, lsa, b, lsb, effattn::Tensor4<T>(z.data(), 1, 2, 4, 3), effattn::Tensor3<T>(l.data(), 1, 2, 4)); },
              ::testing::ThrowsMessage<effattn::shape_error>(HasSubstr("out_b and out differ in shape")));
  EXPECT_THAT([&] { effattn::merge<T>(a, lsa, a, bad, effattn::Tensor4<T>(z.data(), 1, 2, 4, 3), effattn::Tensor3<T>(l.data(), 1, 2, 4)); },
              ::testing::ThrowsMessage<effattn::shape_error>(HasSubstr("lse_b has shape [1,2,3] but must be [B,H,Lq] = [1,2,4]")));
}

}  // namespace
}  // namespace effattn_test

// SoftmaxState: absorbing keys in blocks, or in two halves merged with merge_into, gives the
// softmax-weighted mean and log-sum-exp of a direct double computation; masked keys (-inf) count
// for nothing and a state that saw no key leaves the other unchanged.
namespace effattn_test {
namespace {

template <class T>
class SoftmaxStateTest : public ::testing::Test {};
TYPED_TEST_SUITE(SoftmaxStateTest, Scalars);

TYPED_TEST(SoftmaxStateTest, BlocksAndMergeMatchDirectSoftmax) {
  using T = TypeParam;
  constexpr Index n = 301, dv = 19;
  std::vector<T> logits(n), values(n * dv);
  for (Index j = 0; j < n; ++j) {
    // Spread over +-40 with every seventh key masked: exercises max moves, rescaling and -inf.
    logits[j] = j % 7 == 3 ? -std::numeric_limits<T>::infinity() : static_cast<T>(40.0 * std::sin(0.37 * j));
    for (Index c = 0; c < dv; ++c) values[j * dv + c] = static_cast<T>(std::cos(0.11 * j + c));
  }
  double m = -std::numeric_limits<double>::infinity(), l = 0;
  for (T s : logits) m = std::max(m, static_cast<double>(s));
  std::vector<double> want(dv, 0.0);
  for (Index j = 0; j < n; ++j) {
    if (logits[j] == -std::numeric_limits<T>::infinity()) continue;
    const double p = std::exp(static_cast<double>(logits[j]) - m);
    l += p;
    for (Index c = 0; c < dv; ++c) want[c] += p * static_cast<double>(values[j * dv + c]);
  }
  for (double& w : want) w /= l;
  const double want_lse = m + std::log(l);

  const auto absorb_range = [&](effattn::SoftmaxState<T>& st, std::vector<T>& acc, Index j0, Index j1, Index block) {
    for (Index b = j0; b < j1; b += block) {
      const Index e = std::min(j1, b + block);
      std::vector<T> s(logits.begin() + b, logits.begin() + e);
      st.absorb(s.data(), e - b, acc.data(), dv, [&](Index jj) { return values.data() + (b + jj) * dv; });
    }
  };
  const double tol = sizeof(T) == 4 ? 2e-6 : 1e-13;
  for (Index split : {Index(0), Index(1), Index(150), Index(300), n}) {
    effattn::SoftmaxState<T> a, b;
    std::vector<T> acc_a(dv, T(0)), acc_b(dv, T(0)), out(dv);
    absorb_range(a, acc_a, 0, split, 64);
    absorb_range(b, acc_b, split, n, 17);
    effattn::merge_into(a, acc_a.data(), b, acc_b.data(), dv);
    const T lse = a.finish(acc_a.data(), out.data(), dv);
    EXPECT_NEAR(lse, want_lse, tol * std::abs(want_lse)) << "split " << split;
    for (Index c = 0; c < dv; ++c) EXPECT_NEAR(out[c], want[c], tol) << "split " << split << " column " << c;
  }

  effattn::SoftmaxState<T> empty;
  std::vector<T> acc(dv, T(0)), out(dv, T(1));
  EXPECT_EQ(empty.finish(acc.data(), out.data(), dv), -std::numeric_limits<T>::infinity());
  EXPECT_THAT(out, ::testing::Each(T(0)));
}

}  // namespace
}  // namespace effattn_test
