// SoftmaxAttention against the double reference over shapes around the packet width and the tile
// sizes (where tails and boundary tiles live), both layouts, misaligned pointers, and every mask
// feature alone and combined.

#include <algorithm>
#include <set>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include <effattn/core/quadratic_core.hpp>
#include <effattn/kinds/softmax.hpp>
#include <effattn/simd/packet.hpp>

#include "support/softmax_case.hpp"

namespace effattn_test {
namespace {

template <class T>
class SoftmaxSweep : public ::testing::Test {};
TYPED_TEST_SUITE(SoftmaxSweep, Scalars);

template <class T>
constexpr Index kW = effattn::detail::kPacketSize<T>;
template <class T>
constexpr Index kTq = effattn::detail::kTileQ<T>;
template <class T>
constexpr Index kTk = effattn::detail::kTileK<T>;

// 1, 2, 3, 7, W-1, W, W+1, T-1, T, T+1 for both tile sizes, and 3T+5.
template <class T>
std::vector<Index> sweep_lengths() {
  std::set<Index> s{1, 2, 3, 7};
  for (Index t : {kW<T>, kTq<T>, kTk<T>})
    for (Index d : {-1, 0, 1}) s.insert(t + d);
  s.insert(3 * kTq<T> + 5);
  s.insert(3 * kTk<T> + 5);
  s.erase(0);
  return {s.begin(), s.end()};
}

constexpr Index kHeadDims[] = {1, 3, 33, 64, 65, 128};

// Every length as Lq = Lk, with Lq != Lk both ways, under each causal alignment; head dims, B, H,
// GQA, layout, misalignment and LSE-or-not rotate across the cases so each value meets several others.
TYPED_TEST(SoftmaxSweep, Lengths) {
  using T = TypeParam;
  const auto lens = sweep_lengths<T>();
  const Index n = static_cast<Index>(lens.size());
  for (Index c = 0; c < n; ++c) {
    const Index L = lens[static_cast<std::size_t>(c)];
    const Index other = lens[static_cast<std::size_t>((c + 3) % n)];
    const Index big = L > 2 * kTq<T> ? 1 : 0;  // keep B*H small where the reference is slow
    for (int variant = 0; variant < 4; ++variant) {
      CaseSpec s;
      const Index r = c * 4 + variant;
      s.Lq = variant == 3 ? other : L;
      s.Lk = variant == 2 ? other : L;
      s.causal = variant == 0 ? Causal::none : variant == 1 ? Causal::top_left : variant == 2 ? Causal::bottom_right : Causal::none;
      s.Dqk = kHeadDims[r % 6];
      s.Dv = kHeadDims[(r + 2 + variant) % 6];
      s.B = (r % 2 && !big) ? 3 : 1;
      s.H = (r / 2) % 2 ? 3 : 1;
      s.Hkv = (r % 3 == 0) ? 1 : s.H;
      s.layout = r % 2 ? Layout::blhd : Layout::bhld;
      s.offset = (r / 2) % 2;
      s.with_lse = r % 5 != 4;
      s.seed = static_cast<std::uint64_t>(1000 + r);
      EXPECT_TRUE(check_case<T>(s));
    }
  }
}

TYPED_TEST(SoftmaxSweep, HeadDims) {
  using T = TypeParam;
  std::uint64_t seed = 2000;
  for (Index dqk : kHeadDims)
    for (Index dv : kHeadDims) {
      if (dqk != dv && (dqk + dv) % 3 != 0) continue;  // all equal pairs plus a spread of unequal ones
      CaseSpec s{.B = 1, .H = 3, .Hkv = 3, .Lq = kTq<T> + 1, .Lk = kTk<T> + 3, .Dqk = dqk, .Dv = dv};
      s.offset = 1;
      s.seed = seed++;
      EXPECT_TRUE(check_case<T>(s));
    }
}

// Lq < Lk and Lq > Lk with several tiles each, and the decode path (Lq <= 4).
template <class T>
std::vector<std::pair<Index, Index>> mask_shapes() {
  return {{2 * kTq<T> + 3, kTk<T> + 7}, {kTk<T> + 7, 2 * kTq<T> + 3}, {3, kTk<T> + 5}, {1, 2 * kTk<T> + 1}};
}

TYPED_TEST(SoftmaxSweep, MaskFeatures) {
  using T = TypeParam;
  std::uint64_t seed = 3000;
  int layout_flip = 0;
  for (auto [lq, lk] : mask_shapes<T>())
    for (Causal causal : {Causal::none, Causal::top_left, Causal::bottom_right}) {
      std::vector<CaseSpec> cases;
      const CaseSpec base{.B = 2, .H = 4, .Hkv = 2, .Lq = lq, .Lk = lk, .Dqk = 33, .Dv = 17, .causal = causal};
      cases.push_back(base);
      for (effattn::Window w : {effattn::Window{0, 0}, {-1, 3}, {5, -1}, {kTq<T>, 2}}) {
        CaseSpec s = base;
        s.window = w;
        cases.push_back(s);
      }
      {
        CaseSpec s = base;
        s.B = 3;
        s.key_lengths = {0, lk, lk / 2 + 1};
        cases.push_back(s);
      }
      for (BiasKind kind : {BiasKind::boolean, BiasKind::additive_f32, BiasKind::additive_f64})
        for (std::array<Index, 4> shape : {std::array<Index, 4>{1, 1, lq, lk}, {2, 1, 1, lk}, {2, 4, lq, lk}}) {
          CaseSpec s = base;
          s.bias = kind;
          s.bias_shape = shape;
          cases.push_back(s);
        }
      {
        CaseSpec s = base;
        s.config.scale = 0.37;
        cases.push_back(s);
        s = base;
        s.config.softcap = 1.5;
        s.qk_std = 2.0;  // logits ~N(0, 33 * 16 / 33): the cap matters
        cases.push_back(s);
        s = base;
        s.config.alibi_slopes = alibi_slopes(s.H);
        cases.push_back(s);
      }
      {
        // Everything at once.
        CaseSpec s = base;
        s.B = 3;
        s.key_lengths = {lk, 1, lk - 2};
        s.window = {7, 4};
        s.bias = BiasKind::additive_f32;
        s.bias_shape = {3, 1, lq, lk};
        s.config.scale = 0.21;
        s.config.softcap = 2.5;
        s.config.alibi_slopes = alibi_slopes(s.H);
        cases.push_back(s);
        s.bias = BiasKind::boolean;
        s.bias_shape = {1, 4, 1, lk};
        cases.push_back(s);
      }
      for (CaseSpec& s : cases) {
        s.layout = (layout_flip++ % 2) ? Layout::blhd : Layout::bhld;
        s.offset = layout_flip % 3 == 0 ? 1 : 0;
        s.seed = seed++;
        EXPECT_TRUE(check_case<T>(s));
      }
    }
}

// Packed variable-length sequences, each with its own lengths: empty sequences on either side,
// sequences shorter and longer than a tile, and trailing keys that belong to none.
TYPED_TEST(SoftmaxSweep, PackedSequences) {
  using T = TypeParam;
  const Index tq = kTq<T>, tk = kTk<T>;
  struct Packing {
    std::vector<Index> cu_q, cu_k;
    Index Lq, Lk;
  };
  const std::vector<Packing> packings = {
      {{0, 5, 5, 5 + tq + 3, 5 + tq + 3 + 1}, {0, 9, 12, 12, 12 + tk + 9}, 5 + tq + 4, 12 + tk + 9},
      {{0, 2 * tq + 1, 2 * tq + 1, 2 * tq + 4}, {0, tk + 1, tk + 40, tk + 40}, 2 * tq + 4, tk + 50},
      {{0, 1, 3, 7}, {0, 0, 3, 20}, 7, 20},
      {{0, 0}, {0, 0}, 0, 4},
  };
  std::uint64_t seed = 4000;
  for (const Packing& pk : packings)
    for (Causal causal : {Causal::none, Causal::top_left, Causal::bottom_right})
      for (int variant = 0; variant < 4; ++variant) {
        CaseSpec s{.B = 1, .H = 3, .Hkv = variant == 1 ? 1 : 3, .Lq = pk.Lq, .Lk = pk.Lk, .Dqk = 20, .Dv = 9, .causal = causal};
        s.cu_q = pk.cu_q;
        s.cu_k = pk.cu_k;
        if (variant == 1) s.window = {3, 0};
        if (variant == 2) s.config.alibi_slopes = alibi_slopes(s.H);
        if (variant == 3) {
          s.config.softcap = 3.0;
          s.window = {-1, 2};
        }
        s.layout = variant % 2 ? Layout::blhd : Layout::bhld;
        s.offset = variant / 2;
        s.seed = seed++;
        EXPECT_TRUE(check_case<T>(s));
      }
}

// Queries past cu_seqlens_q.back() belong to no sequence, so they see no key: out 0, lse -inf, like
// any other query that sees nothing.
TYPED_TEST(SoftmaxSweep, PackedQueriesOutsideEverySequence) {
  using T = TypeParam;
  const Index tq = kTq<T>;
  std::uint64_t seed = 4500;
  for (auto [cu_q, cu_k, lq, lk] : {std::tuple<std::vector<Index>, std::vector<Index>, Index, Index>{{0, 3, 5}, {0, 4, 9}, 9, 12},
                                    {{0, tq + 2}, {0, 40}, 2 * tq + 1, 40},
                                    {{0, 0}, {0, 0}, 4, 4}})
    for (Causal causal : {Causal::none, Causal::bottom_right}) {
      CaseSpec s{.B = 1, .H = 2, .Hkv = 2, .Lq = lq, .Lk = lk, .Dqk = 8, .Dv = 5, .causal = causal};
      s.cu_q = cu_q;
      s.cu_k = cu_k;
      s.seed = seed++;
      EXPECT_TRUE(check_case<T>(s));
    }
}

// Lk = 0: every query sees nothing (out 0, lse -inf). Lq = 0: nothing to compute.
TYPED_TEST(SoftmaxSweep, EmptyLengths) {
  using T = TypeParam;
  for (auto [lq, lk] : {std::pair<Index, Index>{0, 0}, {0, 5}, {5, 0}, {kTq<T> + 1, 0}, {1, 0}})
    for (Causal causal : {Causal::none, Causal::top_left, Causal::bottom_right})
      for (Layout layout : {Layout::bhld, Layout::blhd}) {
        CaseSpec s{.B = 2, .H = 2, .Hkv = 1, .Lq = lq, .Lk = lk, .Dqk = 4, .Dv = 3, .layout = layout, .causal = causal};
        EXPECT_TRUE(check_case<T>(s));
      }
}

}  // namespace
}  // namespace effattn_test
