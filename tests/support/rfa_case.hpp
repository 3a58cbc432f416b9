#pragma once
// One random-feature attention test case: a plain description (shape, layout, mask, RfaConfig, where
// the projection comes from, gate, seed), the seeded inputs it implies, the kernel RfaAttention<T>,
// the double reference (reference::rfa_attention, given the kernel's own projection so both use the
// same random matrices) and the comparison of the two. A failure prints the spec, which is enough to
// rebuild it. Buffer and Scalars come from softmax_case.hpp.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <effattn/kinds/rfa.hpp>
#include <effattn/reference/rfa.hpp>

#include "support/compare.hpp"
#include "support/random.hpp"
#include "support/softmax_case.hpp"

namespace effattn_test {

using effattn::Compat;
using effattn::Feature;
using effattn::Projection;
using effattn::RfaConfig;
template <class T>
using RfaAttention = effattn::RfaAttention<T>;

struct RfaSpec {
  Index B = 1, H = 1, Hkv = 1, Lq = 1, Lk = 1, Dqk = 8, Dv = 8;
  Layout layout = Layout::bhld;
  Index offset = 0;  // misalignment of every input and output, in elements
  Causal causal = Causal::none;
  std::vector<Index> key_lengths{};  // [B] or empty
  RfaConfig config{};
  // false: RfaAttention(config, Hkv, Dqk), which draws the projection (relu and elu_plus_one: none).
  // true: RfaAttention(config, Projection) with an iid N(0, 1) matrix of config.num_features rows,
  // one per KV head (a single shared one with config.share_across_heads), drawn from the seed.
  bool caller_projection = false;
  bool gated = false;  // a gate [B, Hkv, Lk] uniform in [gate_lo, gate_hi] (the gate overload)
  double gate_lo = 0, gate_hi = 1;
  // q, k ~ N(0, qk_std^2): the default 0.35 is the moderate regime of rfa.md section 9 at small Dqk
  // (|q'| ~ 1 for Dqk ~ 8..64 with scale 1/sqrt(Dqk)); v ~ N(0, v_std^2).
  double qk_std = 0.35, v_std = 1.0;
  std::uint64_t seed = 1;

  [[nodiscard]] std::string describe() const {
    std::ostringstream os;
    os << "feature=" << effattn::to_string(config.feature) << " compat=" << effattn::to_string(config.compat);
    if (config.feature == Feature::trigonometric) os << " l2_normalize=" << (config.l2_normalize ? "on" : "off");
    os << " projection=" << (caller_projection ? "caller" : "drawn") << " m=" << config.num_features
       << (config.orthogonal ? "" : " iid") << (config.share_across_heads ? " shared" : "");
    if (config.chunk) os << " chunk=" << config.chunk;
    if (config.scale) os << " scale=" << *config.scale;
    if (config.temperature != 1) os << " temperature=" << config.temperature;
    if (config.clamp) os << " clamp=" << *config.clamp;
    os << " B=" << B << " H=" << H << " Hkv=" << Hkv << " Lq=" << Lq << " Lk=" << Lk << " Dqk=" << Dqk << " Dv=" << Dv
       << " layout=" << (layout == Layout::bhld ? "bhld" : "blhd") << " offset=" << offset << " causal="
       << (causal == Causal::none ? "none" : causal == Causal::top_left ? "top_left" : "bottom_right");
    if (!key_lengths.empty()) {
      os << " key_lengths={";
      for (std::size_t i = 0; i < key_lengths.size(); ++i) os << (i ? "," : "") << key_lengths[i];
      os << "}";
    }
    if (gated) os << " gate=U[" << gate_lo << "," << gate_hi << "]";
    if (qk_std != 0.35) os << " qk_std=" << qk_std;
    os << " seed=" << seed << " config.seed=" << config.seed;
    return os.str();
  }
};

// An iid N(0, 1) projection [heads, rows, dim] from the given stream.
inline Projection gaussian_projection(Rng& rng, Index heads, Index rows, Index dim) {
  std::vector<double> w(static_cast<std::size_t>(heads * rows * dim));
  for (double& x : w) x = rng.normal();
  return Projection(std::move(w), heads, rows, dim);
}

template <class T>
RfaAttention<T> make_attention(const RfaSpec& spec) {
  if (!spec.caller_projection) return RfaAttention<T>(spec.config, spec.Hkv, spec.Dqk);
  Rng rng(spec.seed * 0x9E3779B97F4A7C15ull + 17);
  return RfaAttention<T>(spec.config, gaussian_projection(rng, spec.config.share_across_heads ? 1 : spec.Hkv,
                                                           spec.config.num_features, spec.Dqk));
}

template <class T>
struct RfaInputs {
  RfaSpec spec;
  Buffer<T> q, k, v, gate;

  [[nodiscard]] effattn::ConstTensor4<T> qv() const { return {q.data(), dims_in(spec.layout, spec.B, spec.H, spec.Lq, spec.Dqk)}; }
  [[nodiscard]] effattn::ConstTensor4<T> kv() const { return {k.data(), dims_in(spec.layout, spec.B, spec.Hkv, spec.Lk, spec.Dqk)}; }
  [[nodiscard]] effattn::ConstTensor4<T> vv() const { return {v.data(), dims_in(spec.layout, spec.B, spec.Hkv, spec.Lk, spec.Dv)}; }
  [[nodiscard]] effattn::ConstTensor3<T> gv() const { return {gate.data(), spec.B, spec.Hkv, spec.Lk}; }
  [[nodiscard]] std::array<Index, 4> out_dims() const { return dims_in(spec.layout, spec.B, spec.H, spec.Lq, spec.Dv); }
  [[nodiscard]] Index out_size() const { return spec.B * spec.H * spec.Lq * spec.Dv; }

  // Points into this object's vectors: valid while it lives.
  [[nodiscard]] effattn::Mask mask() const {
    effattn::Mask m;
    m.causal = spec.causal;
    m.key_lengths = spec.key_lengths;
    return m;
  }
  // Flat offset of element (b, h, l, d) of a tensor with `heads` heads and `len` rows of `dim`.
  [[nodiscard]] Index at(Index heads, Index len, Index dim, Index b, Index h, Index l, Index d) const {
    return spec.layout == Layout::bhld ? ((b * heads + h) * len + l) * dim + d : ((b * len + l) * heads + h) * dim + d;
  }
  [[nodiscard]] Index q_at(Index b, Index h, Index i, Index d) const { return at(spec.H, spec.Lq, spec.Dqk, b, h, i, d); }
  [[nodiscard]] Index k_at(Index b, Index h, Index j, Index d) const { return at(spec.Hkv, spec.Lk, spec.Dqk, b, h, j, d); }
  [[nodiscard]] Index v_at(Index b, Index h, Index j, Index d) const { return at(spec.Hkv, spec.Lk, spec.Dv, b, h, j, d); }
  [[nodiscard]] Index out_at(Index b, Index h, Index i, Index d) const { return at(spec.H, spec.Lq, spec.Dv, b, h, i, d); }
};

template <class T>
RfaInputs<T> make_rfa_inputs(const RfaSpec& spec) {
  RfaInputs<T> in;
  in.spec = spec;
  Rng rng(spec.seed);
  in.q = random_buffer<T>(rng, spec.B * spec.H * spec.Lq * spec.Dqk, spec.offset, spec.qk_std);
  in.k = random_buffer<T>(rng, spec.B * spec.Hkv * spec.Lk * spec.Dqk, spec.offset, spec.qk_std);
  in.v = random_buffer<T>(rng, spec.B * spec.Hkv * spec.Lk * spec.Dv, spec.offset, spec.v_std);
  if (spec.gated) {
    const Index n = spec.B * spec.Hkv * spec.Lk;
    in.gate = Buffer<T>(n, spec.offset);
    for (Index i = 0; i < n; ++i) in.gate[i] = static_cast<T>(spec.gate_lo + (spec.gate_hi - spec.gate_lo) * rng.uniform());
  }
  return in;
}

// The reference on the kernel's projection and (effective) config, in the inputs' layout.
template <class T>
std::vector<double> rfa_reference(const RfaInputs<T>& in, const RfaAttention<T>& attn) {
  std::vector<double> out(static_cast<std::size_t>(in.out_size()), std::numeric_limits<double>::quiet_NaN());
  std::optional<effattn::ConstTensor3<T>> gate;
  if (in.spec.gated) gate = in.gv();
  effattn::reference::rfa_attention<T>(in.qv(), in.kv(), in.vv(), effattn::Tensor4<double>(out.data(), in.out_dims()),
                                       in.mask(), attn.config(), attn.projection(), in.spec.layout, gate);
  return out;
}

// Outputs start as NaN so an element the kernel forgets to write cannot pass.
template <class T>
Buffer<T> run_rfa(const RfaInputs<T>& in, const RfaAttention<T>& attn,
                  effattn::Executor executor = effattn::Executor::serial()) {
  Buffer<T> out(in.out_size(), in.spec.offset, std::numeric_limits<T>::quiet_NaN());
  effattn::Options<T> options;
  options.layout = in.spec.layout;
  options.executor = executor;
  const effattn::Mask mask = in.mask();
  const effattn::Tensor4<T> o(out.data(), in.out_dims());
  if (in.spec.gated) attn.forward(in.qv(), in.kv(), in.vv(), in.gv(), o, mask, options);
  else attn.forward(in.qv(), in.kv(), in.vv(), o, mask, options);
  return out;
}

// Default tolerances of the kernel against the double reference, relative to max|ref| of the case
// (the output's natural unit: a ratio of weighted sums of v rows), for the spec's moderate inputs.
//  * double: the features carry a few ulp of exp / sin / cos error and the sums over <= ~300 keys and
//    <= ~130 features add a few hundred ulp at most, ~1e-13. Measured worst over the sweep: 1.3e-15
//    (trigonometric maps at m = 1: 1.5e-14, see below). 1e-11 leaves a wide margin for other compilers
//    and ISAs, while a wrong mask, alignment, stabiliser, constant factor or head index is off by O(0.1).
//  * float, positive / hyperbolic / relu / elu_plus_one: the same budget at 2^-24 is ~1e-5; measured
//    worst over the sweep 6.6e-7, so 1e-5 (15x).
//  * float, trigonometric / hkunlp_fourier: sin and cos of u ~ |w||x'| (a few radians) carry ~1e-7
//    absolute error, and a weight phi(q).phi(k) is a sum of terms of both signs, so the denominator
//    can be much smaller than its terms and cancellation amplifies the relative error. Typically the
//    denominator is a sum over keys of kernel estimates ~0.4 each and the error is as small as for the
//    other maps (4.5e-7), but with m = 1 (one cosine per key) it reached 4.7e-6; 5e-5 is 10x that.
template <class T>
double rfa_tolerance(Feature feature) {
  const bool trig = feature == Feature::trigonometric || feature == Feature::hkunlp_fourier;
  if constexpr (sizeof(T) == 8) return 1e-11;
  else return trig ? 5e-5 : 1e-5;
}

inline double max_abs(const std::vector<double>& x) {
  double m = 0;
  for (double e : x) m = std::max(m, std::abs(e));
  return m;
}

// |got - want| <= rel * max|want| elementwise; where the reference is exactly 0 (a query that sees no
// key, or whose weights are all exactly 0) the kernel must give exactly 0 as well.
template <class T>
::testing::AssertionResult compare_rfa(const RfaInputs<T>& in, const Buffer<T>& got, const std::vector<double>& want,
                                       double rel, const std::string& extra = {}) {
  const double atol = rel * max_abs(want);
  const auto od = in.out_dims();
  return all_close_with(
      "out", got.data(), want.data(), {od.begin(), od.end()}, axes_of(in.spec.layout),
      [&](Index i) { return Tolerance{want[static_cast<std::size_t>(i)] == 0 ? 0.0 : atol, 0}; },
      in.spec.describe() + extra);
}

// The largest |got - want| / max|want| (0 when the reference is all 0), for recording measurements.
template <class T>
double relative_error(const Buffer<T>& got, const std::vector<double>& want) {
  const double scale = max_abs(want);
  double worst = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    const double d = std::abs(static_cast<double>(got[static_cast<Index>(i)]) - want[i]);
    worst = std::max(worst, std::isnan(d) ? INFINITY : d);
  }
  return scale > 0 ? worst / scale : worst;
}

// Kernel against reference for one spec; rel < 0 takes rfa_tolerance<T>(feature). worst (optional)
// receives the measured relative error.
template <class T>
::testing::AssertionResult check_rfa_case(const RfaSpec& spec, double rel = -1, double* worst = nullptr) {
  if (rel < 0) rel = rfa_tolerance<T>(spec.config.feature);
  try {
    const RfaAttention<T> attn = make_attention<T>(spec);
    const RfaInputs<T> in = make_rfa_inputs<T>(spec);
    const std::vector<double> want = rfa_reference(in, attn);
    const Buffer<T> got = run_rfa(in, attn);
    if (worst) *worst = std::max(*worst, relative_error(got, want));
    return compare_rfa(in, got, want, rel);
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw: " << e.what() << "\n  case: " << spec.describe();
  }
}

template <class T>
bool same_bytes(const Buffer<T>& a, const Buffer<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.size()) * sizeof(T)) == 0;
}

// Tokens [t0, t1) of a [B, heads, len, dim] tensor (in `layout`) as a new [B, heads, t1 - t0, dim] one.
template <class T>
Buffer<T> slice_tokens(const Buffer<T>& src, Layout layout, Index B, Index heads, Index len, Index dim, Index t0,
                       Index t1) {
  const Index n = t1 - t0;
  Buffer<T> dst(B * heads * n * dim);
  const auto at = [&](Index L, Index b, Index h, Index l, Index d) {
    return layout == Layout::bhld ? ((b * heads + h) * L + l) * dim + d : ((b * L + l) * heads + h) * dim + d;
  };
  for (Index b = 0; b < B; ++b)
    for (Index h = 0; h < heads; ++h)
      for (Index l = 0; l < n; ++l)
        for (Index d = 0; d < dim; ++d) dst[at(n, b, h, l, d)] = src[at(len, b, h, t0 + l, d)];
  return dst;
}

// Gate entries [t0, t1) of every (b, kv head) of a [B, Hkv, L] gate.
template <class T>
Buffer<T> slice_gate(const Buffer<T>& src, Index B, Index heads, Index len, Index t0, Index t1) {
  Buffer<T> dst(B * heads * (t1 - t0));
  for (Index s = 0; s < B * heads; ++s)
    for (Index l = t0; l < t1; ++l) dst[s * (t1 - t0) + l - t0] = src[s * len + l];
  return dst;
}

}  // namespace effattn_test
