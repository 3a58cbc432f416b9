// RfaAttention against the double reference (reference::rfa_attention, given the kernel's own
// projection) over every feature map, every valid compat preset, every causal alignment, Lq != Lk
// both ways, key padding (with empty sequences), GQA and shared projections, both layouts,
// Dqk != Dv, odd feature counts, misaligned pointers, and the lengths where the kernel changes
// regime: 1, 2, 7, the lane tile +-1, a query pass +-1, and the causal chunk +-1 (small and default).
// Tolerances: rfa_tolerance in support/rfa_case.hpp (relative to max|ref|); the worst error seen per
// scalar type and feature family is recorded as a test property.

#include <algorithm>
#include <iomanip>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <effattn/kinds/rfa.hpp>
#include <effattn/simd/tile_kernels.hpp>

#include "support/rfa_case.hpp"

namespace effattn_test {
namespace {

template <class T>
class RfaSweep : public ::testing::Test {};
TYPED_TEST_SUITE(RfaSweep, Scalars);

template <class T>
constexpr Index kTq = effattn::detail::kTileQ<T>;
// Query rows of one pass of the linear core (several lane tiles).
template <class T>
constexpr Index kPass = effattn::detail::TileScratch<T>::G * effattn::detail::kTileQ<T>;
// Keys per chunk of the causal mode (config.chunk = 0).
template <class T>
constexpr Index kChunk = effattn::detail::kLinearChunk<T>;

// One way to configure the map: a feature, RFA's l2 normalisation, and where the projection comes
// from (drawn by the kernel, or the caller's; relu and elu_plus_one drawn = no projection at all).
struct Variant {
  Feature feature;
  bool l2 = true;
  bool caller = false;
};

const std::vector<Variant>& variants() {
  static const std::vector<Variant> v = {
      {Feature::positive},
      {Feature::hyperbolic},
      {Feature::trigonometric, true},
      {Feature::trigonometric, false},
      {Feature::hkunlp_fourier},
      {Feature::relu, true, false},
      {Feature::relu, true, true},
      {Feature::elu_plus_one, true, false},
      {Feature::elu_plus_one, true, true},
      {Feature::positive, true, true},
  };
  return v;
}

// The compat presets valid for a feature (validate(): lucidrains needs positive, hkunlp positive or
// hkunlp_fourier) and a causal alignment (hkunlp is non-causal only).
std::vector<Compat> compats_for(Feature f, Causal causal) {
  std::vector<Compat> c{Compat::none};
  if (f == Feature::positive) c.push_back(Compat::lucidrains);
  if ((f == Feature::positive || f == Feature::hkunlp_fourier) && causal == Causal::none) c.push_back(Compat::hkunlp);
  return c;
}

RfaSpec with_variant(RfaSpec s, const Variant& v, Compat compat) {
  s.config.feature = v.feature;
  s.config.l2_normalize = v.l2;
  s.config.compat = compat;
  s.caller_projection = v.caller;
  return s;
}

// Worst measured relative error per family, reported once per test.
struct Worst {
  double exp_maps = 0, trig_maps = 0;
  double& of(Feature f) { return f == Feature::trigonometric || f == Feature::hkunlp_fourier ? trig_maps : exp_maps; }
  static std::string sci(double x) {
    std::ostringstream os;
    os << std::scientific << std::setprecision(2) << x;
    return os.str();
  }
  void record() const {
    ::testing::Test::RecordProperty("worst_rel_error_positive_hyperbolic_relu_elu", sci(exp_maps));
    ::testing::Test::RecordProperty("worst_rel_error_trigonometric_fourier", sci(trig_maps));
  }
};

// Every feature variant x every valid compat x every causal alignment, on three shapes (Lq = Lk,
// Lq < Lk, Lq > Lk, each across a pass and a chunk boundary); B, H, GQA, layout, misalignment, odd
// m and Dqk != Dv rotate across the cases.
TYPED_TEST(RfaSweep, FeaturesCompatsAndAlignments) {
  using T = TypeParam;
  Worst worst;
  const std::vector<std::pair<Index, Index>> shapes = {
      {kPass<T> + 1, kPass<T> + 1}, {kTq<T> - 1, kChunk<T> + 3}, {kChunk<T> + 3, kTq<T> + 1}};
  std::uint64_t seed = 100;
  int r = 0;
  for (const Variant& v : variants())
    for (Causal causal : {Causal::none, Causal::top_left, Causal::bottom_right})
      for (Compat compat : compats_for(v.feature, causal))
        for (auto [lq, lk] : shapes) {
          RfaSpec s{.B = 1 + r % 2, .H = 2, .Hkv = r % 3 == 0 ? 1 : 2, .Lq = lq, .Lk = lk, .Dqk = r % 2 ? 16 : 9,
                    .Dv = r % 4 == 1 ? 5 : 12};
          s.causal = causal;
          s.layout = r % 2 ? Layout::blhd : Layout::bhld;
          s.offset = (r / 2) % 2;
          s.config.num_features = r % 3 == 1 ? 33 : 24;
          s.config.seed = seed;
          s.seed = seed++;
          ++r;
          s = with_variant(s, v, compat);
          EXPECT_TRUE(check_rfa_case<T>(s, -1, &worst.of(v.feature)));
        }
  worst.record();
}

// 1, 2, 7, lane tile +-1, a pass +-1, chunk +-1 and 2 chunks + 1, as Lq = Lk and Lq != Lk both ways
// under each causal alignment; the feature variant rotates.
template <class T>
std::vector<Index> sweep_lengths() {
  std::set<Index> s{1, 2, 7, kChunk<T> - 1, kChunk<T>, kChunk<T> + 1, 2 * kChunk<T> + 1};
  for (Index t : {kTq<T>, kPass<T>})
    for (Index d : {-1, 0, 1}) s.insert(t + d);
  return {s.begin(), s.end()};
}

TYPED_TEST(RfaSweep, Lengths) {
  using T = TypeParam;
  Worst worst;
  const auto lens = sweep_lengths<T>();
  const Index n = static_cast<Index>(lens.size());
  std::uint64_t seed = 1000;
  for (Index c = 0; c < n; ++c) {
    const Index L = lens[static_cast<std::size_t>(c)];
    const Index other = lens[static_cast<std::size_t>((c + 4) % n)];
    for (int variant = 0; variant < 5; ++variant) {
      const Index r = c * 5 + variant;
      RfaSpec s{.B = 1, .H = 2, .Hkv = r % 2 ? 1 : 2, .Lq = variant == 4 ? other : L, .Lk = variant == 3 ? other : L,
                .Dqk = r % 3 ? 8 : 13, .Dv = r % 4 ? 6 : 8};
      s.causal = variant == 0 ? Causal::none : variant % 2 ? Causal::top_left : Causal::bottom_right;
      s.layout = r % 2 ? Layout::blhd : Layout::bhld;
      s.offset = (r / 3) % 2;
      s.config.num_features = 16;
      s.seed = seed++;
      const Variant& v = variants()[static_cast<std::size_t>(r) % variants().size()];
      s = with_variant(s, v, Compat::none);
      EXPECT_TRUE(check_rfa_case<T>(s, -1, &worst.of(v.feature)));
    }
  }
  worst.record();
}

// The causal chunk +-1 at a small chunk (5) and the default one (64), both alignments, Lq != Lk, with
// padding that ends inside, on and after a chunk boundary.
TYPED_TEST(RfaSweep, CausalChunkBoundaries) {
  using T = TypeParam;
  Worst worst;
  std::uint64_t seed = 2000;
  int r = 0;
  for (Index chunk : {Index{5}, Index{0}}) {
    const Index C = chunk ? chunk : kChunk<T>;
    for (Index L : {C - 1, C, C + 1, 2 * C + 1})
      for (Causal causal : {Causal::top_left, Causal::bottom_right})
        for (int shape = 0; shape < 3; ++shape) {
          const Variant& v = variants()[static_cast<std::size_t>(r) % variants().size()];
          RfaSpec s{.B = 3, .H = 2, .Hkv = 2, .Lq = shape == 1 ? L + 3 : L, .Lk = shape == 2 ? L + 3 : L, .Dqk = 8, .Dv = 7};
          s.causal = causal;
          s.key_lengths = {s.Lk, std::max<Index>(s.Lk - C, 0), std::min(s.Lk, C)};
          s.config.chunk = chunk;
          s.config.num_features = 20;
          s.layout = r % 2 ? Layout::blhd : Layout::bhld;
          s.seed = seed++;
          ++r;
          s = with_variant(s, v, Compat::none);
          EXPECT_TRUE(check_rfa_case<T>(s, -1, &worst.of(v.feature)));
          // performer-pytorch's causal form on the same chunk boundaries.
          if (v.feature == Feature::positive) {
            EXPECT_TRUE(check_rfa_case<T>(with_variant(s, v, Compat::lucidrains)));
          }
        }
  }
  worst.record();
}

// key_lengths with an empty sequence (its outputs are exactly 0 for every preset: compare_rfa demands
// exact 0 where the reference is 0, and that is checked again here directly), a full one and partial
// ones, under every alignment and preset.
TYPED_TEST(RfaSweep, KeyPadding) {
  using T = TypeParam;
  Worst worst;
  std::uint64_t seed = 3000;
  int r = 0;
  for (const Variant& v : variants())
    for (Causal causal : {Causal::none, Causal::top_left, Causal::bottom_right})
      for (Compat compat : compats_for(v.feature, causal)) {
        RfaSpec s{.B = 4, .H = 4, .Hkv = 2, .Lq = 19, .Lk = 70, .Dqk = 8, .Dv = 6, .causal = causal};
        if (r % 2) std::swap(s.Lq, s.Lk);
        s.key_lengths = {0, s.Lk, s.Lk / 2 + 1, 1};
        s.config.num_features = 16;
        s.layout = r % 3 ? Layout::bhld : Layout::blhd;
        s.offset = r % 2;
        s.seed = seed++;
        ++r;
        s = with_variant(s, v, compat);
        EXPECT_TRUE(check_rfa_case<T>(s, -1, &worst.of(v.feature)));
        const RfaAttention<T> attn = make_attention<T>(s);
        const RfaInputs<T> in = make_rfa_inputs<T>(s);
        const Buffer<T> out = run_rfa(in, attn);
        for (Index h = 0; h < s.H; ++h)
          for (Index i = 0; i < s.Lq; ++i)
            for (Index d = 0; d < s.Dv; ++d) ASSERT_EQ(out[in.out_at(0, h, i, d)], T(0)) << s.describe();
      }
  worst.record();
}

// GQA at H = 2 Hkv and 4 Hkv, projections per KV head or shared (share_across_heads, and a caller's
// single matrix), layouts, causal or not.
TYPED_TEST(RfaSweep, GroupedHeadsAndSharedProjections) {
  using T = TypeParam;
  Worst worst;
  std::uint64_t seed = 4000;
  int r = 0;
  for (Index group : {1, 2, 4})
    for (bool shared : {false, true})
      for (Causal causal : {Causal::none, Causal::bottom_right})
        for (Feature f : {Feature::positive, Feature::hyperbolic, Feature::relu}) {
          RfaSpec s{.B = 2, .H = 2 * group, .Hkv = 2, .Lq = 21, .Lk = 45, .Dqk = 12, .Dv = 10, .causal = causal};
          s.config.feature = f;
          s.config.share_across_heads = shared;
          s.config.num_features = 17;
          s.caller_projection = f == Feature::relu || r % 3 == 0;
          s.layout = r % 2 ? Layout::blhd : Layout::bhld;
          s.offset = r % 3 == 1;
          s.seed = seed++;
          ++r;
          EXPECT_TRUE(check_rfa_case<T>(s, -1, &worst.of(f)));
        }
  worst.record();
  // Heads that do share a projection really see the same matrix, and heads that do not see different
  // ones (an off-by-one head index would pass a reference that reads the same wrong projection).
  RfaConfig c;
  c.num_features = 8;
  const RfaAttention<T> per_head(c, 3, 4);
  ASSERT_EQ(per_head.projection().heads(), 3);
  EXPECT_NE(per_head.projection()(0, 0, 0), per_head.projection()(1, 0, 0));
  c.share_across_heads = true;
  EXPECT_EQ(RfaAttention<T>(c, 3, 4).projection().heads(), 1);
}

// Head dimensions (Dqk = 1, odd, a packet +-1, 64) against value dimensions, odd and even m.
TYPED_TEST(RfaSweep, HeadDimsAndFeatureCounts) {
  using T = TypeParam;
  Worst worst;
  std::uint64_t seed = 5000;
  int r = 0;
  for (Index dqk : {1, 3, 7, 33, 64})
    for (Index dv : {1, 5, 64})
      for (Index m : {1, 33, 64}) {
        if ((dqk + dv + m) % 2 && m != 33) continue;  // a spread of the combinations
        RfaSpec s{.B = 1, .H = 2, .Hkv = 1, .Lq = 13, .Lk = 29, .Dqk = dqk, .Dv = dv};
        s.causal = r % 3 == 0 ? Causal::none : Causal::top_left;
        s.config.num_features = m;
        s.config.orthogonal = r % 4 != 3;
        // |q'|^2 stays ~1: qk_std^2 * Dqk * scale with scale = 1/sqrt(Dqk).
        s.qk_std = 1.0 / std::sqrt(std::sqrt(static_cast<double>(dqk)));
        s.layout = r % 2 ? Layout::blhd : Layout::bhld;
        s.offset = r % 2;
        s.seed = seed++;
        const Variant& v = variants()[static_cast<std::size_t>(r) % variants().size()];
        ++r;
        EXPECT_TRUE(check_rfa_case<T>(with_variant(s, v, Compat::none), -1, &worst.of(v.feature)));
      }
  worst.record();
}

// Config fields the other tests leave at their defaults: an explicit scale, RFA's temperature, iid
// projections, and a denominator floor (clamp) where compat = none allows one (the maps that are not
// exponential; validate() refuses it for the others): small (inactive for these inputs) and large
// (active everywhere: out = num / clamp, which also pins the maps' constant factors m^-1/2).
TYPED_TEST(RfaSweep, ConfigFields) {
  using T = TypeParam;
  std::uint64_t seed = 6000;
  for (const Variant& v : variants())
    for (int field = 0; field < 4; ++field) {
      RfaSpec s{.B = 2, .H = 2, .Hkv = 2, .Lq = 17, .Lk = 33, .Dqk = 8, .Dv = 4};
      s.causal = field % 2 ? Causal::top_left : Causal::none;
      s.config.num_features = 16;
      const bool exponential =
          v.feature == Feature::positive || v.feature == Feature::hyperbolic || v.feature == Feature::hkunlp_fourier;
      if (field == 0) s.config.scale = 0.2;
      if (field == 1) s.config.temperature = 0.7;
      if (field == 2) {
        s.config.orthogonal = false;
        if (!exponential) s.config.clamp = 1e-3;
      }
      if (field == 3 && !exponential) s.config.clamp = 1e3;  // above every |denominator| of these inputs
      if (field == 3 && exponential) s.config.scale = 1.7;
      s.seed = seed++;
      // The map's constant factor (m^-1/2 for sin/cos maps) cancels in num / den and shows only
      // against an active clamp: field 3 checks it.
      EXPECT_TRUE(check_rfa_case<T>(with_variant(s, v, Compat::none)));
    }
  // HKUNLP's clamp (1e-2) active: large queries against few keys give denominators below it.
  // hkunlp_fourier's m^-1/2 (HKUNLP's fourier_projection) shows here, against the active clamp.
  for (Feature f : {Feature::positive, Feature::hkunlp_fourier}) {
    RfaSpec s{.B = 2, .H = 2, .Hkv = 1, .Lq = 9, .Lk = 3, .Dqk = 8, .Dv = 4};
    s.config.feature = f;
    s.config.compat = Compat::hkunlp;
    s.config.num_features = 16;
    s.qk_std = 1.2;
    s.seed = seed++;
    EXPECT_TRUE(check_rfa_case<T>(s));
  }
}

// Lk = 0 (every query sees nothing: out 0) and Lq = 0 (nothing to compute).
TYPED_TEST(RfaSweep, EmptyLengths) {
  using T = TypeParam;
  for (auto [lq, lk] : {std::pair<Index, Index>{0, 0}, {0, 5}, {5, 0}, {kTq<T> + 1, 0}})
    for (Causal causal : {Causal::none, Causal::top_left, Causal::bottom_right})
      for (Compat compat : {Compat::none, Compat::lucidrains}) {
        RfaSpec s{.B = 2, .H = 2, .Hkv = 1, .Lq = lq, .Lk = lk, .Dqk = 4, .Dv = 3, .causal = causal};
        s.config.compat = compat;
        s.config.num_features = 8;
        EXPECT_TRUE(check_rfa_case<T>(s));
      }
}

}  // namespace
}  // namespace effattn_test
