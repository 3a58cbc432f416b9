// Grouped-query heads and the decode path: GQA/MQA equals attention over repeated K/V heads; few
// queries against long key sequences (the row kernel) match the reference, with and without
// split-KV.

#include <vector>

#include <gtest/gtest.h>

#include <effattn/core/quadratic_core.hpp>
#include <effattn/kinds/softmax.hpp>

#include "support/softmax_case.hpp"

namespace effattn_test {
namespace {

template <class T>
class SoftmaxDecode : public ::testing::Test {};
TYPED_TEST_SUITE(SoftmaxDecode, Scalars);

// The same inputs with every KV head repeated H/Hkv times, so Hkv = H.
template <class T>
Inputs<T> repeat_kv_heads(const Inputs<T>& in) {
  const CaseSpec& s = in.spec;
  Inputs<T> r = make_inputs<T>(s);
  r.spec.Hkv = s.H;
  const Index group = s.H / s.Hkv;
  const auto repeat = [&](const Buffer<T>& src, Index D) {
    Buffer<T> dst(s.B * s.H * s.Lk * D, s.offset);
    for (Index b = 0; b < s.B; ++b)
      for (Index h = 0; h < s.H; ++h)
        for (Index j = 0; j < s.Lk; ++j)
          for (Index d = 0; d < D; ++d) {
            const Index hk = h / group;
            const Index from = s.layout == Layout::bhld ? ((b * s.Hkv + hk) * s.Lk + j) * D + d : ((b * s.Lk + j) * s.Hkv + hk) * D + d;
            const Index to = s.layout == Layout::bhld ? ((b * s.H + h) * s.Lk + j) * D + d : ((b * s.Lk + j) * s.H + h) * D + d;
            dst[to] = src[from];
          }
    return dst;
  };
  r.k = repeat(in.k, s.Dqk);
  r.v = repeat(in.v, s.Dv);
  return r;
}

TYPED_TEST(SoftmaxDecode, GroupedHeadsEqualRepeatedHeads) {
  using T = TypeParam;
  std::uint64_t seed = 5000;
  for (Index hkv : {1, 2, 4})
    for (Index lq : {Index{1}, Index{3}, Index{effattn::detail::kTileQ<T> + 1}, Index{100}})
      for (Layout layout : {Layout::bhld, Layout::blhd}) {
        CaseSpec s{.B = 2, .H = 8, .Hkv = hkv, .Lq = lq, .Lk = 150, .Dqk = 64, .Dv = 48, .layout = layout,
                   .causal = Causal::bottom_right};
        s.key_lengths = {150, 77};
        s.config.alibi_slopes = alibi_slopes(s.H);
        s.seed = seed++;
        const Inputs<T> grouped = make_inputs<T>(s);
        const Inputs<T> repeated = repeat_kv_heads(grouped);
        const KernelResult<T> a = run_kernel(grouped);
        const KernelResult<T> b = run_kernel(repeated);
        // The repeated run is itself checked against the reference, then compared to the grouped one.
        RefResult rb;
        rb.out.assign(b.out.data(), b.out.data() + b.out.size());
        rb.lse.assign(b.lse.data(), b.lse.data() + b.lse.size());
        EXPECT_TRUE(compare(grouped, a, rb));
        EXPECT_TRUE(compare(repeated, b, reference(repeated)));
      }
}

// Lq = 1..4 against up to ~3000 keys, GQA and MQA, padding, bottom-right causal and windows, with
// split-KV off and on.
TYPED_TEST(SoftmaxDecode, MatchesReference) {
  using T = TypeParam;
  std::uint64_t seed = 6000;
  for (Index lq : {1, 2, 3, 4})
    for (Index lk : {1, 5, 63, 64, 65, 1000, 3001})
      for (Index split : {0, 3}) {
        std::vector<CaseSpec> cases;
        const CaseSpec base{.B = 2, .H = 8, .Hkv = 2, .Lq = lq, .Lk = lk, .Dqk = 64, .Dv = 64};
        cases.push_back(base);
        CaseSpec s = base;
        s.causal = Causal::bottom_right;
        s.key_lengths = {lk, lk / 3};
        s.Hkv = 1;
        cases.push_back(s);
        s = base;
        s.causal = Causal::bottom_right;
        s.window = {256, 0};
        s.config.alibi_slopes = alibi_slopes(s.H);
        s.layout = Layout::blhd;
        cases.push_back(s);
        s = base;
        s.bias = BiasKind::boolean;
        s.bias_shape = {2, 1, 1, lk};
        s.config.softcap = 5.0;
        s.Dqk = 128;
        s.Dv = 33;
        s.offset = 1;
        cases.push_back(s);
        for (CaseSpec& c : cases) {
          c.config.split_kv = split;
          c.seed = seed++;
          EXPECT_TRUE(check_case<T>(c));
        }
      }
}

// split_kv beyond the number of key blocks, split_kv = 1, and chunks whose keys are all masked.
TYPED_TEST(SoftmaxDecode, SplitKvEdges) {
  using T = TypeParam;
  std::uint64_t seed = 7000;
  for (Index split : {1, 2, 3, 7, 64})
    for (Index lk : {1, 2, 130, 700}) {
      CaseSpec s{.B = 3, .H = 4, .Hkv = 2, .Lq = 2, .Lk = lk, .Dqk = 16, .Dv = 8, .causal = Causal::bottom_right};
      s.key_lengths = {lk, 0, std::max<Index>(1, lk / 5)};
      s.config.split_kv = split;
      s.seed = seed++;
      EXPECT_TRUE(check_case<T>(s));
      s.key_lengths.clear();
      s.window = {10, 0};  // only the last chunk sees anything
      s.seed = seed++;
      EXPECT_TRUE(check_case<T>(s));
    }
}

}  // namespace
}  // namespace effattn_test
