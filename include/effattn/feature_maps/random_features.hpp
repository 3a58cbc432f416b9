#pragma once
// RandomFeatureMap: the feature maps of feature_kind.hpp applied to blocks of rows, on the lane
// micro-kernel of the cores (u = x W^T is a [rows x Dqk] by [Dqk x m] product).
//
// Output layout: features of row r at phi[r * ld() + f], f < features(), zero in [features(), ld());
// ld() is a multiple of the lane tile, so kTileQ-wide panels of phi rows are aligned.
//
// The stabiliser modes are described in feature_map.hpp.

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <vector>

#include "effattn/core/errors.hpp"
#include "effattn/feature_maps/feature_kind.hpp"
#include "effattn/feature_maps/feature_map.hpp"
#include "effattn/feature_maps/projection.hpp"
#include "effattn/simd/packet.hpp"
#include "effattn/simd/row_ops.hpp"
#include "effattn/simd/tile_kernels.hpp"

EFFATTN_BEGIN_NAMESPACE

template <class T>
class RandomFeatureMap {
 public:
  using Scalar = T;
  static constexpr Index kLane = detail::kTileQ<T>;

  RandomFeatureMap() = default;
  // projection: [heads or 1, m, dim]; empty only for relu and elu_plus_one (identity projection).
  RandomFeatureMap(Feature feature, Compat compat, const Projection& projection, Index dim, double scale,
                   double temperature = 1, bool l2_normalize = true)
      : feature_(feature), compat_(compat), dim_(dim), l2_(feature == Feature::trigonometric && l2_normalize) {
    const bool identity = projection.empty();
    if (identity && feature != Feature::relu && feature != Feature::elu_plus_one)
      throw config_error(detail::cat("RandomFeatureMap: the ", to_string(feature), " map needs a projection matrix"));
    if (!identity && projection.dim() != dim)
      throw config_error(detail::cat("RandomFeatureMap: the projection has ", projection.dim(),
                                     " columns but the head dimension is ", dim));
    identity_ = identity;
    m_ = identity ? dim : projection.rows();
    heads_ = identity ? 1 : projection.heads();
    mp_ = round_up(m_);
    const bool doubled = feature == Feature::hyperbolic || feature == Feature::trigonometric ||
                         feature == Feature::hkunlp_fourier;
    features_ = doubled ? 2 * m_ : m_;
    ld_ = detail::feature_ld<T>(features_);
    half_scale_ = static_cast<T>(scale / 2);
    // m^-1/2 for the sin/cos maps (as RFA and HKUNLP write them), F^-1/2 otherwise: it cancels in the
    // ratio, but not against a clamp.
    const bool trig = feature == Feature::trigonometric || feature == Feature::hkunlp_fourier;
    ratio_ = feature == Feature::relu || feature == Feature::elu_plus_one
                 ? T(1)
                 : static_cast<T>(1.0 / std::sqrt(static_cast<double>(trig ? m_ : features_)));
    if (compat == Compat::lucidrains) eps_in_ = T(1e-4);
    if (compat == Compat::hkunlp && feature == Feature::positive) eps_out_ = T(1e-4);
    if (!identity) {
      // W^T per head in lane panels, [mp / lane][dim][lane] with zero columns past m (a panel is
      // contiguous, so the projection's lane kernel reads it without L1 set conflicts), pre-multiplied
      // by what multiplies x inside u: sqrt(scale) (x' = x sqrt(scale)), or 1/temperature for RFA's
      // normalised inputs.
      const double mult = l2_ ? 1.0 / temperature
                              : (feature == Feature::trigonometric ? std::sqrt(scale) / temperature : std::sqrt(scale));
      wt_.assign(static_cast<std::size_t>(heads_ * dim_ * mp_), T(0));
      for (Index h = 0; h < heads_; ++h)
        for (Index r = 0; r < m_; ++r)
          for (Index d = 0; d < dim_; ++d)
            wt_[static_cast<std::size_t>(h * dim_ * mp_ + (r / kLane * dim_ + d) * kLane + r % kLane)] =
                static_cast<T>(projection(h, r, d) * mult);
    }
  }

  [[nodiscard]] Feature feature() const noexcept { return feature_; }
  [[nodiscard]] Index features() const noexcept { return features_; }
  [[nodiscard]] Index ld() const noexcept { return ld_; }
  [[nodiscard]] Index dim() const noexcept { return dim_; }
  [[nodiscard]] Index heads() const noexcept { return heads_; }
  // Stabilised by a scalar per row (exponential maps).
  [[nodiscard]] bool exponential() const noexcept {
    return feature_ == Feature::positive || feature_ == Feature::hyperbolic || feature_ == Feature::hkunlp_fourier;
  }
  // Every feature >= 0, so outputs are convex combinations of value rows.
  [[nodiscard]] bool nonnegative() const noexcept {
    return feature_ == Feature::positive || feature_ == Feature::hyperbolic || feature_ == Feature::relu ||
           feature_ == Feature::elu_plus_one;
  }
  // Scratch elements map() and bound() need for n rows.
  [[nodiscard]] Index scratch_elems(Index n) const noexcept { return n * mp_ + n; }
  // FLOPs of mapping one row (the projection; the transcendental part is small beside it).
  [[nodiscard]] double flops_per_row() const noexcept { return identity_ ? 0.0 : 2.0 * static_cast<double>(dim_ * m_); }

  // The largest stabiliser quantity of rows x[0, n): max_r u for positive, max |u| for hyperbolic,
  // max h for hkunlp_fourier (the public implementations' max over a sequence); -inf for maps that
  // need none.
  T bound(const T* x, Index xs, Index n, Index head, T* scratch) const noexcept {
    if (!exponential() || n == 0) return -std::numeric_limits<T>::infinity();
    T* u = scratch;
    T* h = scratch + n * mp_;
    project(x, xs, n, head, u, h);
    T b = -std::numeric_limits<T>::infinity();
    for (Index r = 0; r < n; ++r) b = std::max(b, feature_ == Feature::hkunlp_fourier ? h[r] : peak(u + r * mp_));
    return b;
  }

  // Features of rows x[0, n) (row stride xs) with head's projection into phi [n, ld()]. mode pow2
  // writes each row's exponent to e[r] (0 for maps without a stabiliser); fixed subtracts `shift`.
  void map(const T* x, Index xs, Index n, Index head, Stabiliser mode, T shift, T* phi, int* e,
           T* scratch) const noexcept {
    if (n == 0) return;
    T* u = scratch;
    T* h = scratch + n * mp_;
    project(x, xs, n, head, u, h);
    for (Index r = 0; r < n; ++r) {
      int er = 0;
      row_features(u + r * mp_, h[r], mode, shift, phi + r * ld_, er);
      if (e) e[r] = er;
    }
  }

 private:
  using S = detail::Packet<T>;
  static constexpr Index W = S::size;
  static Index round_up(Index n) noexcept { return (n + kLane - 1) / kLane * kLane; }

  // u [n, mp] = x W^T (or x itself), h[r] = |x'_r|^2 / 2 (its role in each map is in feature_kind.hpp).
  void project(const T* x, Index xs, Index n, Index head, T* u, T* h) const noexcept {
    for (Index r = 0; r < n; ++r) {
      const T* xr = x + r * xs;
      const T sq = detail::dot(xr, xr, dim_);
      h[r] = half_scale_ * sq;
      if (identity_) {
        std::copy(xr, xr + dim_, u + r * mp_);
        std::fill(u + r * mp_ + dim_, u + (r + 1) * mp_, T(0));
      }
    }
    if (!identity_) {
      const T* w = wt_.data() + (heads_ == 1 ? 0 : head) * dim_ * mp_;
      for (Index p = 0; p < mp_; p += kLane)
        detail::lane_tile<T, false>(x, xs, 1, n, dim_, w + p * dim_, u + p, kLane, mp_);
    }
    if (l2_) {
      // RFA normalises q and k to unit length before projecting (the 1e-3 keeps 0 finite).
      for (Index r = 0; r < n; ++r) {
        const T* xr = x + r * xs;
        detail::scale(u + r * mp_, T(1) / (std::sqrt(detail::dot(xr, xr, dim_)) + T(1e-3)), m_);
      }
    }
  }

  // Largest term of a row before stabilisation: max u (positive) or max |u| (hyperbolic).
  T peak(const T* u) const noexcept {
    auto vg = S::set1(-std::numeric_limits<T>::infinity());
    const bool both = feature_ == Feature::hyperbolic;
    Index f = 0;
    for (; f + W <= m_; f += W) vg = S::max(vg, both ? S::abs(S::load(u + f)) : S::load(u + f));
    T g = S::hmax(vg);
    for (; f < m_; ++f) g = std::max(g, both ? std::abs(u[f]) : u[f]);
    return g;
  }

  static int exponent_of(T log_value) noexcept {
    // floor(log2) of the row's largest term, clamped so int arithmetic on exponents cannot overflow
    // (a term of 2^(1 << 20) is far outside what any finite float input produces).
    const T l2 = std::floor(log_value / std::numbers::ln2_v<T>);
    if (!(l2 > -(1 << 20))) return -(1 << 20);
    if (!(l2 < (1 << 20))) return 1 << 20;
    return static_cast<int>(l2);
  }

  // out[f] = ratio * (exp(sign * u[f] - o) + eps_in) + eps_out for f < m.
  void exp_block(const T* u, T sign, T o, T* out) const noexcept {
    const auto vs = S::set1(sign), vo = S::set1(o), vr = S::set1(ratio_), vin = S::set1(eps_in_), vout = S::set1(eps_out_);
    Index f = 0;
    for (; f + W <= m_; f += W)
      S::storeu(out + f, S::fma(vr, S::add(S::exp(S::sub(S::mul(vs, S::load(u + f)), vo)), vin), vout));
    for (; f < m_; ++f) out[f] = ratio_ * (std::exp(sign * u[f] - o) + eps_in_) + eps_out_;
  }

  // out[f] = c * sin(u[f]), out[m + f] = c * cos(u[f]).
  void trig_blocks(const T* u, T c, T* out) const noexcept {
    const auto vc = S::set1(c);
    Index f = 0;
    for (; f + W <= m_; f += W) {
      const auto x = S::load(u + f);
      S::storeu(out + f, S::mul(vc, S::sin(x)));
      S::storeu(out + m_ + f, S::mul(vc, S::cos(x)));
    }
    for (; f < m_; ++f) out[f] = c * std::sin(u[f]), out[m_ + f] = c * std::cos(u[f]);
  }

  void row_features(const T* u, T h, Stabiliser mode, T shift, T* out, int& e) const noexcept {
    switch (feature_) {
      case Feature::positive:
      case Feature::hyperbolic: {
        // Offset o inside exp(±u - o): row divides by the largest term (h cancels with it), the
        // compat presets keep their exp(u - h - max u), pow2 leaves the largest term in [1, 2).
        // The offset is formed in double: h and e ln2 can both be large and nearly cancel.
        const T g = peak(u);
        T o = 0;
        if (mode == Stabiliser::fixed) o = h + shift;
        else if (mode == Stabiliser::pow2)
          e = exponent_of(g - h), o = static_cast<T>(double(h) + e * std::numbers::ln2);
        else o = compat_ == Compat::none ? g : h + g;
        exp_block(u, T(1), o, out);
        if (feature_ == Feature::hyperbolic) exp_block(u, T(-1), o, out + m_);
        break;
      }
      case Feature::hkunlp_fourier: {
        T c = 1;  // exp(h - o): the whole row's magnitude
        if (mode == Stabiliser::fixed) c = std::exp(h - shift);
        else if (mode == Stabiliser::pow2)
          e = exponent_of(h), c = static_cast<T>(std::exp(double(h) - e * std::numbers::ln2));
        trig_blocks(u, ratio_ * c, out);
        break;
      }
      case Feature::trigonometric: trig_blocks(u, ratio_, out); break;
      case Feature::relu:
        for (Index f = 0; f < m_; ++f) out[f] = std::max(u[f], T(0));
        break;
      case Feature::elu_plus_one:
        for (Index f = 0; f < m_; ++f) out[f] = u[f] > 0 ? u[f] + T(1) : std::exp(u[f]);
        break;
    }
    std::fill(out + features_, out + ld_, T(0));
  }

  Feature feature_ = Feature::positive;
  Compat compat_ = Compat::none;
  Index dim_ = 0, m_ = 0, mp_ = 0, features_ = 0, ld_ = 0, heads_ = 1;
  bool identity_ = true, l2_ = false;
  T half_scale_ = 0, ratio_ = 1, eps_in_ = 0, eps_out_ = 0;
  AlignedVector<T> wt_;
};

static_assert(FeatureMap<RandomFeatureMap<float>> && FeatureMap<RandomFeatureMap<double>>);

EFFATTN_END_NAMESPACE
