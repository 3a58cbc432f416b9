// SoftmaxAttention against PyTorch's float64 scaled-dot-product attention (the golden cases), in
// both layouts, with key padding as key_lengths, the bias as an additive float or double bias, and
// causal under both alignments (Nq == Nk, so they agree).

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <gtest/gtest.h>

#include <effattn/kinds/softmax.hpp>

#include "support/compare.hpp"
#include "support/golden.hpp"

namespace effattn_test {
namespace {

using effattn::Causal;
using effattn::Layout;

template <class T>
class SoftmaxGolden : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(SoftmaxGolden, Scalars);

TYPED_TEST(SoftmaxGolden, MatchesPyTorch) {
  using T = TypeParam;
  for (const GoldenSpec& spec : golden_specs()) {
    const GoldenCase g = load_golden(spec);
    const std::vector<float> bias32 = g.bias ? std::vector<float>(g.bias->data.begin(), g.bias->data.end()) : std::vector<float>{};
    const std::vector<Index> lens = g.key_lengths();
    // double: the manifest's float64 threshold. float: 10x the spread PyTorch itself shows between
    // its float32 and float64 runs of the same inputs.
    const double out_tol = sizeof(T) == 8 ? 1e-10 * std::max(1.0, g.max_abs(g.out)) : 10 * spec.f32_out;
    const double lse_tol = sizeof(T) == 8 ? 1e-10 * std::max(1.0, g.max_abs(g.lse))
                                          : 10 * spec.f32_lse * (spec.lse_relative ? g.max_abs(g.lse) : 1.0);
    const std::vector<Causal> alignments =
        spec.causal ? std::vector<Causal>{Causal::top_left, Causal::bottom_right} : std::vector<Causal>{Causal::none};
    for (Layout layout : {Layout::bhld, Layout::blhd}) {
      const auto q = in_layout<T>(g.q, layout), k = in_layout<T>(g.k, layout), v = in_layout<T>(g.v, layout);
      const auto dims = [&](Index L, Index D) {
        return layout == Layout::bhld ? std::array<Index, 4>{g.B(), g.H(), L, D} : std::array<Index, 4>{g.B(), L, g.H(), D};
      };
      for (Causal causal : alignments)
        for (int bias_as_f32 = 0; bias_as_f32 <= (g.bias ? 1 : 0); ++bias_as_f32) {
          effattn::Mask m;
          m.causal = causal;
          m.key_lengths = lens;
          if (g.bias) {
            const std::array<Index, 4> s{g.bias->dim(0), g.bias->dim(1), g.bias->dim(2), g.bias->dim(3)};
            m.bias = bias_as_f32 ? effattn::Bias::additive(bias32.data(), s) : effattn::Bias::additive(g.bias->data.data(), s);
          }
          std::vector<T> out(g.out.data.size(), std::numeric_limits<T>::quiet_NaN());
          std::vector<T> lse(g.lse.data.size(), std::numeric_limits<T>::quiet_NaN());
          effattn::Options<T> options;
          options.layout = layout;
          options.lse = effattn::Tensor3<T>(lse.data(), g.B(), g.H(), g.Lq());
          effattn::SoftmaxAttention<T>{}.forward(effattn::ConstTensor4<T>(q.data(), dims(g.Lq(), g.D())),
                                                 effattn::ConstTensor4<T>(k.data(), dims(g.Lk(), g.D())),
                                                 effattn::ConstTensor4<T>(v.data(), dims(g.Lk(), g.Dv())),
                                                 effattn::Tensor4<T>(out.data(), dims(g.Lq(), g.Dv())), m, options);
          // Compare in [B, H, L, D] order whatever the layout.
          std::vector<T> out_bhld(out.size());
          for (Index b = 0; b < g.B(); ++b)
            for (Index h = 0; h < g.H(); ++h)
              for (Index i = 0; i < g.Lq(); ++i)
                for (Index d = 0; d < g.Dv(); ++d) {
                  const Index src = layout == Layout::bhld ? ((b * g.H() + h) * g.Lq() + i) * g.Dv() + d
                                                           : ((b * g.Lq() + i) * g.H() + h) * g.Dv() + d;
                  out_bhld[static_cast<std::size_t>(((b * g.H() + h) * g.Lq() + i) * g.Dv() + d)] = out[static_cast<std::size_t>(src)];
                }
          const std::string context = std::string(spec.name) + (layout == Layout::blhd ? " layout=blhd" : "") +
                                      (causal == Causal::bottom_right ? " causal=bottom_right" : "") +
                                      (bias_as_f32 ? " bias=f32" : "");
          EXPECT_TRUE(all_close("out", out_bhld.data(), g.out.data.data(), g.out.shape, "[b,h,i,d]", {out_tol, 0}, context));
          EXPECT_TRUE(all_close("lse", lse.data(), g.lse.data.data(), g.lse.shape, "[b,h,i]", {lse_tol, 0}, context));
        }
    }
  }
}

}  // namespace
}  // namespace effattn_test
