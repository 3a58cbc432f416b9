#pragma once
// One MRA test case: a plain description (shape, layout, key padding, MraConfig, seed), the seeded
// inputs it implies, the kernel MraAttention<T> with the selection it reports, the double reference
// (reference::mra_attention over that selection, and reference::mra_selection for the rule itself),
// and the comparison of the two. A failure prints the spec, which is enough to rebuild it. Buffer,
// random_buffer, dims_in and Scalars come from softmax_case.hpp.

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

#include <effattn/kinds/mra.hpp>
#include <effattn/reference/mra.hpp>

#include "support/compare.hpp"
#include "support/random.hpp"
#include "support/softmax_case.hpp"

namespace effattn_test {

using effattn::MraConfig;
using effattn::MraMode;
using effattn::MraSelection;
template <class T>
using MraAttention = effattn::MraAttention<T>;

// Tolerance of the kernel against the double reference (given the kernel's own selection), and of
// identities between two kernel runs, relative to max|v| (every output row is a convex combination of
// value rows); lse relative to max(1, |lse|).
//  * double: a row is one softmax over <= a few hundred exact logits and coarse logits of magnitude
//    O(10), merged once; a few hundred ulp at most, ~1e-14. 1e-12 leaves headroom for the vectorised
//    exp and other compilers, while a wrong tile, mean, count or mask is off by O(1e-2). Measured
//    worst over the sweep and the properties 2e-15.
//  * float: the logits carry |s| 2^-24 of rounding, the block means and the coarse logits (computed
//    in float by the kernel, in double by the reference) a few 1e-7 more, and the weighted sums a few
//    1e-7; at |s| <~ 10 that is ~1e-6. Measured worst 3.9e-7 (6.4e-7 with logits up to ~30, which
//    the sweep allows 3x), so 1e-5 is 25x.
template <class T>
constexpr double kMraTol = sizeof(T) == 8 ? 1e-12 : 1e-5;

inline std::string mra_config_text(const MraConfig& c) {
  std::ostringstream os;
  os << "block=" << c.block << " mode=" << (c.mode == MraMode::full ? "full" : "sparse");
  if (c.num_blocks > 0)
    os << " num_blocks=" << c.num_blocks;
  else
    os << " blocks_per_row=" << c.blocks_per_row;
  if (c.prior_first) os << " prior_first=" << c.prior_first;
  if (c.prior_diag) os << " prior_diag=" << c.prior_diag;
  if (c.scale) os << " scale=" << *c.scale;
  return os.str();
}

struct MraSpec {
  Index B = 1, H = 1, Hkv = 1, Lq = 1, Lk = 1, Dqk = 8, Dv = 8;
  Layout layout = Layout::bhld;
  Index offset = 0;                  // misalignment of every input and output, in elements
  std::vector<Index> key_lengths{};  // [B] or empty
  MraConfig config{};
  bool with_lse = true;
  double qk_std = 1.0, v_std = 1.0;
  std::uint64_t seed = 1;

  [[nodiscard]] Index query_blocks() const { return (Lq + config.block - 1) / config.block; }
  [[nodiscard]] Index key_blocks() const { return (Lk + config.block - 1) / config.block; }

  [[nodiscard]] std::string describe() const {
    std::ostringstream os;
    os << mra_config_text(config) << " B=" << B << " H=" << H << " Hkv=" << Hkv << " Lq=" << Lq << " Lk=" << Lk
       << " Dqk=" << Dqk << " Dv=" << Dv << " layout=" << (layout == Layout::bhld ? "bhld" : "blhd")
       << " offset=" << offset;
    if (!key_lengths.empty()) {
      os << " key_lengths={";
      for (std::size_t i = 0; i < key_lengths.size(); ++i) os << (i ? "," : "") << key_lengths[i];
      os << "}";
    }
    if (qk_std != 1.0) os << " qk_std=" << qk_std;
    if (v_std != 1.0) os << " v_std=" << v_std;
    os << " lse=" << (with_lse ? "yes" : "no") << " seed=" << seed;
    return os.str();
  }
};

template <class T>
struct MraInputs {
  MraSpec spec;
  Buffer<T> q, k, v;

  [[nodiscard]] effattn::ConstTensor4<T> qv() const { return {q.data(), dims_in(spec.layout, spec.B, spec.H, spec.Lq, spec.Dqk)}; }
  [[nodiscard]] effattn::ConstTensor4<T> kv() const { return {k.data(), dims_in(spec.layout, spec.B, spec.Hkv, spec.Lk, spec.Dqk)}; }
  [[nodiscard]] effattn::ConstTensor4<T> vv() const { return {v.data(), dims_in(spec.layout, spec.B, spec.Hkv, spec.Lk, spec.Dv)}; }
  [[nodiscard]] std::array<Index, 4> out_dims() const { return dims_in(spec.layout, spec.B, spec.H, spec.Lq, spec.Dv); }
  [[nodiscard]] Index out_size() const { return spec.B * spec.H * spec.Lq * spec.Dv; }
  [[nodiscard]] Index lse_size() const { return spec.B * spec.H * spec.Lq; }

  // Points into this object's vectors: valid while it lives.
  [[nodiscard]] effattn::Mask mask() const {
    effattn::Mask m;
    m.key_lengths = spec.key_lengths;
    return m;
  }
  // Flat offset of element (b, h, l, d) of a tensor with `heads` heads, `len` rows and `dim` columns.
  [[nodiscard]] Index at(Index heads, Index len, Index dim, Index b, Index h, Index l, Index d) const {
    return spec.layout == Layout::bhld ? ((b * heads + h) * len + l) * dim + d : ((b * len + l) * heads + h) * dim + d;
  }
  [[nodiscard]] Index q_at(Index b, Index h, Index i, Index d) const { return at(spec.H, spec.Lq, spec.Dqk, b, h, i, d); }
  [[nodiscard]] Index k_at(Index b, Index h, Index j, Index d) const { return at(spec.Hkv, spec.Lk, spec.Dqk, b, h, j, d); }
  [[nodiscard]] Index v_at(Index b, Index h, Index j, Index d) const { return at(spec.Hkv, spec.Lk, spec.Dv, b, h, j, d); }
  [[nodiscard]] Index out_at(Index b, Index h, Index i, Index d) const { return at(spec.H, spec.Lq, spec.Dv, b, h, i, d); }
  [[nodiscard]] Index lse_at(Index b, Index h, Index i) const { return (b * spec.H + h) * spec.Lq + i; }

  [[nodiscard]] Index real_keys(Index b) const {
    return spec.key_lengths.empty() ? spec.Lk : spec.key_lengths[static_cast<std::size_t>(b)];
  }
  // With Lq == Lk the key length pads the queries too.
  [[nodiscard]] bool query_real(Index b, Index i) const {
    return spec.key_lengths.empty() || spec.Lq != spec.Lk || i < spec.key_lengths[static_cast<std::size_t>(b)];
  }

  // The natural unit of the outputs: max|v| (1 if v is all zero).
  [[nodiscard]] double value_unit() const {
    double m = 0;
    for (Index i = 0; i < v.size(); ++i) m = std::max(m, std::abs(static_cast<double>(v[i])));
    return m > 0 ? m : 1.0;
  }
};

template <class T>
MraInputs<T> make_mra_inputs(const MraSpec& spec) {
  MraInputs<T> in;
  in.spec = spec;
  Rng rng(spec.seed);
  in.q = random_buffer<T>(rng, spec.B * spec.H * spec.Lq * spec.Dqk, spec.offset, spec.qk_std);
  in.k = random_buffer<T>(rng, spec.B * spec.Hkv * spec.Lk * spec.Dqk, spec.offset, spec.qk_std);
  in.v = random_buffer<T>(rng, spec.B * spec.Hkv * spec.Lk * spec.Dv, spec.offset, spec.v_std);
  return in;
}

template <class T>
struct MraOut {
  Buffer<T> out;
  Buffer<T> lse;
  MraSelection selection;
};

// Outputs start as NaN so an element the kernel forgets to write cannot pass; the selection starts
// filled with junk so a report that is not rewritten cannot pass either.
template <class T>
MraOut<T> run_mra(const MraInputs<T>& in, const MraAttention<T>& attn,
                  effattn::Executor executor = effattn::Executor::serial(), std::span<std::byte> workspace = {}) {
  MraOut<T> r{Buffer<T>(in.out_size(), in.spec.offset, std::numeric_limits<T>::quiet_NaN()),
              Buffer<T>(in.lse_size(), in.spec.offset, std::numeric_limits<T>::quiet_NaN()),
              MraSelection{7, 7, 7, 7, 7, {1, 2, 3}, {4, 5}}};
  effattn::Options<T> options;
  options.layout = in.spec.layout;
  options.executor = executor;
  options.workspace = workspace;
  if (in.spec.with_lse) options.lse = effattn::Tensor3<T>(r.lse.data(), in.spec.B, in.spec.H, in.spec.Lq);
  const effattn::Mask mask = in.mask();
  attn.forward(in.qv(), in.kv(), in.vv(), effattn::Tensor4<T>(r.out.data(), in.out_dims()), mask, options, r.selection);
  return r;
}

template <class T>
MraOut<T> run_mra(const MraInputs<T>& in, effattn::Executor executor = effattn::Executor::serial()) {
  return run_mra(in, MraAttention<T>(in.spec.config), executor);
}

struct MraRef {
  std::vector<double> out;  // out_dims()
  std::vector<double> lse;  // [B,H,Lq]
};

// The closed form over the given selection, in the inputs' layout.
template <class T>
MraRef mra_reference(const MraInputs<T>& in, const MraSelection& selection) {
  MraRef r;
  r.out.assign(static_cast<std::size_t>(in.out_size()), std::numeric_limits<double>::quiet_NaN());
  r.lse.assign(static_cast<std::size_t>(in.lse_size()), std::numeric_limits<double>::quiet_NaN());
  effattn::reference::mra_attention<T>(in.qv(), in.kv(), in.vv(), effattn::Tensor4<double>(r.out.data(), in.out_dims()),
                                       in.mask(), in.spec.config, selection, in.spec.layout,
                                       effattn::Tensor3<double>(r.lse.data(), in.spec.B, in.spec.H, in.spec.Lq));
  return r;
}

template <class T>
MraSelection mra_reference_selection(const MraInputs<T>& in) {
  return effattn::reference::mra_selection<T>(in.qv(), in.kv(), in.mask(), in.spec.config, in.spec.layout);
}

// The report describes this call: its extents, exactly budget tiles per (batch, head), each query
// block's key blocks strictly increasing and in range, offsets non-decreasing from 0 to cols.size().
inline ::testing::AssertionResult well_formed(const MraSelection& s, const MraSpec& spec) {
  const auto fail = [&](const std::string& what) {
    return ::testing::AssertionFailure() << "selection: " << what << "\n  case: " << spec.describe();
  };
  const Index nq = spec.query_blocks(), nk = spec.key_blocks();
  if (s.batch != spec.B || s.heads != spec.H || s.query_blocks != nq || s.key_blocks != nk || s.block != spec.config.block)
    return fail("extents B=" + std::to_string(s.batch) + " H=" + std::to_string(s.heads) + " nq=" +
                std::to_string(s.query_blocks) + " nk=" + std::to_string(s.key_blocks) +
                " block=" + std::to_string(s.block) + "; want B=" + std::to_string(spec.B) + " H=" +
                std::to_string(spec.H) + " nq=" + std::to_string(nq) + " nk=" + std::to_string(nk) +
                " block=" + std::to_string(spec.config.block));
  if (s.offsets.size() != static_cast<std::size_t>(spec.B * spec.H * (nq + 1)))
    return fail("offsets has " + std::to_string(s.offsets.size()) + " entries");
  const Index budget = spec.config.budget(nq, nk);
  Index expect_first = 0;
  for (Index b = 0; b < spec.B; ++b)
    for (Index h = 0; h < spec.H; ++h) {
      const Index o = (b * spec.H + h) * (nq + 1);
      if (s.offsets[static_cast<std::size_t>(o)] != expect_first)
        return fail("offsets of (" + std::to_string(b) + "," + std::to_string(h) + ") do not continue the previous head");
      for (Index I = 0; I < nq; ++I) {
        const Index first = s.offsets[static_cast<std::size_t>(o + I)], last = s.offsets[static_cast<std::size_t>(o + I + 1)];
        if (last < first || last > static_cast<Index>(s.cols.size())) return fail("offsets decrease or overrun cols");
        for (Index p = first; p < last; ++p) {
          const Index J = s.cols[static_cast<std::size_t>(p)];
          if (J < 0 || J >= nk) return fail("key block " + std::to_string(J) + " out of range");
          if (p > first && s.cols[static_cast<std::size_t>(p - 1)] >= J) return fail("key blocks not increasing");
        }
      }
      if (s.tiles(b, h) != budget)
        return fail("(" + std::to_string(b) + "," + std::to_string(h) + ") has " + std::to_string(s.tiles(b, h)) +
                    " tiles, budget " + std::to_string(budget));
      expect_first = s.offsets[static_cast<std::size_t>(o + nq)];
    }
  if (expect_first != static_cast<Index>(s.cols.size())) return fail("cols has entries past the last head");
  return ::testing::AssertionSuccess();
}

inline ::testing::AssertionResult same_selection(const MraSelection& got, const MraSelection& want,
                                                 const std::string& context) {
  if (got.batch == want.batch && got.heads == want.heads && got.query_blocks == want.query_blocks &&
      got.key_blocks == want.key_blocks && got.block == want.block && got.offsets == want.offsets && got.cols == want.cols)
    return ::testing::AssertionSuccess();
  std::ostringstream os;
  os << "selections differ";
  for (Index b = 0; b < std::min(got.batch, want.batch); ++b)
    for (Index h = 0; h < std::min(got.heads, want.heads); ++h)
      for (Index I = 0; I < std::min(got.query_blocks, want.query_blocks); ++I) {
        if (got.offsets.size() != want.offsets.size()) break;
        const auto g = got.key_blocks_of(b, h, I), w = want.key_blocks_of(b, h, I);
        if (std::equal(g.begin(), g.end(), w.begin(), w.end())) continue;
        os << "; first at (b,h,I) = (" << b << "," << h << "," << I << "): got {";
        for (Index J : g) os << J << ",";
        os << "} want {";
        for (Index J : w) os << J << ",";
        os << "}";
        return ::testing::AssertionFailure() << os.str() << "\n  case: " << context;
      }
  return ::testing::AssertionFailure() << os.str() << " (extents or offsets)\n  case: " << context;
}

// out within rel * max|v| (exactly 0 where want is exactly 0: a padded query, or a row with no finite
// logit), lse within rel * max(1, |want|) (-inf matched exactly). `worst` (optional) receives the
// largest error in those units.
template <class T>
::testing::AssertionResult compare_mra(const MraInputs<T>& in, const MraOut<T>& got, const MraRef& want, double rel,
                                       const std::string& context, double* worst = nullptr) {
  const double unit = in.value_unit();
  if (worst) {
    for (std::size_t i = 0; i < want.out.size(); ++i) {
      const double d = std::abs(static_cast<double>(got.out[static_cast<Index>(i)]) - want.out[i]);
      *worst = std::max(*worst, std::isnan(d) ? INFINITY : d / unit);
    }
    if (in.spec.with_lse)
      for (std::size_t i = 0; i < want.lse.size(); ++i) {
        const double w = want.lse[i], g = static_cast<double>(got.lse[static_cast<Index>(i)]);
        if (std::isinf(w) && g == w) continue;
        const double d = std::abs(g - w);
        *worst = std::max(*worst, std::isnan(d) ? INFINITY : d / std::max(1.0, std::abs(w)));
      }
  }
  const auto od = in.out_dims();
  auto r = all_close_with(
      "out", got.out.data(), want.out.data(), {od.begin(), od.end()}, axes_of(in.spec.layout),
      [&](Index i) { return Tolerance{want.out[static_cast<std::size_t>(i)] == 0 ? 0.0 : rel * unit, 0}; }, context);
  if (!r || !in.spec.with_lse) return r;
  return all_close("lse", got.lse.data(), want.lse.data(), {in.spec.B, in.spec.H, in.spec.Lq}, "[b,h,i]",
                   Tolerance{rel, rel}, context);
}

// Kernel against reference for one spec: the report is well formed, the output is the closed form
// over the reported selection, and (in double, where random continuous inputs have no near-ties) the
// selection is the rule's.
template <class T>
::testing::AssertionResult check_mra_case(const MraSpec& spec, double* worst = nullptr, double rel = kMraTol<T>) {
  try {
    const MraInputs<T> in = make_mra_inputs<T>(spec);
    const MraOut<T> got = run_mra(in);
    if (auto r = well_formed(got.selection, spec); !r) return r;
    if constexpr (sizeof(T) == 8) {
      if (auto r = same_selection(got.selection, mra_reference_selection(in), spec.describe()); !r) return r;
    }
    return compare_mra(in, got, mra_reference(in, got.selection), rel, spec.describe(), worst);
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw: " << e.what() << "\n  case: " << spec.describe();
  }
}

template <class T>
bool mra_same_bits(const Buffer<T>& a, const Buffer<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.size()) * sizeof(T)) == 0;
}

}  // namespace effattn_test
