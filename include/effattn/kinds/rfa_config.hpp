#pragma once
// RfaConfig: the configuration of RfaAttention (kinds/rfa.hpp), in its own header so the reference
// (reference/rfa.hpp) states the same semantics without including the kernel.

#include <cmath>
#include <cstdint>
#include <optional>

#include "effattn/core/errors.hpp"
#include "effattn/core/tensor.hpp"
#include "effattn/feature_maps/feature_kind.hpp"

EFFATTN_BEGIN_NAMESPACE

struct RfaConfig {
  Feature feature = Feature::positive;
  // m: random projections per head. The map has m features (positive), or 2m (hyperbolic,
  // trigonometric, hkunlp_fourier). relu and elu_plus_one ignore it unless given a projection.
  Index num_features = 64;
  // Orthogonal random features: blocks of Dqk orthogonal rows (QR of a Gaussian matrix with the sign
  // fix that makes it Haar-distributed), each row rescaled to a chi(Dqk) length.
  bool orthogonal = true;
  // Projections are drawn from (seed, head, draw) by a counter-based generator: the same seed gives
  // the same matrices for any thread count or number of heads. Gaussian values go through libm's
  // log/cos and orthogonal blocks through Eigen's QR, so across C libraries or ISAs they agree to
  // rounding, not always bit for bit.
  std::uint64_t seed = 0;
  // One matrix for every head (performer-pytorch) instead of one per KV head.
  bool share_across_heads = false;
  std::optional<double> scale{};  // default 1 / sqrt(Dqk); inputs are scaled by sqrt(scale)
  double temperature = 1;         // trigonometric: u = W x~ / temperature
  bool l2_normalize = true;       // trigonometric: x~ = x / (|x| + 1e-3) (RFA); false: x~ = x'
  Compat compat = Compat::none;
  // Floor of the normaliser: out = num / max(den, clamp). Default: the preset's (hkunlp 1e-2), else
  // none, where a zero denominator (every key masked) gives 0. With compat = none an exponential map
  // (positive, hyperbolic, hkunlp_fourier) is stabilised by factors that cancel in num / den but not
  // against a fixed floor, so a clamp is refused there (their denominators are positive anyway); it
  // serves the trigonometric, relu and elu maps, whose denominators can approach 0.
  std::optional<double> clamp{};
  // Causal chunk length (keys per chunk of the chunked prefix sum); 0 picks the default.
  Index chunk = 0;

  [[nodiscard]] double effective_clamp() const noexcept {
    return clamp ? *clamp : compat == Compat::hkunlp ? 1e-2 : 0.0;
  }

  [[nodiscard]] Status validate() const {
    using detail::error;
    const char* who = "RfaAttention::Config: ";
    const bool projected = feature != Feature::relu && feature != Feature::elu_plus_one;
    if (projected && num_features < 1)
      return error(ErrorCode::config, who, "num_features is ", num_features, "; the ", to_string(feature),
                   " map needs at least 1");
    if (num_features < 0) return error(ErrorCode::config, who, "num_features is ", num_features, "; it must be >= 0");
    if (scale && !(std::isfinite(*scale) && *scale > 0))
      return error(ErrorCode::config, who, "scale is ", *scale, "; it must be positive and finite");
    if (!(std::isfinite(temperature) && temperature > 0))
      return error(ErrorCode::config, who, "temperature is ", temperature, "; it must be positive and finite");
    if (clamp && !(std::isfinite(*clamp) && *clamp >= 0))
      return error(ErrorCode::config, who, "clamp is ", *clamp, "; it must be >= 0 and finite");
    if (chunk < 0) return error(ErrorCode::config, who, "chunk is ", chunk, "; it must be >= 0 (0 = default)");
    const bool exponential =
        feature == Feature::positive || feature == Feature::hyperbolic || feature == Feature::hkunlp_fourier;
    if (compat == Compat::none && exponential && clamp && *clamp > 0)
      return error(ErrorCode::config, who, "clamp is ", *clamp, " with the ", to_string(feature),
                   " map and compat = none: its stabilised denominator is known only up to a factor that cancels "
                   "in the ratio, so a fixed floor has no meaning (leave clamp unset, or use a compat preset)");
    if (compat == Compat::lucidrains && feature != Feature::positive)
      return error(ErrorCode::config, who, "compat = lucidrains reproduces performer-pytorch's softmax kernel and needs "
                                           "feature = positive, not ", to_string(feature));
    if (compat == Compat::hkunlp && feature != Feature::positive && feature != Feature::hkunlp_fourier)
      return error(ErrorCode::config, who, "compat = hkunlp reproduces favorp_projection and fourier_projection and needs "
                                           "feature = positive or hkunlp_fourier, not ", to_string(feature));
    return {};
  }
};

EFFATTN_END_NAMESPACE
