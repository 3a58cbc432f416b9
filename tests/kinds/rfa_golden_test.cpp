// RfaAttention against the Performer golden cases (performer-pytorch and HKUNLP efficient-attention
// in float64, with the projection W saved beside the inputs), through the kernel:
// RfaAttention(config{compat, feature}, Projection(W)). Both layouts; causal cases under both
// alignments (Nq == Nk, so they agree). Tolerances from rfa_golden.hpp (rfa.md section 13): double
// within 1e-10 * max(1, max|ref|), float within 10x the float32-vs-float64 spread of the public
// implementation itself.

#include <algorithm>
#include <array>
#include <cmath>
#include <iomanip>
#include <sstream>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <effattn/kinds/rfa.hpp>

#include "support/compare.hpp"
#include "support/rfa_golden.hpp"

namespace effattn_test {
namespace {

using effattn::Causal;
using effattn::Layout;

template <class T>
class RfaGolden : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(RfaGolden, Scalars);

TYPED_TEST(RfaGolden, MatchesPublicImplementations) {
  using T = TypeParam;
  ASSERT_EQ(rfa_golden_specs().size(), 4u);
  for (const RfaGoldenSpec& spec : rfa_golden_specs()) {
    const RfaGoldenCase g = load_rfa_golden(spec);
    const double tol = sizeof(T) == 8 ? g.f64_tolerance() : g.f32_tolerance();
    effattn::RfaConfig config;
    config.compat = spec.compat;
    config.feature = spec.feature;
    const effattn::RfaAttention<T> attn(config, g.projection());
    // The kernel took W as given: its feature count and head structure follow the case.
    EXPECT_EQ(attn.config().num_features, g.m()) << spec.name;
    EXPECT_EQ(attn.projection().values(), g.w.data) << spec.name;
    double worst = 0;  // max |out - ref| as a fraction of the tolerance
    const std::vector<Causal> alignments =
        spec.causal ? std::vector<Causal>{Causal::top_left, Causal::bottom_right} : std::vector<Causal>{Causal::none};
    for (Layout layout : {Layout::bhld, Layout::blhd}) {
      const auto q = in_layout<T>(g.q, layout), k = in_layout<T>(g.k, layout), v = in_layout<T>(g.v, layout);
      const auto dims = [&](Index H, Index L, Index D) {
        return layout == Layout::bhld ? std::array<Index, 4>{g.B(), H, L, D} : std::array<Index, 4>{g.B(), L, H, D};
      };
      for (Causal causal : alignments) {
        effattn::Mask m;
        m.causal = causal;
        std::vector<T> out(g.out.data.size(), std::numeric_limits<T>::quiet_NaN());
        effattn::Options<T> options;
        options.layout = layout;
        attn.forward(effattn::ConstTensor4<T>(q.data(), dims(g.H(), g.Lq(), g.D())),
                     effattn::ConstTensor4<T>(k.data(), dims(g.Hkv(), g.Lk(), g.D())),
                     effattn::ConstTensor4<T>(v.data(), dims(g.Hkv(), g.Lk(), g.Dv())),
                     effattn::Tensor4<T>(out.data(), dims(g.H(), g.Lq(), g.Dv())), m, options);
        // Compare in [B, H, L, D] order whatever the layout.
        std::vector<T> out_bhld(out.size());
        for (Index b = 0; b < g.B(); ++b)
          for (Index h = 0; h < g.H(); ++h)
            for (Index i = 0; i < g.Lq(); ++i)
              for (Index d = 0; d < g.Dv(); ++d) {
                const Index src = layout == Layout::bhld ? ((b * g.H() + h) * g.Lq() + i) * g.Dv() + d
                                                         : ((b * g.Lq() + i) * g.H() + h) * g.Dv() + d;
                out_bhld[static_cast<std::size_t>(((b * g.H() + h) * g.Lq() + i) * g.Dv() + d)] =
                    out[static_cast<std::size_t>(src)];
              }
        const std::string context = std::string(spec.name) + (layout == Layout::blhd ? " layout=blhd" : "") +
                                    (causal == Causal::bottom_right ? " causal=bottom_right" : "");
        EXPECT_TRUE(all_close("out", out_bhld.data(), g.out.data.data(), g.out.shape, "[b,h,i,d]", {tol, 0}, context));
        double diff = 0;
        for (std::size_t n = 0; n < out_bhld.size(); ++n)
          diff = std::max(diff, std::abs(static_cast<double>(out_bhld[n]) - g.out.data[n]));
        worst = std::max(worst, diff / tol);
      }
    }
    std::ostringstream os;
    os << std::scientific << std::setprecision(2) << worst;
    ::testing::Test::RecordProperty(std::string(spec.name) + "_diff_over_tolerance", os.str());
  }
}

}  // namespace
}  // namespace effattn_test
