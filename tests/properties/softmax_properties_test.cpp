// Numerical properties of SoftmaxAttention: logits of magnitude 1e4 stay finite and accurate, fully
// masked rows give exactly 0 and LSE -inf, and finite inputs of any scale never give NaN or inf.

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <gtest/gtest.h>

#include <effattn/kinds/softmax.hpp>

#include "support/softmax_case.hpp"

namespace effattn_test {
namespace {

template <class T>
class SoftmaxProperties : public ::testing::Test {};
TYPED_TEST_SUITE(SoftmaxProperties, Scalars);

// Logits near +1e4 or -1e4 with small spreads, built from small integers with scale 1 so every logit
// is exact in float: any error then comes from the softmax itself, which must subtract the row max
// (exp(1e4) overflows in both precisions), so the default tolerance applies unchanged.
TYPED_TEST(SoftmaxProperties, ExactLogitsNearPlusMinus1e4) {
  using T = TypeParam;
  for (double sign : {1.0, -1.0})
    for (Index spread : {0, 1, 3, 40}) {
      CaseSpec s{.B = 2, .H = 2, .Hkv = 2, .Lq = 37, .Lk = 150, .Dqk = 2, .Dv = 16};
      s.config.scale = 1.0;
      s.seed = static_cast<std::uint64_t>(9000 + spread);
      Inputs<T> in = make_inputs<T>(s);
      Rng rng(s.seed + 1);
      // q = (1e4 * sign, 1 + r), k = (1, small integer): logit = +-1e4 + small integer.
      for (Index r = 0; r < s.B * s.H * s.Lq; ++r) {
        in.q[r * 2] = static_cast<T>(1e4 * sign);
        in.q[r * 2 + 1] = static_cast<T>(rng.integer(0, 2));
      }
      for (Index r = 0; r < s.B * s.Hkv * s.Lk; ++r) {
        in.k[r * 2] = T(1);
        in.k[r * 2 + 1] = static_cast<T>(rng.integer(-spread, spread));
      }
      const KernelResult<T> got = run_kernel(in);
      EXPECT_TRUE(compare(in, got, reference(in))) << "sign " << sign << " spread " << spread;
    }
}

// Logits ~N(0, 1e4^2) (q and k scaled by 100, as in the hard_spread golden case): near one-hot rows.
// The logits themselves then carry rounding error up to ~ Dqk * eps * scale * sum_d |q_d k_d| (about
// 1e-2 in float), and softmax passes a logit error e on to out as at most 2 * e * max|v| (the
// probabilities move by at most 2e in 1-norm) and to lse as at most e. The tolerance is that bound,
// per row and computed from the inputs, with a factor 2 for the terms it neglects.
TYPED_TEST(SoftmaxProperties, SpreadLogitsOfMagnitude1e4) {
  using T = TypeParam;
  const double eps = std::numeric_limits<T>::epsilon();
  for (Layout layout : {Layout::bhld, Layout::blhd})
    for (Causal causal : {Causal::none, Causal::top_left}) {
      CaseSpec s{.B = 2, .H = 3, .Hkv = 3, .Lq = 64, .Lk = 200, .Dqk = 33, .Dv = 33, .layout = layout, .causal = causal};
      s.qk_std = std::sqrt(1e4 / (std::sqrt(33.0) * (1 / std::sqrt(33.0))));  // = 100
      s.seed = 9100 + static_cast<std::uint64_t>(causal == Causal::none);
      const Inputs<T> in = make_inputs<T>(s);
      const KernelResult<T> got = run_kernel(in);
      const RefResult want = reference(in);
      // Per (b, h, i): bound on |logit error| over the visible keys, and the spread of v.
      const double scale = 1 / std::sqrt(33.0);
      std::vector<double> row_bound(static_cast<std::size_t>(s.B * s.H * s.Lq));
      double v_spread = 0;
      for (Index n = 0; n < in.v.size(); ++n) v_spread = std::max(v_spread, 2 * std::abs(static_cast<double>(in.v[n])));
      const auto at = [&](const Buffer<T>& t, Index b, Index h, Index L, Index H, Index l, Index d) {
        return static_cast<double>(t[layout == Layout::bhld ? ((b * H + h) * L + l) * s.Dqk + d : ((b * L + l) * H + h) * s.Dqk + d]);
      };
      for (Index b = 0; b < s.B; ++b)
        for (Index h = 0; h < s.H; ++h)
          for (Index i = 0; i < s.Lq; ++i) {
            double worst = 0;
            for (Index j = 0; j < s.Lk; ++j) {
              double mag = 0;
              for (Index d = 0; d < s.Dqk; ++d) mag += std::abs(at(in.q, b, h, s.Lq, s.H, i, d) * at(in.k, b, h, s.Lk, s.H, j, d));
              worst = std::max(worst, scale * mag);
            }
            row_bound[static_cast<std::size_t>((b * s.H + h) * s.Lq + i)] = static_cast<double>(s.Dqk + 2) * eps * worst;
          }
      const auto od = in.out_dims();
      const auto out_tol = [&](Index flat) {
        const Index d = flat % s.Dv, rest = flat / s.Dv;
        const Index b = layout == Layout::bhld ? rest / (s.H * s.Lq) : rest / (s.Lq * s.H);
        const Index h = layout == Layout::bhld ? (rest / s.Lq) % s.H : rest % s.H;
        const Index i = layout == Layout::bhld ? rest % s.Lq : (rest / s.H) % s.Lq;
        (void)d;
        const double bound = row_bound[static_cast<std::size_t>((b * s.H + h) * s.Lq + i)];
        return Tolerance{kTolerance<T>.atol + 2 * bound * v_spread, kTolerance<T>.rtol};
      };
      const auto lse_tol = [&](Index flat) { return Tolerance{kTolerance<T>.atol + 2 * row_bound[static_cast<std::size_t>(flat)], kTolerance<T>.rtol}; };
      EXPECT_TRUE(all_close_with("out", got.out.data(), want.out.data(), {od.begin(), od.end()}, axes_of(layout), out_tol, s.describe()));
      EXPECT_TRUE(all_close_with("lse", got.lse.data(), want.lse.data(), {s.B, s.H, s.Lq}, "[b,h,i]", lse_tol, s.describe()));
      for (Index n = 0; n < got.out.size(); ++n) ASSERT_TRUE(std::isfinite(got.out[n])) << s.describe();
    }
}

// Every way a row can end up seeing nothing, on both kernels (tiles and decode rows): out exactly 0
// and lse exactly -inf, never NaN.
TYPED_TEST(SoftmaxProperties, FullyMaskedRowsGiveZeroAndMinusInfinity) {
  using T = TypeParam;
  constexpr T ninf = -std::numeric_limits<T>::infinity();
  for (Index lq : {Index{2}, Index{45}}) {
    std::vector<CaseSpec> cases;
    CaseSpec s{.B = 2, .H = 2, .Hkv = 1, .Lq = lq, .Lk = 30, .Dqk = 8, .Dv = 8};
    s.key_lengths = {0, 0};
    cases.push_back(s);
    s.key_lengths.clear();
    s.bias = BiasKind::boolean;
    s.keep_prob = 0.0;
    cases.push_back(s);
    s.bias = BiasKind::none;
    s.Lk = 1;
    s.window = {0, 0};  // bottom-right diagonal of 1 key: only the last query sees it
    cases.push_back(s);
    s.window = {};
    s.causal = Causal::bottom_right;  // likewise
    cases.push_back(s);
    for (std::size_t c = 0; c < cases.size(); ++c) {
      cases[c].seed = 9200 + c;
      const Inputs<T> in = make_inputs<T>(cases[c]);
      const KernelResult<T> got = run_kernel(in);
      const RefResult want = reference(in);
      EXPECT_TRUE(compare(in, got, want));
      // The masked rows exactly, not within tolerance.
      const bool partial = c >= 2;
      for (Index b = 0; b < in.spec.B; ++b)
        for (Index h = 0; h < in.spec.H; ++h)
          for (Index i = 0; i < (partial ? lq - 1 : lq); ++i) {
            EXPECT_EQ(got.lse[(b * in.spec.H + h) * lq + i], ninf) << in.spec.describe() << " row " << i;
            for (Index d = 0; d < in.spec.Dv; ++d)
              EXPECT_EQ(got.out[((b * in.spec.H + h) * lq + i) * in.spec.Dv + d], T(0)) << in.spec.describe() << " row " << i;
          }
    }
  }
}

// An additive bias of -inf hides a key just as a boolean false does; a row with -inf on every key
// sees nothing and gives 0 / -inf.
TYPED_TEST(SoftmaxProperties, MinusInfinityAdditiveBiasMasks) {
  using T = TypeParam;
  for (Index lq : {Index{1}, Index{40}})
    for (BiasKind kind : {BiasKind::additive_f32, BiasKind::additive_f64}) {
      CaseSpec s{.B = 1, .H = 2, .Hkv = 2, .Lq = lq, .Lk = 70, .Dqk = 8, .Dv = 5, .bias = kind, .bias_shape = {1, 1, lq, 70}};
      s.seed = 9300 + static_cast<std::uint64_t>(lq);
      Inputs<T> in = make_inputs<T>(s);
      Rng rng(s.seed);
      for (Index i = 0; i < lq; ++i)
        for (Index j = 0; j < 70; ++j) {
          const bool hide = i % 3 == 0 || rng.uniform() < 0.5;  // rows 0, 3, 6, ... hide every key
          if (!hide) continue;
          if (kind == BiasKind::additive_f32) in.bias_f32[i * 70 + j] = -std::numeric_limits<float>::infinity();
          else in.bias_f64[i * 70 + j] = -std::numeric_limits<double>::infinity();
        }
      EXPECT_TRUE(compare(in, run_kernel(in), reference(in)));
    }
}

// Finite inputs from tiny to huge magnitudes, with every modifier: out finite everywhere, lse finite
// on every row that sees a key.
TYPED_TEST(SoftmaxProperties, FiniteInputsGiveFiniteOutputs) {
  using T = TypeParam;
  std::uint64_t seed = 9400;
  for (double qk_std : {1e-3, 1.0, 30.0, 300.0})
    for (Index lq : {Index{3}, Index{70}}) {
      CaseSpec s{.B = 2, .H = 4, .Hkv = 2, .Lq = lq, .Lk = 260, .Dqk = 40, .Dv = 24, .causal = Causal::bottom_right};
      s.qk_std = qk_std;
      s.v_std = 1e3;
      s.window = {100, -1};
      s.bias = BiasKind::additive_f64;
      s.bias_std = 50;
      s.config.alibi_slopes = alibi_slopes(s.H);
      s.seed = seed++;
      for (double softcap : {0.0, 30.0}) {
        s.config.softcap = softcap;
        const Inputs<T> in = make_inputs<T>(s);
        const KernelResult<T> got = run_kernel(in);
        const RefResult want = reference(in);
        for (Index n = 0; n < got.out.size(); ++n) ASSERT_TRUE(std::isfinite(got.out[n])) << s.describe() << " at " << n;
        for (Index n = 0; n < got.lse.size(); ++n)
          ASSERT_EQ(std::isfinite(got.lse[n]), std::isfinite(want.lse[static_cast<std::size_t>(n)])) << s.describe() << " at " << n;
      }
    }
}

}  // namespace
}  // namespace effattn_test
