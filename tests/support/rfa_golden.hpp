#pragma once
// The Performer / RFA golden cases under tests/data/golden: random-feature attention computed by
// lucidrains/performer-pytorch and HKUNLP/efficient-attention in float64 with an explicit projection
// matrix W (saved with the case), and the float32-vs-float64 spread the data's manifest reports for
// each. Double implementations are held to 1e-10 * max(1, max|ref|); float ones to 10x the spread.

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <effattn/feature_maps/feature_kind.hpp>
#include <effattn/feature_maps/projection.hpp>
#include <effattn/kinds/rfa_config.hpp>

#include "support/golden.hpp"
#include "support/npy.hpp"

namespace effattn_test {

struct RfaGoldenSpec {
  const char* name;
  effattn::Compat compat;
  effattn::Feature feature;
  bool causal;     // query i sees key j iff j <= i (Nq = Nk, so either causal alignment)
  double f32_out;  // max|out32 - out64| reported by the manifest
};

inline const std::vector<RfaGoldenSpec>& rfa_golden_specs() {
  using effattn::Compat;
  using effattn::Feature;
  static const std::vector<RfaGoldenSpec> specs = {
      {"performer_lucidrains_noncausal_b2h3_n64_d64_m128", Compat::lucidrains, Feature::positive, false, 2.7e-7},
      {"performer_lucidrains_causal_b2h3_n64_d33_m48", Compat::lucidrains, Feature::positive, true, 5e-7},
      {"performer_hkunlp_favorp_b2h3_n129_d33_m64", Compat::hkunlp, Feature::positive, false, 1.6e-7},
      {"performer_hkunlp_fourier_b2h3_n64_d33_m48", Compat::hkunlp, Feature::hkunlp_fourier, false, 1.8e-7},
  };
  return specs;
}

struct RfaGoldenCase : GoldenTensors {
  RfaGoldenSpec spec;
  NpyArray w;  // [m, D] (lucidrains, shared by every head) or [H, m, D] (HKUNLP, one per head)

  // m: projections per head (the map has m features, or 2m for hkunlp_fourier).
  [[nodiscard]] Index m() const { return w.dim(w.shape.size() - 2); }

  // W as the library's Projection: a 2-D W is one matrix shared by every head, a 3-D one has a
  // matrix per (KV) head.
  [[nodiscard]] effattn::Projection projection() const {
    const Index heads = w.shape.size() == 3 ? w.dim(0) : 1;
    return effattn::Projection(w.data, heads, m(), w.dim(w.shape.size() - 1));
  }

  // The configuration that reproduces the case (W itself comes from projection()).
  [[nodiscard]] effattn::RfaConfig config() const {
    effattn::RfaConfig c;
    c.feature = spec.feature;
    c.compat = spec.compat;
    c.num_features = m();
    c.share_across_heads = w.shape.size() == 2;
    return c;
  }

  // Absolute tolerance of a double implementation.
  [[nodiscard]] double f64_tolerance() const { return 1e-10 * std::max(1.0, max_abs(out)); }
  // Absolute tolerance of a float implementation.
  [[nodiscard]] double f32_tolerance() const { return 10 * spec.f32_out; }
};

inline RfaGoldenCase load_rfa_golden(const RfaGoldenSpec& spec) {
  const auto dir = golden_dir() / spec.name;
  return {load_tensors(dir), spec, read_npy(dir / "W.npy")};
}

}  // namespace effattn_test
