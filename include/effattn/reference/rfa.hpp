#pragma once
// Naive random-feature attention in double precision: the semantics of RfaAttention (RfaConfig in
// kinds/rfa_config.hpp; the feature maps and compat presets in feature_maps/feature_kind.hpp) and of
// Mask, written as plainly as possible so that tests and users can check a fast kernel against it.
// Every feature vector is materialised, every weight phi(q_i).phi(k_j) is formed one (query, key) pair
// at a time, and no code is shared with the kernels or the feature-map classes (an independent
// statement of the rules is what makes a comparison meaningful). It is slow by design:
// O(Lq * Lk * F) per head, F the number of features.
//
// compat = none: out_i = sum_j w_ij v_j / sum_j w_ij over the keys query i sees, w_ij = phi(q_i).phi(k_j)
// (times the gate's decay when a gate is given). Exponential maps are written phi(x) = exp(a(x)) f(x)
// with f bounded. The query's exp(a_i) is a common factor of its whole row and is left out; the keys'
// exp(a_j) are divided by exp(max a_j) over the keys the query sees, a factor common to every term of
// its two sums. Both cancel exactly in the ratio, nothing overflows, and (the maximum being over the
// query's own keys) the output of a causal query does not depend on later keys in any bit. A clamp,
// when set, is compared with the true denominator sum_j w_ij, stabilisers put back.
//
// compat = lucidrains / hkunlp: the presets' features q', k' are built literally, with their eps, their
// maxima (the key maximum over every key position, padding included) and their divisions, so a model
// trained with performer-pytorch or HKUNLP efficient-attention gets the same numbers.

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "effattn/core/errors.hpp"
#include "effattn/core/mask.hpp"
#include "effattn/core/tensor.hpp"
#include "effattn/feature_maps/feature_kind.hpp"
#include "effattn/feature_maps/projection.hpp"
#include "effattn/kinds/rfa_config.hpp"

EFFATTN_BEGIN_NAMESPACE

namespace reference {

namespace detail_rfa {

using Rows = std::vector<std::vector<double>>;

// Element (b, h, l, d) of a rank-4 tensor stored in the given layout.
template <class V>
auto& at(const V& t, Layout layout, Index b, Index h, Index l, Index d) {
  if (layout == Layout::bhld) return t.data()[((b * t.dimension(1) + h) * t.dimension(2) + l) * t.dimension(3) + d];
  return t.data()[((b * t.dimension(1) + l) * t.dimension(2) + h) * t.dimension(3) + d];
}

inline std::size_t ix(Index i) { return static_cast<std::size_t>(i); }

// Rows [0, len) of head h of batch b, converted to double.
template <class T>
Rows read_rows(ConstTensor4<T> t, Layout layout, Index b, Index h, Index len, Index dim) {
  Rows rows(ix(len), std::vector<double>(ix(dim)));
  for (Index l = 0; l < len; ++l)
    for (Index d = 0; d < dim; ++d) rows[ix(l)][ix(d)] = static_cast<double>(at(t, layout, b, h, l, d));
  return rows;
}

[[noreturn]] inline void shape_fail(const std::string& what) { throw shape_error("reference::rfa_attention: " + what); }
[[noreturn]] inline void unsupported(const std::string& what) {
  throw unsupported_error("reference::rfa_attention: " + what);
}

inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (std::size_t r = 0; r < a.size(); ++r) s += a[r] * b[r];
  return s;
}

inline std::vector<double> times(const std::vector<double>& x, double c) {
  std::vector<double> y(x.size());
  for (std::size_t d = 0; d < x.size(); ++d) y[d] = x[d] * c;
  return y;
}

// u = W x with the projection matrix of the given (KV) head.
inline std::vector<double> project(const Projection& p, Index head, const std::vector<double>& x) {
  std::vector<double> u(ix(p.rows()));
  for (Index r = 0; r < p.rows(); ++r) {
    double s = 0;
    for (Index d = 0; d < p.dim(); ++d) s += p(head, r, d) * x[ix(d)];
    u[ix(r)] = s;
  }
  return u;
}

// h = |x|^2 / 2
inline double half_square(const std::vector<double>& x) { return 0.5 * dot(x, x); }

inline double max_of(const std::vector<double>& u) {
  double top = -std::numeric_limits<double>::infinity();
  for (double x : u) top = std::max(top, x);
  return top;
}

// [sin u, cos u] * c (sin block first).
inline std::vector<double> sin_cos(const std::vector<double>& u, double c) {
  std::vector<double> f;
  for (double x : u) f.push_back(c * std::sin(x));
  for (double x : u) f.push_back(c * std::cos(x));
  return f;
}

// phi(x) = exp(log_scale) * f.
struct Phi {
  double log_scale = 0;
  std::vector<double> f;
};

// The maps of feature_kind.hpp (compat none) for one raw row x; x' = x sqrt(scale).
inline Phi exact_phi(const RfaConfig& c, const Projection& p, Index head, const std::vector<double>& x, double scale) {
  const std::vector<double> xs = times(x, std::sqrt(scale));
  const double m = static_cast<double>(p.rows());
  Phi phi;
  switch (c.feature) {
    case Feature::positive: {
      // m^-1/2 exp(u - h) = exp(max u - h) * m^-1/2 exp(u - max u)
      const std::vector<double> u = project(p, head, xs);
      const double top = max_of(u);
      phi.log_scale = top - half_square(xs);
      for (double ur : u) phi.f.push_back(std::exp(ur - top) / std::sqrt(m));
      break;
    }
    case Feature::hyperbolic: {
      // (2m)^-1/2 exp(-h) [exp(u), exp(-u)] = exp(max|u| - h) * (2m)^-1/2 [exp(u - max|u|), exp(-u - max|u|)]
      const std::vector<double> u = project(p, head, xs);
      double top = 0;
      for (double ur : u) top = std::max(top, std::abs(ur));
      phi.log_scale = top - half_square(xs);
      for (double ur : u) phi.f.push_back(std::exp(ur - top) / std::sqrt(2 * m));
      for (double ur : u) phi.f.push_back(std::exp(-ur - top) / std::sqrt(2 * m));
      break;
    }
    case Feature::trigonometric: {
      // u = W x~ / temperature, x~ = x / (|x| + 1e-3) (RFA's l2 normalisation) or x'.
      std::vector<double> xt = xs;
      if (c.l2_normalize)
        for (std::size_t d = 0; d < x.size(); ++d) xt[d] = x[d] / (std::sqrt(dot(x, x)) + 1e-3);
      const std::vector<double> u = times(project(p, head, xt), 1.0 / c.temperature);
      phi.f = sin_cos(u, 1.0 / std::sqrt(m));
      break;
    }
    case Feature::hkunlp_fourier: {
      // exp(h) m^-1/2 [sin u, cos u]
      phi.log_scale = half_square(xs);
      phi.f = sin_cos(project(p, head, xs), 1.0 / std::sqrt(m));
      break;
    }
    case Feature::relu: {
      // relu(W x'), or relu(x) without a projection
      const std::vector<double> z = p.empty() ? x : project(p, head, xs);
      for (double zr : z) phi.f.push_back(std::max(zr, 0.0));
      break;
    }
    case Feature::elu_plus_one: {
      // elu(W x') + 1, or elu(x) + 1 without a projection; elu(z) + 1 = exp(z) for z <= 0
      const std::vector<double> z = p.empty() ? x : project(p, head, xs);
      for (double zr : z) phi.f.push_back(zr > 0 ? zr + 1.0 : std::exp(zr));
      break;
    }
  }
  return phi;
}

// One (batch, query head) of the problem, read into doubles.
struct Slice {
  Rows q, k, v;           // [Lq][Dqk], [Lk][Dqk], [Lk][Dv]
  std::vector<double> g;  // [Lk] gate of the KV head; empty without a gate
  std::size_t valid = 0;  // keys [0, valid) are not padding
  Index head = 0;         // KV head, which selects the projection
  std::size_t dim_v = 0;
};

// One past the last key query i sees among n: all of them without causal, else up to its aligned
// position i + shift.
inline std::size_t key_end(bool causal, std::size_t i, Index shift, std::size_t n) {
  if (!causal) return n;
  return static_cast<std::size_t>(std::clamp<Index>(static_cast<Index>(i) + shift + 1, 0, static_cast<Index>(n)));
}

// out (+)= w v_j
inline void add_row(std::vector<double>& acc, double w, const std::vector<double>& row) {
  for (std::size_t d = 0; d < acc.size(); ++d) acc[d] += w * row[d];
}

// Output row of the presets: 0 when the denominator is exactly 0, else num / max(den, clamp) when
// clamp > 0, else num / den.
inline std::vector<double> divide(const std::vector<double>& num, double den, double clamp) {
  std::vector<double> out(num.size(), 0.0);
  if (den == 0) return out;
  const double divisor = clamp > 0 ? std::max(den, clamp) : den;
  for (std::size_t d = 0; d < num.size(); ++d) out[d] = num[d] / divisor;
  return out;
}

// compat none.
inline Rows exact_slice(const Slice& s, const RfaConfig& c, const Projection& p, double scale, bool causal, Index shift,
                        double clamp) {
  Rows out(s.q.size(), std::vector<double>(s.dim_v, 0.0));
  std::vector<Phi> phi_k;
  for (std::size_t j = 0; j < s.valid; ++j) phi_k.push_back(exact_phi(c, p, s.head, s.k[j], scale));
  for (std::size_t i = 0; i < s.q.size(); ++i) {
    const std::size_t hi = key_end(causal, i, shift, s.valid);
    if (hi == 0) continue;  // sees no key
    const Phi phi_q = exact_phi(c, p, s.head, s.q[i], scale);
    double top = -std::numeric_limits<double>::infinity();  // key stabiliser over the keys query i sees
    for (std::size_t j = 0; j < hi; ++j) top = std::max(top, phi_k[j].log_scale);
    std::vector<double> num(s.dim_v, 0.0);
    double den = 0;
    // Backwards over the keys, so that decay = prod_{t=j+1}^{hi-1} g_t: the share of key j's
    // contribution (1 - g_j) phi(k_j) v_j^T that survives in the gated state the query reads.
    double decay = 1;
    for (std::size_t j = hi; j-- > 0;) {
      double w = std::exp(phi_k[j].log_scale - top) * dot(phi_q.f, phi_k[j].f);
      if (!s.g.empty()) {
        w *= (1 - s.g[j]) * decay;
        decay *= s.g[j];
      }
      den += w;
      add_row(num, w, s.v[j]);
    }
    if (den == 0) continue;  // every weight 0
    // The true sums are num and den times exp(a). A clamp above the true denominator (or any clamp,
    // when a trigonometric denominator is negative) divides the true numerator by the clamp instead;
    // for den > 0 that factor is formed in logs so that exp(a) alone never overflows.
    const double a = phi_q.log_scale + top;
    double factor = 1.0 / den;  // out = num * factor
    if (clamp > 0 && den < 0) factor = std::exp(a) / clamp;
    if (clamp > 0 && den > 0 && std::log(den) + a < std::log(clamp))
      factor = std::exp(std::log(den) + a - std::log(clamp)) / den;
    for (std::size_t d = 0; d < s.dim_v; ++d) out[i][d] = num[d] * factor;
  }
  return out;
}

// compat lucidrains (performer-pytorch softmax_kernel + linear_attention / causal_linear_attention):
//   q'_i = m^-1/2 (exp(u_i - h_i - max_r u_ir) + 1e-4)
//   k'_j = m^-1/2 (exp(u_j - h_j - max_{n,r} u_nr) + 1e-4), the max over every key position, also when
//          causal (so outputs depend on later keys) and also over padded keys
//   out_i = sum_j (q'_i.k'_j) v_j / (q'_i . sum_j k'_j), causal: denominator q'_i . (sum_{j<=i} k'_j + 1e-6)
// performer-pytorch knows no padding: padded value rows are zero, and padded keys stay everywhere else
// (denominator, maximum, causal alignment).
inline Rows lucidrains_slice(const Slice& s, const Projection& p, double scale, bool causal, Index shift,
                             double clamp) {
  Rows out(s.q.size(), std::vector<double>(s.dim_v, 0.0));
  const double ratio = 1.0 / std::sqrt(static_cast<double>(p.rows()));
  const double root = std::sqrt(scale);
  Rows u_k, k_feat;
  std::vector<double> h_k;
  double k_max = -std::numeric_limits<double>::infinity();
  for (const auto& key : s.k) {
    const std::vector<double> xs = times(key, root);
    u_k.push_back(project(p, s.head, xs));
    h_k.push_back(half_square(xs));
    k_max = std::max(k_max, max_of(u_k.back()));
  }
  for (std::size_t j = 0; j < s.k.size(); ++j) {
    std::vector<double> f;
    for (double u : u_k[j]) f.push_back(ratio * (std::exp(u - h_k[j] - k_max) + 1e-4));
    k_feat.push_back(f);
  }
  for (std::size_t i = 0; i < s.q.size(); ++i) {
    const std::size_t hi = key_end(causal, i, shift, s.k.size());
    if (hi == 0) continue;  // sees no key
    const std::vector<double> xs = times(s.q[i], root);
    const std::vector<double> u = project(p, s.head, xs);
    const double h = half_square(xs), q_max = max_of(u);
    std::vector<double> qf;
    for (double ur : u) qf.push_back(ratio * (std::exp(ur - h - q_max) + 1e-4));
    std::vector<double> num(s.dim_v, 0.0);
    double den = 0;
    for (std::size_t j = 0; j < hi; ++j) {
      const double w = dot(qf, k_feat[j]);
      den += w;
      if (j < s.valid) add_row(num, w, s.v[j]);  // a padded value row is zero
    }
    if (causal)
      for (double f : qf) den += f * 1e-6;
    out[i] = divide(num, den, clamp);
  }
  return out;
}

// compat hkunlp (efficient-attention favorp_projection / fourier_projection + linear_attention),
// non-causal:
//   positive:        q'_i = m^-1/2 exp(u_i - h_i - max_r u_ir) + 1e-4 (eps outside the ratio),
//                    k'_j = m^-1/2 exp(u_j - h_j - max_{n,r} u_nr) + 1e-4
//   hkunlp_fourier:  x'_n -> exp(h_n - max_n' h_n') m^-1/2 [sin u_n, cos u_n], the max over the positions
//                    of q for queries and of k for keys
//   both key maxima include padded keys, whose k' rows are then set to 0;
//   out_i = q'_i (k'^T v) / max(q'_i . sum_j k'_j, clamp).
inline Rows hkunlp_slice(const Slice& s, const RfaConfig& c, const Projection& p, double scale, double clamp) {
  const double ratio = 1.0 / std::sqrt(static_cast<double>(p.rows()));
  const double root = std::sqrt(scale);
  // The features of every row of x (the queries or the keys), maxima over all of its rows.
  const auto features = [&](const Rows& x, bool queries) {
    Rows u, f;
    std::vector<double> h;
    double u_max = -std::numeric_limits<double>::infinity(), h_max = u_max;
    for (const auto& row : x) {
      const std::vector<double> xs = times(row, root);
      u.push_back(project(p, s.head, xs));
      h.push_back(half_square(xs));
      u_max = std::max(u_max, max_of(u.back()));
      h_max = std::max(h_max, h.back());
    }
    for (std::size_t n = 0; n < x.size(); ++n) {
      if (c.feature == Feature::hkunlp_fourier) {
        f.push_back(sin_cos(u[n], std::exp(h[n] - h_max) * ratio));
        continue;
      }
      // Queries: the max is per row; keys: over every position and feature.
      const double shift = queries ? max_of(u[n]) : u_max;
      std::vector<double> fn;
      for (double ur : u[n]) fn.push_back(ratio * std::exp(ur - h[n] - shift) + 1e-4);
      f.push_back(fn);
    }
    return f;
  };
  const Rows q_feat = features(s.q, true);
  Rows k_feat = features(s.k, false);
  for (std::size_t j = s.valid; j < s.k.size(); ++j) std::fill(k_feat[j].begin(), k_feat[j].end(), 0.0);
  Rows out(s.q.size(), std::vector<double>(s.dim_v, 0.0));
  if (s.valid == 0) return out;  // no query sees a key
  for (std::size_t i = 0; i < s.q.size(); ++i) {
    std::vector<double> num(s.dim_v, 0.0);
    double den = 0;
    for (std::size_t j = 0; j < s.k.size(); ++j) {
      const double w = dot(q_feat[i], k_feat[j]);
      den += w;
      add_row(num, w, s.v[j]);
    }
    out[i] = divide(num, den, clamp);
  }
  return out;
}

}  // namespace detail_rfa

// out [B,H,Lq,Dv] (or [B,Lq,H,Dv] for Layout::blhd) from q [B,H,Lq,Dqk], k [B,Hkv,Lk,Dqk],
// v [B,Hkv,Lk,Dv] in the same layout. Query head h reads KV head h / (H / Hkv) and that head's
// projection (projection.heads() is 1, shared, or Hkv; rows() is m; dim() is Dqk). gate: [B,Hkv,Lk]
// values g in [0, 1] of RFA-Gate, causal only: S_j = g_j S_{j-1} + (1 - g_j) phi(k_j) v_j^T, and the
// same for z; query i reads the state after its last visible key.
template <class T>
void rfa_attention(ConstTensor4<T> q, ConstTensor4<T> k, ConstTensor4<T> v, Tensor4<double> out, const Mask& mask,
                   const RfaConfig& config, const Projection& projection, Layout layout = Layout::bhld,
                   std::optional<ConstTensor3<T>> gate = std::nullopt) {
  using detail::cat;
  using detail_rfa::shape_fail;
  using detail_rfa::unsupported;
  const auto eq = effattn::detail::bhld_extents(q, layout);
  const auto ek = effattn::detail::bhld_extents(k, layout);
  const auto ev = effattn::detail::bhld_extents(v, layout);
  const auto eo = effattn::detail::bhld_extents(out, layout);
  const Index B = eq[0], H = eq[1], Lq = eq[2], Dqk = eq[3];
  const Index Hkv = ek[1], Lk = ek[2], Dv = ev[3];
  if (ek[0] != B || ev[0] != B) shape_fail(cat("q, k, v disagree on B (", B, ", ", ek[0], ", ", ev[0], ")"));
  if (ev[1] != Hkv || ev[2] != Lk)
    shape_fail(cat("v has ", ev[1], " heads and ", ev[2], " rows but k has ", Hkv, " and ", Lk));
  if (ek[3] != Dqk) shape_fail(cat("k has Dqk = ", ek[3], " but q has ", Dqk));
  if (eo[0] != B || eo[1] != H || eo[2] != Lq || eo[3] != Dv)
    shape_fail(cat("out must be [B, H, Lq, Dv] = [", B, ", ", H, ", ", Lq, ", ", Dv, "] in the given layout"));
  if (H > 0 && (Hkv == 0 || H % Hkv != 0)) shape_fail(cat("H = ", H, " is not a multiple of Hkv = ", Hkv));

  config.validate().raise();
  const bool projected = config.feature != Feature::relu && config.feature != Feature::elu_plus_one;
  if (projected && projection.empty())
    throw config_error(cat("reference::rfa_attention: the ", to_string(config.feature),
                           " map needs a projection W (one [m, Dqk] matrix, or one per KV head)"));
  if (!projection.empty()) {
    if (projection.dim() != Dqk) shape_fail(cat("the projection has dim ", projection.dim(), " but Dqk is ", Dqk));
    if (projection.heads() != 1 && projection.heads() != Hkv)
      shape_fail(cat("the projection has ", projection.heads(), " heads; it needs 1 (shared) or Hkv = ", Hkv));
  }

  if (mask.bias.present()) unsupported("random-feature attention cannot apply a bias or boolean mask");
  if (mask.window.active()) unsupported("random-feature attention has no sliding window");
  if (mask.packed()) unsupported("random-feature attention does not take packed sequences (cu_seqlens)");
  if (!mask.key_lengths.empty()) {
    if (static_cast<Index>(mask.key_lengths.size()) != B)
      shape_fail(cat("mask.key_lengths has ", mask.key_lengths.size(), " entries; it needs B = ", B));
    for (Index len : mask.key_lengths)
      if (len < 0 || len > Lk) shape_fail(cat("mask.key_lengths holds ", len, ", outside [0, Lk = ", Lk, "]"));
  }
  const bool causal = mask.causal != Causal::none;
  if (config.compat == Compat::hkunlp && causal)
    unsupported("compat = hkunlp is non-causal only: HKUNLP efficient-attention has no causal Performer");
  if (gate) {
    if (!causal) unsupported("the gate (RFA-Gate) is a causal recurrence; it needs a causal mask");
    if (config.compat != Compat::none) unsupported(cat("the gate has no form in compat = ", to_string(config.compat)));
    if (gate->dimension(0) != B || gate->dimension(1) != Hkv || gate->dimension(2) != Lk)
      shape_fail(cat("gate must be [B, Hkv, Lk] = [", B, ", ", Hkv, ", ", Lk, "], not [", gate->dimension(0), ", ",
                     gate->dimension(1), ", ", gate->dimension(2), "]"));
  }

  const double scale = config.scale ? *config.scale : 1.0 / std::sqrt(static_cast<double>(std::max<Index>(Dqk, 1)));
  const double clamp = config.effective_clamp();
  const Index group = Hkv > 0 ? H / Hkv : 1;

  for (Index b = 0; b < B; ++b) {
    const Index valid = mask.key_lengths.empty() ? Lk : mask.key_lengths[static_cast<std::size_t>(b)];
    for (Index h = 0; h < H; ++h) {
      detail_rfa::Slice s;
      s.head = h / group;
      s.valid = static_cast<std::size_t>(valid);
      s.dim_v = static_cast<std::size_t>(Dv);
      s.q = detail_rfa::read_rows(q, layout, b, h, Lq, Dqk);
      s.k = detail_rfa::read_rows(k, layout, b, s.head, Lk, Dqk);
      s.v = detail_rfa::read_rows(v, layout, b, s.head, Lk, Dv);
      if (gate)
        for (Index j = 0; j < Lk; ++j) s.g.push_back(static_cast<double>(gate->data()[(b * Hkv + s.head) * Lk + j]));
      detail_rfa::Rows o;
      switch (config.compat) {
        case Compat::none:
          // Bottom-right alignment puts the last query on the last valid key (as Mask states).
          o = detail_rfa::exact_slice(s, config, projection, scale, causal,
                                      mask.causal == Causal::bottom_right ? valid - Lq : 0, clamp);
          break;
        case Compat::lucidrains:
          // performer-pytorch sees every key position, padded ones included.
          o = detail_rfa::lucidrains_slice(s, projection, scale, causal,
                                           mask.causal == Causal::bottom_right ? Lk - Lq : 0, clamp);
          break;
        case Compat::hkunlp:
          o = detail_rfa::hkunlp_slice(s, config, projection, scale, clamp);
          break;
      }
      for (Index i = 0; i < Lq; ++i)
        for (Index d = 0; d < Dv; ++d)
          detail_rfa::at(out, layout, b, h, i, d) = o[detail_rfa::ix(i)][detail_rfa::ix(d)];
    }
  }
}

}  // namespace reference

EFFATTN_END_NAMESPACE
