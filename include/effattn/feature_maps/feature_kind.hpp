#pragma once
// The random-feature maps and the compatibility presets, as plain enums that the kernel, the reference
// and user configs share. The maths of each map is stated once, here.
//
// Notation per head: x a query or key row of Dqk values, x' = x * sqrt(scale) (scale defaults to
// 1/sqrt(Dqk), so q'.k' = scale q.k), W the head's projection [m, Dqk], u = W x' (m values),
// h = |x'|^2 / 2.
//
//   positive        (Performer FAVOR+)  phi = m^-1/2 exp(u - h)                               m features
//   hyperbolic      (antithetic FAVOR+) phi = (2m)^-1/2 exp(-h) [exp(u), exp(-u)]             2m features
//   trigonometric   (RFA)               phi = m^-1/2 [sin(u~), cos(u~)], u~ = W x~ / temperature,
//                                       x~ = x / (|x| + 1e-3) with l2_normalize, else x'        2m features
//   hkunlp_fourier  (HKUNLP 'fourier')  phi = exp(h) m^-1/2 [sin(u), cos(u)]                  2m features
//   relu            (Performer's generalised kernel) phi = relu(W x'); without a projection relu(x)
//   elu_plus_one    (linear transformer)              phi = elu(W x') + 1; without a projection elu(x) + 1
//
// positive, hyperbolic and hkunlp_fourier estimate exp(q'.k') (softmax attention with `scale`);
// trigonometric with l2_normalize estimates softmax over l2-normalised q, k at temperature^2;
// relu and elu_plus_one are deterministic kernels (no randomness unless a projection is given).
//
// Output: out_i = sum_j phi(q_i).phi(k_j) v_j / sum_j phi(q_i).phi(k_j) over the keys query i sees.
// Exponential maps are stabilised by scalars that cancel in that ratio (see linear_core.hpp).

#include <string_view>

#include "effattn/config.hpp"

EFFATTN_BEGIN_NAMESPACE

enum class Feature { positive, hyperbolic, trigonometric, hkunlp_fourier, relu, elu_plus_one };

// Reproduces a public implementation's constants and stabilisers bit-for-bit in formula (not in
// rounding), so a model trained with it gives the same numbers:
//   none        exact stabilisers, no eps, no clamp: outputs of positive maps are convex
//               combinations of value rows.
//   lucidrains  performer-pytorch softmax_kernel + (causal_)linear_attention, positive features only:
//               q' = m^-1/2 (exp(u - h - max_r u) + 1e-4); k' the same with one max over every key
//               position and feature of the (batch, head) (padding included); non-causal
//               out = q' (k'^T v) / (q' . sum k'); causal denominator q'_i . (sum_{j<=i} k'_j + 1e-6).
//               Key padding as performer-pytorch applies it: padded value rows are zero, padded keys
//               stay in the denominator.
//   hkunlp      HKUNLP efficient-attention favorp_projection / fourier_projection + linear_attention,
//               non-causal, positive or hkunlp_fourier features: positive q' = m^-1/2 exp(u - h -
//               max_r u) + 1e-4 and k' likewise with the (batch, head)-wide max (padding included);
//               hkunlp_fourier uses exp(h - max_n h) with the max over the positions of q (resp. k);
//               padded keys' features are zeroed after the max; denominator max(q' . sum k', 1e-2).
enum class Compat { none, lucidrains, hkunlp };

inline constexpr std::string_view to_string(Feature f) noexcept {
  switch (f) {
    case Feature::positive: return "positive";
    case Feature::hyperbolic: return "hyperbolic";
    case Feature::trigonometric: return "trigonometric";
    case Feature::hkunlp_fourier: return "hkunlp_fourier";
    case Feature::relu: return "relu";
    case Feature::elu_plus_one: return "elu_plus_one";
  }
  return "?";
}

inline constexpr std::string_view to_string(Compat c) noexcept {
  switch (c) {
    case Compat::none: return "none";
    case Compat::lucidrains: return "lucidrains";
    case Compat::hkunlp: return "hkunlp";
  }
  return "?";
}

EFFATTN_END_NAMESPACE
