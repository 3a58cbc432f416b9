#pragma once
// One softmax attention test case: a plain description (shape, layout, mask, config, seed), the seeded
// inputs it implies, the double reference, the kernel, and the comparison of the two. Tests build
// lists of CaseSpec and call check_case; a failure prints the spec, which is enough to rebuild it.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <effattn/kinds/softmax.hpp>
#include <effattn/reference/softmax.hpp>

#include "support/compare.hpp"
#include "support/random.hpp"

namespace effattn_test {

using effattn::Causal;
using effattn::Layout;

// Every typed suite runs over both scalar types the kinds support.
using Scalars = ::testing::Types<float, double>;

// A heap buffer whose first element sits `offset` elements past an allocation boundary, so kernels
// are exercised on base pointers that are not packet-aligned.
template <class T>
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(Index n, Index offset = 0, T fill = T{})
      : storage_(new T[static_cast<std::size_t>(n + offset + 1)]), offset_(offset), size_(n) {
    std::fill_n(storage_.get(), n + offset + 1, fill);
  }
  [[nodiscard]] T* data() const { return storage_ ? storage_.get() + offset_ : nullptr; }
  [[nodiscard]] Index size() const { return size_; }
  T& operator[](Index i) const { return data()[i]; }

 private:
  std::unique_ptr<T[]> storage_;
  Index offset_ = 0;
  Index size_ = 0;
};

enum class BiasKind { none, boolean, additive_f32, additive_f64 };

struct CaseSpec {
  Index B = 1, H = 1, Hkv = 1, Lq = 1, Lk = 1, Dqk = 8, Dv = 8;
  Layout layout = Layout::bhld;
  Index offset = 0;  // misalignment of every input and output, in elements
  Causal causal = Causal::none;
  effattn::Window window{};
  std::vector<Index> key_lengths{};  // [B] or empty
  std::vector<Index> cu_q{}, cu_k{};  // [S+1] or empty
  BiasKind bias = BiasKind::none;
  std::array<Index, 4> bias_shape{};  // all 0: [B,H,Lq,Lk]
  double keep_prob = 0.7;             // boolean bias: probability of "attend"
  double bias_std = 2.0;              // additive bias: N(0, bias_std^2)
  effattn::SoftmaxConfig config{};
  bool with_lse = true;
  double qk_std = 1.0, v_std = 1.0;
  std::uint64_t seed = 1;

  [[nodiscard]] std::array<Index, 4> bias_extents() const {
    return bias_shape == std::array<Index, 4>{} ? std::array<Index, 4>{B, H, Lq, Lk} : bias_shape;
  }

  [[nodiscard]] std::string describe() const {
    std::ostringstream os;
    const auto list = [&](const char* name, const std::vector<Index>& xs) {
      if (xs.empty()) return;
      os << " " << name << "={";
      for (std::size_t i = 0; i < xs.size(); ++i) os << (i ? "," : "") << xs[i];
      os << "}";
    };
    os << "B=" << B << " H=" << H << " Hkv=" << Hkv << " Lq=" << Lq << " Lk=" << Lk << " Dqk=" << Dqk << " Dv=" << Dv
       << " layout=" << (layout == Layout::bhld ? "bhld" : "blhd") << " offset=" << offset << " causal="
       << (causal == Causal::none ? "none" : causal == Causal::top_left ? "top_left" : "bottom_right");
    if (window.active()) os << " window=(" << window.left << "," << window.right << ")";
    list("key_lengths", key_lengths);
    list("cu_seqlens_q", cu_q);
    list("cu_seqlens_k", cu_k);
    if (bias != BiasKind::none) {
      const auto s = bias_extents();
      os << " bias="
         << (bias == BiasKind::boolean ? "bool" : bias == BiasKind::additive_f32 ? "additive_f32" : "additive_f64") << "["
         << s[0] << "," << s[1] << "," << s[2] << "," << s[3] << "]";
    }
    if (config.scale) os << " scale=" << *config.scale;
    if (config.softcap > 0) os << " softcap=" << config.softcap;
    if (!config.alibi_slopes.empty()) os << " alibi";
    if (config.split_kv > 0) os << " split_kv=" << config.split_kv;
    if (qk_std != 1.0) os << " qk_std=" << qk_std;
    os << " lse=" << (with_lse ? "yes" : "no") << " seed=" << seed;
    return os.str();
  }
};

inline std::array<Index, 4> dims_in(Layout layout, Index b, Index h, Index l, Index d) {
  return layout == Layout::bhld ? std::array<Index, 4>{b, h, l, d} : std::array<Index, 4>{b, l, h, d};
}
inline const char* axes_of(Layout layout) { return layout == Layout::bhld ? "[b,h,i,d]" : "[b,i,h,d]"; }

// Slopes of the ALiBi paper for H heads: 2^(-8(h+1)/H).
inline std::vector<double> alibi_slopes(Index heads) {
  std::vector<double> s(static_cast<std::size_t>(heads));
  for (Index h = 0; h < heads; ++h) s[static_cast<std::size_t>(h)] = std::exp2(-8.0 * static_cast<double>(h + 1) / static_cast<double>(heads));
  return s;
}

template <class T>
struct Inputs {
  CaseSpec spec;
  Buffer<T> q, k, v;
  Buffer<bool> keep;
  Buffer<float> bias_f32;
  Buffer<double> bias_f64;

  [[nodiscard]] effattn::ConstTensor4<T> qv() const { return {q.data(), dims_in(spec.layout, spec.B, spec.H, spec.Lq, spec.Dqk)}; }
  [[nodiscard]] effattn::ConstTensor4<T> kv() const { return {k.data(), dims_in(spec.layout, spec.B, spec.Hkv, spec.Lk, spec.Dqk)}; }
  [[nodiscard]] effattn::ConstTensor4<T> vv() const { return {v.data(), dims_in(spec.layout, spec.B, spec.Hkv, spec.Lk, spec.Dv)}; }
  [[nodiscard]] std::array<Index, 4> out_dims() const { return dims_in(spec.layout, spec.B, spec.H, spec.Lq, spec.Dv); }
  [[nodiscard]] Index out_size() const { return spec.B * spec.H * spec.Lq * spec.Dv; }
  [[nodiscard]] Index lse_size() const { return spec.B * spec.H * spec.Lq; }

  // Points into this object's vectors: valid while it lives.
  [[nodiscard]] effattn::Mask mask() const {
    effattn::Mask m;
    m.causal = spec.causal;
    m.window = spec.window;
    m.key_lengths = spec.key_lengths;
    m.cu_seqlens_q = spec.cu_q;
    m.cu_seqlens_k = spec.cu_k;
    const auto s = spec.bias_extents();
    if (spec.bias == BiasKind::boolean) m.bias = effattn::Bias::boolean(keep.data(), s);
    if (spec.bias == BiasKind::additive_f32) m.bias = effattn::Bias::additive(bias_f32.data(), s);
    if (spec.bias == BiasKind::additive_f64) m.bias = effattn::Bias::additive(bias_f64.data(), s);
    return m;
  }
};

template <class T>
Buffer<T> random_buffer(Rng& rng, Index n, Index offset, double stddev) {
  Buffer<T> b(n, offset);
  for (Index i = 0; i < n; ++i) b[i] = static_cast<T>(stddev * rng.normal());
  return b;
}

template <class T>
Inputs<T> make_inputs(const CaseSpec& spec) {
  Inputs<T> in;
  in.spec = spec;
  Rng rng(spec.seed);
  in.q = random_buffer<T>(rng, spec.B * spec.H * spec.Lq * spec.Dqk, spec.offset, spec.qk_std);
  in.k = random_buffer<T>(rng, spec.B * spec.Hkv * spec.Lk * spec.Dqk, spec.offset, spec.qk_std);
  in.v = random_buffer<T>(rng, spec.B * spec.Hkv * spec.Lk * spec.Dv, spec.offset, spec.v_std);
  const auto s = spec.bias_extents();
  const Index nb = s[0] * s[1] * s[2] * s[3];
  if (spec.bias == BiasKind::boolean) {
    in.keep = Buffer<bool>(nb, spec.offset);
    for (Index i = 0; i < nb; ++i) in.keep[i] = rng.uniform() < spec.keep_prob;
  }
  if (spec.bias == BiasKind::additive_f32) in.bias_f32 = random_buffer<float>(rng, nb, spec.offset, spec.bias_std);
  if (spec.bias == BiasKind::additive_f64) in.bias_f64 = random_buffer<double>(rng, nb, spec.offset, spec.bias_std);
  return in;
}

struct RefResult {
  std::vector<double> out;  // out_dims()
  std::vector<double> lse;  // [B,H,Lq]
};

template <class T>
RefResult reference(const Inputs<T>& in) {
  RefResult r;
  r.out.assign(static_cast<std::size_t>(in.out_size()), std::numeric_limits<double>::quiet_NaN());
  r.lse.assign(static_cast<std::size_t>(in.lse_size()), std::numeric_limits<double>::quiet_NaN());
  effattn::reference::softmax_attention<T>(in.qv(), in.kv(), in.vv(), effattn::Tensor4<double>(r.out.data(), in.out_dims()),
                                           in.mask(), in.spec.config, in.spec.layout,
                                           effattn::Tensor3<double>(r.lse.data(), in.spec.B, in.spec.H, in.spec.Lq));
  return r;
}

template <class T>
struct KernelResult {
  Buffer<T> out;
  Buffer<T> lse;
};

// Outputs start as NaN so an element the kernel forgets to write cannot pass.
template <class T>
KernelResult<T> run_kernel(const Inputs<T>& in, effattn::Executor executor = effattn::Executor::serial(),
                           std::span<std::byte> workspace = {}) {
  KernelResult<T> r{Buffer<T>(in.out_size(), in.spec.offset, std::numeric_limits<T>::quiet_NaN()),
                    Buffer<T>(in.lse_size(), in.spec.offset, std::numeric_limits<T>::quiet_NaN())};
  const effattn::SoftmaxAttention<T> attn(in.spec.config);
  effattn::Options<T> options;
  options.layout = in.spec.layout;
  options.executor = executor;
  options.workspace = workspace;
  if (in.spec.with_lse) options.lse = effattn::Tensor3<T>(r.lse.data(), in.spec.B, in.spec.H, in.spec.Lq);
  const effattn::Mask mask = in.mask();
  attn.forward(in.qv(), in.kv(), in.vv(), effattn::Tensor4<T>(r.out.data(), in.out_dims()), mask, options);
  return r;
}

template <class T>
::testing::AssertionResult compare(const Inputs<T>& in, const KernelResult<T>& got, const RefResult& want,
                                   Tolerance tol = kTolerance<T>) {
  const std::string context = in.spec.describe();
  const auto od = in.out_dims();
  auto r = all_close("out", got.out.data(), want.out.data(), {od.begin(), od.end()}, axes_of(in.spec.layout), tol, context);
  if (!r || !in.spec.with_lse) return r;
  return all_close("lse", got.lse.data(), want.lse.data(), {in.spec.B, in.spec.H, in.spec.Lq}, "[b,h,i]", tol, context);
}

// Kernel against reference for one spec.
template <class T>
::testing::AssertionResult check_case(const CaseSpec& spec, Tolerance tol = kTolerance<T>) {
  const Inputs<T> in = make_inputs<T>(spec);
  const RefResult want = reference(in);
  KernelResult<T> got;
  try {
    got = run_kernel(in);
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "forward threw: " << e.what() << "\n  case: " << spec.describe();
  }
  return compare(in, got, want, tol);
}

}  // namespace effattn_test
