// RandomizedAttention and LaraAttention against the double reference (reference::randomized_attention
// and reference::lara_attention, given the same config, draw count and injected draws) over many
// shapes and every option, in float and double.
//   LARA: n = 1, n < C, n not a multiple of C, Lq != Lk both ways, lengths across a query pass of the
//         core, key padding (empty, partial, full) in both padding modes, GQA, the blhd layout,
//         misaligned buffers, 2-D grids (sides multiples of sqrt(C) or not, a side shorter than it),
//         every weighting and alpha, mixed, S > 1, antithetic, both noises, stochastic with the own
//         generator (after resample() too) and with injected noise, and the caller's landmarks.
//   RA:   every mean mode and noise with injected key indices (and injected or own noise), S > 1,
//         causal in both alignments, windows, key padding, GQA, blhd; the own generator end to end in
//         double only: at a CDF boundary float and double may legitimately draw different keys.
// Tolerances (relative to max(1, max|ref|); where the reference is exactly 0, a query with no key, the
// kernel must give exactly 0):
//   double 1e-12: the estimators are ratios of sums of exp over <= a few hundred terms of logits of
//          magnitude O(1-10), a few hundred ulp at most; measured worst 7e-15 (padded queries with
//          huge logits), 2e-15 elsewhere.
//   float  2e-5: the same budget at 2^-24 is a few 1e-6; the importance weights also pass through
//          log(max(alpha, 1e-8)) and a softmax over the samples, which can amplify a rounding of alpha
//          near a cancellation. Measured worst 9e-7, so 2e-5 leaves 20x, while a wrong landmark,
//          owner, weight or band is off by O(0.1).
// The measured worst per test is recorded as a test property.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <iomanip>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <effattn/kinds/lara.hpp>
#include <effattn/reference/lara.hpp>
#include <effattn/simd/tile_kernels.hpp>

#include "support/compare.hpp"
#include "support/random.hpp"
#include "support/softmax_case.hpp"

namespace effattn_test {
namespace {

using effattn::LaraConfig;
using effattn::Noise;
using effattn::Padding;
using effattn::RaConfig;
using effattn::RaMean;
using effattn::Sampling;
using effattn::Weighting;

template <class T>
class LaraSweep : public ::testing::Test {};
TYPED_TEST_SUITE(LaraSweep, Scalars);

// Query rows of one pass of the quadratic core.
template <class T>
constexpr Index kPass = effattn::detail::TileScratch<T>::G* effattn::detail::kTileQ<T>;

template <class T>
constexpr double kRelTol = sizeof(T) == 8 ? 1e-12 : 2e-5;

std::size_t ix(Index i) { return static_cast<std::size_t>(i); }

struct Spec {
  bool ra = false;  // RandomizedAttention, else LaraAttention
  Index B = 1, H = 1, Hkv = 1, Lq = 1, Lk = 1, Dqk = 8, Dv = 8;
  Layout layout = Layout::bhld;
  Index offset = 0;  // misalignment of every buffer, in elements
  Causal causal = Causal::none;
  effattn::Window window{};
  std::vector<Index> key_lengths{};
  LaraConfig lara{};
  RaConfig ra_config{};
  bool inject_noise = false;  // standard normals from the seed through the draws overload
  bool inject_keys = false;   // RA sampled_key: a visible key per (sample, query), uniform
  Index user_landmarks = 0;   // LARA: C > 0 caller's landmarks [B, H, C, Dqk]
  int resamples = 0;          // resample() calls before forward (the reference's draw)
  double qk_std = 0.5;
  double padded_q_scale = 1.0;  // LARA, Lq == Lk: the padded tokens' query rows multiplied by this
  std::uint64_t seed = 1;

  [[nodiscard]] std::string describe() const {
    std::ostringstream os;
    os << (ra ? "RA" : "LARA") << " B=" << B << " H=" << H << " Hkv=" << Hkv << " Lq=" << Lq << " Lk=" << Lk
       << " Dqk=" << Dqk << " Dv=" << Dv << " layout=" << (layout == Layout::bhld ? "bhld" : "blhd")
       << " offset=" << offset << " causal="
       << (causal == Causal::none       ? "none"
           : causal == Causal::top_left ? "top_left"
                                        : "bottom_right");
    if (window.active()) os << " window=(" << window.left << "," << window.right << ")";
    if (!key_lengths.empty()) {
      os << " key_lengths={";
      for (std::size_t i = 0; i < key_lengths.size(); ++i) os << (i ? "," : "") << key_lengths[i];
      os << "}";
    }
    if (ra) {
      os << " samples=" << ra_config.samples << " mean=" << effattn::to_string(ra_config.mean)
         << " noise=" << effattn::to_string(ra_config.noise) << " seed=" << ra_config.seed;
    } else {
      const LaraConfig& c = lara;
      os << " C=" << c.num_landmarks;
      if (c.grid.active()) os << " grid=" << c.grid.rows << "x" << c.grid.cols;
      os << " " << effattn::to_string(c.weighting) << " alpha=" << c.alpha_coeff
         << (c.sampling == Sampling::stochastic ? " stochastic" : " deterministic") << " S=" << c.samples_per_proposal
         << (c.antithetic ? " antithetic" : "") << " noise=" << effattn::to_string(c.noise)
         << (c.padding == Padding::zero_compat ? " zero_compat" : " exclude") << (c.mixed ? " mixed" : "")
         << " seed=" << c.seed;
      if (user_landmarks) os << " user_landmarks=" << user_landmarks;
    }
    if (resamples) os << " resamples=" << resamples;
    if (padded_q_scale != 1.0) os << " padded_q_scale=" << padded_q_scale;
    os << (inject_noise ? " injected-noise" : "") << (inject_keys ? " injected-keys" : "") << " qk_std=" << qk_std
       << " data-seed=" << seed;
    return os.str();
  }
};

// The keys query i of batch b sees (the Mask rules of softmax attention, restated).
std::vector<Index> visible_keys(const Spec& s, Index b, Index i) {
  const Index valid = s.key_lengths.empty() ? s.Lk : s.key_lengths[ix(b)];
  const Index pos = i + (s.causal == Causal::top_left ? 0 : valid - s.Lq);
  std::vector<Index> keys;
  for (Index m = 0; m < valid; ++m) {
    if (s.causal != Causal::none && m > pos) continue;
    if (s.window.left >= 0 && m < pos - s.window.left) continue;
    if (s.window.right >= 0 && m > pos + s.window.right) continue;
    keys.push_back(m);
  }
  return keys;
}

// The C_eff of each batch the kernel pools to (lara_config.hpp), for the injected noise's rows.
Index max_proposals(const Spec& s) {
  Index c_max = 0;
  for (Index b = 0; b < s.B; ++b) {
    const Index nk = s.key_lengths.empty() ? s.Lk : s.key_lengths[ix(b)];
    const Index nq = !s.key_lengths.empty() && s.Lq == s.Lk ? nk : s.Lq;
    const bool zero = s.lara.padding == Padding::zero_compat;
    Index c = std::min({s.lara.num_landmarks, zero ? s.Lq : nq, zero ? s.Lk : nk});
    if (s.user_landmarks) c = s.user_landmarks;
    if (s.lara.grid.active()) {
      const auto side = static_cast<Index>(std::llround(std::sqrt(static_cast<double>(s.lara.num_landmarks))));
      c = std::min(side, s.lara.grid.rows) * std::min(side, s.lara.grid.cols);
    }
    c_max = std::max(c_max, nk == 0 ? 0 : c);
  }
  return c_max;
}

template <class T>
struct Case {
  Spec spec;
  Buffer<T> q, k, v, noise, q_land, k_land;
  Buffer<Index> keys;
  Index noise_rows = 0;

  [[nodiscard]] effattn::ConstTensor4<T> qv() const {
    return {q.data(), dims_in(spec.layout, spec.B, spec.H, spec.Lq, spec.Dqk)};
  }
  [[nodiscard]] effattn::ConstTensor4<T> kv() const {
    return {k.data(), dims_in(spec.layout, spec.B, spec.Hkv, spec.Lk, spec.Dqk)};
  }
  [[nodiscard]] effattn::ConstTensor4<T> vv() const {
    return {v.data(), dims_in(spec.layout, spec.B, spec.Hkv, spec.Lk, spec.Dv)};
  }
  [[nodiscard]] std::array<Index, 4> out_dims() const { return dims_in(spec.layout, spec.B, spec.H, spec.Lq, spec.Dv); }
  [[nodiscard]] Index out_size() const { return spec.B * spec.H * spec.Lq * spec.Dv; }
  [[nodiscard]] effattn::Mask mask() const {
    effattn::Mask m;
    m.causal = spec.causal;
    m.window = spec.window;
    m.key_lengths = spec.key_lengths;
    return m;
  }
  [[nodiscard]] effattn::RaDraws<T> ra_draws() const {
    effattn::RaDraws<T> d;
    const Index S = spec.ra_config.samples;
    if (spec.inject_noise) d.noise = effattn::View<const T, 5>(noise.data(), S, spec.B, spec.H, spec.Lq, spec.Dqk);
    if (spec.inject_keys) d.key_index = effattn::View<const Index, 4>(keys.data(), S, spec.B, spec.H, spec.Lq);
    return d;
  }
  [[nodiscard]] effattn::LaraDraws<T> lara_draws() const {
    effattn::LaraDraws<T> d;
    if (spec.inject_noise) d.noise = effattn::ConstTensor4<T>(noise.data(), spec.B, spec.H, noise_rows, spec.Dqk);
    if (spec.user_landmarks) {
      d.query_landmarks = effattn::ConstTensor4<T>(q_land.data(), spec.B, spec.H, spec.user_landmarks, spec.Dqk);
      d.key_landmarks = effattn::ConstTensor4<T>(k_land.data(), spec.B, spec.H, spec.user_landmarks, spec.Dqk);
    }
    return d;
  }
};

template <class T>
Case<T> make_case(const Spec& s) {
  Case<T> c;
  c.spec = s;
  Rng rng(s.seed);
  c.q = random_buffer<T>(rng, s.B * s.H * s.Lq * s.Dqk, s.offset, s.qk_std);
  c.k = random_buffer<T>(rng, s.B * s.Hkv * s.Lk * s.Dqk, s.offset, s.qk_std);
  c.v = random_buffer<T>(rng, s.B * s.Hkv * s.Lk * s.Dv, s.offset, 1.0);
  if (!s.key_lengths.empty() && s.Lq == s.Lk)
    for (Index b = 0; b < s.B; ++b)
      for (Index h = 0; h < s.H; ++h)
        for (Index i = s.key_lengths[ix(b)]; i < s.Lq; ++i)
          for (Index d = 0; d < s.Dqk; ++d) {
            const Index at = s.layout == Layout::bhld ? ((b * s.H + h) * s.Lq + i) * s.Dqk + d
                                                      : ((b * s.Lq + i) * s.H + h) * s.Dqk + d;
            c.q[at] = static_cast<T>(s.padded_q_scale * static_cast<double>(c.q[at]));
          }
  if (s.ra) {
    const Index S = s.ra_config.samples;
    if (s.inject_noise) c.noise = random_buffer<T>(rng, S * s.B * s.H * s.Lq * s.Dqk, s.offset, 1.0);
    if (s.inject_keys) {
      c.keys = Buffer<Index>(S * s.B * s.H * s.Lq, s.offset);
      for (Index t = 0; t < S; ++t)
        for (Index b = 0; b < s.B; ++b)
          for (Index h = 0; h < s.H; ++h)
            for (Index i = 0; i < s.Lq; ++i) {
              const auto vis = visible_keys(s, b, i);
              c.keys[((t * s.B + b) * s.H + h) * s.Lq + i] =
                  vis.empty() ? 0 : vis[ix(rng.integer(0, static_cast<long long>(vis.size()) - 1))];
            }
    }
  } else {
    if (s.inject_noise) {
      c.noise_rows = max_proposals(s) * s.lara.samples_per_proposal;
      c.noise = random_buffer<T>(rng, s.B * s.H * c.noise_rows * s.Dqk, s.offset, 1.0);
    }
    if (s.user_landmarks) {
      c.q_land = random_buffer<T>(rng, s.B * s.H * s.user_landmarks * s.Dqk, s.offset, s.qk_std);
      c.k_land = random_buffer<T>(rng, s.B * s.H * s.user_landmarks * s.Dqk, s.offset, s.qk_std);
    }
  }
  return c;
}

template <class T>
std::vector<double> reference_of(const Case<T>& c) {
  std::vector<double> out(ix(c.out_size()), std::numeric_limits<double>::quiet_NaN());
  const effattn::Tensor4<double> o(out.data(), c.out_dims());
  const auto draw = static_cast<std::uint64_t>(c.spec.resamples);
  if (c.spec.ra)
    effattn::reference::randomized_attention<T>(c.qv(), c.kv(), c.vv(), o, c.mask(), c.spec.ra_config, draw,
                                                c.ra_draws(), c.spec.layout);
  else
    effattn::reference::lara_attention<T>(c.qv(), c.kv(), c.vv(), o, c.mask(), c.spec.lara, draw, c.lara_draws(),
                                          c.spec.layout);
  return out;
}

// Outputs start as NaN so an element the kernel forgets to write cannot pass.
template <class T>
Buffer<T> kernel_of(const Case<T>& c) {
  Buffer<T> out(c.out_size(), c.spec.offset, std::numeric_limits<T>::quiet_NaN());
  effattn::Options<T> options;
  options.layout = c.spec.layout;
  options.executor = effattn::Executor::serial();  // threads are the determinism tests' business
  const effattn::Tensor4<T> o(out.data(), c.out_dims());
  const auto run = [&](auto attn, const auto& draws) {
    for (int r = 0; r < c.spec.resamples; ++r) attn.resample();
    attn.forward(c.qv(), c.kv(), c.vv(), o, c.mask(), options, draws);
  };
  if (c.spec.ra)
    run(effattn::RandomizedAttention<T>(c.spec.ra_config), c.ra_draws());
  else
    run(effattn::LaraAttention<T>(c.spec.lara), c.lara_draws());
  return out;
}

double max_abs(const std::vector<double>& x) {
  double m = 0;
  for (double e : x) m = std::max(m, std::abs(e));
  return m;
}

// Kernel against reference for one spec; `worst` receives max|got - want| / max(1, max|want|).
template <class T>
::testing::AssertionResult check_case(const Spec& spec, double& worst) {
  try {
    const Case<T> c = make_case<T>(spec);
    const std::vector<double> want = reference_of(c);
    const Buffer<T> got = kernel_of(c);
    const double unit = std::max(1.0, max_abs(want));
    for (std::size_t i = 0; i < want.size(); ++i) {
      const double d = std::abs(static_cast<double>(got[static_cast<Index>(i)]) - want[i]);
      worst = std::max(worst, std::isnan(d) ? INFINITY : d / unit);
    }
    const double atol = kRelTol<T> * unit;
    const auto od = c.out_dims();
    return all_close_with(
        "out", got.data(), want.data(), {od.begin(), od.end()}, axes_of(spec.layout),
        [&](Index i) {
          return Tolerance{want[ix(i)] == 0 ? 0.0 : atol, 0};
        },
        spec.describe());
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw: " << e.what() << "\n  case: " << spec.describe();
  }
}

// ---- LARA ----

// The estimator options: index r in [0, 18) selects a weighting (r mod 3) and a sampling variant
// (r / 3); the seed follows r.
LaraConfig lara_option(int r, Index C) {
  LaraConfig c;
  c.num_landmarks = C;
  c.weighting = r % 3 == 0 ? Weighting::mis_opt : r % 3 == 1 ? Weighting::mis_bh : Weighting::mis_biased;
  switch ((r / 3) % 6) {
    case 0:
      break;  // deterministic, the defaults
    case 1:
      c.sampling = Sampling::stochastic;
      c.noise = Noise::code_compat;
      break;
    case 2:
      c.sampling = Sampling::stochastic;
      c.samples_per_proposal = 3;
      c.alpha_coeff = 2.0;
      break;
    case 3:
      c.sampling = Sampling::stochastic;
      c.antithetic = true;
      c.mixed = true;
      break;
    case 4:
      c.mixed = true;
      c.alpha_coeff = 0.0;
      break;
    case 5:
      c.sampling = Sampling::stochastic;
      c.samples_per_proposal = 2;
      c.antithetic = true;
      c.noise = Noise::code_compat;
      c.alpha_coeff = -0.5;
      break;
  }
  c.seed = 40 + static_cast<std::uint64_t>(r);
  return c;
}

// n = 1, n < C, n = C, n not a multiple of C, a multiple of C, across a query pass; Lq != Lk both ways.
TYPED_TEST(LaraSweep, LaraShapesAndOptions) {
  using T = TypeParam;
  double worst = 0;
  const Index P = kPass<T>;
  const std::vector<std::array<Index, 3>> shapes = {// Lq, Lk, C
                                                    {1, 1, 8},   {5, 5, 8},         {8, 8, 8},   {37, 37, 8},
                                                    {64, 64, 8}, {P + 1, P + 1, 7}, {19, 70, 8}, {70, 19, 8},
                                                    {3, 40, 16}, {40, 3, 16},       {1, 9, 4},   {2 * P + 3, 11, 5}};
  int r = 0;
  for (const auto& [lq, lk, C] : shapes)
    for (int option = 0; option < 18; ++option, ++r) {  // every weighting x every sampling variant
      Spec s{.B = 1 + r % 2,
             .H = 2,
             .Hkv = r % 3 == 0 ? 1 : 2,
             .Lq = lq,
             .Lk = lk,
             .Dqk = r % 2 ? 16 : 9,
             .Dv = r % 4 == 1 ? 5 : 12};
      s.layout = r % 2 ? Layout::blhd : Layout::bhld;
      s.offset = (r / 2) % 2;
      s.lara = lara_option(option, C);
      if (s.lara.sampling == Sampling::stochastic) {
        s.inject_noise = r % 3 == 0;
        s.resamples = r % 4 == 1 ? 2 : 0;
      }
      s.seed = 100 + static_cast<std::uint64_t>(r);
      EXPECT_TRUE(check_case<T>(s, worst));
    }
  ::testing::Test::RecordProperty("worst_rel_error", sci(worst));
}

// Key padding in both modes: an empty sequence, a full one and partial ones, self and cross.
TYPED_TEST(LaraSweep, LaraKeyPadding) {
  using T = TypeParam;
  double worst = 0;
  int r = 0;
  for (Padding padding : {Padding::exclude, Padding::zero_compat})
    for (const auto& [lq, lk] : std::vector<std::array<Index, 2>>{{21, 21}, {40, 40}, {13, 30}, {30, 13}})
      for (int option = 0; option < 18; ++option, ++r) {
        if (padding == Padding::zero_compat && lq != lk) continue;  // refused with padding
        Spec s{.B = 4, .H = 4, .Hkv = 2, .Lq = lq, .Lk = lk, .Dqk = 8, .Dv = 6};
        s.key_lengths = {0, lk, lk / 2 + 1, r % 2 ? 1 : 3};
        s.layout = r % 3 ? Layout::bhld : Layout::blhd;
        s.offset = r % 2;
        s.lara = lara_option(option, 6);
        s.lara.padding = padding;
        s.inject_noise = s.lara.sampling == Sampling::stochastic && r % 2 == 0;
        s.seed = 300 + static_cast<std::uint64_t>(r);
        EXPECT_TRUE(check_case<T>(s, worst));
        // The empty sequence's outputs are exactly 0 (check_case demands exact 0 where the reference is).
      }
  ::testing::Test::RecordProperty("worst_rel_error", sci(worst));
}

// Padded queries (exclude) are outside r's normalisation: with huge logits their r is capped at 1
// rather than overflowing; their outputs must still match.
TYPED_TEST(LaraSweep, LaraPaddedQueriesWithHugeLogits) {
  using T = TypeParam;
  double worst = 0;
  for (int option = 0; option < 18; ++option) {
    Spec s{.B = 3, .H = 2, .Hkv = 1, .Lq = 21, .Lk = 21, .Dqk = 8, .Dv = 5};
    s.key_lengths = {21, 12, 1};
    s.padded_q_scale = 40.0;
    s.layout = option % 2 ? Layout::blhd : Layout::bhld;
    s.lara = lara_option(option, 6);
    s.inject_noise = s.lara.sampling == Sampling::stochastic && option % 2 == 0;
    s.seed = 1000 + static_cast<std::uint64_t>(option);
    EXPECT_TRUE(check_case<T>(s, worst));
  }
  ::testing::Test::RecordProperty("worst_rel_error", sci(worst));
}

// 2-D grids: sides multiples of sqrt(C), not multiples (overlapping windows), a side shorter than
// sqrt(C), a single cell.
TYPED_TEST(LaraSweep, LaraGrids) {
  using T = TypeParam;
  double worst = 0;
  const std::vector<std::array<Index, 3>> grids = {
      // rows, cols, C
      {14, 14, 49}, {6, 6, 4}, {5, 7, 9}, {2, 5, 9}, {9, 2, 16}, {11, 13, 49}, {3, 3, 1}, {1, 1, 4}};
  int r = 0;
  for (const auto& [rows, cols, C] : grids)
    for (int option = 0; option < 18; ++option, ++r) {
      Spec s{.B = 1 + r % 2, .H = 2, .Hkv = 1 + r % 2, .Lq = rows * cols, .Lk = rows * cols, .Dqk = 8, .Dv = 7};
      s.layout = r % 2 ? Layout::blhd : Layout::bhld;
      s.offset = r % 3 == 2;
      s.lara = lara_option(option, C);
      s.lara.grid = {rows, cols};
      s.inject_noise = s.lara.sampling == Sampling::stochastic && r % 2 == 1;
      s.seed = 500 + static_cast<std::uint64_t>(r);
      EXPECT_TRUE(check_case<T>(s, worst));
    }
  ::testing::Test::RecordProperty("worst_rel_error", sci(worst));
}

// The caller's landmarks (any count, more or fewer than the tokens), with padding and cross-attention.
TYPED_TEST(LaraSweep, LaraUserLandmarks) {
  using T = TypeParam;
  double worst = 0;
  int r = 0;
  for (const auto& [lq, lk, C] : std::vector<std::array<Index, 3>>{{12, 12, 5}, {3, 3, 7}, {20, 9, 4}, {1, 6, 2}})
    for (int option = 0; option < 18; ++option, ++r) {
      Spec s{.B = 2, .H = 2, .Hkv = 1, .Lq = lq, .Lk = lk, .Dqk = 10, .Dv = 4};
      if (r % 2) s.key_lengths = {lk, std::max<Index>(lk - 3, 1)};
      s.layout = r % 3 == 1 ? Layout::blhd : Layout::bhld;
      s.lara = lara_option(option, 49);  // num_landmarks is not the landmarks' count
      if (lq != lk) s.lara.padding = Padding::exclude;
      s.user_landmarks = C;
      s.inject_noise = s.lara.sampling == Sampling::stochastic && r % 2 == 0;
      s.seed = 700 + static_cast<std::uint64_t>(r);
      EXPECT_TRUE(check_case<T>(s, worst));
    }
  ::testing::Test::RecordProperty("worst_rel_error", sci(worst));
}

// Larger inputs (|q'| ~ 2-3) push the weights far from uniform and alpha toward the 1e-8 clamp.
TYPED_TEST(LaraSweep, LaraLargeLogits) {
  using T = TypeParam;
  double worst = 0;
  for (int r = 0; r < 18; ++r) {
    Spec s{.B = 1, .H = 2, .Hkv = 2, .Lq = 33, .Lk = 33, .Dqk = 16, .Dv = 8};
    s.qk_std = 1.5;
    s.lara = lara_option(r, 6);
    s.inject_noise = s.lara.sampling == Sampling::stochastic;
    s.seed = 900 + static_cast<std::uint64_t>(r);
    EXPECT_TRUE(check_case<T>(s, worst));
  }
  ::testing::Test::RecordProperty("worst_rel_error", sci(worst));
}

// ---- RA ----

struct Band {
  Causal causal;
  effattn::Window window;
};

const std::vector<Band>& ra_bands() {
  static const std::vector<Band> b = {
      {Causal::none, {}},          {Causal::top_left, {}},         {Causal::bottom_right, {}}, {Causal::none, {3, 2}},
      {Causal::top_left, {4, -1}}, {Causal::bottom_right, {2, 0}}, {Causal::none, {-1, 0}},    {Causal::none, {0, -1}}};
  return b;
}

// Every mean mode and noise with the keys injected (and the noise injected or drawn), under every band,
// self and cross both ways, across a query pass, with padding, GQA and blhd.
TYPED_TEST(LaraSweep, RaMeansNoisesAndBands) {
  using T = TypeParam;
  double worst = 0;
  const Index P = kPass<T>;
  const std::vector<std::array<Index, 2>> shapes = {{1, 1}, {7, 7}, {P + 1, P + 1}, {5, 40}, {40, 5}, {P + 2, 9}};
  int r = 0;
  for (const Band& band : ra_bands())
    for (const auto& [lq, lk] : shapes)
      for (RaMean mean : {RaMean::sampled_key, RaMean::expected_key, RaMean::mean_key}) {
        Spec s{.ra = true,
               .B = 1 + r % 3,
               .H = 2,
               .Hkv = r % 2 ? 1 : 2,
               .Lq = lq,
               .Lk = lk,
               .Dqk = r % 2 ? 16 : 9,
               .Dv = r % 4 == 1 ? 5 : 10};
        s.causal = band.causal;
        s.window = band.window;
        if (r % 4 == 2) {
          s.key_lengths.assign(ix(s.B), lk);
          s.key_lengths[0] = lk / 2 + 1;
          if (s.B > 2) s.key_lengths[2] = 0;
        }
        s.layout = r % 2 ? Layout::blhd : Layout::bhld;
        s.offset = (r / 2) % 2;
        s.ra_config.mean = mean;
        s.ra_config.noise = r % 3 == 0 ? Noise::paper : r % 3 == 1 ? Noise::code_compat : Noise::none;
        s.ra_config.samples = r % 4 == 3 ? 3 : 1;
        s.ra_config.seed = 60 + static_cast<std::uint64_t>(r);
        s.inject_keys = mean == RaMean::sampled_key;
        s.inject_noise = s.ra_config.noise != Noise::none && (r / 3) % 2 == 0;
        s.resamples = r % 5 == 4 ? 3 : 0;
        s.seed = 1100 + static_cast<std::uint64_t>(r++);
        EXPECT_TRUE(check_case<T>(s, worst));
      }
  ::testing::Test::RecordProperty("worst_rel_error", sci(worst));
}

// RA with its own generator end to end (the categorical draw too), double only: the kernel and the
// reference invert the same uniform against the same CDF, which in double agree except on a set of
// measure ~1e-16 per draw.
TEST(LaraSweepOwnGenerator, RaSampledKeyDouble) {
  double worst = 0;
  const std::vector<std::array<Index, 2>> shapes = {{1, 1}, {9, 9}, {kPass<double> + 1, 30}, {6, 50}};
  int r = 0;
  for (const Band& band : ra_bands())
    for (const auto& [lq, lk] : shapes)
      for (Noise noise : {Noise::paper, Noise::code_compat, Noise::none}) {
        Spec s{.ra = true, .B = 2, .H = 2, .Hkv = 1 + r % 2, .Lq = lq, .Lk = lk, .Dqk = 8, .Dv = 6};
        s.causal = band.causal;
        s.window = band.window;
        if (r % 3 == 1) s.key_lengths = {lk, lk / 2 + 1};
        s.layout = r % 2 ? Layout::blhd : Layout::bhld;
        s.ra_config.mean = RaMean::sampled_key;
        s.ra_config.noise = noise;
        s.ra_config.samples = r % 2 ? 2 : 1;
        s.ra_config.seed = 80 + static_cast<std::uint64_t>(r);
        s.resamples = r % 3;
        s.qk_std = r % 2 ? 1.0 : 0.5;
        s.seed = 1500 + static_cast<std::uint64_t>(r++);
        EXPECT_TRUE(check_case<double>(s, worst));
      }
  ::testing::Test::RecordProperty("worst_rel_error", sci(worst));
}

}  // namespace
}  // namespace effattn_test
