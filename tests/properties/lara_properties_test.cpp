// Properties of RandomizedAttention and LaraAttention that need no reference implementation
// (lara.md section 11): exact identities (equal keys, a single key, constant and linear values, the
// convex hull, permutations, landmarks as partition means, LARA with zero-mean proposals and the
// balance heuristic as Performer), the draw contract and determinism, padding that cannot leak, huge
// and fully padded inputs, and the statistics against exact softmax (RA unbiased, LARA consistent,
// deterministic LARA closer than Performer at equal sample count).
//
// Shapes cover n = 1, n < C, n not a multiple of C, Lq != Lk, key padding in both padding modes,
// a fully padded sequence, GQA with the blhd layout and misaligned buffers, and 2-D grids whose sides
// are not multiples of sqrt(C) (overlapping pooling windows).

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iomanip>
#include <limits>
#include <numeric>
#include <optional>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include <effattn/kinds/lara.hpp>
#include <effattn/kinds/rfa.hpp>
#include <effattn/reference/softmax.hpp>

#include "support/compare.hpp"
#include "support/rfa_case.hpp"

namespace effattn_test {
namespace {

using effattn::Executor;
using effattn::Grid;
using effattn::LaraConfig;
using effattn::LaraDraws;
using effattn::Noise;
using effattn::Padding;
using effattn::RaConfig;
using effattn::RaDraws;
using effattn::RaMean;
using effattn::Sampling;
using effattn::Weighting;
template <class T>
using LaraAttention = effattn::LaraAttention<T>;
template <class T>
using RandomizedAttention = effattn::RandomizedAttention<T>;

template <class T>
class LaraProperties : public ::testing::Test {};
TYPED_TEST_SUITE(LaraProperties, Scalars);

// Tolerance of an exact identity, relative to max(1, max|v|) (every output is a weighted average of
// value rows, so that is its natural unit).
//  * double: lara.md measured ~1e-16 on these identities, and so do these tests (worst 1.2e-15, in
//    the linearity check); 1e-12 leaves room for other compilers and ISAs, while a wrong mask,
//    landmark or weight is off by O(1e-2) or more.
//  * float: the logits w.k' and w.q' carry ~|w||k'| 2^-24 ~ 1e-7 of rounding each and the weighted
//    sums a few 1e-7 more (worst measured 3.3e-7, linearity); 1e-5 is 30x that.
template <class T>
constexpr double kExact = sizeof(T) == 8 ? 1e-12 : 1e-5;

// ---- shapes, configurations and running ----

struct Shape {
  const char* name = "";
  Index B = 1, H = 1, Hkv = 1, Lq = 1, Lk = 1, Dqk = 8, Dv = 4;
  Layout layout = Layout::bhld;
  Index offset = 0;  // misalignment of every input and output, in elements
  std::vector<Index> key_lengths{};
  Grid grid{};                   // LARA: tokens on a rows x cols grid
  Index grid_landmarks = 0;      // LARA on a grid: C, a perfect square
  Causal causal = Causal::none;  // RA only (LARA refuses it)
  effattn::Window window{};      // RA only

  // Points into key_lengths: valid while this Shape lives.
  [[nodiscard]] effattn::Mask mask() const {
    effattn::Mask m;
    m.causal = causal;
    m.window = window;
    m.key_lengths = key_lengths;
    return m;
  }

  [[nodiscard]] std::string describe() const {
    std::ostringstream os;
    os << "[" << name << "] B=" << B << " H=" << H << " Hkv=" << Hkv << " Lq=" << Lq << " Lk=" << Lk << " Dqk=" << Dqk
       << " Dv=" << Dv << " layout=" << (layout == Layout::bhld ? "bhld" : "blhd");
    if (offset) os << " offset=" << offset;
    if (!key_lengths.empty()) {
      os << " key_lengths={";
      for (std::size_t i = 0; i < key_lengths.size(); ++i) os << (i ? "," : "") << key_lengths[i];
      os << "}";
    }
    if (grid.active()) os << " grid=" << grid.rows << "x" << grid.cols;
    if (causal != Causal::none) os << " causal=" << (causal == Causal::top_left ? "top_left" : "bottom_right");
    if (window.active()) os << " window=(" << window.left << "," << window.right << ")";
    return os.str();
  }
};

std::string describe(const LaraConfig& c) {
  std::ostringstream os;
  os << "LARA C=" << c.num_landmarks;
  if (c.grid.active()) os << " grid=" << c.grid.rows << "x" << c.grid.cols;
  if (c.mixed) os << " mixed";
  os << " weighting=" << effattn::to_string(c.weighting);
  if (c.weighting == Weighting::mis_opt) os << " alpha_coeff=" << c.alpha_coeff;
  os << " sampling=" << (c.sampling == Sampling::deterministic ? "deterministic" : "stochastic");
  if (c.sampling == Sampling::stochastic)
    os << " S=" << c.samples_per_proposal << (c.antithetic ? " antithetic" : "")
       << " noise=" << effattn::to_string(c.noise) << " seed=" << c.seed;
  os << " padding=" << (c.padding == Padding::exclude ? "exclude" : "zero_compat");
  if (c.scale) os << " scale=" << *c.scale;
  return os.str();
}

std::string describe(const RaConfig& c) {
  std::ostringstream os;
  os << "RA samples=" << c.samples << " noise=" << effattn::to_string(c.noise) << " mean=" << effattn::to_string(c.mean)
     << " seed=" << c.seed;
  if (c.scale) os << " scale=" << *c.scale;
  return os.str();
}

// Seeded inputs of a shape (q, k ~ N(0, qk_std^2), v ~ N(0, 1)), stored and indexed as RFA's cases.
template <class T>
RfaInputs<T> make_in(const Shape& s, std::uint64_t seed, double qk_std = 0.35) {
  RfaSpec r;
  r.B = s.B, r.H = s.H, r.Hkv = s.Hkv, r.Lq = s.Lq, r.Lk = s.Lk, r.Dqk = s.Dqk, r.Dv = s.Dv;
  r.layout = s.layout;
  r.offset = s.offset;
  r.causal = s.causal;
  r.key_lengths = s.key_lengths;
  r.qk_std = qk_std;
  r.seed = seed;
  return make_rfa_inputs<T>(r);
}

// Outputs start as NaN so an element the kernel forgets to write cannot pass.
template <class A, class Draws>
Buffer<typename A::Scalar> run_with(const A& attn, const RfaInputs<typename A::Scalar>& in, const effattn::Mask& mask,
                                    const Draws* draws, Executor executor = Executor::serial()) {
  using T = typename A::Scalar;
  Buffer<T> out(in.out_size(), in.spec.offset, std::numeric_limits<T>::quiet_NaN());
  effattn::Options<T> options;
  options.layout = in.spec.layout;
  options.executor = executor;
  const effattn::Tensor4<T> o(out.data(), in.out_dims());
  if (draws)
    attn.forward(in.qv(), in.kv(), in.vv(), o, mask, options, *draws);
  else
    attn.forward(in.qv(), in.kv(), in.vv(), o, mask, options);
  return out;
}
template <class T>
Buffer<T> run(const LaraAttention<T>& attn, const RfaInputs<T>& in, const effattn::Mask& mask,
              Executor executor = Executor::serial()) {
  return run_with(attn, in, mask, static_cast<const LaraDraws<T>*>(nullptr), executor);
}
template <class T>
Buffer<T> run(const RandomizedAttention<T>& attn, const RfaInputs<T>& in, const effattn::Mask& mask,
              Executor executor = Executor::serial()) {
  return run_with(attn, in, mask, static_cast<const RaDraws<T>*>(nullptr), executor);
}

// LARA shapes (C = 4 for the 1-D ones unless a config says otherwise).
std::vector<Shape> lara_shapes() {
  return {
      {.name = "n=1", .H = 2, .Lq = 1, .Lk = 1},
      {.name = "n<C", .B = 2, .Lq = 3, .Lk = 3},
      {.name = "n=2C", .Lq = 8, .Lk = 8},
      {.name = "n not a multiple of C", .H = 2, .Hkv = 2, .Lq = 10, .Lk = 10, .Dv = 5},
      {.name = "n=37", .Lq = 37, .Lk = 37, .Dqk = 5, .Dv = 3},
      {.name = "cross Lq<Lk", .B = 2, .H = 2, .Lq = 7, .Lk = 19},
      {.name = "cross Lq>Lk", .Lq = 23, .Lk = 5},
      {.name = "cross Lk<C", .Lq = 9, .Lk = 2},
      {.name = "padding", .B = 3, .H = 2, .Lq = 20, .Lk = 20, .key_lengths = {20, 9, 2}},
      {.name = "padding cross", .B = 2, .Lq = 6, .Lk = 20, .key_lengths = {20, 3}},
      {.name = "fully padded sequence", .B = 2, .Lq = 11, .Lk = 11, .key_lengths = {0, 11}},
      {.name = "GQA",
       .B = 2,
       .H = 4,
       .Hkv = 2,
       .Lq = 13,
       .Lk = 13,
       .Dqk = 6,
       .Dv = 7,
       .layout = Layout::blhd,
       .offset = 1},
      {.name = "grid 5x7 C=9", .H = 2, .Lq = 35, .Lk = 35, .grid = {5, 7}, .grid_landmarks = 9},
      {.name = "grid 2x5 C=9", .Lq = 10, .Lk = 10, .grid = {2, 5}, .grid_landmarks = 9},
      {.name = "grid 7x3 C=4", .B = 2, .H = 2, .Lq = 21, .Lk = 21, .grid = {7, 3}, .grid_landmarks = 4},
  };
}

// Every weighting, both samplings, antithetics, both noise scales, mixed proposals, C = 1, 4, 8.
std::vector<LaraConfig> lara_configs() {
  std::vector<LaraConfig> cs;
  LaraConfig c;
  c.num_landmarks = 4;
  cs.push_back(c);
  c.weighting = Weighting::mis_bh;
  c.mixed = true;
  cs.push_back(c);
  c = {};
  c.num_landmarks = 1;
  c.weighting = Weighting::mis_biased;
  cs.push_back(c);
  c = {};
  c.num_landmarks = 4;
  c.sampling = Sampling::stochastic;
  c.samples_per_proposal = 3;
  c.alpha_coeff = 2;
  c.seed = 5;
  cs.push_back(c);
  c = {};
  c.num_landmarks = 4;
  c.sampling = Sampling::stochastic;
  c.weighting = Weighting::mis_bh;
  c.samples_per_proposal = 2;
  c.antithetic = true;
  c.noise = Noise::code_compat;
  c.seed = 6;
  cs.push_back(c);
  c = {};
  c.num_landmarks = 8;
  c.sampling = Sampling::stochastic;
  c.weighting = Weighting::mis_biased;
  c.scale = 0.3;
  c.seed = 7;
  cs.push_back(c);
  return cs;
}

std::vector<Shape> ra_shapes() {
  return {
      {.name = "n=1", .H = 2, .Lq = 1, .Lk = 1},
      {.name = "self", .B = 2, .H = 2, .Lq = 13, .Lk = 13},
      {.name = "causal", .Lq = 13, .Lk = 13, .causal = Causal::top_left},
      {.name = "cross causal Lq<Lk", .H = 2, .Hkv = 2, .Lq = 7, .Lk = 19, .causal = Causal::bottom_right},
      {.name = "cross causal Lq>Lk (early queries see nothing)", .Lq = 19, .Lk = 7, .causal = Causal::bottom_right},
      {.name = "padding with a fully padded sequence", .B = 3, .Lq = 9, .Lk = 20, .key_lengths = {20, 4, 0}},
      {.name = "padding causal", .B = 2, .Lq = 12, .Lk = 12, .key_lengths = {12, 5}, .causal = Causal::top_left},
      {.name = "window", .Lq = 15, .Lk = 15, .window = {3, 2}},
      {.name = "GQA causal",
       .B = 2,
       .H = 4,
       .Hkv = 2,
       .Lq = 11,
       .Lk = 17,
       .Dqk = 6,
       .Dv = 7,
       .layout = Layout::blhd,
       .offset = 1,
       .causal = Causal::top_left},
  };
}

std::vector<RaConfig> ra_configs() {
  return {
      {.samples = 1, .noise = Noise::paper, .mean = RaMean::sampled_key, .seed = 3},
      {.samples = 3, .noise = Noise::code_compat, .mean = RaMean::sampled_key, .seed = 4},
      {.samples = 2, .noise = Noise::paper, .mean = RaMean::expected_key, .seed = 5, .scale = 0.2},
      {.samples = 1, .noise = Noise::none, .mean = RaMean::mean_key},
      {.samples = 2, .noise = Noise::none, .mean = RaMean::expected_key},
  };
}

// fn(attn, shape, context) for every shape x padding mode x config; zero_compat where it applies
// (Lq = Lk with key padding). On a grid, C becomes the shape's (C = 1 stays: a 1 x 1 pool).
template <class T, class Fn>
void for_each_lara(Fn&& fn, const std::vector<Shape>& shapes = lara_shapes(),
                   const std::vector<LaraConfig>& configs = lara_configs()) {
  for (const Shape& s : shapes)
    for (Padding padding : {Padding::exclude, Padding::zero_compat}) {
      if (padding == Padding::zero_compat && (s.key_lengths.empty() || s.Lq != s.Lk)) continue;
      for (LaraConfig c : configs) {
        c.padding = padding;
        if (s.grid.active()) {
          c.grid = s.grid;
          if (c.num_landmarks != 1) c.num_landmarks = s.grid_landmarks;
        }
        const LaraAttention<T> attn(c);
        fn(attn, s, s.describe() + " " + describe(c));
      }
    }
}

template <class T, class Fn>
void for_each_ra(Fn&& fn, const std::vector<Shape>& shapes = ra_shapes(),
                 const std::vector<RaConfig>& configs = ra_configs()) {
  for (const Shape& s : shapes)
    for (const RaConfig& c : configs) {
      const RandomizedAttention<T> attn(c);
      fn(attn, s, s.describe() + " " + describe(c));
    }
}

// ---- expected values ----

// Keys [lo, hi) visible to query i of batch b: the unpadded ones, within the mask's band (RA's causal
// and window constraints; LARA has neither).
std::pair<Index, Index> visible_keys(const Shape& s, Index b, Index i) {
  const Index nk = s.key_lengths.empty() ? s.Lk : s.key_lengths[static_cast<std::size_t>(b)];
  const effattn::detail::Band band = effattn::detail::make_band(s.mask(), s.Lq, nk);
  return {band.lo(i), std::max(band.lo(i), band.hi(i))};
}

// out[b,h,i,:] = the mean of the value rows query i sees (0 if it sees none), in the inputs' layout.
template <class T>
std::vector<double> mean_of_visible_values(const Shape& s, const RfaInputs<T>& in) {
  std::vector<double> want(static_cast<std::size_t>(in.out_size()));
  const Index group = s.H / s.Hkv;
  for (Index b = 0; b < s.B; ++b)
    for (Index h = 0; h < s.H; ++h)
      for (Index i = 0; i < s.Lq; ++i) {
        const auto [lo, hi] = visible_keys(s, b, i);
        for (Index d = 0; d < s.Dv; ++d) {
          double sum = 0;
          for (Index j = lo; j < hi; ++j) sum += static_cast<double>(in.v[in.v_at(b, h / group, j, d)]);
          want[static_cast<std::size_t>(in.out_at(b, h, i, d))] = hi > lo ? sum / static_cast<double>(hi - lo) : 0.0;
        }
      }
  return want;
}

template <class T>
double value_unit(const Buffer<T>& v) {
  double m = 1;
  for (Index i = 0; i < v.size(); ++i) m = std::max(m, std::abs(static_cast<double>(v[i])));
  return m;
}

template <class T>
::testing::AssertionResult close(const RfaInputs<T>& in, const Buffer<T>& got, const std::vector<double>& want,
                                 double atol, const std::string& context) {
  const auto od = in.out_dims();
  return all_close("out", got.data(), want.data(), {od.begin(), od.end()}, axes_of(in.spec.layout), Tolerance{atol, 0},
                   context);
}

template <class T>
std::vector<double> as_double(const Buffer<T>& x) {
  std::vector<double> r(static_cast<std::size_t>(x.size()));
  for (Index i = 0; i < x.size(); ++i) r[static_cast<std::size_t>(i)] = static_cast<double>(x[i]);
  return r;
}

template <class T>
double max_abs_diff(const Buffer<T>& a, const Buffer<T>& b) {
  double m = 0;
  for (Index i = 0; i < a.size(); ++i) m = std::max(m, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
  return m;
}

template <class T>
::testing::AssertionResult all_finite(const Buffer<T>& x, const std::string& context) {
  for (Index i = 0; i < x.size(); ++i)
    if (!std::isfinite(x[i]))
      return ::testing::AssertionFailure() << "element " << i << " is " << x[i] << "; " << context;
  return ::testing::AssertionSuccess();
}

// How far outputs leave the box [min_j v_jd, max_j v_jd] over the keys each query sees; a query that
// sees no key must give exactly 0.
template <class T>
double hull_excess(const Shape& s, const RfaInputs<T>& in, const Buffer<T>& out) {
  double worst = 0;
  const Index group = s.H / s.Hkv;
  for (Index b = 0; b < s.B; ++b)
    for (Index h = 0; h < s.H; ++h)
      for (Index i = 0; i < s.Lq; ++i) {
        const auto [lo, hi] = visible_keys(s, b, i);
        for (Index d = 0; d < s.Dv; ++d) {
          const double o = out[in.out_at(b, h, i, d)];
          if (std::isnan(o)) return INFINITY;
          if (hi == lo) {
            worst = std::max(worst, std::abs(o));
            continue;
          }
          double mn = INFINITY, mx = -INFINITY;
          for (Index j = lo; j < hi; ++j) {
            const double x = in.v[in.v_at(b, h / group, j, d)];
            mn = std::min(mn, x);
            mx = std::max(mx, x);
          }
          worst = std::max(worst, std::max(mn - o, o - mx));
        }
      }
  return worst;
}

// Every key row of each (batch, KV head) set to that head's first key.
template <class T>
void equalise_keys(RfaInputs<T>& in) {
  const RfaSpec& s = in.spec;
  for (Index b = 0; b < s.B; ++b)
    for (Index h = 0; h < s.Hkv; ++h)
      for (Index j = 1; j < s.Lk; ++j)
        for (Index d = 0; d < s.Dqk; ++d) in.k[in.k_at(b, h, j, d)] = in.k[in.k_at(b, h, 0, d)];
}

// ---- exact identities (lara.md 11.1-11.4) ----

// All keys equal: every score over keys is constant, so f(w) = mean of the visible V rows for every
// w, and any weighting of samples returns it: RA with any mean mode and noise, LARA with any
// weighting and sampling. Padded queries of either padding mode too; a query that sees no key: 0.
TYPED_TEST(LaraProperties, EqualKeysGiveTheMeanOfTheVisibleValues) {
  using T = TypeParam;
  std::uint64_t seed = 1000;
  const auto check = [&](const auto& attn, const Shape& s, const std::string& context) {
    RfaInputs<T> in = make_in<T>(s, seed++);
    equalise_keys(in);
    const Buffer<T> got = run(attn, in, s.mask());
    EXPECT_TRUE(close(in, got, mean_of_visible_values(s, in), kExact<T> * value_unit(in.v), context));
  };
  for_each_lara<T>(check);
  for_each_ra<T>(check);
}

// One visible key: every output row is that key's value row (0 where a query sees no key).
TYPED_TEST(LaraProperties, ASingleKeyGivesItsValue) {
  using T = TypeParam;
  const std::vector<Shape> lara = {
      {.name = "Lq=Lk=1", .H = 2, .Lq = 1, .Lk = 1},
      {.name = "Lk=1 cross", .B = 2, .H = 2, .Lq = 5, .Lk = 1},
      {.name = "one unpadded key", .B = 2, .H = 2, .Lq = 6, .Lk = 6, .key_lengths = {1, 1}},
      {.name = "one unpadded key cross", .B = 2, .Lq = 3, .Lk = 9, .key_lengths = {1, 1}},
      {.name = "grid 1x1", .Lq = 1, .Lk = 1, .grid = {1, 1}, .grid_landmarks = 4},
  };
  const std::vector<Shape> ra = {
      {.name = "Lq=Lk=1", .H = 2, .Lq = 1, .Lk = 1},
      {.name = "Lk=1 bottom_right", .Lq = 4, .Lk = 1, .causal = Causal::bottom_right},
      {.name = "window (0,0)", .B = 2, .Lq = 9, .Lk = 9, .window = {0, 0}},
      {.name = "causal window (0,-1)", .Lq = 9, .Lk = 9, .causal = Causal::top_left, .window = {0, -1}},
      {.name = "one unpadded key", .B = 2, .H = 2, .Lq = 5, .Lk = 8, .key_lengths = {1, 1}},
  };
  std::uint64_t seed = 1100;
  const auto check = [&](const auto& attn, const Shape& s, const std::string& context) {
    for (Index b = 0; b < s.B; ++b)
      for (Index i = 0; i < s.Lq; ++i) {
        const auto [lo, hi] = visible_keys(s, b, i);
        ASSERT_LE(hi - lo, 1) << "the case is not a single-key case: " << context;
      }
    const RfaInputs<T> in = make_in<T>(s, seed++);
    EXPECT_TRUE(
        close(in, run(attn, in, s.mask()), mean_of_visible_values(s, in), kExact<T> * value_unit(in.v), context));
  };
  for_each_lara<T>(check, lara);
  for_each_ra<T>(check, ra);
}

// Values enter only through f(w) = softmax weights times V, and the draws depend on q and k alone, so
// with the randomness fixed (same object, same draw) the output is linear in V: constant rows give
// that constant, a shift of every row shifts the output, and out(a V1 + b V2) = a out(V1) + b out(V2).
TYPED_TEST(LaraProperties, LinearInValuesWithTheDrawsFixed) {
  using T = TypeParam;
  std::uint64_t seed = 1200;
  const auto check = [&](const auto& attn, const Shape& s, const std::string& context) {
    const effattn::Mask mask = s.mask();
    const RfaInputs<T> base = make_in<T>(s, seed++);
    // Constant rows per (batch, KV head).
    {
      RfaInputs<T> in = make_in<T>(s, base.spec.seed);
      for (Index b = 0; b < s.B; ++b)
        for (Index h = 0; h < s.Hkv; ++h)
          for (Index j = 1; j < s.Lk; ++j)
            for (Index d = 0; d < s.Dv; ++d) in.v[in.v_at(b, h, j, d)] = in.v[in.v_at(b, h, 0, d)];
      EXPECT_TRUE(close(in, run(attn, in, mask), mean_of_visible_values(s, in), kExact<T> * value_unit(in.v),
                        context + " (constant values)"));
    }
    const Buffer<T> out1 = run(attn, base, mask);
    // Shift by a vector c: rows that see a key move by c, the others stay 0.
    {
      RfaInputs<T> in = make_in<T>(s, base.spec.seed);
      std::vector<double> c(static_cast<std::size_t>(s.Dv));
      for (Index d = 0; d < s.Dv; ++d) c[static_cast<std::size_t>(d)] = 0.5 + 0.25 * static_cast<double>(d);
      for (Index b = 0; b < s.B; ++b)
        for (Index h = 0; h < s.Hkv; ++h)
          for (Index j = 0; j < s.Lk; ++j)
            for (Index d = 0; d < s.Dv; ++d)
              in.v[in.v_at(b, h, j, d)] += static_cast<T>(c[static_cast<std::size_t>(d)]);
      std::vector<double> want = as_double(out1);
      for (Index b = 0; b < s.B; ++b)
        for (Index h = 0; h < s.H; ++h)
          for (Index i = 0; i < s.Lq; ++i) {
            const auto [lo, hi] = visible_keys(s, b, i);
            if (hi > lo)
              for (Index d = 0; d < s.Dv; ++d)
                want[static_cast<std::size_t>(in.out_at(b, h, i, d))] += c[static_cast<std::size_t>(d)];
          }
      EXPECT_TRUE(close(in, run(attn, in, mask), want, kExact<T> * value_unit(in.v), context + " (shifted values)"));
    }
    // a V1 + b V2.
    {
      const double a = 0.75, bb = -1.25;
      RfaInputs<T> in2 = make_in<T>(s, base.spec.seed);
      Rng rng(base.spec.seed * 31 + 7);
      for (Index i = 0; i < in2.v.size(); ++i) in2.v[i] = static_cast<T>(rng.normal());
      const Buffer<T> out2 = run(attn, in2, mask);
      RfaInputs<T> mix = make_in<T>(s, base.spec.seed);
      for (Index i = 0; i < mix.v.size(); ++i)
        mix.v[i] = static_cast<T>(a * static_cast<double>(base.v[i]) + bb * static_cast<double>(in2.v[i]));
      std::vector<double> want(static_cast<std::size_t>(base.out_size()));
      for (std::size_t i = 0; i < want.size(); ++i)
        want[i] = a * static_cast<double>(out1[static_cast<Index>(i)]) +
                  bb * static_cast<double>(out2[static_cast<Index>(i)]);
      const double unit = std::max(value_unit(base.v), value_unit(in2.v)) * (std::abs(a) + std::abs(bb));
      EXPECT_TRUE(close(mix, run(attn, mix, mask), want, kExact<T> * unit, context + " (a V1 + b V2)"));
    }
  };
  for_each_lara<T>(check);
  for_each_ra<T>(check);
}

// Every f(w) is a convex combination of the visible V rows and every estimate a convex combination
// of f values, so each output coordinate lies in [min_j v_jd, max_j v_jd] over the keys its query
// sees, up to rounding; moderate (|q'| ~ 1) and large-norm (5x) inputs.
TYPED_TEST(LaraProperties, OutputsStayInTheConvexHullOfTheVisibleValues) {
  using T = TypeParam;
  std::uint64_t seed = 1300;
  double worst = 0;
  for (double qk_std : {0.35, 1.75}) {
    const auto check = [&](const auto& attn, const Shape& s, const std::string& context) {
      const RfaInputs<T> in = make_in<T>(s, seed++, qk_std);
      const Buffer<T> out = run(attn, in, s.mask());
      const double unit = value_unit(in.v);
      const double excess = hull_excess(s, in, out);
      worst = std::max(worst, excess / unit);
      EXPECT_LE(excess, kExact<T> * unit) << context << " qk_std=" << qk_std;
    };
    for_each_lara<T>(check);
    for_each_ra<T>(check);
  }
  ::testing::Test::RecordProperty("worst_excess_over_max_abs_v", sci(worst));
}

// ---- permutations (lara.md 11.5) ----

// Fisher-Yates over [lo, hi) of p.
void shuffle(std::vector<Index>& p, Index lo, Index hi, Rng& rng) {
  for (Index i = hi - 1; i > lo; --i)
    std::swap(p[static_cast<std::size_t>(i)], p[static_cast<std::size_t>(rng.integer(lo, i))]);
}

// Token i of the result is token pq[i] (queries) / pk[i] (keys and values) of `in`.
template <class T>
RfaInputs<T> permuted(const RfaInputs<T>& in, const std::vector<Index>& pq, const std::vector<Index>& pk) {
  RfaInputs<T> r = make_rfa_inputs<T>(in.spec);
  const RfaSpec& s = in.spec;
  for (Index b = 0; b < s.B; ++b) {
    for (Index h = 0; h < s.H; ++h)
      for (Index i = 0; i < s.Lq; ++i)
        for (Index d = 0; d < s.Dqk; ++d)
          r.q[r.q_at(b, h, i, d)] = in.q[in.q_at(b, h, pq[static_cast<std::size_t>(i)], d)];
    for (Index h = 0; h < s.Hkv; ++h)
      for (Index j = 0; j < s.Lk; ++j) {
        const Index from = pk[static_cast<std::size_t>(j)];
        for (Index d = 0; d < s.Dqk; ++d) r.k[r.k_at(b, h, j, d)] = in.k[in.k_at(b, h, from, d)];
        for (Index d = 0; d < s.Dv; ++d) r.v[r.v_at(b, h, j, d)] = in.v[in.v_at(b, h, from, d)];
      }
  }
  return r;
}

// LARA with C = 1 (one proposal from the means of all tokens; its draws do not depend on token
// order), or deterministic with C >= n (the proposals are the tokens themselves, permuted with them),
// is equivariant under a permutation of the queries and of the (key, value) pairs; so is RA with a
// deterministic w (expected_key or mean_key, noise none). Key padding: the permutations keep the
// unpadded tokens (the first key_lengths[b]) in front. For other C LARA is not equivariant (landmarks
// depend on order), which is documented, not tested.
TYPED_TEST(LaraProperties, PermutationEquivariance) {
  using T = TypeParam;
  const Shape self{.name = "self", .B = 2, .H = 2, .Lq = 10, .Lk = 10};
  const Shape padded{.name = "padding", .B = 2, .H = 2, .Lq = 10, .Lk = 10, .key_lengths = {10, 6}};
  const Shape cross{.name = "cross", .B = 2, .H = 4, .Hkv = 2, .Lq = 7, .Lk = 12, .layout = Layout::blhd};
  const Shape cross_padded{.name = "cross padding", .B = 2, .Lq = 7, .Lk = 12, .key_lengths = {12, 6}};

  std::vector<LaraConfig> any_order, tokens_as_landmarks;
  for (Weighting w : {Weighting::mis_opt, Weighting::mis_bh, Weighting::mis_biased}) {
    LaraConfig c;
    c.weighting = w;
    c.num_landmarks = 1;
    any_order.push_back(c);
    c.sampling = Sampling::stochastic;
    c.samples_per_proposal = 4;
    c.antithetic = w == Weighting::mis_bh;
    c.seed = 9;
    any_order.push_back(c);
    LaraConfig d;
    d.weighting = w;
    d.num_landmarks = w == Weighting::mis_biased ? 10 : 16;  // C = n and C > n
    tokens_as_landmarks.push_back(d);
  }
  std::vector<RaConfig> ra;
  for (RaMean m : {RaMean::expected_key, RaMean::mean_key})
    for (Index samples : {1, 2}) ra.push_back({.samples = samples, .noise = Noise::none, .mean = m, .seed = 1});

  std::uint64_t seed = 1400;
  const auto check = [&](const auto& attn, const Shape& s, const std::string& context) {
    const bool joint = s.Lq == s.Lk;
    Rng rng(seed);
    const RfaInputs<T> in = make_in<T>(s, seed++);
    std::vector<Index> pq(static_cast<std::size_t>(s.Lq)), pk(static_cast<std::size_t>(s.Lk));
    std::iota(pq.begin(), pq.end(), Index{0});
    std::iota(pk.begin(), pk.end(), Index{0});
    const Index cut = s.key_lengths.empty() ? s.Lk : *std::min_element(s.key_lengths.begin(), s.key_lengths.end());
    shuffle(pk, 0, cut, rng);
    shuffle(pk, cut, s.Lk, rng);
    if (joint)
      pq = pk;
    else
      shuffle(pq, 0, s.Lq, rng);
    const RfaInputs<T> p = permuted(in, pq, pk);
    const Buffer<T> out = run(attn, in, s.mask());
    std::vector<double> want(static_cast<std::size_t>(in.out_size()));
    for (Index b = 0; b < s.B; ++b)
      for (Index h = 0; h < s.H; ++h)
        for (Index i = 0; i < s.Lq; ++i)
          for (Index d = 0; d < s.Dv; ++d)
            want[static_cast<std::size_t>(in.out_at(b, h, i, d))] =
                out[in.out_at(b, h, pq[static_cast<std::size_t>(i)], d)];
    EXPECT_TRUE(close(p, run(attn, p, s.mask()), want, kExact<T> * value_unit(in.v), context + " (permuted)"));
  };
  for_each_lara<T>(check, {self, padded, cross, cross_padded}, any_order);
  for_each_lara<T>(check, {self, padded}, tokens_as_landmarks);
  for_each_ra<T>(check, {self, padded, cross, cross_padded}, ra);
}

// ---- landmarks as partition means (lara.md 11.7) ----

using Sets = std::vector<std::vector<Index>>;

// 1-D segments of n tokens into c landmarks: n == c the tokens, c | n equal parts, else the first
// r = (g + 1) c - n parts of g = n / c tokens and the rest of g + 1 (10, 4 -> [2, 2, 3, 3]).
Sets segments(Index n, Index c) {
  Sets sets;
  const Index g = n / c, r = n % c == 0 ? c : (g + 1) * c - n;
  Index t = 0;
  for (Index i = 0; i < c; ++i) {
    const Index len = i < r ? g : g + 1;
    sets.emplace_back();
    for (Index j = 0; j < len; ++j) sets.back().push_back(t++);
  }
  EXPECT_EQ(t, n);
  return sets;
}

// Adaptive 2-D pooling of a rows x cols grid to min(side, rows) x min(side, cols) cells; cell (i, j)
// covers rows [floor(i rows / out), ceil((i + 1) rows / out)) and likewise columns (overlapping
// windows when the sides do not divide), index i * out_c + j, tokens row-major.
Sets grid_cells(Index rows, Index cols, Index side) {
  const Index out_r = std::min(side, rows), out_c = std::min(side, cols);
  const auto lo = [](Index i, Index in, Index out) { return i * in / out; };
  const auto hi = [](Index i, Index in, Index out) { return ((i + 1) * in + out - 1) / out; };
  Sets sets;
  for (Index i = 0; i < out_r; ++i)
    for (Index j = 0; j < out_c; ++j) {
      sets.emplace_back();
      for (Index r = lo(i, rows, out_r); r < hi(i, rows, out_r); ++r)
        for (Index c = lo(j, cols, out_c); c < hi(j, cols, out_c); ++c) sets.back().push_back(r * cols + c);
    }
  return sets;
}

// Landmarks [B, H, C, Dqk] (bhld) that are the means of q (per query head) and k (per KV head) over the
// given token sets per batch; tokens at or past `zeroed[b]` count as zero rows (zero_compat).
template <class T>
std::pair<Buffer<T>, Buffer<T>> pooled_landmarks(const RfaInputs<T>& in, const std::vector<Sets>& q_sets,
                                                 const std::vector<Sets>& k_sets, const std::vector<Index>& zeroed) {
  const RfaSpec& s = in.spec;
  const Index C = static_cast<Index>(q_sets[0].size()), group = s.H / s.Hkv;
  Buffer<T> ql(s.B * s.H * C * s.Dqk), kl(s.B * s.H * C * s.Dqk);
  for (Index b = 0; b < s.B; ++b)
    for (Index h = 0; h < s.H; ++h)
      for (Index c = 0; c < C; ++c)
        for (Index d = 0; d < s.Dqk; ++d) {
          const auto mean = [&](const std::vector<Index>& set, auto&& value) {
            double sum = 0;
            for (Index t : set) sum += t < zeroed[static_cast<std::size_t>(b)] ? value(t) : 0.0;
            return static_cast<T>(sum / static_cast<double>(set.size()));
          };
          const Index at = ((b * s.H + h) * C + c) * s.Dqk + d;
          ql[at] = mean(q_sets[static_cast<std::size_t>(b)][static_cast<std::size_t>(c)],
                        [&](Index t) { return static_cast<double>(in.q[in.q_at(b, h, t, d)]); });
          kl[at] = mean(k_sets[static_cast<std::size_t>(b)][static_cast<std::size_t>(c)],
                        [&](Index t) { return static_cast<double>(in.k[in.k_at(b, h / group, t, d)]); });
        }
  return {std::move(ql), std::move(kl)};
}

// LARA's own landmarks equal the caller's landmarks computed here as the means of the semantics'
// partition: 1-D segments per side (exclude: over the first nq queries and nk keys; zero_compat: over
// all tokens, padded rows zero), C_eff = min(C, nq, nk) for cross attention, and 2-D pooling with
// overlapping windows. Mixed proposals and stochastic draws (own generator: the same rows for the
// same C_eff) come on top of either. A partition off by one token ([3, 3, 2, 2] for n = 10) must be
// detected, which shows the comparison can fail.
TYPED_TEST(LaraProperties, LandmarksAreTheMeansOfThePartition) {
  using T = TypeParam;
  const std::vector<Shape> shapes = {
      {.name = "n=10 C=4 -> [2,2,3,3]", .H = 2, .Lq = 10, .Lk = 10},
      {.name = "n=8 C=4 -> [2,2,2,2]", .B = 2, .Lq = 8, .Lk = 8},
      {.name = "n=3 C=4 -> the 3 tokens", .Lq = 3, .Lk = 3},
      {.name = "n=37 C=4", .Lq = 37, .Lk = 37, .Dqk = 5},
      {.name = "cross 7/19 -> [1,2,2,2] / [4,5,5,5]", .B = 2, .H = 2, .Lq = 7, .Lk = 19},
      {.name = "cross 9/2 -> C_eff 2", .Lq = 9, .Lk = 2},
      {.name = "padding 20/9 -> [5,5,5,5] / [2,2,2,3]", .B = 2, .H = 2, .Lq = 20, .Lk = 20, .key_lengths = {20, 9}},
      {.name = "padding cross 6 / 20,7", .B = 2, .Lq = 6, .Lk = 20, .key_lengths = {20, 7}},
      {.name = "GQA",
       .B = 2,
       .H = 4,
       .Hkv = 2,
       .Lq = 13,
       .Lk = 13,
       .Dqk = 6,
       .Dv = 7,
       .layout = Layout::blhd,
       .offset = 1},
      {.name = "grid 14x14 C=49 -> 2x2 blocks", .Lq = 196, .Lk = 196, .grid = {14, 14}, .grid_landmarks = 49},
      {.name = "grid 5x7 C=9 (overlapping)", .H = 2, .Lq = 35, .Lk = 35, .grid = {5, 7}, .grid_landmarks = 9},
      {.name = "grid 2x5 C=9 -> 2x3", .Lq = 10, .Lk = 10, .grid = {2, 5}, .grid_landmarks = 9},
      {.name = "grid 7x3 C=4", .B = 2, .Lq = 21, .Lk = 21, .grid = {7, 3}, .grid_landmarks = 4},
  };
  std::vector<LaraConfig> configs;
  {
    LaraConfig c;
    c.num_landmarks = 4;
    configs.push_back(c);
    c.weighting = Weighting::mis_bh;
    c.mixed = true;
    configs.push_back(c);
    c = {};
    c.num_landmarks = 4;
    c.sampling = Sampling::stochastic;
    c.samples_per_proposal = 2;
    c.weighting = Weighting::mis_biased;
    c.seed = 21;
    configs.push_back(c);
    c.antithetic = true;
    c.weighting = Weighting::mis_opt;
    c.noise = Noise::code_compat;
    configs.push_back(c);
  }
  std::uint64_t seed = 1500;
  int detected = 0;
  for (const Shape& s : shapes)
    for (Padding padding : {Padding::exclude, Padding::zero_compat}) {
      if (padding == Padding::zero_compat && (s.key_lengths.empty() || s.Lq != s.Lk)) continue;
      for (LaraConfig c : configs) {
        c.padding = padding;
        if (s.grid.active()) {
          c.grid = s.grid;
          c.num_landmarks = s.grid_landmarks;
        }
        const std::string context = s.describe() + " " + describe(c);
        const RfaInputs<T> in = make_in<T>(s, seed++);
        std::vector<Sets> q_sets, k_sets;
        std::vector<Index> zeroed;
        for (Index b = 0; b < s.B; ++b) {
          const Index len = s.key_lengths.empty() ? s.Lk : s.key_lengths[static_cast<std::size_t>(b)];
          const bool zc = padding == Padding::zero_compat && !s.key_lengths.empty();
          const Index nq = zc ? s.Lq : (!s.key_lengths.empty() && s.Lq == s.Lk ? len : s.Lq);
          const Index nk = zc ? s.Lk : len;
          zeroed.push_back(zc ? len : std::max(s.Lq, s.Lk));
          if (s.grid.active()) {
            const Index side = static_cast<Index>(std::llround(std::sqrt(static_cast<double>(c.num_landmarks))));
            q_sets.push_back(grid_cells(s.grid.rows, s.grid.cols, side));
            k_sets.push_back(q_sets.back());
          } else {
            const Index ce = std::min({c.num_landmarks, nq, nk});
            q_sets.push_back(segments(nq, ce));
            k_sets.push_back(segments(nk, ce));
          }
        }
        const Index ce = static_cast<Index>(q_sets[0].size());
        for (const Sets& sets : q_sets)
          ASSERT_EQ(static_cast<Index>(sets.size()), ce) << "C_eff differs across the batch";
        const auto [ql, kl] = pooled_landmarks(in, q_sets, k_sets, zeroed);
        LaraConfig user = c;
        user.grid = {};
        user.num_landmarks = ce;
        LaraDraws<T> draws;
        draws.query_landmarks = effattn::ConstTensor4<T>(ql.data(), s.B, s.H, ce, s.Dqk);
        draws.key_landmarks = effattn::ConstTensor4<T>(kl.data(), s.B, s.H, ce, s.Dqk);
        const Buffer<T> pooled = run(LaraAttention<T>(c), in, s.mask());
        const Buffer<T> given = run_with(LaraAttention<T>(user), in, s.mask(), &draws);
        EXPECT_TRUE(close(in, pooled, as_double(given), kExact<T> * value_unit(in.v),
                          context + " (own vs caller's landmarks)"));
        if (s.Lq == 10 && !s.grid.active() && ce == 4) {
          // [3, 3, 2, 2] instead of [2, 2, 3, 3].
          Sets wrong = segments(10, 4);
          std::reverse(wrong.begin(), wrong.end());
          for (auto& set : wrong)
            for (Index& t : set) t = 9 - t;
          const auto [wq, wk] = pooled_landmarks(in, std::vector<Sets>(1, wrong), std::vector<Sets>(1, wrong), zeroed);
          draws.query_landmarks = effattn::ConstTensor4<T>(wq.data(), s.B, s.H, ce, s.Dqk);
          draws.key_landmarks = effattn::ConstTensor4<T>(wk.data(), s.B, s.H, ce, s.Dqk);
          const Buffer<T> off = run_with(LaraAttention<T>(user), in, s.mask(), &draws);
          EXPECT_GT(max_abs_diff(off, pooled), 1e-4) << "a wrong partition went unnoticed: " << context;
          ++detected;
        }
      }
    }
  EXPECT_GT(detected, 0);
}

// ---- LARA with zero-mean proposals is Performer (lara.md 11.6) ----

// With mu = 0 (caller's landmarks with query landmarks = -key landmarks) and the balance heuristic,
// G = 0, log alpha = 0 and the log-proposal is log C for every sample, so
//   out_n = sum_s exp(w_s.q'_n) sum_m exp(w_s.k'_m - |k'_m|^2/2) v_m / (same without v_m):
// RfaAttention's positive map (compat none) with projection rows W = w_s, since it scales inputs by
// sqrt(scale) and projects them with W unchanged. The samples are sigma eps from injected eps (sigma
// from the noise setting and scale), equal across the query heads of a KV group and the batch so one
// projection per KV head serves them; antithetic samples add the rows -sigma eps.
TYPED_TEST(LaraProperties, ZeroMeanProposalsWithTheBalanceHeuristicArePerformer) {
  using T = TypeParam;
  const std::vector<Shape> shapes = {
      {.name = "GQA", .B = 2, .H = 4, .Hkv = 2, .Lq = 16, .Lk = 16, .Dv = 5},
      {.name = "cross padding", .B = 2, .H = 2, .Lq = 9, .Lk = 20, .key_lengths = {20, 6}},
      {.name = "padding self", .B = 2, .Lq = 12, .Lk = 12, .Dqk = 5, .key_lengths = {12, 7}},
      {.name = "n=1", .Lq = 1, .Lk = 1},
  };
  std::uint64_t seed = 1600;
  for (const Shape& s : shapes)
    for (Noise noise : {Noise::paper, Noise::code_compat})
      for (bool antithetic : {false, true})
        for (std::optional<double> scale : {std::optional<double>{}, std::optional<double>{0.3}}) {
          LaraConfig c;
          c.num_landmarks = 3;
          c.weighting = Weighting::mis_bh;
          c.sampling = Sampling::stochastic;
          c.samples_per_proposal = 2;
          c.antithetic = antithetic;
          c.noise = noise;
          c.scale = scale;
          const std::string context = s.describe() + " " + describe(c);
          const RfaInputs<T> in = make_in<T>(s, seed++);
          const Index C = c.num_landmarks, R = C * c.samples_per_proposal, group = s.H / s.Hkv;
          const double sigma =
              effattn::noise_sigma(noise, scale ? *scale : 1.0 / std::sqrt(static_cast<double>(s.Dqk)));
          Rng rng(seed * 13 + 1);
          Buffer<T> eps(s.Hkv * R * s.Dqk);
          for (Index i = 0; i < eps.size(); ++i) eps[i] = static_cast<T>(rng.normal());
          Buffer<T> noise_t(s.B * s.H * R * s.Dqk), kl(s.B * s.H * C * s.Dqk), ql(s.B * s.H * C * s.Dqk);
          for (Index b = 0; b < s.B; ++b)
            for (Index h = 0; h < s.H; ++h) {
              for (Index i = 0; i < R * s.Dqk; ++i)
                noise_t[(b * s.H + h) * R * s.Dqk + i] = eps[(h / group) * R * s.Dqk + i];
              for (Index i = 0; i < C * s.Dqk; ++i) {
                const Index at = (b * s.H + h) * C * s.Dqk + i;
                kl[at] = static_cast<T>(rng.normal());
                ql[at] = -kl[at];
              }
            }
          LaraDraws<T> draws;
          draws.noise = effattn::ConstTensor4<T>(noise_t.data(), s.B, s.H, R, s.Dqk);
          draws.query_landmarks = effattn::ConstTensor4<T>(ql.data(), s.B, s.H, C, s.Dqk);
          draws.key_landmarks = effattn::ConstTensor4<T>(kl.data(), s.B, s.H, C, s.Dqk);
          const Index rows = antithetic ? 2 * R : R;
          std::vector<double> w(static_cast<std::size_t>(s.Hkv * rows * s.Dqk));
          for (Index h = 0; h < s.Hkv; ++h)
            for (Index r = 0; r < rows; ++r)
              for (Index d = 0; d < s.Dqk; ++d) {
                const double e = eps[(h * R + r % R) * s.Dqk + d];
                w[static_cast<std::size_t>((h * rows + r) * s.Dqk + d)] = (r < R ? sigma : -sigma) * e;
              }
          RfaConfig rc;
          rc.feature = Feature::positive;
          rc.compat = Compat::none;
          rc.num_features = rows;
          rc.scale = scale;
          const RfaAttention<T> performer(rc, Projection(std::move(w), s.Hkv, rows, s.Dqk));
          const Buffer<T> lara = run_with(LaraAttention<T>(c), in, s.mask(), &draws);
          const Buffer<T> rfa = run_rfa(in, performer);
          EXPECT_TRUE(
              close(in, lara, as_double(rfa), kExact<T> * value_unit(in.v), context + " vs RfaAttention positive"));
        }
}

// ---- the draw contract (lara_config.hpp, detail::draw_stream) ----

// Own generator = injected draws filled from the documented stream: LARA eps of row r, component i =
// draw_stream(seed, b, h, draw).normal(r Dqk + i); RA eps of sample s, query n = normal((s Lq + n) Dqk
// + i) and the sampled key = the first visible m whose cumulative pi reaches uniform(s Lq + n). Also
// after resample() (draw 1). Pinning this lets another implementation reproduce a run from a seed.
TYPED_TEST(LaraProperties, OwnGeneratorFollowsTheDrawStream) {
  using T = TypeParam;
  std::uint64_t seed = 1700;
  {
    const Shape s{.name = "lara", .B = 2, .H = 2, .Lq = 10, .Lk = 12, .key_lengths = {12, 9}};
    for (bool antithetic : {false, true}) {
      LaraConfig c;
      c.num_landmarks = 4;
      c.sampling = Sampling::stochastic;
      c.samples_per_proposal = 3;
      c.antithetic = antithetic;
      c.seed = 77;
      LaraAttention<T> attn(c);
      const RfaInputs<T> in = make_in<T>(s, seed++);
      const Index R = 4 * 3;
      for (int redraw = 0; redraw < 2; ++redraw) {
        Buffer<T> eps(s.B * s.H * R * s.Dqk);
        for (Index b = 0; b < s.B; ++b)
          for (Index h = 0; h < s.H; ++h) {
            const auto stream = effattn::detail::draw_stream(c.seed, b, h, attn.draw());
            for (Index i = 0; i < R * s.Dqk; ++i)
              eps[(b * s.H + h) * R * s.Dqk + i] = static_cast<T>(stream.normal(static_cast<std::uint64_t>(i)));
          }
        LaraDraws<T> draws;
        draws.noise = effattn::ConstTensor4<T>(eps.data(), s.B, s.H, R, s.Dqk);
        const std::string context = s.describe() + " " + describe(c) + " draw " + std::to_string(attn.draw());
        EXPECT_TRUE(close(in, run(attn, in, s.mask()), as_double(run_with(attn, in, s.mask(), &draws)),
                          kExact<T> * value_unit(in.v), context));
        attn.resample();
      }
    }
  }
  {
    const Shape s{.name = "ra",
                  .B = 2,
                  .H = 2,
                  .Hkv = 1,
                  .Lq = 9,
                  .Lk = 11,
                  .key_lengths = {11, 4},
                  .causal = Causal::bottom_right};
    for (RaMean mean : {RaMean::sampled_key, RaMean::expected_key}) {
      RaConfig c{.samples = 3, .noise = Noise::paper, .mean = mean, .seed = 78};
      RandomizedAttention<T> attn(c);
      const RfaInputs<T> in = make_in<T>(s, seed++, 1.0);  // q, k ~ N(0, 1): a spread-out pi
      const double scale = 1.0 / std::sqrt(static_cast<double>(s.Dqk));
      for (int redraw = 0; redraw < 2; ++redraw) {
        Buffer<T> eps(c.samples * s.B * s.H * s.Lq * s.Dqk);
        std::vector<Index> key(static_cast<std::size_t>(c.samples * s.B * s.H * s.Lq), 0);
        for (Index b = 0; b < s.B; ++b)
          for (Index h = 0; h < s.H; ++h) {
            const auto stream = effattn::detail::draw_stream(c.seed, b, h, attn.draw());
            for (Index smp = 0; smp < c.samples; ++smp)
              for (Index n = 0; n < s.Lq; ++n) {
                const Index row = ((smp * s.B + b) * s.H + h) * s.Lq + n;
                for (Index i = 0; i < s.Dqk; ++i)
                  eps[row * s.Dqk + i] =
                      static_cast<T>(stream.normal(static_cast<std::uint64_t>((smp * s.Lq + n) * s.Dqk + i)));
                const auto [lo, hi] = visible_keys(s, b, n);
                if (hi == lo) continue;
                std::vector<double> logit;
                for (Index m = lo; m < hi; ++m) {
                  double dot = 0;
                  for (Index d = 0; d < s.Dqk; ++d)
                    dot +=
                        static_cast<double>(in.q[in.q_at(b, h, n, d)]) * static_cast<double>(in.k[in.k_at(b, 0, m, d)]);
                  logit.push_back(dot * scale);
                }
                const double top = *std::max_element(logit.begin(), logit.end());
                double z = 0;
                for (double& l : logit) z += (l = std::exp(l - top));
                const double u = stream.uniform(static_cast<std::uint64_t>(smp * s.Lq + n));
                double cum = 0;
                Index pick = hi - 1;
                for (Index m = lo; m < hi; ++m) {
                  cum += logit[static_cast<std::size_t>(m - lo)] / z;
                  if (cum >= u) {
                    pick = m;
                    break;
                  }
                }
                key[static_cast<std::size_t>(row)] = pick;
              }
          }
        RaDraws<T> draws;
        draws.noise = effattn::View<const T, 5>(eps.data(), c.samples, s.B, s.H, s.Lq, s.Dqk);
        if (mean == RaMean::sampled_key)
          draws.key_index = effattn::View<const Index, 4>(key.data(), c.samples, s.B, s.H, s.Lq);
        const std::string context = s.describe() + " " + describe(c) + " draw " + std::to_string(attn.draw());
        EXPECT_TRUE(close(in, run(attn, in, s.mask()), as_double(run_with(attn, in, s.mask(), &draws)),
                          kExact<T> * value_unit(in.v), context));
        attn.resample();
      }
    }
  }
}

// ---- determinism (lara.md 11.8) ----

// Same seed -> the same bits: two objects of one config, a repeated call, and 1 or 2 threads (the
// draws are counter-based per (seed, batch, head, draw), so no thread's schedule can change them).
TYPED_TEST(LaraProperties, SameSeedAndAnyThreadCountGiveTheSameBits) {
  using T = TypeParam;
  const std::vector<Shape> shapes = {
      {.name = "heads", .B = 2, .H = 4, .Hkv = 2, .Lq = 64, .Lk = 64, .Dqk = 16, .Dv = 8, .key_lengths = {64, 37}},
      {.name = "one long head", .Lq = 300, .Lk = 300, .Dqk = 8, .Dv = 8},
      {.name = "cross", .B = 2, .H = 2, .Lq = 45, .Lk = 130, .layout = Layout::blhd},
  };
  std::uint64_t seed = 1800;
  const auto check = [&](const auto& attn, const Shape& s, const std::string& context) {
    using A = std::decay_t<decltype(attn)>;
    const RfaInputs<T> in = make_in<T>(s, seed++);
    const effattn::Mask mask = s.mask();
    const Buffer<T> serial = run(attn, in, mask);
    ASSERT_LE(hull_excess(s, in, serial), kExact<T> * value_unit(in.v)) << context;  // not two equal wrong answers
    EXPECT_TRUE(same_bytes(serial, run(attn, in, mask))) << "repeated call: " << context;
    EXPECT_TRUE(same_bytes(serial, run(A(attn.config()), in, mask))) << "second object: " << context;
    EXPECT_TRUE(same_bytes(serial, run(attn, in, mask, Executor::openmp(1)))) << "openmp(1): " << context;
    EXPECT_TRUE(same_bytes(serial, run(attn, in, mask, Executor::openmp(2)))) << "openmp(2): " << context;
  };
  std::vector<Shape> lara = shapes, ra = shapes;
  for_each_lara<T>(check, lara);
  ra[0].causal = Causal::top_left;
  ra[2].causal = Causal::bottom_right;
  for_each_ra<T>(check, ra);
}

// A forward over B sequences and H heads equals one forward per (sequence, head) given the same draws
// (the own generator's stream depends on (b, h), so the draws are injected and sliced).
TYPED_TEST(LaraProperties, BatchedEqualsPerHead) {
  using T = TypeParam;
  const Shape s{
      .name = "batched", .B = 2, .H = 4, .Hkv = 2, .Lq = 14, .Lk = 19, .Dqk = 6, .Dv = 5, .key_lengths = {19, 11}};
  const Shape self{.name = "batched self", .B = 2, .H = 2, .Lq = 14, .Lk = 14, .key_lengths = {14, 9}};
  std::uint64_t seed = 1900;
  const auto one_head = [](const Shape& whole, Index b) {
    Shape h = whole;
    h.B = 1, h.H = 1, h.Hkv = 1;
    h.layout = Layout::bhld;
    if (!whole.key_lengths.empty()) h.key_lengths = {whole.key_lengths[static_cast<std::size_t>(b)]};
    return h;
  };
  // Head (b, h) of `in` as a B = H = 1 input.
  const auto slice = [](const RfaInputs<T>& in, const Shape& hs, Index b, Index h) {
    RfaInputs<T> r = make_in<T>(hs, 0);
    const RfaSpec& s = in.spec;
    const Index kvh = h / (s.H / s.Hkv);
    for (Index i = 0; i < s.Lq; ++i)
      for (Index d = 0; d < s.Dqk; ++d) r.q[r.q_at(0, 0, i, d)] = in.q[in.q_at(b, h, i, d)];
    for (Index j = 0; j < s.Lk; ++j) {
      for (Index d = 0; d < s.Dqk; ++d) r.k[r.k_at(0, 0, j, d)] = in.k[in.k_at(b, kvh, j, d)];
      for (Index d = 0; d < s.Dv; ++d) r.v[r.v_at(0, 0, j, d)] = in.v[in.v_at(b, kvh, j, d)];
    }
    return r;
  };
  for (const Shape* shape : {&s, &self})
    for (Padding padding : {Padding::exclude, Padding::zero_compat})
      for (LaraConfig c : lara_configs()) {
        if (padding == Padding::zero_compat && shape->Lq != shape->Lk) continue;
        c.padding = padding;
        const std::string context = shape->describe() + " " + describe(c);
        const LaraAttention<T> attn(c);
        const RfaInputs<T> in = make_in<T>(*shape, seed++);
        // C_eff = C for every sequence here (n >= 8), so one noise tensor fits the batch and each head.
        const Index R = c.num_landmarks * c.samples_per_proposal;
        Buffer<T> eps(shape->B * shape->H * R * shape->Dqk);
        Rng rng(seed);
        for (Index i = 0; i < eps.size(); ++i) eps[i] = static_cast<T>(rng.normal());
        LaraDraws<T> draws;
        if (c.sampling == Sampling::stochastic)
          draws.noise = effattn::ConstTensor4<T>(eps.data(), shape->B, shape->H, R, shape->Dqk);
        const Buffer<T> all = run_with(attn, in, shape->mask(), &draws);
        for (Index b = 0; b < shape->B; ++b)
          for (Index h = 0; h < shape->H; ++h) {
            const Shape hs = one_head(*shape, b);
            const RfaInputs<T> one = slice(in, hs, b, h);
            LaraDraws<T> d1;
            if (c.sampling == Sampling::stochastic)
              d1.noise =
                  effattn::ConstTensor4<T>(eps.data() + (b * shape->H + h) * R * shape->Dqk, 1, 1, R, shape->Dqk);
            const Buffer<T> got = run_with(attn, one, hs.mask(), &d1);
            std::vector<double> want(static_cast<std::size_t>(one.out_size()));
            for (Index i = 0; i < shape->Lq; ++i)
              for (Index d = 0; d < shape->Dv; ++d)
                want[static_cast<std::size_t>(one.out_at(0, 0, i, d))] = all[in.out_at(b, h, i, d)];
            EXPECT_TRUE(close(one, got, want, kExact<T> * value_unit(in.v),
                              context + " head (" + std::to_string(b) + "," + std::to_string(h) + ")"));
          }
      }
  // RA with injected noise (where there is noise) and key indices (sampled_key).
  Shape ra = s;
  ra.causal = Causal::bottom_right;
  for (const RaConfig& c : ra_configs()) {
    const std::string context = ra.describe() + " " + describe(c);
    const RandomizedAttention<T> attn(c);
    const RfaInputs<T> in = make_in<T>(ra, seed++);
    const Index S = c.samples, rows = S * ra.B * ra.H * ra.Lq;
    Buffer<T> eps(rows * ra.Dqk);
    std::vector<Index> key(static_cast<std::size_t>(rows), 0);
    Rng rng(seed);
    for (Index i = 0; i < eps.size(); ++i) eps[i] = static_cast<T>(rng.normal());
    for (Index smp = 0; smp < S; ++smp)
      for (Index b = 0; b < ra.B; ++b)
        for (Index h = 0; h < ra.H; ++h)
          for (Index n = 0; n < ra.Lq; ++n) {
            const auto [lo, hi] = visible_keys(ra, b, n);
            if (hi > lo)
              key[static_cast<std::size_t>(((smp * ra.B + b) * ra.H + h) * ra.Lq + n)] = rng.integer(lo, hi - 1);
          }
    RaDraws<T> draws;
    if (c.noise != Noise::none) draws.noise = effattn::View<const T, 5>(eps.data(), S, ra.B, ra.H, ra.Lq, ra.Dqk);
    if (c.mean == RaMean::sampled_key)
      draws.key_index = effattn::View<const Index, 4>(key.data(), S, ra.B, ra.H, ra.Lq);
    const Buffer<T> all = run_with(attn, in, ra.mask(), &draws);
    for (Index b = 0; b < ra.B; ++b)
      for (Index h = 0; h < ra.H; ++h) {
        const Shape hs = one_head(ra, b);
        const RfaInputs<T> one = slice(in, hs, b, h);
        Buffer<T> e1(S * ra.Lq * ra.Dqk);
        std::vector<Index> k1(static_cast<std::size_t>(S * ra.Lq));
        for (Index smp = 0; smp < S; ++smp)
          for (Index n = 0; n < ra.Lq; ++n) {
            const Index from = ((smp * ra.B + b) * ra.H + h) * ra.Lq + n;
            k1[static_cast<std::size_t>(smp * ra.Lq + n)] = key[static_cast<std::size_t>(from)];
            for (Index i = 0; i < ra.Dqk; ++i) e1[(smp * ra.Lq + n) * ra.Dqk + i] = eps[from * ra.Dqk + i];
          }
        RaDraws<T> d1;
        if (c.noise != Noise::none) d1.noise = effattn::View<const T, 5>(e1.data(), S, 1, 1, ra.Lq, ra.Dqk);
        if (c.mean == RaMean::sampled_key) d1.key_index = effattn::View<const Index, 4>(k1.data(), S, 1, 1, ra.Lq);
        const Buffer<T> got = run_with(attn, one, hs.mask(), &d1);
        std::vector<double> want(static_cast<std::size_t>(one.out_size()));
        for (Index i = 0; i < ra.Lq; ++i)
          for (Index d = 0; d < ra.Dv; ++d)
            want[static_cast<std::size_t>(one.out_at(0, 0, i, d))] = all[in.out_at(b, h, i, d)];
        EXPECT_TRUE(close(one, got, want, kExact<T> * value_unit(in.v),
                          context + " head (" + std::to_string(b) + "," + std::to_string(h) + ")"));
      }
  }
}

// Deterministic LARA (w = mu) and RA with noise none and a deterministic mean use no randomness: the
// seed and resample() change nothing. Stochastic ones: another seed or resample() changes the output,
// and the draw counter makes resample() itself reproducible.
TYPED_TEST(LaraProperties, SeedsAndResample) {
  using T = TypeParam;
  const Shape s{.name = "seeds", .B = 2, .H = 2, .Lq = 12, .Lk = 15, .key_lengths = {15, 10}};
  std::uint64_t seed = 2000;
  const auto check = [&](const auto& attn0, const Shape& shape, const std::string& context) {
    using A = std::decay_t<decltype(attn0)>;
    const RfaInputs<T> in = make_in<T>(shape, seed++);
    const effattn::Mask mask = shape.mask();
    auto config = attn0.config();
    const Buffer<T> base = run(attn0, in, mask);
    A resampled(config);
    resampled.resample();
    EXPECT_EQ(resampled.draw(), 1u);
    const Buffer<T> after = run(resampled, in, mask);
    config.seed += 1;
    const Buffer<T> other_seed = run(A(config), in, mask);
    bool random = false;
    if constexpr (std::is_same_v<A, LaraAttention<T>>)
      random = attn0.config().sampling == Sampling::stochastic;
    else
      random = attn0.config().noise != Noise::none || attn0.config().mean == RaMean::sampled_key;
    if (!random) {
      EXPECT_TRUE(same_bytes(base, after)) << "resample() changed a deterministic output: " << context;
      EXPECT_TRUE(same_bytes(base, other_seed)) << "the seed changed a deterministic output: " << context;
    } else {
      // The draws move every output by O(0.1) here; 1e-3 is far above rounding.
      EXPECT_GT(max_abs_diff(base, after), 1e-3) << "resample() left the output unchanged: " << context;
      EXPECT_GT(max_abs_diff(base, other_seed), 1e-3) << "another seed left the output unchanged: " << context;
      A again(attn0.config());
      again.resample();
      EXPECT_TRUE(same_bytes(after, run(again, in, mask))) << "resample() is not reproducible: " << context;
    }
  };
  for_each_lara<T>(check, {s});
  for_each_ra<T>(check, {s});
}

// ---- padding (lara.md 8) ----

// Padded tokens' q, k, v (replaced by other values, 4x the spread) cannot reach the outputs:
//  * LARA, padding = exclude: outputs of unpadded queries (all queries when Lq != Lk) are unchanged;
//  * LARA, padding = zero_compat: every output is unchanged, padded query rows too (they are the
//    output of q = 0);
//  * RA: every output is unchanged (padded keys are never visible; queries are not padded).
// Bit for bit: a padded key's weight is exactly 0 and the landmarks never read it.
TYPED_TEST(LaraProperties, PaddedTokensDoNotReachTheOutputs) {
  using T = TypeParam;
  const std::vector<Shape> shapes = {
      {.name = "padding", .B = 3, .H = 2, .Lq = 20, .Lk = 20, .key_lengths = {20, 9, 2}},
      {.name = "padding GQA",
       .B = 2,
       .H = 4,
       .Hkv = 2,
       .Lq = 17,
       .Lk = 17,
       .layout = Layout::blhd,
       .key_lengths = {5, 13}},
      {.name = "padding cross", .B = 2, .Lq = 6, .Lk = 20, .key_lengths = {20, 3}},
  };
  std::uint64_t seed = 2100;
  const auto check = [&](const auto& attn, const Shape& s, const std::string& context) {
    using A = std::decay_t<decltype(attn)>;
    const RfaInputs<T> in = make_in<T>(s, seed++);
    RfaInputs<T> other = make_in<T>(s, in.spec.seed);
    Rng rng(in.spec.seed + 99);
    bool queries_padded = false, zero_compat = false;
    if constexpr (std::is_same_v<A, LaraAttention<T>>) {
      queries_padded = s.Lq == s.Lk;
      zero_compat = attn.config().padding == Padding::zero_compat;
    }
    for (Index b = 0; b < s.B; ++b) {
      const Index n = s.key_lengths[static_cast<std::size_t>(b)];
      for (Index h = 0; h < s.Hkv; ++h)
        for (Index j = n; j < s.Lk; ++j) {
          for (Index d = 0; d < s.Dqk; ++d) other.k[other.k_at(b, h, j, d)] = static_cast<T>(1.4 * rng.normal());
          for (Index d = 0; d < s.Dv; ++d) other.v[other.v_at(b, h, j, d)] = static_cast<T>(4 * rng.normal());
        }
      if (queries_padded)
        for (Index h = 0; h < s.H; ++h)
          for (Index i = n; i < s.Lq; ++i)
            for (Index d = 0; d < s.Dqk; ++d) other.q[other.q_at(b, h, i, d)] = static_cast<T>(1.4 * rng.normal());
    }
    const Buffer<T> want = run(attn, in, s.mask());
    const Buffer<T> got = run(attn, other, s.mask());
    Index differing = 0, first = -1;
    for (Index b = 0; b < s.B; ++b)
      for (Index h = 0; h < s.H; ++h)
        for (Index i = 0; i < s.Lq; ++i) {
          if (queries_padded && !zero_compat && i >= s.key_lengths[static_cast<std::size_t>(b)]) continue;
          for (Index d = 0; d < s.Dv; ++d) {
            const Index o = in.out_at(b, h, i, d);
            if (std::memcmp(&got[o], &want[o], sizeof(T)) != 0) {
              if (first < 0) first = o;
              ++differing;
            }
          }
        }
    EXPECT_EQ(differing, 0) << "padded values reached the outputs; first at flat " << first << ": "
                            << (first >= 0 ? static_cast<double>(got[first]) : 0.0) << " vs "
                            << (first >= 0 ? static_cast<double>(want[first]) : 0.0) << "; " << context;
  };
  for_each_lara<T>(check, shapes);
  for_each_ra<T>(check, shapes);
}

// A sequence with key_lengths 0 sees no key: every one of its output rows is exactly 0 (never NaN),
// and the other sequences are unaffected (finite, inside their hull).
TYPED_TEST(LaraProperties, AFullyPaddedSequenceGivesZeros) {
  using T = TypeParam;
  const std::vector<Shape> shapes = {
      {.name = "self", .B = 2, .H = 2, .Lq = 11, .Lk = 11, .key_lengths = {0, 11}},
      {.name = "cross", .B = 3, .H = 2, .Hkv = 1, .Lq = 5, .Lk = 9, .key_lengths = {7, 0, 0}},
      {.name = "n=1", .B = 2, .Lq = 1, .Lk = 1, .key_lengths = {0, 1}},
  };
  std::uint64_t seed = 2200;
  const auto check = [&](const auto& attn, const Shape& s, const std::string& context) {
    const RfaInputs<T> in = make_in<T>(s, seed++);
    const Buffer<T> out = run(attn, in, s.mask());
    for (Index b = 0; b < s.B; ++b) {
      if (s.key_lengths[static_cast<std::size_t>(b)] != 0) continue;
      for (Index h = 0; h < s.H; ++h)
        for (Index i = 0; i < s.Lq; ++i)
          for (Index d = 0; d < s.Dv; ++d)
            ASSERT_EQ(out[in.out_at(b, h, i, d)], T(0)) << "sequence " << b << " row " << i << "; " << context;
    }
    EXPECT_LE(hull_excess(s, in, out), kExact<T> * value_unit(in.v)) << context;
  };
  for_each_lara<T>(check, shapes);
  for_each_ra<T>(check, shapes);
}

// q, k * 100 (N(0, 35^2)): scores w.k' and |k'|^2/2 reach ~1e4, so anything not done in log space
// overflows; every output must be finite and still inside the hull of the visible values.
TYPED_TEST(LaraProperties, HugeInputsGiveFiniteOutputs) {
  using T = TypeParam;
  std::uint64_t seed = 2300;
  const auto check = [&](const auto& attn, const Shape& s, const std::string& context) {
    const RfaInputs<T> in = make_in<T>(s, seed++, 35.0);
    const Buffer<T> out = run(attn, in, s.mask());
    EXPECT_TRUE(all_finite(out, context + " qk_std=35"));
    EXPECT_LE(hull_excess(s, in, out), kExact<T> * value_unit(in.v)) << context << " qk_std=35";
  };
  for_each_lara<T>(check);
  for_each_ra<T>(check);
}

// ---- statistics against exact softmax (lara.md 11.9-11.11), double, fixed seeds ----

// Exact softmax attention (the double reference) of the inputs, at the default scale.
template <class T>
std::vector<double> exact_softmax(const RfaInputs<T>& in) {
  std::vector<double> out(static_cast<std::size_t>(in.out_size()));
  effattn::reference::softmax_attention<T>(
      in.qv(), in.kv(), in.vv(), effattn::Tensor4<double>(out.data(), in.out_dims()), in.mask(), {}, in.spec.layout);
  return out;
}

template <class T>
double max_error(const Buffer<T>& got, const std::vector<double>& want) {
  double e = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    const double d = std::abs(static_cast<double>(got[static_cast<Index>(i)]) - want[i]);
    e = std::max(e, std::isnan(d) ? INFINITY : d);
  }
  return e;
}

double median(std::vector<double> x) {
  std::sort(x.begin(), x.end());
  const std::size_t n = x.size();
  return n % 2 ? x[n / 2] : (x[n / 2 - 1] + x[n / 2]) / 2;
}

// RA with paper noise is unbiased: 25 runs of 400 samples each (1e4 in all, the draws of one
// object redrawn by resample()) against exact softmax, d = 8, Lq = Lk = 16, small (q, k ~ N(0,
// 0.18^2), |q'| ~ 0.4) and moderate (0.35, |q'| ~ 1) inputs. Asserted: max-abs error <= 0.03 and every
// entry within 5 standard errors (from the spread of the 25 run means). code_compat noise (sigma =
// d^-1/4) is biased; with the same 1e4 samples on the moderate inputs its largest z-score must exceed
// 5 (measured ~30), which shows the z-test has the power to see a bias of this size. Measured for
// paper noise: max error 1.9e-3 / 4.1e-3, max z 3.2 / 3.2 (small / moderate).
TEST(LaraStatistics, RandomizedAttentionIsUnbiased) {
  const Shape s{.name = "ra", .H = 2, .Hkv = 2, .Lq = 16, .Lk = 16, .Dqk = 8, .Dv = 4};
  const auto z_and_error = [&](const RfaInputs<double>& in, Noise noise, Index runs, Index samples, double& err) {
    RandomizedAttention<double> attn(
        RaConfig{.samples = samples, .noise = noise, .mean = RaMean::sampled_key, .seed = 42});
    const std::vector<double> exact = exact_softmax(in);
    std::vector<double> sum(exact.size(), 0.0), sq(exact.size(), 0.0);
    for (Index r = 0; r < runs; ++r) {
      const Buffer<double> out = run(attn, in, s.mask());
      for (std::size_t i = 0; i < exact.size(); ++i) {
        sum[i] += out[static_cast<Index>(i)];
        sq[i] += out[static_cast<Index>(i)] * out[static_cast<Index>(i)];
      }
      attn.resample();
    }
    double z = 0;
    err = 0;
    const double n = static_cast<double>(runs);
    for (std::size_t i = 0; i < exact.size(); ++i) {
      const double mean = sum[i] / n;
      const double var = std::max(0.0, (sq[i] - n * mean * mean) / (n - 1));
      const double se = std::max(std::sqrt(var / n), 1e-9);
      err = std::max(err, std::abs(mean - exact[i]));
      z = std::max(z, std::abs(mean - exact[i]) / se);
    }
    return z;
  };
  for (double qk_std : {0.18, 0.35}) {
    const RfaInputs<double> in = make_in<double>(s, 4242, qk_std);
    double err = 0;
    const double z = z_and_error(in, Noise::paper, 25, 400, err);
    ::testing::Test::RecordProperty("paper_qk" + std::to_string(qk_std) + "_max_error", sci(err));
    ::testing::Test::RecordProperty("paper_qk" + std::to_string(qk_std) + "_max_z", sci(z));
    EXPECT_LE(err, 0.03) << "qk_std " << qk_std;
    EXPECT_LE(z, 5.0) << "qk_std " << qk_std << " max error " << err;
  }
  const RfaInputs<double> in = make_in<double>(s, 4242, 0.35);
  double err = 0;
  const double z = z_and_error(in, Noise::code_compat, 25, 400, err);
  ::testing::Test::RecordProperty("code_compat_max_z", sci(z));
  EXPECT_GT(z, 5.0) << "code_compat noise showed no bias (max error " << err << ")";
}

// LARA (mis_bh, C = 4 segment-mean proposals, paper noise) is consistent: its error against exact
// softmax falls with the samples per proposal S in {1, 16, 256, 4096}. Medians over 5 seeds must fall
// strictly at every step; at S = 4096 every seed's max-abs error must be <= 0.01 (small inputs) and
// <= 0.05 (moderate). lara.md measured 0.0021 and 0.014 there; here the medians are 7.6e-2, 2.9e-2,
// 6.1e-3, 1.3e-3 (small) and 2.0e-1, 1.1e-1, 2.1e-2, 3.8e-3 (moderate).
TEST(LaraStatistics, LaraIsConsistent) {
  const Shape s{.name = "lara", .H = 2, .Hkv = 2, .Lq = 16, .Lk = 16, .Dqk = 8, .Dv = 4};
  for (double qk_std : {0.18, 0.35}) {
    const RfaInputs<double> in = make_in<double>(s, 5151, qk_std);
    const std::vector<double> exact = exact_softmax(in);
    std::vector<double> medians;
    for (Index S : {1, 16, 256, 4096}) {
      std::vector<double> errs;
      for (std::uint64_t seed = 1; seed <= 5; ++seed) {
        LaraConfig c;
        c.num_landmarks = 4;
        c.weighting = Weighting::mis_bh;
        c.sampling = Sampling::stochastic;
        c.samples_per_proposal = S;
        c.seed = seed;
        errs.push_back(max_error(run(LaraAttention<double>(c), in, s.mask()), exact));
      }
      medians.push_back(median(errs));
      ::testing::Test::RecordProperty("qk" + std::to_string(qk_std) + "_S" + std::to_string(S) + "_median_error",
                                      sci(medians.back()));
      if (S == 4096) {
        for (double e : errs) EXPECT_LE(e, qk_std < 0.2 ? 0.01 : 0.05) << "S = 4096, qk_std " << qk_std;
      }
    }
    for (std::size_t i = 1; i < medians.size(); ++i)
      EXPECT_LT(medians[i], medians[i - 1])
          << "median error did not fall from step " << i - 1 << " to " << i << ", qk_std " << qk_std;
  }
}

// At equal sample count deterministic LARA (w = mu, C = 4) approximates softmax better than Performer
// (positive orthogonal features, m = 4): median max-abs error over 9 input seeds (each with its own
// Performer projection seed), small and moderate inputs. lara.md measured 0.061 vs 0.111 and 0.141 vs
// 0.310; here the medians are 0.028 vs 0.083 and 0.10 vs 0.20.
TEST(LaraStatistics, DeterministicLaraBeatsPerformerAtEqualSamples) {
  const Shape s{.name = "quality", .H = 2, .Hkv = 2, .Lq = 16, .Lk = 16, .Dqk = 8, .Dv = 4};
  for (double qk_std : {0.18, 0.35}) {
    std::vector<double> lara, performer;
    for (std::uint64_t seed = 1; seed <= 9; ++seed) {
      const RfaInputs<double> in = make_in<double>(s, 6000 + seed, qk_std);
      const std::vector<double> exact = exact_softmax(in);
      LaraConfig c;
      c.num_landmarks = 4;
      lara.push_back(max_error(run(LaraAttention<double>(c), in, s.mask()), exact));
      RfaConfig rc;
      rc.feature = Feature::positive;
      rc.num_features = 4;
      rc.seed = seed;
      performer.push_back(max_error(run_rfa(in, RfaAttention<double>(rc, s.Hkv, s.Dqk)), exact));
    }
    const double ml = median(lara), mp = median(performer);
    ::testing::Test::RecordProperty("qk" + std::to_string(qk_std) + "_lara_median", sci(ml));
    ::testing::Test::RecordProperty("qk" + std::to_string(qk_std) + "_performer_median", sci(mp));
    EXPECT_LT(ml, mp) << "qk_std " << qk_std;
  }
}

}  // namespace
}  // namespace effattn_test
