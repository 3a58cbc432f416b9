#pragma once
// One hypercube attention test case: a plain description (shape, layout, key padding, config, seed),
// the seeded inputs it implies, the double reference (reference::hypercube_attention), the kernel
// HypercubeAttention<T>, and the comparison of the two. A failure prints the spec, which is enough to
// rebuild it. Buffer, random_buffer, dims_in and Scalars come from softmax_case.hpp.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <effattn/kinds/hypercube.hpp>
#include <effattn/reference/hypercube.hpp>

#include "support/compare.hpp"
#include "support/random.hpp"
#include "support/softmax_case.hpp"

namespace effattn_test {

using effattn::HypercubeConfig;
template <class T>
using HypercubeAttention = effattn::HypercubeAttention<T>;

// Tolerance of the kernel against the double reference, and of identities between two kernel runs,
// relative to max|v| (every output row is a convex combination of value rows); lse relative to
// max(1, |lse|).
//  * double: a row is a softmax over at most 1 + ceil(log2 N) blocks of keys (<= a few hundred terms
//    here) of logits of magnitude O(10): a few hundred ulp at most, ~1e-14; 1e-12 leaves headroom for
//    the vectorised exp and other compilers, while a wrong neighbour or a missed mask is off by O(0.1).
//    Measured worst over the sweep 1.8e-15.
//  * float: the logits carry |s| 2^-24 ~ 1e-6 of rounding at |s| ~ 10 and the weighted sums a few
//    1e-7 more; measured worst over the sweep 6.7e-7 (9.4e-7 with logits up to ~40), so 1e-5 is 10x.
template <class T>
constexpr double kCubeTol = sizeof(T) == 8 ? 1e-12 : 1e-5;

struct CubeSpec {
  Index B = 1, H = 1, Hkv = 1, L = 1, Dqk = 8, Dv = 8;
  Layout layout = Layout::bhld;
  Index offset = 0;                  // misalignment of every input and output, in elements
  std::vector<Index> key_lengths{};  // [B] or empty
  HypercubeConfig config{};
  bool with_lse = true;
  double qk_std = 1.0, v_std = 1.0;
  std::uint64_t seed = 1;

  [[nodiscard]] std::string describe() const {
    std::ostringstream os;
    os << "block=" << config.block << " B=" << B << " H=" << H << " Hkv=" << Hkv << " L=" << L << " Dqk=" << Dqk
       << " Dv=" << Dv << " layout=" << (layout == Layout::bhld ? "bhld" : "blhd") << " offset=" << offset;
    if (!key_lengths.empty()) {
      os << " key_lengths={";
      for (std::size_t i = 0; i < key_lengths.size(); ++i) os << (i ? "," : "") << key_lengths[i];
      os << "}";
    }
    if (config.scale) os << " scale=" << *config.scale;
    if (qk_std != 1.0) os << " qk_std=" << qk_std;
    os << " lse=" << (with_lse ? "yes" : "no") << " seed=" << seed;
    return os.str();
  }
};

template <class T>
struct CubeInputs {
  CubeSpec spec;
  Buffer<T> q, k, v;

  [[nodiscard]] effattn::ConstTensor4<T> qv() const { return {q.data(), dims_in(spec.layout, spec.B, spec.H, spec.L, spec.Dqk)}; }
  [[nodiscard]] effattn::ConstTensor4<T> kv() const { return {k.data(), dims_in(spec.layout, spec.B, spec.Hkv, spec.L, spec.Dqk)}; }
  [[nodiscard]] effattn::ConstTensor4<T> vv() const { return {v.data(), dims_in(spec.layout, spec.B, spec.Hkv, spec.L, spec.Dv)}; }
  [[nodiscard]] std::array<Index, 4> out_dims() const { return dims_in(spec.layout, spec.B, spec.H, spec.L, spec.Dv); }
  [[nodiscard]] Index out_size() const { return spec.B * spec.H * spec.L * spec.Dv; }
  [[nodiscard]] Index lse_size() const { return spec.B * spec.H * spec.L; }

  // Points into this object's vectors: valid while it lives.
  [[nodiscard]] effattn::Mask mask() const {
    effattn::Mask m;
    m.key_lengths = spec.key_lengths;
    return m;
  }
  // Flat offset of element (b, h, l, d) of a tensor with `heads` heads of `dim` columns.
  [[nodiscard]] Index at(Index heads, Index dim, Index b, Index h, Index l, Index d) const {
    return spec.layout == Layout::bhld ? ((b * heads + h) * spec.L + l) * dim + d
                                       : ((b * spec.L + l) * heads + h) * dim + d;
  }
  [[nodiscard]] Index q_at(Index b, Index h, Index i, Index d) const { return at(spec.H, spec.Dqk, b, h, i, d); }
  [[nodiscard]] Index k_at(Index b, Index h, Index j, Index d) const { return at(spec.Hkv, spec.Dqk, b, h, j, d); }
  [[nodiscard]] Index v_at(Index b, Index h, Index j, Index d) const { return at(spec.Hkv, spec.Dv, b, h, j, d); }
  [[nodiscard]] Index out_at(Index b, Index h, Index i, Index d) const { return at(spec.H, spec.Dv, b, h, i, d); }
  [[nodiscard]] Index lse_at(Index b, Index h, Index i) const { return (b * spec.H + h) * spec.L + i; }
  [[nodiscard]] Index valid(Index b) const {
    return spec.key_lengths.empty() ? spec.L : spec.key_lengths[static_cast<std::size_t>(b)];
  }

  // The natural unit of the outputs: max|v| (1 if v is all zero).
  [[nodiscard]] double value_unit() const {
    double m = 0;
    for (Index i = 0; i < v.size(); ++i) m = std::max(m, std::abs(static_cast<double>(v[i])));
    return m > 0 ? m : 1.0;
  }
};

template <class T>
CubeInputs<T> make_cube_inputs(const CubeSpec& spec) {
  CubeInputs<T> in;
  in.spec = spec;
  Rng rng(spec.seed);
  in.q = random_buffer<T>(rng, spec.B * spec.H * spec.L * spec.Dqk, spec.offset, spec.qk_std);
  in.k = random_buffer<T>(rng, spec.B * spec.Hkv * spec.L * spec.Dqk, spec.offset, spec.qk_std);
  in.v = random_buffer<T>(rng, spec.B * spec.Hkv * spec.L * spec.Dv, spec.offset, spec.v_std);
  return in;
}

struct CubeRef {
  std::vector<double> out;  // out_dims()
  std::vector<double> lse;  // [B,H,L]
};

template <class T>
CubeRef cube_reference(const CubeInputs<T>& in) {
  CubeRef r;
  r.out.assign(static_cast<std::size_t>(in.out_size()), std::numeric_limits<double>::quiet_NaN());
  r.lse.assign(static_cast<std::size_t>(in.lse_size()), std::numeric_limits<double>::quiet_NaN());
  effattn::reference::hypercube_attention<T>(in.qv(), in.kv(), in.vv(), effattn::Tensor4<double>(r.out.data(), in.out_dims()),
                                             in.mask(), in.spec.config, in.spec.layout,
                                             effattn::Tensor3<double>(r.lse.data(), in.spec.B, in.spec.H, in.spec.L));
  return r;
}

template <class T>
struct CubeOut {
  Buffer<T> out;
  Buffer<T> lse;
};

// Outputs start as NaN so an element the kernel forgets to write cannot pass. The mask is the
// inputs' unless given.
template <class T>
CubeOut<T> run_cube(const CubeInputs<T>& in, const HypercubeAttention<T>& attn,
                    effattn::Executor executor = effattn::Executor::serial(), std::span<std::byte> workspace = {}) {
  CubeOut<T> r{Buffer<T>(in.out_size(), in.spec.offset, std::numeric_limits<T>::quiet_NaN()),
               Buffer<T>(in.lse_size(), in.spec.offset, std::numeric_limits<T>::quiet_NaN())};
  effattn::Options<T> options;
  options.layout = in.spec.layout;
  options.executor = executor;
  options.workspace = workspace;
  if (in.spec.with_lse) options.lse = effattn::Tensor3<T>(r.lse.data(), in.spec.B, in.spec.H, in.spec.L);
  const effattn::Mask mask = in.mask();
  attn.forward(in.qv(), in.kv(), in.vv(), effattn::Tensor4<T>(r.out.data(), in.out_dims()), mask, options);
  return r;
}

template <class T>
CubeOut<T> run_cube(const CubeInputs<T>& in, effattn::Executor executor = effattn::Executor::serial()) {
  return run_cube(in, HypercubeAttention<T>(in.spec.config), executor);
}

// out within rel * max|v| (exactly 0 where want is exactly 0: a row that sees no key), lse within
// rel * max(1, |want|) (-inf matched exactly). `worst` (optional) receives the largest error in
// those units over out and lse.
template <class T>
::testing::AssertionResult compare_cube(const CubeInputs<T>& in, const CubeOut<T>& got, const std::vector<double>& want_out,
                                        const std::vector<double>* want_lse, double rel, const std::string& context,
                                        double* worst = nullptr) {
  const double unit = in.value_unit();
  if (worst) {
    for (std::size_t i = 0; i < want_out.size(); ++i) {
      const double d = std::abs(static_cast<double>(got.out[static_cast<Index>(i)]) - want_out[i]);
      *worst = std::max(*worst, std::isnan(d) ? INFINITY : d / unit);
    }
    if (want_lse)
      for (std::size_t i = 0; i < want_lse->size(); ++i) {
        const double w = (*want_lse)[i], g = static_cast<double>(got.lse[static_cast<Index>(i)]);
        if (std::isinf(w) && g == w) continue;
        const double d = std::abs(g - w);
        *worst = std::max(*worst, std::isnan(d) ? INFINITY : d / std::max(1.0, std::abs(w)));
      }
  }
  const auto od = in.out_dims();
  auto r = all_close_with(
      "out", got.out.data(), want_out.data(), {od.begin(), od.end()}, axes_of(in.spec.layout),
      [&](Index i) { return Tolerance{want_out[static_cast<std::size_t>(i)] == 0 ? 0.0 : rel * unit, 0}; }, context);
  if (!r || !want_lse) return r;
  return all_close("lse", got.lse.data(), want_lse->data(), {in.spec.B, in.spec.H, in.spec.L}, "[b,h,i]",
                   Tolerance{rel, rel}, context);
}

// Kernel against reference for one spec.
template <class T>
::testing::AssertionResult check_cube_case(const CubeSpec& spec, double* worst = nullptr, double rel = kCubeTol<T>) {
  try {
    const CubeInputs<T> in = make_cube_inputs<T>(spec);
    const CubeRef want = cube_reference(in);
    const CubeOut<T> got = run_cube(in);
    return compare_cube(in, got, want.out, spec.with_lse ? &want.lse : nullptr, rel, spec.describe(), worst);
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw: " << e.what() << "\n  case: " << spec.describe();
  }
}

template <class T>
bool same_bits(const Buffer<T>& a, const Buffer<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.size()) * sizeof(T)) == 0;
}

template <class T>
std::vector<double> as_double(const Buffer<T>& b) {
  std::vector<double> out(static_cast<std::size_t>(b.size()));
  for (Index i = 0; i < b.size(); ++i) out[static_cast<std::size_t>(i)] = static_cast<double>(b[i]);
  return out;
}

}  // namespace effattn_test
