#pragma once
// Naive randomized attention (RA) and linear randomized attention (LARA) in double precision: the
// semantics of RandomizedAttention and LaraAttention (RaConfig, LaraConfig and the injected draws in
// kinds/lara_config.hpp), written as plainly as possible so that tests and users can check a fast
// kernel against it. Every sample, landmark and logit is materialised one at a time, every softmax is
// a log-sum-exp over a std::vector, and nothing is shared with the kernels except the public config
// types and the documented generator detail::draw_stream (sharing the draws is what lets a kernel run
// with its own generator be compared at all; an independent statement of everything else is what makes
// the comparison meaningful). It is slow by design: RA is O(S * Lq * Lk * D) per head, LARA
// O(S_tot * (Lq + Lk) * D + S_tot * C * D).
//
// Units: q' = q sqrt(scale), k' = k sqrt(scale) (scale defaults to 1/sqrt(Dqk)), and a sample is
// w = mu + sigma eps with sigma = noise_sigma(noise, scale).
//
// RA, per (batch, query head, query n): the keys n sees follow Mask exactly as softmax attention does
// (causal in either alignment, window, key_lengths); pi_nm = softmax_m(q'_n.k'_m) over them. Each of
// the S samples takes the mean mu = q'_n + k'_m with m drawn from pi_n (sampled_key), q'_n + sum_m pi_nm
// k'_m (expected_key) or q'_n + mean_m k'_m (mean_key), and out_n averages
// f(w) = softmax_m(w.k'_m - |k'_m|^2/2) V over the samples. A query that sees no key gives 0.
//
// LARA, per (batch, query head): C_eff proposal means mu_c = qbar'_c + kbar'_c from segment means,
// grid pooling or the caller's landmarks; samples w_s (w = mu deterministically, or mu + sigma eps);
//   out_n = sum_s softmax_s[log alpha_ns + w_s.q'_n + LSE_m(w_s.k'_m - |k'_m|^2/2) - logprop_s] f(w_s)
// with the weighting's alpha and log-proposal. Key padding: padded keys never enter a sum over keys;
// with Padding::exclude padded tokens are also left out of the landmarks and of mis_opt's normalisation
// over queries, with Padding::zero_compat they count there as zero rows (HKUNLP's convention).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "effattn/core/errors.hpp"
#include "effattn/core/mask.hpp"
#include "effattn/core/tensor.hpp"
#include "effattn/kinds/lara_config.hpp"

EFFATTN_BEGIN_NAMESPACE

namespace reference {

namespace detail_lara {

using Row = std::vector<double>;
using Rows = std::vector<Row>;

inline constexpr double kNegInf = -std::numeric_limits<double>::infinity();

inline std::size_t ix(Index i) { return static_cast<std::size_t>(i); }

// Element (b, h, l, d) of a rank-4 tensor stored in the given layout.
template <class V>
auto& at(const V& t, Layout layout, Index b, Index h, Index l, Index d) {
  if (layout == Layout::bhld) return t.data()[((b * t.dimension(1) + h) * t.dimension(2) + l) * t.dimension(3) + d];
  return t.data()[((b * t.dimension(1) + l) * t.dimension(2) + h) * t.dimension(3) + d];
}

// Rows [0, len) of head h of batch b, converted to double and multiplied by `factor`.
template <class T>
Rows read_rows(ConstTensor4<T> t, Layout layout, Index b, Index h, Index len, Index dim, double factor = 1.0) {
  Rows rows(ix(len), Row(ix(dim)));
  for (Index l = 0; l < len; ++l)
    for (Index d = 0; d < dim; ++d) rows[ix(l)][ix(d)] = static_cast<double>(at(t, layout, b, h, l, d)) * factor;
  return rows;
}

inline double dot(const Row& a, const Row& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

inline double half_square(const Row& x) { return 0.5 * dot(x, x); }

// log sum_i exp(x_i); -inf for an empty list or one of only -inf.
inline double log_sum_exp(const std::vector<double>& x) {
  double top = kNegInf;
  for (double e : x) top = std::max(top, e);
  if (top == kNegInf) return kNegInf;
  double sum = 0;
  for (double e : x) sum += std::exp(e - top);
  return top + std::log(sum);
}

// sum_i softmax(logits)_i rows_i over the entries with a finite logit; a zero row of `dim` when none is.
inline Row softmax_combine(const std::vector<double>& logits, const Rows& rows, std::size_t dim) {
  Row out(dim, 0.0);
  const double lse = log_sum_exp(logits);
  if (lse == kNegInf) return out;
  for (std::size_t i = 0; i < logits.size(); ++i) {
    if (logits[i] == kNegInf) continue;
    const double p = std::exp(logits[i] - lse);
    for (std::size_t d = 0; d < dim; ++d) out[d] += p * rows[i][d];
  }
  return out;
}

// Mean of rows[first, last).
inline Row mean_of(const Rows& rows, std::size_t first, std::size_t last, std::size_t dim) {
  Row m(dim, 0.0);
  for (std::size_t i = first; i < last; ++i)
    for (std::size_t d = 0; d < dim; ++d) m[d] += rows[i][d];
  for (double& x : m) x /= static_cast<double>(last - first);
  return m;
}

// The lengths of the C segments a sequence of n >= C tokens is cut into: n / C each when C divides n,
// else g = n / C and the first (g + 1) C - n segments have g tokens, the rest g + 1 (10, 4 -> 2 2 3 3).
inline std::vector<std::size_t> segment_lengths(std::size_t n, std::size_t c) {
  std::vector<std::size_t> len(c);
  if (n % c == 0) {
    std::fill(len.begin(), len.end(), n / c);
    return len;
  }
  const std::size_t g = n / c, shorter = (g + 1) * c - n;
  for (std::size_t i = 0; i < c; ++i) len[i] = i < shorter ? g : g + 1;
  return len;
}

// Means of the C consecutive segments of rows[0, n).
inline Rows segment_means(const Rows& rows, std::size_t n, std::size_t c, std::size_t dim) {
  Rows means;
  std::size_t first = 0;
  for (std::size_t len : segment_lengths(n, c)) {
    means.push_back(mean_of(rows, first, first + len, dim));
    first += len;
  }
  return means;
}

// Adaptive average pooling of a rows x cols grid (tokens row-major) to out_r x out_c cells: cell (i, j)
// covers grid rows [floor(i rows / out_r), ceil((i + 1) rows / out_r)) and the same for columns, so
// neighbouring cells overlap when the sides do not divide.
inline Rows grid_pool(const Rows& tokens, std::size_t rows, std::size_t cols, std::size_t out_r, std::size_t out_c,
                      std::size_t dim) {
  const auto lo = [](std::size_t i, std::size_t in, std::size_t out) { return i * in / out; };
  const auto hi = [](std::size_t i, std::size_t in, std::size_t out) { return ((i + 1) * in + out - 1) / out; };
  Rows cells;
  for (std::size_t i = 0; i < out_r; ++i)
    for (std::size_t j = 0; j < out_c; ++j) {
      Row m(dim, 0.0);
      std::size_t count = 0;
      for (std::size_t r = lo(i, rows, out_r); r < hi(i, rows, out_r); ++r)
        for (std::size_t c = lo(j, cols, out_c); c < hi(j, cols, out_c); ++c, ++count)
          for (std::size_t d = 0; d < dim; ++d) m[d] += tokens[r * cols + c][d];
      for (double& x : m) x /= static_cast<double>(count);
      cells.push_back(m);
    }
  return cells;
}

[[noreturn]] inline void shape_fail(const char* who, const std::string& what) {
  throw shape_error(std::string("reference::") + who + ": " + what);
}
[[noreturn]] inline void config_fail(const char* who, const std::string& what) {
  throw config_error(std::string("reference::") + who + ": " + what);
}
[[noreturn]] inline void unsupported(const char* who, const std::string& what) {
  throw unsupported_error(std::string("reference::") + who + ": " + what);
}

// The extents every kind checks: {B, H, Hkv, Lq, Lk, Dqk, Dv}.
struct Extents {
  Index B, H, Hkv, Lq, Lk, Dqk, Dv;
};

template <class T>
Extents check_extents(const char* who, ConstTensor4<T> q, ConstTensor4<T> k, ConstTensor4<T> v, Tensor4<double> out,
                      const Mask& mask, Layout layout) {
  using effattn::detail::cat;
  const auto eq = effattn::detail::bhld_extents(q, layout);
  const auto ek = effattn::detail::bhld_extents(k, layout);
  const auto ev = effattn::detail::bhld_extents(v, layout);
  const auto eo = effattn::detail::bhld_extents(out, layout);
  const Extents e{eq[0], eq[1], ek[1], eq[2], ek[2], eq[3], ev[3]};
  if (ek[0] != e.B || ev[0] != e.B) shape_fail(who, cat("q, k, v disagree on B (", e.B, ", ", ek[0], ", ", ev[0], ")"));
  if (ev[1] != e.Hkv || ev[2] != e.Lk)
    shape_fail(who, cat("v has ", ev[1], " heads and ", ev[2], " rows but k has ", e.Hkv, " and ", e.Lk));
  if (ek[3] != e.Dqk) shape_fail(who, cat("k has Dqk = ", ek[3], " but q has ", e.Dqk));
  if (eo[0] != e.B || eo[1] != e.H || eo[2] != e.Lq || eo[3] != e.Dv)
    shape_fail(who,
               cat("out must be [B, H, Lq, Dv] = [", e.B, ", ", e.H, ", ", e.Lq, ", ", e.Dv, "] in the given layout"));
  if (e.H > 0 && (e.Hkv == 0 || e.H % e.Hkv != 0))
    shape_fail(who, cat("H = ", e.H, " is not a multiple of Hkv = ", e.Hkv));
  if (mask.bias.present()) unsupported(who, "a bias or boolean mask cannot be applied");
  if (mask.packed() || !mask.cu_seqlens_k.empty()) unsupported(who, "packed sequences (cu_seqlens) are not taken");
  if (!mask.key_lengths.empty()) {
    if (static_cast<Index>(mask.key_lengths.size()) != e.B)
      shape_fail(who, cat("mask.key_lengths has ", mask.key_lengths.size(), " entries; it needs B = ", e.B));
    for (Index len : mask.key_lengths)
      if (len < 0 || len > e.Lk) shape_fail(who, cat("mask.key_lengths holds ", len, ", outside [0, Lk = ", e.Lk, "]"));
  }
  return e;
}

inline double default_scale(const std::optional<double>& scale, Index dqk) {
  return scale ? *scale : 1.0 / std::sqrt(static_cast<double>(std::max<Index>(dqk, 1)));
}

}  // namespace detail_lara

// out [B,H,Lq,Dv] (or [B,Lq,H,Dv] for Layout::blhd) from q [B,H,Lq,Dqk], k [B,Hkv,Lk,Dqk],
// v [B,Hkv,Lk,Dv] in the same layout; query head h reads KV head h / (H / Hkv). `draw` selects the
// generator's redraw (the kernel's draw()); draws.noise [S,B,H,Lq,Dqk] and draws.key_index [S,B,H,Lq]
// (always bhld) replace the generator. D is the element type of the injected noise.
template <class T, class D = double>
void randomized_attention(ConstTensor4<T> q, ConstTensor4<T> k, ConstTensor4<T> v, Tensor4<double> out,
                          const Mask& mask = {}, const RaConfig& config = {}, std::uint64_t draw = 0,
                          const RaDraws<D>& draws = {}, Layout layout = Layout::bhld) {
  using namespace detail_lara;
  using effattn::detail::cat;
  const char* who = "randomized_attention";
  const Extents e = check_extents<T>(who, q, k, v, out, mask, layout);
  config.validate().raise();
  if (mask.window.left < -1 || mask.window.right < -1)
    config_fail(who, cat("mask.window is (", mask.window.left, ", ", mask.window.right, "); each side is >= 0 or -1"));
  const Index S = config.samples;
  if (draws.noise) {
    const auto& n = *draws.noise;
    if (n.dimension(0) != S || n.dimension(1) != e.B || n.dimension(2) != e.H || n.dimension(3) != e.Lq ||
        n.dimension(4) != e.Dqk)
      shape_fail(who, cat("draws.noise must be [S, B, H, Lq, Dqk] = [", S, ", ", e.B, ", ", e.H, ", ", e.Lq, ", ",
                          e.Dqk, "]"));
    if (config.noise == Noise::none) config_fail(who, "draws.noise is given but noise = none draws no noise");
  }
  if (draws.key_index) {
    const auto& ki = *draws.key_index;
    if (ki.dimension(0) != S || ki.dimension(1) != e.B || ki.dimension(2) != e.H || ki.dimension(3) != e.Lq)
      shape_fail(who, cat("draws.key_index must be [S, B, H, Lq] = [", S, ", ", e.B, ", ", e.H, ", ", e.Lq, "]"));
    if (config.mean != RaMean::sampled_key)
      config_fail(who, cat("draws.key_index is given but mean = ", to_string(config.mean), " samples no key"));
  }

  const double scale = default_scale(config.scale, e.Dqk);
  const double root = std::sqrt(scale);
  const double sigma = noise_sigma(config.noise, scale);
  const Index group = e.Hkv > 0 ? e.H / e.Hkv : 1;
  const std::size_t dq = ix(e.Dqk), dv = ix(e.Dv);

  for (Index b = 0; b < e.B; ++b) {
    const Index valid = mask.key_lengths.empty() ? e.Lk : mask.key_lengths[ix(b)];
    // Where query n sits among the keys: causal top_left puts it on key n; bottom_right puts the last
    // query on the last valid key, and a window without causal measures from that same diagonal.
    const Index shift = mask.causal == Causal::top_left ? 0 : valid - e.Lq;
    for (Index h = 0; h < e.H; ++h) {
      const Index hk = h / group;
      const Rows qs = read_rows(q, layout, b, h, e.Lq, e.Dqk, root);
      const Rows ks = read_rows(k, layout, b, hk, e.Lk, e.Dqk, root);
      const Rows vs = read_rows(v, layout, b, hk, e.Lk, e.Dv);
      const auto rng = effattn::detail::draw_stream(config.seed, b, h, draw);
      for (Index n = 0; n < e.Lq; ++n) {
        const Index pos = n + shift;
        std::vector<Index> keys;  // visible, increasing
        for (Index m = 0; m < valid; ++m) {
          if (mask.causal != Causal::none && m > pos) continue;
          if (mask.window.left >= 0 && m < pos - mask.window.left) continue;
          if (mask.window.right >= 0 && m > pos + mask.window.right) continue;
          keys.push_back(m);
        }
        Row o(dv, 0.0);
        if (!keys.empty()) {
          const Row& qn = qs[ix(n)];
          std::vector<double> logit;
          Rows kvis, vvis;
          for (Index m : keys) {
            logit.push_back(dot(qn, ks[ix(m)]));
            kvis.push_back(ks[ix(m)]);
            vvis.push_back(vs[ix(m)]);
          }
          const double lse = log_sum_exp(logit);
          std::vector<double> pi;
          for (double l : logit) pi.push_back(std::exp(l - lse));
          for (Index s = 0; s < S; ++s) {
            Row mu = qn;
            switch (config.mean) {
              case RaMean::sampled_key: {
                Index m = -1;
                if (draws.key_index) {
                  m = draws.key_index->data()[((s * e.B + b) * e.H + h) * e.Lq + n];
                  if (std::find(keys.begin(), keys.end(), m) == keys.end())
                    shape_fail(who, cat("draws.key_index[", s, ", ", b, ", ", h, ", ", n, "] = ", m,
                                        " is not a key that query sees"));
                } else {
                  // Inverse CDF: the first visible key whose cumulative probability reaches u.
                  const double u = rng.uniform(static_cast<std::uint64_t>(s * e.Lq + n));
                  double cum = 0;
                  for (std::size_t i = 0; i < keys.size() && m < 0; ++i) {
                    cum += pi[i];
                    if (cum >= u) m = keys[i];
                  }
                  // Rounding left the total short of u: the last key that can be drawn at all.
                  for (std::size_t i = keys.size(); m < 0 && i-- > 0;)
                    if (pi[i] > 0) m = keys[i];
                }
                for (std::size_t d = 0; d < dq; ++d) mu[d] += ks[ix(m)][d];
                break;
              }
              case RaMean::expected_key:
                for (std::size_t i = 0; i < keys.size(); ++i)
                  for (std::size_t d = 0; d < dq; ++d) mu[d] += pi[i] * kvis[i][d];
                break;
              case RaMean::mean_key: {
                const Row km = mean_of(kvis, 0, kvis.size(), dq);
                for (std::size_t d = 0; d < dq; ++d) mu[d] += km[d];
                break;
              }
            }
            Row w = mu;
            if (sigma != 0)
              for (Index i = 0; i < e.Dqk; ++i) {
                const double eps =
                    draws.noise
                        ? static_cast<double>(draws.noise->data()[(((s * e.B + b) * e.H + h) * e.Lq + n) * e.Dqk + i])
                        : rng.normal(static_cast<std::uint64_t>((s * e.Lq + n) * e.Dqk + i));
                w[ix(i)] += sigma * eps;
              }
            std::vector<double> a;
            for (const Row& km : kvis) a.push_back(dot(w, km) - half_square(km));
            const Row f = softmax_combine(a, vvis, dv);
            for (std::size_t d = 0; d < dv; ++d) o[d] += f[d] / static_cast<double>(S);
          }
        }
        for (Index d = 0; d < e.Dv; ++d) at(out, layout, b, h, n, d) = o[ix(d)];
      }
    }
  }
}

// out [B,H,Lq,Dv] (or [B,Lq,H,Dv] for Layout::blhd) from q [B,H,Lq,Dqk], k [B,Hkv,Lk,Dqk],
// v [B,Hkv,Lk,Dv] in the same layout; query head h reads KV head h / (H / Hkv). `draw` selects the
// generator's redraw (the kernel's draw()). draws.noise [B,H,C_eff*S,Dqk] replaces the generator, C_eff
// the most proposals of any batch (row r perturbs proposal r mod C_eff of its batch; a batch with fewer
// proposals reads the first rows; antithetic samples reuse rows [0, C_eff S) with the opposite sign);
// draws.query_landmarks / key_landmarks [B,H,C,Dqk] (unscaled, any C >= 1) replace pooling. All draws
// are bhld whatever the layout; D is their element type.
template <class T, class D = double>
void lara_attention(ConstTensor4<T> q, ConstTensor4<T> k, ConstTensor4<T> v, Tensor4<double> out, const Mask& mask = {},
                    const LaraConfig& config = {}, std::uint64_t draw = 0, const LaraDraws<D>& draws = {},
                    Layout layout = Layout::bhld) {
  using namespace detail_lara;
  using effattn::detail::cat;
  const char* who = "lara_attention";
  const Extents e = check_extents<T>(who, q, k, v, out, mask, layout);
  config.validate().raise();
  if (mask.causal != Causal::none) unsupported(who, "LARA has no causal form (its landmarks would see the future)");
  if (mask.window.active()) unsupported(who, "LARA has no sliding window");
  const bool padded = !mask.key_lengths.empty();
  const bool zero_compat = config.padding == Padding::zero_compat;
  // Without padding zero_compat zeroes nothing, so only a padded cross-attention call is refused.
  if (zero_compat && padded && e.Lq != e.Lk)
    unsupported(who,
                cat("padding = zero_compat pads queries and keys alike and needs Lq == Lk (", e.Lq, " vs ", e.Lk, ")"));
  const bool user = draws.query_landmarks.has_value() || draws.key_landmarks.has_value();
  Index C = config.num_landmarks;  // the caller's landmarks bring their own count
  if (user) {
    if (!draws.query_landmarks || !draws.key_landmarks)
      shape_fail(who, "draws.query_landmarks and draws.key_landmarks come together");
    C = draws.key_landmarks->dimension(2);
    for (const auto& l : {*draws.query_landmarks, *draws.key_landmarks})
      if (l.dimension(0) != e.B || l.dimension(1) != e.H || l.dimension(2) != C || l.dimension(3) != e.Dqk || C < 1)
        shape_fail(who,
                   cat("landmarks must both be [B, H, C, Dqk] = [", e.B, ", ", e.H, ", C, ", e.Dqk, "] with C >= 1"));
  }
  const bool grid = config.grid.active();
  if (grid) {
    if (e.Lq != e.Lk || e.Lq != config.grid.rows * config.grid.cols)
      shape_fail(who, cat("a ", config.grid.rows, " x ", config.grid.cols, " grid needs Lq = Lk = ",
                          config.grid.rows * config.grid.cols, " (Lq = ", e.Lq, ", Lk = ", e.Lk, ")"));
    if (padded) unsupported(who, "a 2-D grid takes no key padding");
  }
  const Index side = static_cast<Index>(std::llround(std::sqrt(static_cast<double>(config.num_landmarks))));
  // Real keys, real queries, and the lengths the landmarks pool over, of batch b.
  struct Sides {
    Index nk, nq, q_side, k_side, c_eff;
  };
  const auto sides_of = [&](Index b) {
    Sides x{};
    x.nk = padded ? mask.key_lengths[ix(b)] : e.Lk;
    // With Lq == Lk a key length is the sequence's token count, so it pads the queries too.
    x.nq = padded && e.Lq == e.Lk ? x.nk : e.Lq;
    // exclude: only the real tokens; zero_compat: every position, padded ones as zero rows.
    x.q_side = zero_compat ? e.Lq : x.nq;
    x.k_side = zero_compat ? e.Lk : x.nk;
    if (x.nk == 0)
      x.c_eff = 0;  // no query sees a key: nothing to propose
    else if (user)
      x.c_eff = C;
    else if (grid)
      x.c_eff = std::min(side, config.grid.rows) * std::min(side, config.grid.cols);
    else
      x.c_eff = std::min({C, x.q_side, x.k_side});
    return x;
  };
  const bool stochastic = config.sampling == Sampling::stochastic;
  if (draws.noise) {
    if (!stochastic) config_fail(who, "draws.noise needs sampling = stochastic");
    // One row per proposal and sample, for the batch with the most proposals.
    Index c_max = 0;
    for (Index b = 0; b < e.B; ++b) c_max = std::max(c_max, sides_of(b).c_eff);
    const auto& n = *draws.noise;
    const Index rows = c_max * config.samples_per_proposal;
    if (n.dimension(0) != e.B || n.dimension(1) != e.H || n.dimension(2) != rows || n.dimension(3) != e.Dqk)
      shape_fail(who,
                 cat("draws.noise must be [B, H, C_eff * S, Dqk] = [", e.B, ", ", e.H, ", ", rows, ", ", e.Dqk, "]"));
  }

  const double scale = default_scale(config.scale, e.Dqk);
  const double root = std::sqrt(scale);
  const double sigma = stochastic ? noise_sigma(config.noise, scale) : 0.0;
  const Index group = e.Hkv > 0 ? e.H / e.Hkv : 1;
  const std::size_t dq = ix(e.Dqk), dv = ix(e.Dv);

  for (Index b = 0; b < e.B; ++b) {
    const Sides sd = sides_of(b);
    const Index nk = sd.nk, nq = sd.nq;
    for (Index h = 0; h < e.H; ++h) {
      const Index hk = h / group;
      Rows qs = read_rows(q, layout, b, h, e.Lq, e.Dqk, root);
      Rows ks = read_rows(k, layout, b, hk, e.Lk, e.Dqk, root);
      Rows vs = read_rows(v, layout, b, hk, e.Lk, e.Dv);
      if (zero_compat) {
        for (Index n = nq; n < e.Lq; ++n) std::fill(qs[ix(n)].begin(), qs[ix(n)].end(), 0.0);
        for (Index m = nk; m < e.Lk; ++m) {
          std::fill(ks[ix(m)].begin(), ks[ix(m)].end(), 0.0);
          std::fill(vs[ix(m)].begin(), vs[ix(m)].end(), 0.0);
        }
      }
      for (Index n = 0; n < e.Lq; ++n)
        for (Index d = 0; d < e.Dv; ++d) at(out, layout, b, h, n, d) = 0.0;
      if (sd.c_eff == 0) continue;  // no key, or no query to pool (Lq = 0)

      // 1. Landmarks (canonical units) and proposal means.
      Rows qbar, kbar;
      if (user) {
        for (Index c = 0; c < C; ++c) {
          Row ql(dq), kl(dq);
          for (Index d = 0; d < e.Dqk; ++d) {
            ql[ix(d)] = static_cast<double>(draws.query_landmarks->data()[((b * e.H + h) * C + c) * e.Dqk + d]) * root;
            kl[ix(d)] = static_cast<double>(draws.key_landmarks->data()[((b * e.H + h) * C + c) * e.Dqk + d]) * root;
          }
          qbar.push_back(ql);
          kbar.push_back(kl);
        }
      } else if (grid) {
        const std::size_t rows = ix(config.grid.rows), cols = ix(config.grid.cols);
        const std::size_t out_r = std::min(ix(side), rows), out_c = std::min(ix(side), cols);
        qbar = grid_pool(qs, rows, cols, out_r, out_c, dq);
        kbar = grid_pool(ks, rows, cols, out_r, out_c, dq);
      } else {
        qbar = segment_means(qs, ix(sd.q_side), ix(sd.c_eff), dq);
        kbar = segment_means(ks, ix(sd.k_side), ix(sd.c_eff), dq);
      }
      const std::size_t ce = qbar.size();
      if (config.mixed) {
        Rows mixed;
        for (std::size_t p = 0; p < ce; ++p) {
          std::vector<double> logit;
          for (std::size_t c = 0; c < ce; ++c) logit.push_back(dot(kbar[p], kbar[c]));
          mixed.push_back(softmax_combine(logit, kbar, dq));
        }
        kbar = mixed;
      }
      Rows mu(ce, Row(dq));
      for (std::size_t c = 0; c < ce; ++c)
        for (std::size_t d = 0; d < dq; ++d) mu[c][d] = qbar[c][d] + kbar[c][d];

      // 2. Samples and their owners.
      Rows w;
      std::vector<std::size_t> own;
      if (!stochastic) {
        w = mu;
        for (std::size_t c = 0; c < ce; ++c) own.push_back(c);
      } else {
        const std::size_t rows = ce * ix(config.samples_per_proposal);
        const auto rng = effattn::detail::draw_stream(config.seed, b, h, draw);
        Rows eps(rows, Row(dq));
        for (std::size_t r = 0; r < rows; ++r)
          for (std::size_t i = 0; i < dq; ++i)
            eps[r][i] =
                draws.noise
                    ? static_cast<double>(
                          draws.noise
                              ->data()[((b * e.H + h) * draws.noise->dimension(2) + static_cast<Index>(r)) * e.Dqk +
                                       static_cast<Index>(i)])
                    : rng.normal(r * dq + i);
        for (double sign : {1.0, -1.0}) {
          if (sign < 0 && !config.antithetic) break;
          for (std::size_t r = 0; r < rows; ++r) {
            Row x = mu[r % ce];
            for (std::size_t i = 0; i < dq; ++i) x[i] += sign * sigma * eps[r][i];
            w.push_back(x);
            own.push_back(r % ce);
          }
        }
      }
      const std::size_t s_tot = w.size();

      // 3. f(w_s) and LSE_m over the real keys.
      std::vector<double> lk(s_tot);
      Rows f(s_tot);
      for (std::size_t s = 0; s < s_tot; ++s) {
        std::vector<double> a;
        for (Index m = 0; m < nk; ++m) a.push_back(dot(w[s], ks[ix(m)]) - half_square(ks[ix(m)]));
        lk[s] = log_sum_exp(a);
        f[s] = softmax_combine(a, vs, dv);
      }

      // 4. Weighting: log alpha[s][n] and the log-proposal of each sample.
      std::vector<double> log_g_own(s_tot), log_g_mix(s_tot);  // G[s, own(s)] and LSE_c G[s, c]
      for (std::size_t s = 0; s < s_tot; ++s) {
        std::vector<double> g;
        for (std::size_t c = 0; c < ce; ++c) g.push_back(dot(w[s], mu[c]) - half_square(mu[c]));
        log_g_own[s] = g[own[s]];
        log_g_mix[s] = log_sum_exp(g);
      }
      Rows log_alpha(s_tot, Row(ix(e.Lq), 0.0));
      std::vector<double> log_prop = log_g_mix;
      if (config.weighting == Weighting::mis_opt) {
        log_prop = log_g_own;
        // r[c][n] = softmax over the normalisation queries of qbar'_c.q'_n (those are the real queries,
        // or with zero_compat every position, the padded ones as q = 0).
        const Index n_norm = zero_compat ? e.Lq : nq;
        Rows r(ce, Row(ix(e.Lq)));
        for (std::size_t c = 0; c < ce; ++c) {
          std::vector<double> logit;
          for (Index n = 0; n < n_norm; ++n) logit.push_back(dot(qbar[c], qs[ix(n)]));
          const double big_r = log_sum_exp(logit);
          // Capped at 1: only a query outside the normalisation (padding = exclude) can exceed it.
          for (Index n = 0; n < e.Lq; ++n) r[c][ix(n)] = std::exp(std::min(dot(qbar[c], qs[ix(n)]) - big_r, 0.0));
        }
        for (std::size_t s = 0; s < s_tot; ++s) {
          // The balance heuristic over the list of samples: each proposal appears s_tot / ce times.
          const double bh =
              std::exp(log_g_own[s] - log_g_mix[s]) * static_cast<double>(ce) / static_cast<double>(s_tot);
          for (Index n = 0; n < e.Lq; ++n) {
            double mean_r = 0;
            for (std::size_t c = 0; c < ce; ++c) mean_r += r[c][ix(n)];
            mean_r /= static_cast<double>(ce);
            const double alpha = bh + config.alpha_coeff * (r[own[s]][ix(n)] - mean_r);
            log_alpha[s][ix(n)] = std::log(std::max(alpha, 1e-8));
          }
        }
      } else if (config.weighting == Weighting::mis_biased) {
        for (std::size_t s = 0; s < s_tot; ++s)
          for (Index n = 0; n < e.Lq; ++n) log_alpha[s][ix(n)] = dot(mu[own[s]], qs[ix(n)]);
      }

      // 5. Each query's self-normalised weights over the samples.
      for (Index n = 0; n < e.Lq; ++n) {
        std::vector<double> logit(s_tot);
        for (std::size_t s = 0; s < s_tot; ++s)
          logit[s] = log_alpha[s][ix(n)] + dot(w[s], qs[ix(n)]) + lk[s] - log_prop[s];
        const Row o = softmax_combine(logit, f, dv);
        for (Index d = 0; d < e.Dv; ++d) at(out, layout, b, h, n, d) = o[ix(d)];
      }
    }
  }
}

}  // namespace reference

EFFATTN_END_NAMESPACE
