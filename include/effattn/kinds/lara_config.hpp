#pragma once
// Configurations of RandomizedAttention and LaraAttention (kinds/lara.hpp), and the injected draws
// that pin their randomness, in their own header so the references (reference/lara.hpp) state the
// same semantics without including the kernels.
//
// Units. Both estimators work in canonical units q' = q sqrt(scale), k' = k sqrt(scale) (scale
// defaults to 1/sqrt(Dqk)), with xi(x, w) = exp(w.x - |x|^2/2), so that E_{w~N(0,I)}[xi(x,w) xi(y,w)]
// = exp(x.y). A sample is w = mu + sigma eps with eps standard normal and
//   sigma = 1             (Noise::paper: the papers' estimators; RA is then unbiased),
//   sigma = sqrt(scale)   (Noise::code_compat: HKUNLP's code adds N(0, I) to unscaled vectors, which
//                          is sqrt(scale) in canonical units; RA is then biased, LARA's samples no
//                          longer follow the densities of its importance weights),
//   sigma = 0             (Noise::none).

#include <cmath>
#include <cstdint>
#include <optional>
#include <string_view>

#include "effattn/core/errors.hpp"
#include "effattn/core/tensor.hpp"
#include "effattn/feature_maps/counter_rng.hpp"

EFFATTN_BEGIN_NAMESPACE

enum class Noise { paper, code_compat, none };

inline constexpr std::string_view to_string(Noise n) noexcept {
  switch (n) {
    case Noise::paper: return "paper";
    case Noise::code_compat: return "code_compat";
    case Noise::none: return "none";
  }
  return "?";
}

// Standard deviation of a sample around its mean, in canonical units.
inline double noise_sigma(Noise n, double scale) noexcept {
  return n == Noise::paper ? 1.0 : n == Noise::code_compat ? std::sqrt(scale) : 0.0;
}

// ---------------------------------------------------------------------------------------------
// RA: SA(q_n) = E_{w ~ p_n}[f(w)], p_n = sum_m pi_nm N(q'_n + k'_m, I), f(w) = softmax_m(w.k'_m -
// |k'_m|^2/2) V. The estimate averages f over `samples` draws w = mu_n + sigma eps.
enum class RaMean {
  sampled_key,   // mu_n = q'_n + k'_m, m ~ Categorical(pi_n), one key per sample (HKUNLP num_samples = 1)
  expected_key,  // mu_n = q'_n + sum_m pi_nm k'_m (num_samples = -1)
  mean_key,      // mu_n = q'_n + mean of the visible k'_m (num_samples = 0)
};

inline constexpr std::string_view to_string(RaMean m) noexcept {
  switch (m) {
    case RaMean::sampled_key: return "sampled_key";
    case RaMean::expected_key: return "expected_key";
    case RaMean::mean_key: return "mean_key";
  }
  return "?";
}

struct RaConfig {
  Index samples = 1;                 // S >= 1 draws per query, averaged
  Noise noise = Noise::paper;        // paper: unbiased; code_compat: HKUNLP's training noise; none: its eval mode
  RaMean mean = RaMean::sampled_key;
  std::uint64_t seed = 0;            // draws come from (seed, batch, head, draw) by a counter-based generator
  std::optional<double> scale{};     // default 1 / sqrt(Dqk)

  [[nodiscard]] Status validate() const {
    using detail::error;
    const char* who = "RandomizedAttention::Config: ";
    if (samples < 1) return error(ErrorCode::config, who, "samples is ", samples, "; it must be >= 1");
    if (scale && !(std::isfinite(*scale) && *scale > 0))
      return error(ErrorCode::config, who, "scale is ", *scale, "; it must be positive and finite");
    return {};
  }
};

// Draws that replace RA's own generator, e.g. to reproduce another implementation's run.
template <class T>
struct RaDraws {
  // Standard-normal eps [S, B, H, Lq, Dqk] (layout bhld whatever Options::layout is), scaled by sigma.
  std::optional<View<const T, 5>> noise{};
  // Sampled key positions [S, B, H, Lq] for RaMean::sampled_key (0-based, each visible to its query).
  std::optional<View<const Index, 4>> key_index{};
};

// ---------------------------------------------------------------------------------------------
// LARA: C proposals N(mu_c, I), mu_c = qbar'_c + kbar'_c from landmarks, shared by all queries:
//   out_n = sum_s softmax_s[log alpha_ns + w_s.q'_n + LSE_m(w_s.k'_m - |k'_m|^2/2) - log q_own(s)(w_s)] f(w_s).
enum class Weighting {
  mis_opt,     // alpha = balance heuristic + lambda (r_{n,own(s)} - mean_c r_{n,c}), r = softmax over queries
  mis_bh,      // alpha = balance heuristic (the deterministic-mixture proposal)
  mis_biased,  // log alpha_ns = mu'_own(s) . q'_n, mixture proposal
};

inline constexpr std::string_view to_string(Weighting w) noexcept {
  switch (w) {
    case Weighting::mis_opt: return "mis_opt";
    case Weighting::mis_bh: return "mis_bh";
    case Weighting::mis_biased: return "mis_biased";
  }
  return "?";
}

enum class Sampling {
  deterministic,  // w_c = mu_c: no randomness (HKUNLP's eval mode)
  stochastic,     // w = mu + sigma eps, redrawn by resample() (HKUNLP's training mode)
};

// How key padding (Mask::key_lengths) is treated. With Lq == Lk, key_lengths[b] is taken as the
// sequence's token count, so queries at and after it are padding too.
enum class Padding {
  exclude,     // padded tokens are not in the landmarks nor in r's normalisation; padded queries still get
               // an output row, computed like any query's
  zero_compat, // HKUNLP: q, k, v of padded tokens zeroed first (they count in the landmark means and in
               // r's normalisation with q = 0; a padded query's output is that of q = 0); with key
               // padding it needs Lq == Lk (self-attention)
};

struct Grid {
  Index rows = 0, cols = 0;  // 0 x 0: a 1-D sequence
  [[nodiscard]] bool active() const noexcept { return rows > 0 || cols > 0; }
};

struct LaraConfig {
  // C: 1-D sequences take C contiguous segment means (n <= C: the tokens themselves); a 2-D grid
  // pools to sqrt(C) x sqrt(C) cells (C a perfect square; a side shorter than sqrt(C) keeps its length).
  Index num_landmarks = 49;
  Grid grid{};                      // tokens in row-major order on a rows x cols grid (Lq = Lk = rows * cols)
  bool mixed = false;               // kbar <- softmax(kbar' kbar'^T) kbar (HKUNLP's "-mixed" proposals)
  Weighting weighting = Weighting::mis_opt;
  double alpha_coeff = 1.0;         // lambda of mis_opt
  Sampling sampling = Sampling::deterministic;
  Index samples_per_proposal = 1;   // S (HKUNLP's use_multisample is S = 2)
  bool antithetic = false;          // stochastic: each eps also gives mu - sigma eps (2 C S samples)
  Noise noise = Noise::paper;       // stochastic: paper or code_compat
  Padding padding = Padding::exclude;
  std::uint64_t seed = 0;           // stochastic draws come from (seed, batch, head, draw)
  std::optional<double> scale{};    // default 1 / sqrt(Dqk)

  [[nodiscard]] Status validate() const {
    using detail::error;
    const char* who = "LaraAttention::Config: ";
    if (num_landmarks < 1) return error(ErrorCode::config, who, "num_landmarks is ", num_landmarks, "; it must be >= 1");
    if (grid.active()) {
      if (grid.rows < 1 || grid.cols < 1)
        return error(ErrorCode::config, who, "grid is ", grid.rows, " x ", grid.cols, "; both sides must be >= 1");
      const auto side = static_cast<Index>(std::llround(std::sqrt(static_cast<double>(num_landmarks))));
      if (side * side != num_landmarks)
        return error(ErrorCode::config, who, "num_landmarks is ", num_landmarks,
                     "; a 2-D grid pools to sqrt(C) x sqrt(C) cells, so C must be a perfect square (49 = 7 x 7)");
    }
    if (!std::isfinite(alpha_coeff))
      return error(ErrorCode::config, who, "alpha_coeff is ", alpha_coeff, "; it must be finite");
    if (samples_per_proposal < 1)
      return error(ErrorCode::config, who, "samples_per_proposal is ", samples_per_proposal, "; it must be >= 1");
    if (sampling == Sampling::deterministic && (samples_per_proposal != 1 || antithetic))
      return error(ErrorCode::config, who, "samples_per_proposal = ", samples_per_proposal, " and antithetic = ", antithetic,
                   " need sampling = stochastic: deterministic sampling takes w = mu once per proposal");
    if (sampling == Sampling::stochastic && noise == Noise::none)
      return error(ErrorCode::config, who, "noise = none with stochastic sampling would repeat w = mu; "
                                           "use sampling = deterministic");
    if (scale && !(std::isfinite(*scale) && *scale > 0))
      return error(ErrorCode::config, who, "scale is ", *scale, "; it must be positive and finite");
    return {};
  }

  // Samples per proposal in the list the estimator sums over (antithetic pairs count twice).
  [[nodiscard]] Index samples_per_landmark() const noexcept { return samples_per_proposal * (antithetic ? 2 : 1); }
};

// Inputs that replace LARA's own landmarks and generator.
template <class T>
struct LaraDraws {
  // Standard-normal eps [B, H, C_eff * S, Dqk] (bhld), C_eff the largest number of proposals of the
  // call's sequences (a sequence with fewer, after padding, reads the first rows of its slice): row r
  // perturbs proposal r mod C_eff; with
  // antithetic sampling each row gives the two samples mu + sigma eps (rows [0, C_eff S)) and
  // mu - sigma eps (rows [C_eff S, 2 C_eff S)), the order of HKUNLP's code. Needs sampling = stochastic.
  std::optional<ConstTensor4<T>> noise{};
  // Landmarks [B, H, C, Dqk] in the units of q and k (unscaled), e.g. from a trained pooling layer;
  // both or neither. They replace segment means and grid pooling (Config::mixed still applies);
  // C_eff = C whatever num_landmarks says.
  std::optional<ConstTensor4<T>> query_landmarks{};
  std::optional<ConstTensor4<T>> key_landmarks{};
};

namespace detail {

// The generator of the draws of (batch b, head h) at redraw `draw` (kernel and reference alike):
//   LARA  eps of noise row r, component i:   normal(r * Dqk + i)
//   RA    eps of sample s, query n, comp. i:  normal((s * Lq + n) * Dqk + i)
//         uniform of the categorical draw:    uniform(s * Lq + n)
inline CounterRng draw_stream(std::uint64_t seed, Index b, Index h, std::uint64_t draw) noexcept {
  return CounterRng(seed, (static_cast<std::uint64_t>(b) << 32) | static_cast<std::uint64_t>(h), draw);
}

}  // namespace detail

EFFATTN_END_NAMESPACE
