// RandomizedAttention and LaraAttention against HKUNLP efficient-attention's golden cases (float64,
// draws pinned: the saved noise and, for RA, the saved key indices go in through the draws overload),
// both layouts; and LaraAttention with its own generator against HKUNLP's mean over 256 seeds of its
// own. Tolerances from lara_golden.hpp (lara.md section 15): double within 1e-10 * max(1, max|ref|),
// float within 10x the float32-vs-float64 spread of the public implementation itself; the 256-run
// mean within 5 sqrt(2) SE per entry.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <iomanip>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <effattn/kinds/lara.hpp>

#include "support/compare.hpp"
#include "support/lara_golden.hpp"

namespace effattn_test {
namespace {

using effattn::Layout;

template <class T>
class LaraGolden : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(LaraGolden, Scalars);

// The kernel on a golden case in the given layout, its output back in [B, H, L, D] order. `attn`
// is a LaraAttention or RandomizedAttention; `draws` their draws type or empty.
template <class T, class Attn, class Draws>
std::vector<T> run_case(const LaraGoldenCase& g, const Attn& attn, const Draws& draws, Layout layout) {
  const auto q = in_layout<T>(g.q, layout), k = in_layout<T>(g.k, layout), v = in_layout<T>(g.v, layout);
  const auto dims = [&](Index H, Index L, Index D) {
    return layout == Layout::bhld ? std::array<Index, 4>{g.B(), H, L, D} : std::array<Index, 4>{g.B(), L, H, D};
  };
  std::vector<T> out(g.out.data.size(), std::numeric_limits<T>::quiet_NaN());
  effattn::Options<T> options;
  options.layout = layout;
  options.executor = effattn::Executor::serial();  // threads are the determinism tests' business
  attn.forward(effattn::ConstTensor4<T>(q.data(), dims(g.H(), g.Lq(), g.D())),
               effattn::ConstTensor4<T>(k.data(), dims(g.Hkv(), g.Lk(), g.D())),
               effattn::ConstTensor4<T>(v.data(), dims(g.Hkv(), g.Lk(), g.Dv())),
               effattn::Tensor4<T>(out.data(), dims(g.H(), g.Lq(), g.Dv())), effattn::Mask{}, options, draws);
  if (layout == Layout::bhld) return out;
  std::vector<T> bhld(out.size());
  for (Index b = 0; b < g.B(); ++b)
    for (Index h = 0; h < g.H(); ++h)
      for (Index i = 0; i < g.Lq(); ++i)
        for (Index d = 0; d < g.Dv(); ++d)
          bhld[static_cast<std::size_t>(((b * g.H() + h) * g.Lq() + i) * g.Dv() + d)] =
              out[static_cast<std::size_t>(((b * g.Lq() + i) * g.H() + h) * g.Dv() + d)];
  return bhld;
}

TYPED_TEST(LaraGolden, MatchesHkunlp) {
  using T = TypeParam;
  ASSERT_EQ(lara_golden_specs().size(), 3u);
  for (const LaraGoldenSpec& spec : lara_golden_specs()) {
    const LaraGoldenCase g = load_lara_golden(spec);
    const double tol = sizeof(T) == 8 ? g.f64_tolerance() : g.f32_tolerance();
    const LaraGoldenDraws<T> draws = g.draws<T>();
    double worst = 0;  // max |out - ref| as a fraction of the tolerance
    for (Layout layout : {Layout::bhld, Layout::blhd}) {
      std::vector<T> out;
      if (spec.ra)
        out = run_case<T>(g, effattn::RandomizedAttention<T>(g.ra_config()), draws.ra(), layout);
      else
        out = run_case<T>(g, effattn::LaraAttention<T>(g.lara_config()), draws.lara(), layout);
      const std::string context = std::string(spec.name) + (layout == Layout::blhd ? " layout=blhd" : "");
      EXPECT_TRUE(all_close("out", out.data(), g.out.data.data(), g.out.shape, "[b,h,i,d]", {tol, 0}, context));
      for (std::size_t n = 0; n < out.size(); ++n)
        worst = std::max(worst, std::abs(static_cast<double>(out[n]) - g.out.data[n]) / tol);
    }
    ::testing::Test::RecordProperty(std::string(spec.name) + "_diff_over_tolerance", sci(worst));
  }
}

// The eval case needs no draws at all: deterministic LARA through the plain overload.
TYPED_TEST(LaraGolden, EvalCaseWithoutDraws) {
  using T = TypeParam;
  const LaraGoldenCase g = load_lara_golden(lara_golden_specs()[1]);
  ASSERT_FALSE(g.spec.train);
  const double tol = sizeof(T) == 8 ? g.f64_tolerance() : g.f32_tolerance();
  const effattn::LaraAttention<T> attn(g.lara_config());
  effattn::Options<T> options;
  options.executor = effattn::Executor::serial();
  const auto q = in_layout<T>(g.q, Layout::bhld), k = in_layout<T>(g.k, Layout::bhld),
             v = in_layout<T>(g.v, Layout::bhld);
  std::vector<T> out(g.out.data.size(), std::numeric_limits<T>::quiet_NaN());
  attn.forward(effattn::ConstTensor4<T>(q.data(), g.B(), g.H(), g.Lq(), g.D()),
               effattn::ConstTensor4<T>(k.data(), g.B(), g.Hkv(), g.Lk(), g.D()),
               effattn::ConstTensor4<T>(v.data(), g.B(), g.Hkv(), g.Lk(), g.Dv()),
               effattn::Tensor4<T>(out.data(), g.B(), g.H(), g.Lq(), g.Dv()), effattn::Mask{}, options);
  EXPECT_TRUE(all_close("out", out.data(), g.out.data.data(), g.out.shape, "[b,h,i,d]", {tol, 0}, g.spec.name));
}

// 256 runs of the own generator (stochastic, code_compat) against HKUNLP's 256 seeds: two independent
// means, so their difference has standard error sqrt(2) SE, SE = out_std_over_seeds / 16. The runs
// differ by config.seed = s, or (one instance) by resample() before each call.
TEST(LaraGoldenSeedMean, OwnGeneratorMatchesTheSeedMean) {
  const LaraGoldenCase g = load_lara_golden(lara_golden_specs()[0]);
  ASSERT_TRUE(g.spec.train && g.out_mean && g.out_std);
  const int runs = 256;
  std::vector<double> tol(g.out.data.size());
  for (std::size_t i = 0; i < tol.size(); ++i) tol[i] = 5 * std::sqrt(2.0) * g.out_std->data[i] / std::sqrt(256.0);
  const effattn::LaraDraws<double> none{};
  for (bool by_resample : {false, true}) {
    std::vector<double> mean(g.out.data.size(), 0.0);
    effattn::LaraAttention<double> shared(g.lara_config());
    for (int s = 0; s < runs; ++s) {
      std::vector<double> o;
      if (by_resample) {
        o = run_case<double>(g, shared, none, Layout::bhld);
        shared.resample();
      } else {
        effattn::LaraConfig c = g.lara_config();
        c.seed = static_cast<std::uint64_t>(s);
        o = run_case<double>(g, effattn::LaraAttention<double>(c), none, Layout::bhld);
      }
      for (std::size_t i = 0; i < o.size(); ++i) mean[i] += o[i] / runs;
    }
    EXPECT_EQ(shared.draw(), by_resample ? 256u : 0u);
    double worst_z = 0;
    for (std::size_t i = 0; i < mean.size(); ++i)
      worst_z = std::max(worst_z, std::abs(mean[i] - g.out_mean->data[i]) / (tol[i] / 5));
    const char* how = by_resample ? "resample()" : "config.seed";
    EXPECT_TRUE(all_close_with(
        "mean out", mean.data(), g.out_mean->data.data(), g.out.shape, "[b,h,i,d]",
        [&](Index i) {
          return Tolerance{tol[static_cast<std::size_t>(i)], 0};
        },
        std::string("256 runs varying ") + how));
    ::testing::Test::RecordProperty(std::string("worst_z_") + (by_resample ? "resample" : "seed"), sci(worst_z));
  }
}

}  // namespace
}  // namespace effattn_test
