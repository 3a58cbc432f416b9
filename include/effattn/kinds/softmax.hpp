#pragma once
// Exact softmax attention with PyTorch scaled_dot_product_attention / FlashAttention semantics:
//   logits = scale * q k^T, then softcap, ALiBi and bias; masked logits are -inf;
//   out = softmax(logits) v, lse = logsumexp(logits) (natural log).
// Every mask of effattn::Mask, Lq != Lk, GQA/MQA (H % Hkv == 0), Dqk != Dv, any head dim >= 1, L = 0.
// A query that sees no key gives out = 0 and lse = -inf. Finite inputs give finite outputs for any
// logit magnitude (the running maximum is subtracted before exp).
//
// Order of score modifications, as FlashAttention applies them: s = scale * q.k; if softcap > 0,
// s = softcap * tanh(s / softcap); s -= slope[h] * |i + shift - j| (ALiBi, shift the causal alignment
// offset, Lk - Lq unless causal is top_left); s += bias; then the mask.
//
// Decode (Lq small against a long KV) runs a row kernel that reads K and V once per KV head for all
// query heads that share it. Config::split_kv > 1 also splits the keys of each (b, Hkv) into that many
// chunks run in parallel and merged by LSE: faster with few heads, but a different summation order,
// so it is opt-in (results stay identical for any thread count at a fixed split_kv).

#include <cmath>
#include <optional>
#include <string_view>
#include <vector>

#include "effattn/attention.hpp"
#include "effattn/core/quadratic_core.hpp"

EFFATTN_BEGIN_NAMESPACE

struct SoftmaxConfig {
  std::optional<double> scale{};     // default 1 / sqrt(Dqk)
  double softcap = 0;                // 0: off; > 0: s = softcap * tanh(s / softcap)
  std::vector<double> alibi_slopes;  // empty: off; else one slope per query head [H]
  Index split_kv = 0;                // decode only: 0 or 1 = off; n > 1 = n key chunks merged by LSE

  [[nodiscard]] Status validate() const {
    if (scale && !std::isfinite(*scale))
      return detail::error(ErrorCode::config, "SoftmaxAttention::Config: scale is ", *scale, "; it must be finite");
    if (!(softcap >= 0) || !std::isfinite(softcap))
      return detail::error(ErrorCode::config, "SoftmaxAttention::Config: softcap is ", softcap,
                           "; it must be 0 (off) or a positive finite number");
    for (std::size_t h = 0; h < alibi_slopes.size(); ++h)
      if (!std::isfinite(alibi_slopes[h]))
        return detail::error(ErrorCode::config, "SoftmaxAttention::Config: alibi_slopes[", h, "] is ", alibi_slopes[h],
                             "; slopes must be finite");
    if (split_kv < 0)
      return detail::error(ErrorCode::config, "SoftmaxAttention::Config: split_kv is ", split_kv, "; it must be >= 0");
    return {};
  }
};

template <class T>
class SoftmaxAttention {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "SoftmaxAttention<T>: T is float or double");

 public:
  using Scalar = T;
  using Config = SoftmaxConfig;
  static constexpr std::string_view name = "SoftmaxAttention";
  static constexpr Complexity complexity = Complexity::quadratic;

  SoftmaxAttention() = default;
  explicit SoftmaxAttention(Config config) : config_(std::move(config)) { config_.validate().raise(); }

  [[nodiscard]] const Config& config() const noexcept { return config_; }

  // Exact softmax honours every mask.
  [[nodiscard]] bool supports(const Mask& /*mask*/) const noexcept { return true; }

  [[nodiscard]] Cost cost(const Problem& p, const Mask& mask = {}) const noexcept {
    return detail::quadratic_cost<T>(p, mask);
  }

  [[nodiscard]] std::size_t workspace_bytes(const Problem& p, int threads) const noexcept {
    return detail::quadratic_workspace_bytes<T>(p, threads, config_.split_kv);
  }

  [[nodiscard]] Status check(ConstTensor4<T> q, ConstTensor4<T> k, ConstTensor4<T> v, Tensor4<T> out,
                             const Mask& mask = {}, const Options<T>& options = {}) const noexcept {
    return detail::guarded([&]() -> Status {
      if (Status s = config_.validate(); !s) return s;
      if (Status s = detail::validate_call<T>(name, q, k, v, out, mask, options); !s) return s;
      const Problem p = Problem::of<T>(q, k, v, options.layout);
      if (!config_.alibi_slopes.empty() && static_cast<Index>(config_.alibi_slopes.size()) != p.heads)
        return detail::error(ErrorCode::config, name, "::forward: Config::alibi_slopes has ", config_.alibi_slopes.size(),
                             " slopes but q has H = ", p.heads, " heads");
      return {};
    });
  }

  void forward(ConstTensor4<T> q, ConstTensor4<T> k, ConstTensor4<T> v, Tensor4<T> out, const Mask& mask = {},
               const Options<T>& options = {}) const {
    check(q, k, v, out, mask, options).raise();
    detail::QuadraticCall<T> call;
    call.problem = Problem::of<T>(q, k, v, options.layout);
    call.q = q;
    call.k = k;
    call.v = v;
    call.out = out;
    call.lse = options.lse;
    call.layout = options.layout;
    call.mask = &mask;
    call.scale = config_.scale ? static_cast<T>(*config_.scale)
                               : static_cast<T>(1.0 / std::sqrt(static_cast<double>(std::max<Index>(call.problem.dim_qk, 1))));
    call.softcap = static_cast<T>(config_.softcap);
    call.alibi_slopes = config_.alibi_slopes;
    call.split_kv = config_.split_kv;
    detail::run_quadratic<T>(call, detail::OnlineSoftmax<T>{}, options.executor, options.workspace);
  }

 private:
  Config config_{};
};

EFFATTN_END_NAMESPACE
