#pragma once
// Random-feature attention: Performer (FAVOR+) and RFA, on the linear core.
//   out_i = phi(q_i).S / phi(q_i).z,  S = sum_j phi(k_j) v_j^T,  z = sum_j phi(k_j)
// over the keys query i sees, phi one of the maps of feature_kind.hpp. Time and memory linear in L.
//
// Masks: non-causal, causal (top_left or bottom_right alignment), Lq != Lk, key_lengths (padded keys
// are invisible; compat presets reproduce their implementation's handling). Bias, window and packed
// sequences are refused (unsupported_error): a per-pair mask breaks the factorisation.
// GQA: the projection is drawn per KV head (or shared), so key features and states are computed once
// per KV head and shared by its query heads. RFA's recency gate is a forward overload (causal).
//
// Randomness: the projections are drawn at construction from (seed, KV head, draw); forward is const
// and never redraws. resample() draws the next set (a redraw schedule, e.g. every k training
// steps, calls it). A caller's matrix (a trained model's buffer) is taken as is.
//
// Decode: make_state() and extend() continue a causal sequence from a LinearState (prefill with any
// number of tokens, then one token per call in O(F (Dqk + Dv)) per head).

#include <cmath>
#include <optional>
#include <string_view>

#include "effattn/attention.hpp"
#include "effattn/core/linear_core.hpp"
#include "effattn/feature_maps/random_features.hpp"
#include "effattn/feature_maps/random_projection.hpp"
#include "effattn/kinds/rfa_config.hpp"

EFFATTN_BEGIN_NAMESPACE

template <class T>
class RfaAttention {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "RfaAttention<T>: T is float or double");

 public:
  using Scalar = T;
  using Config = RfaConfig;
  using State = LinearState<T>;
  static constexpr std::string_view name = "RfaAttention";
  static constexpr Complexity complexity = Complexity::linear;

  // Draws one projection per KV head (one in all with share_across_heads) for head dimension dim_qk.
  RfaAttention(Config config, Index kv_heads, Index dim_qk) : config_(std::move(config)), kv_heads_(kv_heads) {
    config_.validate().raise();
    if (kv_heads < 1 || dim_qk < 1)
      throw config_error(detail::cat(name, ": kv_heads is ", kv_heads, " and dim_qk ", dim_qk, "; both must be >= 1"));
    dim_ = dim_qk;
    redraw();
  }
  // Uses the caller's projection: [1 or Hkv, m, Dqk] (the number of features follows its rows).
  RfaAttention(Config config, Projection projection) : config_(std::move(config)), projection_(std::move(projection)) {
    if (projection_.empty())
      throw config_error(detail::cat(name, ": the projection is empty; relu and elu_plus_one without one are built with "
                                           "RfaAttention(config, kv_heads, dim_qk)"));
    config_.num_features = projection_.rows();
    config_.validate().raise();
    kv_heads_ = projection_.heads();
    dim_ = projection_.dim();
    build_map();
  }

  [[nodiscard]] const Config& config() const noexcept { return config_; }
  [[nodiscard]] const Projection& projection() const noexcept { return projection_; }
  [[nodiscard]] const RandomFeatureMap<T>& feature_map() const noexcept { return map_; }
  // How many times the projections were redrawn since construction.
  [[nodiscard]] std::uint64_t draw() const noexcept { return draw_; }

  // Draws the next projections from (seed, head, draw + 1). Not for a caller's projection.
  void resample() {
    if (!drawn_) throw config_error(detail::cat(name, "::resample: the projection was given by the caller"));
    ++draw_;
    redraw();
  }

  [[nodiscard]] bool supports(const Mask& mask) const noexcept {
    return !mask.bias.present() && !mask.window.active() && !mask.packed() &&
           !(config_.compat == Compat::hkunlp && mask.causal != Causal::none);
  }

  [[nodiscard]] Cost cost(const Problem& p, const Mask& mask = {}) const noexcept {
    return detail::linear_cost<T>(p, map_, mask.causal != Causal::none, chunk());
  }

  [[nodiscard]] std::size_t workspace_bytes(const Problem& p, int threads) const noexcept {
    // The causal plan needs per-thread states, the global one shared states: room for either.
    // Room for the largest plan: causal or not, keys split into parts when the preset allows.
    const bool splittable = config_.compat == Compat::none;
    return std::max(detail::linear_workspace_bytes<T>(p, map_, true, splittable, chunk(), threads),
                    detail::linear_workspace_bytes<T>(p, map_, false, splittable, chunk(), threads));
  }

  [[nodiscard]] Status check(ConstTensor4<T> q, ConstTensor4<T> k, ConstTensor4<T> v, Tensor4<T> out, const Mask& mask = {},
                             const Options<T>& options = {}) const noexcept {
    return detail::guarded([&]() -> Status { return check_call(q, k, v, std::nullopt, out, mask, options, nullptr); });
  }

  void forward(ConstTensor4<T> q, ConstTensor4<T> k, ConstTensor4<T> v, Tensor4<T> out, const Mask& mask = {},
               const Options<T>& options = {}) const {
    run(q, k, v, std::nullopt, out, mask, options, nullptr);
  }

  // RFA-Gate: causal, gate [B, Hkv, Lk] with values in [0, 1]: S_j = g_j S_{j-1} + (1 - g_j) phi(k_j) v_j^T
  // (z likewise), and query i reads the state after its last visible key.
  void forward(ConstTensor4<T> q, ConstTensor4<T> k, ConstTensor4<T> v, ConstTensor3<T> gate, Tensor4<T> out,
               const Mask& mask, const Options<T>& options = {}) const {
    run(q, k, v, gate, out, mask, options, nullptr);
  }

  // An empty causal state for `batch` sequences (one slice per sequence and KV head).
  [[nodiscard]] State make_state(Index batch, Index kv_heads, Index dim_v) const {
    return State(batch * kv_heads, map_.features(), dim_v);
  }

  // Appends Lk = Lq tokens to each sequence of `state`: token t's query sees every earlier key and the
  // new keys up to t. Equal (up to rounding) to a causal forward over the whole sequence.
  void extend(State& state, ConstTensor4<T> q, ConstTensor4<T> k, ConstTensor4<T> v, Tensor4<T> out,
              const Options<T>& options = {}) const {
    run(q, k, v, std::nullopt, out, continuation(), options, &state);
  }
  void extend(State& state, ConstTensor4<T> q, ConstTensor4<T> k, ConstTensor4<T> v, ConstTensor3<T> gate,
              Tensor4<T> out, const Options<T>& options = {}) const {
    run(q, k, v, gate, out, continuation(), options, &state);
  }

 private:
  [[nodiscard]] Index chunk() const noexcept { return config_.chunk; }
  // The new tokens of extend(): token t sees the state and new keys up to t.
  static Mask continuation() noexcept {
    Mask m;
    m.causal = Causal::top_left;
    return m;
  }

  void redraw() {
    const bool projected = config_.feature != Feature::relu && config_.feature != Feature::elu_plus_one;
    if (projected) {
      projection_ = draw_projection(config_.share_across_heads ? 1 : kv_heads_, config_.num_features, dim_, config_.seed,
                                    draw_, config_.orthogonal);
      drawn_ = true;
    }
    build_map();
  }

  void build_map() {
    const double scale = config_.scale ? *config_.scale : 1.0 / std::sqrt(static_cast<double>(dim_));
    map_ = RandomFeatureMap<T>(config_.feature, config_.compat, projection_, dim_, scale, config_.temperature,
                               config_.l2_normalize);
  }

  Status check_call(ConstTensor4<T> q, ConstTensor4<T> k, ConstTensor4<T> v, std::optional<ConstTensor3<T>> gate,
                    Tensor4<T> out, const Mask& mask, const Options<T>& options, const State* state) const {
    using detail::error;
    if (Status s = detail::validate_call<T>(name, q, k, v, out, mask, options); !s) return s;
    const Problem p = Problem::of<T>(q, k, v, options.layout);
    if (options.lse)
      return error(ErrorCode::unsupported, name, "::forward: linear attention has no log-sum-exp; leave Options::lse empty");
    if (mask.bias.present() || mask.window.active() || mask.packed())
      return error(ErrorCode::unsupported, name, "::forward: ", mask.bias.present() ? "mask.bias" : mask.window.active() ? "mask.window" : "packed sequences",
                   " cannot be honoured: a per-pair mask breaks the factorisation phi(Q) (phi(K)^T V). Use SoftmaxAttention, "
                   "or key_lengths / causal");
    if (config_.compat == Compat::hkunlp && mask.causal != Causal::none)
      return error(ErrorCode::unsupported, name, "::forward: compat = hkunlp reproduces HKUNLP's non-causal Performer; "
                                                 "it has no causal form (use compat = none or lucidrains)");
    if (p.dim_qk != dim_ && p.heads > 0)
      return error(ErrorCode::shape, name, "::forward: q has Dqk = ", p.dim_qk, " but the projection was made for Dqk = ", dim_);
    if (map_.heads() != 1 && p.kv_heads != map_.heads() && p.heads > 0)
      return error(ErrorCode::shape, name, "::forward: k has Hkv = ", p.kv_heads, " heads but the projection has ", map_.heads(),
                   " (one per KV head)");
    if (gate || state) {
      if (mask.causal == Causal::none && !state)
        return error(ErrorCode::unsupported, name, "::forward: the recency gate is causal only; set mask.causal");
    }
    if (gate && config_.compat != Compat::none)
      return error(ErrorCode::unsupported, name, "::forward: the recency gate is RFA's; compat = ", to_string(config_.compat),
                   " reproduces an implementation without one");
    if (gate) {
      const std::array<Index, 3> want{p.batch, p.kv_heads, p.len_k};
      for (int a = 0; a < 3; ++a)
        if (gate->dimension(a) != want[static_cast<std::size_t>(a)])
          return error(ErrorCode::shape, name, "::forward: gate.dimension(", a, ") is ", gate->dimension(a), " but must be ",
                       want[static_cast<std::size_t>(a)], "; expected gate [B,Hkv,Lk]");
      for (Index i = 0; i < gate->size(); ++i)
        if (!(gate->data()[i] >= 0 && gate->data()[i] <= 1))
          return error(ErrorCode::config, name, "::forward: gate value ", gate->data()[i], " at flat index ", i,
                       " is outside [0, 1]");
      if (detail::overlaps(out, *gate)) return error(ErrorCode::shape, name, "::forward: out overlaps gate");
    }
    if (state) {
      if (p.len_q != p.len_k)
        return error(ErrorCode::shape, name, "::extend: q has Lq = ", p.len_q, " tokens and k Lk = ", p.len_k,
                     "; each new token brings one query and one key");
      if (state->slices() != p.batch * p.kv_heads || state->features() != map_.features() || state->dim_v() != p.dim_v)
        return error(ErrorCode::shape, name, "::extend: the state has ", state->slices(), " slices, ", state->features(),
                     " features and Dv = ", state->dim_v(), " but the call needs B*Hkv = ", p.batch * p.kv_heads, ", ",
                     map_.features(), " and ", p.dim_v, " (make it with make_state)");
      if (config_.compat != Compat::none)
        return error(ErrorCode::unsupported, name, "::extend: compat = ", to_string(config_.compat),
                     " takes its key stabiliser from the whole sequence, which a streaming decode cannot know");
      if (!mask.key_lengths.empty())
        return error(ErrorCode::unsupported, name, "::extend: key padding is not supported while extending");
    }
    return {};
  }

  void run(ConstTensor4<T> q, ConstTensor4<T> k, ConstTensor4<T> v, std::optional<ConstTensor3<T>> gate, Tensor4<T> out,
           const Mask& mask, const Options<T>& options, State* state) const {
    check_call(q, k, v, gate, out, mask, options, state).raise();
    detail::LinearCall<T, RandomFeatureMap<T>> c;
    c.problem = Problem::of<T>(q, k, v, options.layout);
    c.q = q;
    c.k = k;
    c.v = v;
    c.out = out;
    c.layout = options.layout;
    c.mask = &mask;
    c.map = &map_;
    c.causal = mask.causal != Causal::none || state != nullptr;
    c.bottom_right = mask.causal == Causal::bottom_right;
    c.fixed_keys = config_.compat != Compat::none;
    c.fixed_queries = config_.compat == Compat::hkunlp && config_.feature == Feature::hkunlp_fourier;
    c.padding = config_.compat == Compat::lucidrains ? detail::PaddedKeys::zero_values
                : config_.compat == Compat::hkunlp   ? detail::PaddedKeys::zero_features
                                                     : detail::PaddedKeys::exclude;
    c.z_eps = config_.compat == Compat::lucidrains && c.causal ? T(1e-6) : T(0);
    c.clamp = static_cast<T>(config_.effective_clamp());
    c.chunk = config_.chunk;
    c.gate = gate;
    c.state = state;
    detail::run_linear(c, options.executor, options.workspace);
  }

  Config config_{};
  Projection projection_{};
  RandomFeatureMap<T> map_{};
  Index kv_heads_ = 1, dim_ = 0;
  std::uint64_t draw_ = 0;
  bool drawn_ = false;
};

EFFATTN_END_NAMESPACE
