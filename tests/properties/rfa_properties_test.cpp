// Properties of RfaAttention that need no reference output, or hold exactly (rfa.md sections 8, 9
// and 13): causal prefix invariance bit for bit, decode equals batch, chunk-size invariance, thread
// determinism, seeds and resample(), LinearState::merge, RFA's recency gate, convergence to exact
// softmax as the number of features grows, the convex hull of positive features, and finite outputs
// for huge inputs.

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iomanip>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <effattn/feature_maps/random_projection.hpp>
#include <effattn/kinds/rfa.hpp>
#include <effattn/reference/softmax.hpp>

#include "support/compare.hpp"
#include "support/rfa_case.hpp"

namespace effattn_test {
namespace {

using effattn::Executor;

template <class T>
class RfaProperties : public ::testing::Test {};
TYPED_TEST_SUITE(RfaProperties, Scalars);

// Every map, in the form compat = none runs it (trigonometric with RFA's l2 normalisation).
constexpr Feature kAllMaps[] = {Feature::positive,       Feature::hyperbolic, Feature::trigonometric,
                                Feature::hkunlp_fourier, Feature::relu,       Feature::elu_plus_one};
// The maps whose features are >= 0 (outputs are convex combinations of value rows).
constexpr Feature kNonnegative[] = {Feature::positive, Feature::hyperbolic, Feature::relu, Feature::elu_plus_one};

bool bit_equal(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }
bool bit_equal(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

// Copies rows [t0, t0 + n) of a [B, heads, n, dim] slice into rows of a [B, heads, len, dim] tensor.
template <class T>
void put_tokens(const Buffer<T>& part, Buffer<T>& whole, Layout layout, Index B, Index heads, Index len, Index dim,
                Index t0, Index n) {
  const auto at = [&](Index L, Index b, Index h, Index l, Index d) {
    return layout == Layout::bhld ? ((b * heads + h) * L + l) * dim + d : ((b * L + l) * heads + h) * dim + d;
  };
  for (Index b = 0; b < B; ++b)
    for (Index h = 0; h < heads; ++h)
      for (Index l = 0; l < n; ++l)
        for (Index d = 0; d < dim; ++d) whole[at(len, b, h, t0 + l, d)] = part[at(n, b, h, l, d)];
}

// Runs the sequence of `in` (Lq = Lk) through extend() in steps of the given sizes (repeating the last
// until the sequence ends), continuing `state`; returns the outputs of every token.
template <class T>
Buffer<T> decode_in_steps(const RfaAttention<T>& attn, const RfaInputs<T>& in, std::vector<Index> steps,
                          typename RfaAttention<T>::State& state, Executor executor = Executor::serial()) {
  const RfaSpec& s = in.spec;
  EXPECT_EQ(s.Lq, s.Lk);
  Buffer<T> out(in.out_size(), 0, std::numeric_limits<T>::quiet_NaN());
  effattn::Options<T> options;
  options.layout = s.layout;
  options.executor = executor;
  std::size_t next = 0;
  for (Index t = 0; t < s.Lk;) {
    const Index n = std::min(steps[std::min(next++, steps.size() - 1)], s.Lk - t);
    const Buffer<T> q = slice_tokens(in.q, s.layout, s.B, s.H, s.Lq, s.Dqk, t, t + n);
    const Buffer<T> k = slice_tokens(in.k, s.layout, s.B, s.Hkv, s.Lk, s.Dqk, t, t + n);
    const Buffer<T> v = slice_tokens(in.v, s.layout, s.B, s.Hkv, s.Lk, s.Dv, t, t + n);
    Buffer<T> o(s.B * s.H * n * s.Dv, 0, std::numeric_limits<T>::quiet_NaN());
    const effattn::ConstTensor4<T> qv(q.data(), dims_in(s.layout, s.B, s.H, n, s.Dqk));
    const effattn::ConstTensor4<T> kv(k.data(), dims_in(s.layout, s.B, s.Hkv, n, s.Dqk));
    const effattn::ConstTensor4<T> vv(v.data(), dims_in(s.layout, s.B, s.Hkv, n, s.Dv));
    const effattn::Tensor4<T> ov(o.data(), dims_in(s.layout, s.B, s.H, n, s.Dv));
    if (s.gated) {
      const Buffer<T> g = slice_gate(in.gate, s.B, s.Hkv, s.Lk, t, t + n);
      attn.extend(state, qv, kv, vv, effattn::ConstTensor3<T>(g.data(), s.B, s.Hkv, n), ov, options);
    } else {
      attn.extend(state, qv, kv, vv, ov, options);
    }
    put_tokens(o, out, s.layout, s.B, s.H, s.Lq, s.Dv, t, n);
    t += n;
  }
  return out;
}

template <class T>
::testing::AssertionResult all_finite(const Buffer<T>& x, const std::string& context) {
  for (Index i = 0; i < x.size(); ++i)
    if (!std::isfinite(x[i])) return ::testing::AssertionFailure() << "element " << i << " is " << x[i] << "; " << context;
  return ::testing::AssertionSuccess();
}

template <class T>
std::vector<double> as_double(const Buffer<T>& x) {
  std::vector<double> r(static_cast<std::size_t>(x.size()));
  for (Index i = 0; i < x.size(); ++i) r[static_cast<std::size_t>(i)] = static_cast<double>(x[i]);
  return r;
}

// ---- causal prefix invariance (rfa.md 8.2, 9.6; acceptance: bit-exact) ----

// Query i of a causal forward reads keys <= i only, and the key stabiliser (powers of two, exact
// alignment) must not let later keys in through rounding: replacing q, k, v of every token > i with
// other values leaves rows <= i identical bit for bit. The replacements are fresh draws of the same
// spread, and of four times the spread (so their stabiliser exponents differ by much more). Several
// chunks (default 64, and 5), GQA, both layouts, every map, moderate and large-norm inputs (q, k * 5).
// The hardest case is float hkunlp_fourier with replacements at 4x the spread: phi = exp(h) m^-1/2
// [sin u, cos u] grows with h = |x'|^2 / 2 (exponent ~141 for those keys), so a later key of the same
// chunk is far above the earlier ones; each query's scale must come from the keys it sees only.
TYPED_TEST(RfaProperties, CausalPrefixInvarianceIsBitExact) {
  using T = TypeParam;
  std::uint64_t seed = 100;
  int r = 0;
  for (Feature f : kAllMaps)
    for (double qk_std : {0.35, 5 * 0.35})
      for (Index chunk : {Index{0}, Index{5}}) {
        RfaSpec s{.B = 2, .H = 4, .Hkv = 2, .Lq = 150, .Lk = 150, .Dqk = 16, .Dv = 7};
        s.causal = r % 2 ? Causal::bottom_right : Causal::top_left;  // Lq = Lk: the same band
        s.layout = r % 3 ? Layout::bhld : Layout::blhd;
        s.config.feature = f;
        s.config.num_features = 24;
        s.config.chunk = chunk;
        s.qk_std = qk_std;
        s.seed = seed++;
        ++r;
        const RfaAttention<T> attn = make_attention<T>(s);
        const RfaInputs<T> base = make_rfa_inputs<T>(s);
        const Buffer<T> want = run_rfa(base, attn);
        ASSERT_TRUE(all_finite(want, s.describe()));
        for (double spread : {1.0, 4.0})
          for (Index cut : {0, 4, 5, 63, 64, 100, 148}) {
            RfaInputs<T> in = make_rfa_inputs<T>(s);
            Rng rng(s.seed * 7 + static_cast<std::uint64_t>(cut));
            const double sd = spread * qk_std;
            for (Index b = 0; b < s.B; ++b)
              for (Index j = cut + 1; j < s.Lk; ++j) {
                for (Index h = 0; h < s.H; ++h)
                  for (Index d = 0; d < s.Dqk; ++d) in.q[in.q_at(b, h, j, d)] = static_cast<T>(sd * rng.normal());
                for (Index h = 0; h < s.Hkv; ++h) {
                  for (Index d = 0; d < s.Dqk; ++d) in.k[in.k_at(b, h, j, d)] = static_cast<T>(sd * rng.normal());
                  for (Index d = 0; d < s.Dv; ++d) in.v[in.v_at(b, h, j, d)] = static_cast<T>(spread * rng.normal());
                }
              }
            const Buffer<T> got = run_rfa(in, attn);
            Index differing = 0, first = -1;
            for (Index b = 0; b < s.B; ++b)
              for (Index h = 0; h < s.H; ++h)
                for (Index i = 0; i <= cut; ++i)
                  for (Index d = 0; d < s.Dv; ++d) {
                    const Index o = in.out_at(b, h, i, d);
                    if (!bit_equal(got[o], want[o])) {
                      if (first < 0) first = o;
                      ++differing;
                    }
                  }
            EXPECT_EQ(differing, 0) << "rows <= " << cut << " changed when later tokens did (replaced at " << spread
                                    << "x the spread); first at flat " << first << ": "
                                    << (first >= 0 ? static_cast<double>(got[first]) : 0.0) << " vs "
                                    << (first >= 0 ? static_cast<double>(want[first]) : 0.0) << "; " << s.describe();
            // The replacement did reach the later rows (otherwise the check would be vacuous).
            bool later_changed = false;
            for (Index d = 0; d < s.Dv && cut + 1 < s.Lq; ++d)
              later_changed |= !bit_equal(got[in.out_at(0, 0, cut + 1, d)], want[in.out_at(0, 0, cut + 1, d)]);
            EXPECT_TRUE(later_changed || cut + 1 >= s.Lq) << s.describe();
          }
      }
}

// ---- decode equals batch (rfa.md 4, 9.6) ----

// extend() one token at a time from an empty state, and a prefill of n tokens (the chunked path for
// n > 4, the decode path below) followed by single tokens and small groups, against one causal
// forward (top_left) of the whole sequence. Different summation orders: within rfa_tolerance (the
// sweep's kernel-vs-reference bound). Measured worst relative difference: 2.4e-7 float, 3.7e-16
// double.
TYPED_TEST(RfaProperties, DecodeEqualsBatch) {
  using T = TypeParam;
  double worst = 0;
  std::uint64_t seed = 200;
  int r = 0;
  for (Feature f : kAllMaps)
    for (const std::vector<Index>& steps : {std::vector<Index>{1}, std::vector<Index>{70, 1}, std::vector<Index>{3, 1, 2, 5, 1},
                                            std::vector<Index>{129, 1}}) {
      RfaSpec s{.B = 2, .H = 4, .Hkv = 2, .Lq = 150, .Lk = 150, .Dqk = 12, .Dv = 9, .causal = Causal::top_left};
      s.layout = r % 2 ? Layout::blhd : Layout::bhld;
      s.config.feature = f;
      s.config.num_features = 20;
      s.seed = seed++;
      ++r;
      const RfaAttention<T> attn = make_attention<T>(s);
      const RfaInputs<T> in = make_rfa_inputs<T>(s);
      const Buffer<T> batch = run_rfa(in, attn);
      auto state = attn.make_state(s.B, s.Hkv, s.Dv);
      const Buffer<T> decoded = decode_in_steps(attn, in, steps, state);
      std::string how = " steps={";
      for (Index n : steps) how += std::to_string(n) + ",";
      EXPECT_TRUE(compare_rfa(in, decoded, as_double(batch), rfa_tolerance<T>(f), how + "}"));
      worst = std::max(worst, relative_error(decoded, as_double(batch)));
      for (Index slice = 0; slice < s.B * s.Hkv; ++slice) EXPECT_EQ(state.length(slice), s.Lk) << s.describe();
    }
  ::testing::Test::RecordProperty("worst_rel_difference", sci(worst));
}

// The same with RFA's gate: extend() with gates equals the gated causal forward.
TYPED_TEST(RfaProperties, GatedDecodeEqualsGatedBatch) {
  using T = TypeParam;
  std::uint64_t seed = 250;
  for (Feature f : {Feature::positive, Feature::trigonometric, Feature::elu_plus_one})
    for (const std::vector<Index>& steps : {std::vector<Index>{1}, std::vector<Index>{70, 1, 3}}) {
      RfaSpec s{.B = 2, .H = 2, .Hkv = 1, .Lq = 100, .Lk = 100, .Dqk = 8, .Dv = 5, .causal = Causal::top_left};
      s.config.feature = f;
      s.config.num_features = 16;
      s.gated = true;
      s.gate_lo = 0.5;
      s.seed = seed++;
      const RfaAttention<T> attn = make_attention<T>(s);
      const RfaInputs<T> in = make_rfa_inputs<T>(s);
      const Buffer<T> batch = run_rfa(in, attn);
      auto state = attn.make_state(s.B, s.Hkv, s.Dv);
      const Buffer<T> decoded = decode_in_steps(attn, in, steps, state);
      EXPECT_TRUE(compare_rfa(in, decoded, as_double(batch), rfa_tolerance<T>(f), " gated decode"));
    }
}

// ---- chunk size invariance ----

// The causal chunk length changes only the summation order: chunk 5 and 300 against the default 64,
// within rfa_tolerance, with Lq != Lk under both alignments and key padding (measured worst relative
// difference 2.0e-7 float, 2.9e-16 double).
TYPED_TEST(RfaProperties, ChunkSizeInvariance) {
  using T = TypeParam;
  std::uint64_t seed = 300;
  for (Feature f : kAllMaps)
    for (Causal causal : {Causal::top_left, Causal::bottom_right}) {
      RfaSpec s{.B = 2, .H = 2, .Hkv = 1, .Lq = causal == Causal::top_left ? 257 : 190, .Lk = 257, .Dqk = 8, .Dv = 6,
                .causal = causal};
      s.key_lengths = std::vector<Index>{257, 131};
      s.config.feature = f;
      s.config.num_features = 16;
      s.seed = seed++;
      const RfaInputs<T> in = make_rfa_inputs<T>(s);
      const Buffer<T> base = run_rfa(in, make_attention<T>(s));
      ASSERT_TRUE(all_finite(base, s.describe()));
      for (Index chunk : {5, 300}) {
        RfaSpec c = s;
        c.config.chunk = chunk;
        const Buffer<T> got = run_rfa(in, make_attention<T>(c));
        EXPECT_TRUE(compare_rfa(in, got, as_double(base), rfa_tolerance<T>(f), " chunk " + std::to_string(chunk) + " vs 64"));
      }
    }
}

// ---- thread determinism (rfa.md 9.7; acceptance: bit-identical) ----

TYPED_TEST(RfaProperties, OneAndTwoThreadsAreBitIdentical) {
  using T = TypeParam;
  std::uint64_t seed = 400;
  for (Feature f : {Feature::positive, Feature::trigonometric, Feature::relu})
    for (Causal causal : {Causal::none, Causal::top_left, Causal::bottom_right})
      for (Index group : {1, 4}) {
        RfaSpec s{.B = 2, .H = 2 * group, .Hkv = 2, .Lq = 200, .Lk = 230, .Dqk = 16, .Dv = 16, .causal = causal};
        s.key_lengths = std::vector<Index>{230, 97};
        s.config.feature = f;
        s.config.num_features = 32;
        s.seed = seed++;
        const RfaAttention<T> attn = make_attention<T>(s);
        const RfaInputs<T> in = make_rfa_inputs<T>(s);
        const Buffer<T> one = run_rfa(in, attn, Executor::openmp(1));
        const Buffer<T> two = run_rfa(in, attn, Executor::openmp(2));
        EXPECT_TRUE(same_bytes(one, two)) << "openmp(1) vs openmp(2): " << s.describe();
        EXPECT_TRUE(same_bytes(one, run_rfa(in, attn, Executor::serial()))) << "openmp(1) vs serial: " << s.describe();
        // And the result is right (bit equality of two wrong answers would prove nothing).
        EXPECT_TRUE(compare_rfa(in, one, rfa_reference(in, attn), rfa_tolerance<T>(f)));
      }
  // One (sequence, KV head) with many keys: they are split into parts (merged states in the global
  // mode, prefix states in the causal one) so both threads work; the split depends on the shape only.
  for (Causal causal : {Causal::none, Causal::top_left, Causal::bottom_right}) {
    RfaSpec s{.B = 1, .H = 2, .Hkv = 1, .Lq = causal == Causal::none ? 40 : 7000, .Lk = 9000, .Dqk = 8, .Dv = 8,
              .causal = causal};
    s.key_lengths = std::vector<Index>{8500};
    s.config.num_features = 16;
    s.seed = seed++;
    const RfaAttention<T> attn = make_attention<T>(s);
    const RfaInputs<T> in = make_rfa_inputs<T>(s);
    const Buffer<T> one = run_rfa(in, attn, Executor::openmp(1));
    EXPECT_TRUE(same_bytes(one, run_rfa(in, attn, Executor::openmp(2)))) << "split keys: " << s.describe();
    EXPECT_TRUE(compare_rfa(in, one, rfa_reference(in, attn), rfa_tolerance<T>(Feature::positive)));
  }
  // Decode: the outputs and the final states.
  for (Index group : {1, 4}) {
    RfaSpec s{.B = 2, .H = 2 * group, .Hkv = 2, .Lq = 90, .Lk = 90, .Dqk = 16, .Dv = 8, .causal = Causal::top_left};
    s.config.num_features = 32;
    s.seed = seed++;
    const RfaAttention<T> attn = make_attention<T>(s);
    const RfaInputs<T> in = make_rfa_inputs<T>(s);
    auto s1 = attn.make_state(s.B, s.Hkv, s.Dv), s2 = s1;
    const Buffer<T> one = decode_in_steps(attn, in, {70, 1}, s1, Executor::openmp(1));
    const Buffer<T> two = decode_in_steps(attn, in, {70, 1}, s2, Executor::openmp(2));
    EXPECT_TRUE(same_bytes(one, two)) << "decode, openmp(1) vs openmp(2): " << s.describe();
    Index differing = 0;
    for (Index i = 0; i < s.B * s.Hkv; ++i)
      for (Index fe = 0; fe < s1.features(); ++fe) {
        differing += !bit_equal(s1.z(i, fe), s2.z(i, fe));
        for (Index c = 0; c < s.Dv; ++c) differing += !bit_equal(s1.s(i, fe, c), s2.s(i, fe, c));
      }
    EXPECT_EQ(differing, 0) << "decode state, openmp(1) vs openmp(2): " << s.describe();
  }
}

// ---- seeds and resample() (rfa.md 6) ----

TYPED_TEST(RfaProperties, SeedsAndResample) {
  using T = TypeParam;
  RfaSpec s{.B = 1, .H = 4, .Hkv = 2, .Lq = 40, .Lk = 40, .Dqk = 8, .Dv = 4, .causal = Causal::top_left};
  s.config.num_features = 20;
  s.config.seed = 42;
  const RfaInputs<T> in = make_rfa_inputs<T>(s);
  const RfaAttention<T> a(s.config, s.Hkv, s.Dqk), b(s.config, s.Hkv, s.Dqk);
  EXPECT_EQ(a.projection().values(), b.projection().values());
  EXPECT_TRUE(same_bytes(run_rfa(in, a), run_rfa(in, b))) << "same seed, different outputs";
  // The projection is the documented stream: (seed, KV head, draw) through draw_projection.
  EXPECT_EQ(a.projection().values(), effattn::draw_projection(s.Hkv, 20, s.Dqk, 42, 0, true).values());

  RfaConfig other = s.config;
  other.seed = 43;
  const RfaAttention<T> c(other, s.Hkv, s.Dqk);
  EXPECT_NE(c.projection().values(), a.projection().values());
  EXPECT_FALSE(same_bytes(run_rfa(in, c), run_rfa(in, a))) << "different seeds, same outputs";

  RfaAttention<T> d(s.config, s.Hkv, s.Dqk);
  EXPECT_EQ(d.draw(), 0u);
  d.resample();
  EXPECT_EQ(d.draw(), 1u);
  EXPECT_NE(d.projection().values(), a.projection().values());
  EXPECT_EQ(d.projection().values(), effattn::draw_projection(s.Hkv, 20, s.Dqk, 42, 1, true).values());
  EXPECT_FALSE(same_bytes(run_rfa(in, d), run_rfa(in, a))) << "resample() left the outputs unchanged";
  // ... and the kernel uses the new projection: it agrees with the reference on it.
  EXPECT_TRUE(compare_rfa(in, run_rfa(in, d), rfa_reference(in, d), rfa_tolerance<T>(Feature::positive)));
  d.resample();
  EXPECT_EQ(d.draw(), 2u);
  RfaAttention<T> e(s.config, s.Hkv, s.Dqk);
  e.resample();
  e.resample();
  EXPECT_EQ(e.projection().values(), d.projection().values()) << "resample() is not deterministic";
  // Shared projection: one matrix, the stream of head 0.
  RfaConfig shared = s.config;
  shared.share_across_heads = true;
  EXPECT_EQ(RfaAttention<T>(shared, s.Hkv, s.Dqk).projection().values(),
            effattn::draw_projection(1, 20, s.Dqk, 42, 0, true).values());
}

// ---- LinearState::merge ----

// The state of keys [0, 2n) equals the merge of the state of keys [0, n) and the state of keys
// [n, 2n), each extended into a fresh state (the second from tokens n..2n-1 alone: it holds their
// keys only; their queries' outputs are irrelevant here). s() and z() within rounding of their
// largest entry (rfa_tolerance; measured worst 5.6e-7 float, 1.3e-15 double), in both merge orders;
// lengths add up.
TYPED_TEST(RfaProperties, MergeOfDisjointKeyRanges) {
  using T = TypeParam;
  double worst = 0;
  std::uint64_t seed = 500;
  for (Feature f : kAllMaps)
    for (Index n : {3, 70}) {
      RfaSpec s{.B = 2, .H = 2, .Hkv = 2, .Lq = 2 * n, .Lk = 2 * n, .Dqk = 8, .Dv = 5, .causal = Causal::top_left};
      s.config.feature = f;
      s.config.num_features = 16;
      s.seed = seed++;
      const RfaAttention<T> attn = make_attention<T>(s);
      const RfaInputs<T> in = make_rfa_inputs<T>(s);
      auto whole = attn.make_state(s.B, s.Hkv, s.Dv);
      decode_in_steps(attn, in, {2 * n}, whole);
      // Tokens [0, n) and [n, 2n) as their own sequences.
      RfaSpec half = s;
      half.Lq = half.Lk = n;
      RfaInputs<T> first{half, slice_tokens(in.q, s.layout, s.B, s.H, 2 * n, s.Dqk, 0, n),
                         slice_tokens(in.k, s.layout, s.B, s.Hkv, 2 * n, s.Dqk, 0, n),
                         slice_tokens(in.v, s.layout, s.B, s.Hkv, 2 * n, s.Dv, 0, n), {}};
      RfaInputs<T> second{half, slice_tokens(in.q, s.layout, s.B, s.H, 2 * n, s.Dqk, n, 2 * n),
                          slice_tokens(in.k, s.layout, s.B, s.Hkv, 2 * n, s.Dqk, n, 2 * n),
                          slice_tokens(in.v, s.layout, s.B, s.Hkv, 2 * n, s.Dv, n, 2 * n), {}};
      auto a = attn.make_state(s.B, s.Hkv, s.Dv), b = a;
      decode_in_steps(attn, first, {n}, a);
      decode_in_steps(attn, second, {n}, b);
      auto ab = a, ba = b;
      ab.merge(b);
      ba.merge(a);
      const double rel = rfa_tolerance<T>(f);
      for (Index i = 0; i < s.B * s.Hkv; ++i) {
        EXPECT_EQ(ab.length(i), 2 * n);
        EXPECT_EQ(ba.length(i), 2 * n);
        double zmax = 0, smax = 0;
        for (Index fe = 0; fe < whole.features(); ++fe) {
          zmax = std::max(zmax, std::abs(static_cast<double>(whole.z(i, fe))));
          for (Index c = 0; c < s.Dv; ++c) smax = std::max(smax, std::abs(static_cast<double>(whole.s(i, fe, c))));
        }
        ASSERT_GT(zmax, 0) << s.describe();
        // The first half alone is not the whole: the merge has something to add.
        double half_gap = 0;
        for (Index fe = 0; fe < whole.features(); ++fe)
          half_gap = std::max(half_gap, std::abs(static_cast<double>(a.z(i, fe)) - static_cast<double>(whole.z(i, fe))));
        EXPECT_GT(half_gap, 1e-2 * zmax) << s.describe();
        for (Index fe = 0; fe < whole.features(); ++fe) {
          const double z = whole.z(i, fe);
          worst = std::max(worst, std::abs(static_cast<double>(ab.z(i, fe)) - z) / zmax);
          EXPECT_NEAR(ab.z(i, fe), z, rel * zmax) << "z slice " << i << " feature " << fe << "; " << s.describe();
          EXPECT_NEAR(ba.z(i, fe), z, rel * zmax) << "z (b.merge(a)) slice " << i << " feature " << fe;
          for (Index c = 0; c < s.Dv; ++c) {
            worst = std::max(worst, std::abs(static_cast<double>(ab.s(i, fe, c)) - static_cast<double>(whole.s(i, fe, c))) / smax);
            EXPECT_NEAR(ab.s(i, fe, c), whole.s(i, fe, c), rel * smax) << "S slice " << i << " [" << fe << "," << c << "]";
            EXPECT_NEAR(ba.s(i, fe, c), whole.s(i, fe, c), rel * smax) << "S (b.merge(a)) slice " << i;
          }
        }
      }
      // Merging an empty state changes nothing.
      auto same = a;
      same.merge(attn.make_state(s.B, s.Hkv, s.Dv));
      for (Index fe = 0; fe < a.features(); ++fe) EXPECT_TRUE(bit_equal(same.z(0, fe), a.z(0, fe)));
      EXPECT_EQ(same.length(0), n);
    }
  ::testing::Test::RecordProperty("worst_rel_difference", sci(worst));
}

// ---- RFA's recency gate (rfa.md 4: S_j = g_j S_{j-1} + (1 - g_j) phi(k_j) v_j^T, z likewise) ----

TYPED_TEST(RfaProperties, GateMatchesTheReference) {
  using T = TypeParam;
  std::uint64_t seed = 600;
  int r = 0;
  for (Feature f : kAllMaps)
    for (Causal causal : {Causal::top_left, Causal::bottom_right})
      for (Index chunk : {Index{0}, Index{5}}) {
        RfaSpec s{.B = 2, .H = 4, .Hkv = 2, .Lq = r % 2 ? 70 : 131, .Lk = 131, .Dqk = 8, .Dv = 6, .causal = causal};
        if (r % 3 == 0) std::swap(s.Lq, s.Lk);
        s.key_lengths = std::vector<Index>{s.Lk, s.Lk / 2};
        s.layout = r % 2 ? Layout::blhd : Layout::bhld;
        s.offset = r % 3 == 1;
        s.config.feature = f;
        s.config.num_features = 16;
        s.config.chunk = chunk;
        s.gated = true;
        s.gate_lo = r % 2 ? 0.0 : 0.8;  // fast and slow decay
        s.seed = seed++;
        ++r;
        EXPECT_TRUE(check_rfa_case<T>(s));
      }
}

// Gates exactly 0 and 1 inside a sequence (the ends of [0, 1]): against the reference. Zero gates
// make the chunk's cumulative log-gates large, and their rounding is what this tolerance bounds
// (float: 1.1e-5 of max|ref| when each log was clamped at -80; the kernel's -25 keeps it lower).
TYPED_TEST(RfaProperties, GateOfZerosAndOnes) {
  using T = TypeParam;
  for (Feature f : {Feature::positive, Feature::trigonometric})
    for (Index chunk : {Index{0}, Index{5}}) {
      RfaSpec s{.B = 1, .H = 2, .Hkv = 1, .Lq = 40, .Lk = 40, .Dqk = 8, .Dv = 3, .causal = Causal::top_left};
      s.config.feature = f;
      s.config.num_features = 16;
      s.config.chunk = chunk;
      s.seed = 650;
      const RfaAttention<T> attn = make_attention<T>(s);
      RfaInputs<T> in = make_rfa_inputs<T>(s);
      in.spec.gated = true;
      in.gate = Buffer<T>(s.Lk);
      for (Index j = 0; j < s.Lk; ++j) in.gate[j] = j % 7 == 3 ? T(0) : j % 5 == 1 ? T(1) : T(0.9);
      EXPECT_TRUE(compare_rfa(in, run_rfa(in, attn), rfa_reference(in, attn), rfa_tolerance<T>(f)));
    }
}

// All gates 0 (top_left, Lq = Lk): S_i = phi(k_i) v_i^T, so out_i = v_i (of the query head's KV head).
// Earlier keys keep a weight of exp(-80) at most (the kernel's floor of log g): far below rounding.
TYPED_TEST(RfaProperties, ZeroGateReadsTheCurrentToken) {
  using T = TypeParam;
  for (Feature f : {Feature::positive, Feature::hyperbolic, Feature::elu_plus_one})
    for (Index chunk : {Index{0}, Index{5}}) {
      RfaSpec s{.B = 2, .H = 4, .Hkv = 2, .Lq = 70, .Lk = 70, .Dqk = 8, .Dv = 5, .causal = Causal::top_left};
      s.config.feature = f;
      s.config.num_features = 16;
      s.config.chunk = chunk;
      s.gated = true;
      s.gate_lo = s.gate_hi = 0;
      s.seed = 700;
      const RfaAttention<T> attn = make_attention<T>(s);
      const RfaInputs<T> in = make_rfa_inputs<T>(s);
      const Buffer<T> out = run_rfa(in, attn);
      const double tol = 8 * std::numeric_limits<T>::epsilon() * 5;  // a few ulp of |v| <~ 5
      for (Index b = 0; b < s.B; ++b)
        for (Index h = 0; h < s.H; ++h)
          for (Index i = 0; i < s.Lq; ++i)
            for (Index d = 0; d < s.Dv; ++d)
              ASSERT_NEAR(out[in.out_at(b, h, i, d)], in.v[in.v_at(b, h / 2, i, d)], tol)
                  << "b " << b << " h " << h << " i " << i << "; " << s.describe();
    }
}

// All gates 1: S_j = S_{j-1}, nothing ever enters the state, every denominator is 0 and every output
// exactly 0 (as the reference gives: a query whose weights are all 0). A gate just below 1 is the
// ungated attention up to weights (1 - g) g^(i - j), i.e. a relative change of at most
// (Lk) * (1 - g): with 1 - g = 2^-40 (double) that is < 1e-10; with the largest float below 1
// (1 - g = 2^-24) it is < 1e-5, so the tolerances are 1e-9 and 1e-4 of max|out|.
TYPED_TEST(RfaProperties, GateOfOneKeepsTheStateAndNearOneIsUngated) {
  using T = TypeParam;
  for (Feature f : {Feature::positive, Feature::relu})
    for (Index chunk : {Index{0}, Index{5}}) {
      RfaSpec s{.B = 1, .H = 2, .Hkv = 1, .Lq = 100, .Lk = 100, .Dqk = 8, .Dv = 5, .causal = Causal::top_left};
      s.config.feature = f;
      s.config.num_features = 16;
      s.config.chunk = chunk;
      s.gated = true;
      s.gate_lo = s.gate_hi = 1;
      s.seed = 750;
      const RfaAttention<T> attn = make_attention<T>(s);
      RfaInputs<T> in = make_rfa_inputs<T>(s);
      const Buffer<T> ones = run_rfa(in, attn);
      for (Index i = 0; i < ones.size(); ++i) ASSERT_EQ(ones[i], T(0)) << "flat " << i << "; " << s.describe();
      const T near_one = sizeof(T) == 8 ? T(1 - std::ldexp(1.0, -40)) : std::nextafter(T(1), T(0));
      for (Index i = 0; i < in.gate.size(); ++i) in.gate[i] = near_one;
      const Buffer<T> gated = run_rfa(in, attn);
      in.spec.gated = false;
      const Buffer<T> plain = run_rfa(in, attn);
      EXPECT_TRUE(compare_rfa(in, gated, as_double(plain), sizeof(T) == 8 ? 1e-9 : 1e-4, " gate just below 1 vs no gate"));
    }
}

// ---- convergence to softmax (rfa.md 9.12) ----

// Positive (orthogonal) random features estimate exp(q'.k'): the error against exact softmax
// attention (reference::softmax_attention in double, same scale) falls as m grows. Small-norm regime
// (q, k ~ N(0, 0.18^2), d = 8), L = 64, dv = 4, 4 heads (each its own projection), non-causal and
// causal (its first rows average one or two keys, where a weight error is not diluted). Measured
// max-abs errors (projection seed 11, input seed 12; float and double agree to 1e-6):
//   non-causal  m = 16: 2.4e-2   256: 5.7e-3   4096: 1.4e-3
//   causal      m = 16: 1.2e-1   256: 3.1e-2   4096: 6.7e-3
// 1/sqrt(m) predicts a factor 4 per step; the test asserts at least 2 per step and bounds each level
// at ~2x its measurement.
TYPED_TEST(RfaProperties, ErrorAgainstSoftmaxFallsWithFeatures) {
  using T = TypeParam;
  for (Causal causal : {Causal::none, Causal::top_left}) {
    RfaSpec s{.B = 1, .H = 4, .Hkv = 4, .Lq = 64, .Lk = 64, .Dqk = 8, .Dv = 4, .causal = causal};
    s.qk_std = 0.18;
    s.config.seed = 11;
    s.seed = 12;
    const RfaInputs<T> in = make_rfa_inputs<T>(s);
    std::vector<double> exact(static_cast<std::size_t>(in.out_size()));
    effattn::reference::softmax_attention<T>(in.qv(), in.kv(), in.vv(), effattn::Tensor4<double>(exact.data(), in.out_dims()),
                                             in.mask(), {}, s.layout);
    std::vector<double> err;
    for (Index m : {16, 256, 4096}) {
      RfaSpec c = s;
      c.config.num_features = m;
      const Buffer<T> got = run_rfa(in, make_attention<T>(c));
      double e = 0;
      for (Index i = 0; i < got.size(); ++i) e = std::max(e, std::abs(static_cast<double>(got[i]) - exact[static_cast<std::size_t>(i)]));
      err.push_back(e);
      ::testing::Test::RecordProperty((causal == Causal::none ? "noncausal_m" : "causal_m") + std::to_string(m), std::to_string(e));
    }
    const std::vector<double> bound = causal == Causal::none ? std::vector<double>{5e-2, 1.2e-2, 3e-3}
                                                             : std::vector<double>{2.4e-1, 6e-2, 1.4e-2};
    for (std::size_t i = 0; i < err.size(); ++i) EXPECT_LT(err[i], bound[i]) << "level " << i << " causal " << (causal != Causal::none);
    EXPECT_LT(err[1], err[0] / 2) << "m 16 -> 256 did not halve the error";
    EXPECT_LT(err[2], err[1] / 2) << "m 256 -> 4096 did not halve the error";
  }
}

// ---- convex hull (rfa.md 9.4) ----

// Nonnegative maps without eps or clamp (compat none): every output coordinate lies within
// [min_j v_jd, max_j v_jd] over the keys its query sees, up to rounding: 64 ulp of max|v| (measured
// worst overshoot 1.2e-7 of max|v| in float, 3.4e-16 in double).
// Moderate and large-norm inputs, causal or not, key padding. The same check on the trigonometric map
// must find violations (its weights can be negative), which shows the check can fail.
template <class T>
double hull_excess(const RfaInputs<T>& in, const Buffer<T>& out) {
  const RfaSpec& s = in.spec;
  double worst = -INFINITY;
  for (Index b = 0; b < s.B; ++b) {
    const Index valid = s.key_lengths.empty() ? s.Lk : s.key_lengths[static_cast<std::size_t>(b)];
    const Index shift = s.causal == Causal::bottom_right ? valid - s.Lq : 0;
    for (Index h = 0; h < s.H; ++h)
      for (Index i = 0; i < s.Lq; ++i) {
        const Index hi = s.causal == Causal::none ? valid : std::clamp<Index>(i + shift + 1, 0, valid);
        if (hi == 0) continue;
        for (Index d = 0; d < s.Dv; ++d) {
          double lo = INFINITY, up = -INFINITY;
          for (Index j = 0; j < hi; ++j) {
            const double x = in.v[in.v_at(b, h / (s.H / s.Hkv), j, d)];
            lo = std::min(lo, x);
            up = std::max(up, x);
          }
          const double o = out[in.out_at(b, h, i, d)];
          worst = std::max(worst, std::max(lo - o, o - up));
        }
      }
  }
  return worst;
}

TYPED_TEST(RfaProperties, NonnegativeFeaturesStayInTheConvexHull) {
  using T = TypeParam;
  double worst = -INFINITY;
  std::uint64_t seed = 800;
  int r = 0;
  for (Feature f : kNonnegative)
    for (double qk_std : {0.35, 1.75})
      for (Causal causal : {Causal::none, Causal::top_left, Causal::bottom_right}) {
        RfaSpec s{.B = 2, .H = 4, .Hkv = 2, .Lq = 90, .Lk = r % 2 ? 90 : 140, .Dqk = 16, .Dv = 6, .causal = causal};
        s.key_lengths = std::vector<Index>{s.Lk, 1 + r % 30};
        s.config.feature = f;
        s.config.num_features = 24;
        s.qk_std = qk_std;
        s.seed = seed++;
        ++r;
        const RfaInputs<T> in = make_rfa_inputs<T>(s);
        const Buffer<T> out = run_rfa(in, make_attention<T>(s));
        double vmax = 0;
        for (Index i = 0; i < in.v.size(); ++i) vmax = std::max(vmax, std::abs(static_cast<double>(in.v[i])));
        const double excess = hull_excess(in, out);
        worst = std::max(worst, excess / vmax);
        EXPECT_LE(excess, 64 * std::numeric_limits<T>::epsilon() * vmax) << s.describe();
      }
  ::testing::Test::RecordProperty("worst_excess_over_max_abs_v", sci(worst));
  // The trigonometric map (without l2 normalisation, m = 8) leaves the hull: measured excess ~1e2,
  // from a denominator near 0.
  RfaSpec s{.B = 1, .H = 2, .Hkv = 1, .Lq = 60, .Lk = 60, .Dqk = 16, .Dv = 6};
  s.config.feature = Feature::trigonometric;
  s.config.l2_normalize = false;
  s.config.num_features = 8;
  s.qk_std = 1.0;
  s.seed = 890;
  const RfaInputs<T> in = make_rfa_inputs<T>(s);
  EXPECT_GT(hull_excess(in, run_rfa(in, make_attention<T>(s))), 1e-2) << "no hull violation found: " << s.describe();
}

// ---- huge inputs (rfa.md 8.1, 8.4) ----

// Two ways this fails: a key scaled to the exponent of a later, invisible key of its chunk is
// flushed to 0 (query 0 seeing key 0 alone then reads 0 / 0 instead of v_0), and a subnormal
// denominator whose reciprocal overflows gives +-inf.
// q, k * 100 (N(0, 35^2), d = 16: |x'|^2 / 2 ~ 2500, |u| up to ~200): a raw exp(u - h) under- or
// overflows in both precisions, so every output being finite shows the stabilisers are applied.
// In double the result is also checked against the reference: its key stabiliser is exact, and the
// kernel's per-row power-of-two exponents lose only keys whose weight is below 2^-1000 of the
// largest; rounding of u and h (~2500 * 2^-52 * Dqk absolute, ~1e-11 relative in a weight) bounds the
// error at ~1e-10 of max|v|, asserted at 1e-8 of max|out|.
TYPED_TEST(RfaProperties, HugeInputsGiveFiniteOutputs) {
  using T = TypeParam;
  std::uint64_t seed = 900;
  for (Feature f : {Feature::positive, Feature::hyperbolic})
    for (Causal causal : {Causal::none, Causal::top_left, Causal::bottom_right})
      for (Index chunk : {Index{0}, Index{5}}) {
        RfaSpec s{.B = 2, .H = 4, .Hkv = 2, .Lq = 70, .Lk = 130, .Dqk = 16, .Dv = 8, .causal = causal};
        s.key_lengths = std::vector<Index>{130, 40};
        s.config.feature = f;
        s.config.num_features = 32;
        s.config.chunk = chunk;
        s.qk_std = 35;
        s.seed = seed++;
        const RfaAttention<T> attn = make_attention<T>(s);
        const RfaInputs<T> in = make_rfa_inputs<T>(s);
        const Buffer<T> out = run_rfa(in, attn);
        EXPECT_TRUE(all_finite(out, s.describe()));
        if constexpr (sizeof(T) == 8) {
          EXPECT_TRUE(compare_rfa(in, out, rfa_reference(in, attn), 1e-8));
        }
        // Decode path too (causal, no padding).
        if (causal == Causal::top_left && chunk == 0) {
          RfaSpec d = s;
          d.Lq = d.Lk = 130;
          d.key_lengths.clear();
          const RfaInputs<T> din = make_rfa_inputs<T>(d);
          auto state = attn.make_state(d.B, d.Hkv, d.Dv);
          EXPECT_TRUE(all_finite(decode_in_steps(attn, din, {1}, state), d.describe() + " decode"));
        }
      }
}

}  // namespace
}  // namespace effattn_test
