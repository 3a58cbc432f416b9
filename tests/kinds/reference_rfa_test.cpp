// The double-precision random-feature reference itself: against performer-pytorch's and HKUNLP's
// golden outputs, against feature maps and gated recurrences written out by hand, against the exact
// identities every ratio-of-kernel-sums attention obeys (rfa.md section 9), against exact softmax as
// the number of features grows, and against the conventions of each compat preset. Every RFA kernel
// test trusts this file.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <effattn/reference/rfa.hpp>
#include <effattn/reference/softmax.hpp>

#include "support/compare.hpp"
#include "support/random.hpp"
#include "support/rfa_golden.hpp"

namespace effattn_test {
namespace {

using effattn::Causal;
using effattn::Compat;
using effattn::ConstTensor3;
using effattn::ConstTensor4;
using effattn::Feature;
using effattn::Layout;
using effattn::Mask;
using effattn::Projection;
using effattn::RfaConfig;
using effattn::Tensor4;

std::size_t ix(Index i) { return static_cast<std::size_t>(i); }

// iid N(0, 1) projection rows (an unbiased positive-feature estimator of exp(q'.k')).
Projection gaussian_projection(Rng& rng, Index heads, Index m, Index d) {
  return Projection(normals(rng, heads * m * d, 1.0), heads, m, d);
}

// One problem in bhld layout, inputs in double.
struct Rfa {
  Index B = 1, H = 1, Hkv = 1, Lq = 1, Lk = 1, D = 1, Dv = 1;
  std::vector<double> q, k, v;
  std::vector<double> gate;  // [B, Hkv, Lk] or empty
  Causal causal = Causal::none;
  std::vector<Index> key_lengths;
  RfaConfig config;
  Projection projection;

  [[nodiscard]] std::vector<double> run(Layout layout = Layout::bhld) const {
    Mask m;
    m.causal = causal;
    m.key_lengths = key_lengths;
    std::vector<double> out(ix(B * H * Lq * Dv), -7.0);
    const auto dims = [&](Index h, Index l, Index d) {
      return layout == Layout::bhld ? std::array<Index, 4>{B, h, l, d} : std::array<Index, 4>{B, l, h, d};
    };
    std::optional<ConstTensor3<double>> g;
    if (!gate.empty()) g = ConstTensor3<double>(gate.data(), B, Hkv, Lk);
    effattn::reference::rfa_attention<double>(
        ConstTensor4<double>(q.data(), dims(H, Lq, D)), ConstTensor4<double>(k.data(), dims(Hkv, Lk, D)),
        ConstTensor4<double>(v.data(), dims(Hkv, Lk, Dv)), Tensor4<double>(out.data(), dims(H, Lq, Dv)), m, config,
        projection, layout, g);
    return out;
  }

  // Element (b, h, l, d) of a bhld tensor with `heads` heads of `len` rows of `dim` values.
  static double& el(std::vector<double>& t, Index heads, Index len, Index dim, Index b, Index h, Index l, Index d) {
    return t[ix(((b * heads + h) * len + l) * dim + d)];
  }
  double& q_at(Index b, Index h, Index i, Index d) { return el(q, H, Lq, D, b, h, i, d); }
  double& k_at(Index b, Index h, Index j, Index d) { return el(k, Hkv, Lk, D, b, h, j, d); }
  double& v_at(Index b, Index h, Index j, Index d) { return el(v, Hkv, Lk, Dv, b, h, j, d); }

  [[nodiscard]] std::string describe() const {
    std::string s = "feature=" + std::string(effattn::to_string(config.feature)) +
                    " compat=" + std::string(effattn::to_string(config.compat)) + " B=" + std::to_string(B) +
                    " H=" + std::to_string(H) + " Hkv=" + std::to_string(Hkv) + " Lq=" + std::to_string(Lq) +
                    " Lk=" + std::to_string(Lk) + " D=" + std::to_string(D) + " Dv=" + std::to_string(Dv) +
                    " causal=" + std::to_string(static_cast<int>(causal));
    if (!key_lengths.empty()) {
      s += " key_lengths={";
      for (Index len : key_lengths) s += std::to_string(len) + ",";
      s += "}";
    }
    return s + (gate.empty() ? "" : " gated");
  }
};

// A seeded random problem: q, k ~ N(0, qk_std^2), v ~ N(0, 1), an iid Gaussian projection with m rows
// per KV head (none for relu / elu_plus_one when m = 0).
Rfa random_case(Feature feature, Index Lq, Index Lk, std::uint64_t seed, Index m = 16, double qk_std = 0.35,
                Index B = 1, Index H = 1, Index Hkv = 1, Index D = 8, Index Dv = 3) {
  Rng rng(seed);
  Rfa r;
  r.B = B, r.H = H, r.Hkv = Hkv, r.Lq = Lq, r.Lk = Lk, r.D = D, r.Dv = Dv;
  r.q = normals(rng, B * H * Lq * D, qk_std);
  r.k = normals(rng, B * Hkv * Lk * D, qk_std);
  r.v = normals(rng, B * Hkv * Lk * Dv, 1.0);
  r.config.feature = feature;
  if (m > 0) {
    r.config.num_features = m;
    r.projection = gaussian_projection(rng, Hkv, m, D);
  }
  return r;
}

const Feature kExponential[] = {Feature::positive, Feature::hyperbolic, Feature::hkunlp_fourier};
const Feature kAll[] = {Feature::positive,       Feature::hyperbolic, Feature::trigonometric,
                        Feature::hkunlp_fourier, Feature::relu,       Feature::elu_plus_one};

// ---- golden: performer-pytorch and HKUNLP efficient-attention in float64 ----

// The golden inputs are float32 values stored as float64, so reading them as either T is exact.
template <class T>
void check_golden(const RfaGoldenCase& g) {
  const std::vector<T> q(g.q.data.begin(), g.q.data.end()), k(g.k.data.begin(), g.k.data.end()),
      v(g.v.data.begin(), g.v.data.end());
  const Projection projection = g.projection();
  const RfaConfig config = g.config();
  const std::vector<Causal> alignments =
      g.spec.causal ? std::vector<Causal>{Causal::top_left, Causal::bottom_right} : std::vector<Causal>{Causal::none};
  for (Causal causal : alignments) {
    Mask m;
    m.causal = causal;
    std::vector<double> out(g.out.data.size(), -7.0);
    effattn::reference::rfa_attention<T>(ConstTensor4<T>(q.data(), g.B(), g.H(), g.Lq(), g.D()),
                                         ConstTensor4<T>(k.data(), g.B(), g.Hkv(), g.Lk(), g.D()),
                                         ConstTensor4<T>(v.data(), g.B(), g.Hkv(), g.Lk(), g.Dv()),
                                         Tensor4<double>(out.data(), g.B(), g.H(), g.Lq(), g.Dv()), m, config,
                                         projection);
    const std::string context = std::string(g.spec.name) +
                                (causal == Causal::bottom_right ? " causal=bottom_right" : "") +
                                (sizeof(T) == 4 ? " T=float" : " T=double");
    EXPECT_TRUE(
        all_close("out", out.data(), g.out.data.data(), g.out.shape, "[b,h,i,d]", {g.f64_tolerance(), 0}, context));
    if (sizeof(T) == 8 && causal != Causal::bottom_right)
      ::testing::Test::RecordProperty(std::string("max_abs_err_") + g.spec.name, sci(max_abs_diff(out, g.out.data)));
  }
}

TEST(ReferenceRfaGolden, MatchesPublicImplementations) {
  for (const RfaGoldenSpec& spec : rfa_golden_specs()) {
    const RfaGoldenCase g = load_rfa_golden(spec);
    check_golden<double>(g);
    check_golden<float>(g);
  }
}

TEST(ReferenceRfaGolden, LoaderShapes) {
  for (const RfaGoldenSpec& spec : rfa_golden_specs()) {
    const RfaGoldenCase g = load_rfa_golden(spec);
    const Projection p = g.projection();
    EXPECT_EQ(p.heads(), spec.compat == Compat::lucidrains ? 1 : g.H()) << spec.name;
    EXPECT_EQ(p.rows(), g.m()) << spec.name;
    EXPECT_EQ(p.dim(), g.D()) << spec.name;
    EXPECT_EQ(g.out.shape, g.q.shape) << spec.name;
    // Row r of head h of the projection is W[h, r, :] (or W[r, :]).
    const Index h = p.heads() - 1, r = g.m() - 1, d = g.D() - 1;
    EXPECT_EQ(p(h, r, d), g.w.data.back()) << spec.name;
  }
}

// ---- each feature map, written out by hand (no stabilisers) ----

// phi of one raw row for a feature map, straight from the formulas in feature_kind.hpp.
std::vector<double> phi_by_hand(const RfaConfig& c, const Projection& p, const std::vector<double>& x, double scale) {
  const Index D = static_cast<Index>(x.size());
  const Index m = p.empty() ? D : p.rows();
  std::vector<double> xs(x.size()), u(ix(m)), f;
  double sq = 0, norm = 0;
  for (Index d = 0; d < D; ++d) {
    xs[ix(d)] = x[ix(d)] * std::sqrt(scale);
    sq += xs[ix(d)] * xs[ix(d)];
    norm += x[ix(d)] * x[ix(d)];
  }
  norm = std::sqrt(norm);
  for (Index r = 0; r < m; ++r) {
    double s = 0;
    for (Index d = 0; d < D; ++d) {
      const double in = c.feature == Feature::trigonometric && c.l2_normalize ? x[ix(d)] / (norm + 1e-3) : xs[ix(d)];
      s += p.empty() ? (r == d ? x[ix(d)] : 0.0) : p(0, r, d) * in;
    }
    u[ix(r)] = c.feature == Feature::trigonometric ? s / c.temperature : s;
  }
  const double md = static_cast<double>(m);
  switch (c.feature) {
    case Feature::positive:
      for (double ur : u) f.push_back(std::exp(ur - sq / 2) / std::sqrt(md));
      break;
    case Feature::hyperbolic:
      for (double ur : u) f.push_back(std::exp(-sq / 2) * std::exp(ur) / std::sqrt(2 * md));
      for (double ur : u) f.push_back(std::exp(-sq / 2) * std::exp(-ur) / std::sqrt(2 * md));
      break;
    case Feature::trigonometric:
    case Feature::hkunlp_fourier: {
      const double h = c.feature == Feature::hkunlp_fourier ? std::exp(sq / 2) : 1.0;
      for (double ur : u) f.push_back(h * std::sin(ur) / std::sqrt(md));
      for (double ur : u) f.push_back(h * std::cos(ur) / std::sqrt(md));
      break;
    }
    case Feature::relu:
      for (double ur : u) f.push_back(ur > 0 ? ur : 0.0);
      break;
    case Feature::elu_plus_one:
      for (double ur : u) f.push_back(ur > 0 ? ur + 1 : std::exp(ur) - 1 + 1);
      break;
  }
  return f;
}

// Non-causal out_i = sum_j (phi_i.phi_j) v_j / sum_j phi_i.phi_j over keys [0, n_keys), divided by
// max(den, clamp) when clamp > 0; 0 when the denominator is 0 (relu features can all vanish).
std::vector<double> ratio_by_hand(const Rfa& r, Index n_keys, double clamp = 0) {
  const double scale = r.config.scale ? *r.config.scale : 1.0 / std::sqrt(static_cast<double>(r.D));
  std::vector<double> out;
  for (Index i = 0; i < r.Lq; ++i) {
    const auto pq = phi_by_hand(r.config, r.projection,
                                std::vector<double>(r.q.begin() + i * r.D, r.q.begin() + (i + 1) * r.D), scale);
    std::vector<double> num(ix(r.Dv), 0.0);
    double den = 0;
    for (Index j = 0; j < n_keys; ++j) {
      const auto pk = phi_by_hand(r.config, r.projection,
                                  std::vector<double>(r.k.begin() + j * r.D, r.k.begin() + (j + 1) * r.D), scale);
      const double w = std::inner_product(pq.begin(), pq.end(), pk.begin(), 0.0);
      den += w;
      for (Index d = 0; d < r.Dv; ++d) num[ix(d)] += w * r.v[ix(j * r.Dv + d)];
    }
    for (double x : num) out.push_back(den == 0 ? 0.0 : x / (clamp > 0 ? std::max(den, clamp) : den));
  }
  return out;
}

TEST(ReferenceRfa, FeatureMapsByHand) {
  for (Feature f : kAll)
    for (int variant = 0; variant < 3; ++variant) {
      // variant 1: custom scale / temperature; variant 2: trigonometric without l2 normalisation, or
      // relu / elu_plus_one without a projection.
      Rfa r = random_case(f, 3, 5, 100 + static_cast<std::uint64_t>(variant), 6, 0.5, 1, 1, 1, 4, 3);
      if (variant == 1) {
        r.config.scale = 0.7;
        r.config.temperature = 1.7;
      }
      if (variant == 2) {
        r.config.l2_normalize = false;
        if (f == Feature::relu || f == Feature::elu_plus_one) r.projection = Projection();
      }
      // relu of raw inputs may zero a whole row: shift q and k to the positive side for that variant.
      if (variant == 2 && f == Feature::relu) {
        for (double& x : r.q) x = std::abs(x);
        for (double& x : r.k) x = std::abs(x);
      }
      const auto want = ratio_by_hand(r, r.Lk);
      const auto got = r.run();
      EXPECT_TRUE(all_close("out", got.data(), want.data(), {r.Lq, r.Dv}, "[i,d]", {1e-14, 1e-13},
                            r.describe() + " variant " + std::to_string(variant)));
    }
}

TEST(ReferenceRfa, ClampComparesTheTrueDenominator) {
  // Single key, so out = v * min(1, den / clamp) with den = phi(q).phi(k). Exponential maps refuse a
  // clamp under compat none (their stabilisers cancel in the ratio, not against a floor).
  for (Feature f : {Feature::positive, Feature::hyperbolic, Feature::hkunlp_fourier}) {
    Rfa r = random_case(f, 2, 1, 7, 8, 0.9, 1, 1, 1, 4, 3);
    r.config.clamp = 0.3;
    EXPECT_THROW(r.run(), effattn::config_error) << r.describe();
  }
  for (Feature f : {Feature::relu, Feature::elu_plus_one}) {
    Rfa r = random_case(f, 2, 1, 7, 8, 0.9, 1, 1, 1, 4, 3);
    r.projection = Projection();
    if (f == Feature::relu) {  // relu(x) of positive inputs: no row of zeros
      for (double& x : r.q) x = std::abs(x);
      for (double& x : r.k) x = std::abs(x);
    }
    const auto exact = ratio_by_hand(r, 1);
    for (double clamp : {1e-3, 0.3, 3.0, 30.0}) {
      r.config.clamp = clamp;
      const auto want = ratio_by_hand(r, 1, clamp);
      const auto got = r.run();
      EXPECT_TRUE(all_close("out", got.data(), want.data(), {r.Lq, r.Dv}, "[i,d]", {1e-15, 1e-13},
                            r.describe() + " clamp " + std::to_string(clamp)));
    }
    // Sanity of the construction: the largest clamp is active, so the output is not v.
    EXPECT_GT(max_abs_diff(r.run(), exact), 1e-3) << r.describe();
  }
}

// ---- exact identities (rfa.md section 9, items 1-5) ----

TEST(ReferenceRfa, AllKeysEqualGiveTheMeanOfV) {
  for (Feature f : kExponential)
    for (Causal causal : {Causal::none, Causal::top_left, Causal::bottom_right}) {
      Rfa r = random_case(f, 7, 9, 21, 16, 0.35);
      r.causal = causal;
      for (Index j = 1; j < r.Lk; ++j)
        for (Index d = 0; d < r.D; ++d) r.k_at(0, 0, j, d) = r.k_at(0, 0, 0, d);
      const auto out = r.run();
      const Index shift = causal == Causal::bottom_right ? r.Lk - r.Lq : 0;
      for (Index i = 0; i < r.Lq; ++i) {
        const Index hi = causal == Causal::none ? r.Lk : std::min(r.Lk, i + shift + 1);
        for (Index d = 0; d < r.Dv; ++d) {
          double mean = 0;
          for (Index j = 0; j < hi; ++j) mean += r.v_at(0, 0, j, d);
          EXPECT_NEAR(out[ix(i * r.Dv + d)], mean / static_cast<double>(hi), 1e-12) << r.describe() << " i=" << i;
        }
      }
    }
}

TEST(ReferenceRfa, SingleKeyGivesItsValue) {
  for (Feature f : kExponential) {
    const Rfa r = random_case(f, 5, 1, 22, 16, 0.35);
    const auto out = r.run();
    for (Index i = 0; i < r.Lq; ++i)
      for (Index d = 0; d < r.Dv; ++d) EXPECT_NEAR(out[ix(i * r.Dv + d)], r.v[ix(d)], 1e-12) << r.describe();
  }
}

TEST(ReferenceRfa, ConstantShiftedAndLinearValues) {
  for (Feature f : kExponential) {
    Rfa r = random_case(f, 6, 11, 23, 16, 0.35);
    const auto base = r.run();
    const double c[3] = {0.25, -1.5, 3.0};
    // Constant V rows give that constant.
    Rfa constant = r;
    for (Index j = 0; j < r.Lk; ++j)
      for (Index d = 0; d < r.Dv; ++d) constant.v_at(0, 0, j, d) = c[d];
    const auto oc = constant.run();
    for (Index i = 0; i < r.Lq; ++i)
      for (Index d = 0; d < r.Dv; ++d) EXPECT_NEAR(oc[ix(i * r.Dv + d)], c[d], 1e-12) << r.describe();
    // out(V + 1 c^T) = out(V) + 1 c^T.
    Rfa shifted = r;
    for (Index j = 0; j < r.Lk; ++j)
      for (Index d = 0; d < r.Dv; ++d) shifted.v_at(0, 0, j, d) += c[d];
    const auto os = shifted.run();
    for (Index i = 0; i < r.Lq; ++i)
      for (Index d = 0; d < r.Dv; ++d) EXPECT_NEAR(os[ix(i * r.Dv + d)], base[ix(i * r.Dv + d)] + c[d], 1e-12);
    // out(a V + b V2) = a out(V) + b out(V2) with W fixed.
    Rng rng(24);
    Rfa second = r;
    second.v = normals(rng, r.Lk * r.Dv, 1.0);
    const auto o2 = second.run();
    Rfa mixed = r;
    for (std::size_t e = 0; e < mixed.v.size(); ++e) mixed.v[e] = 0.75 * r.v[e] - 2.0 * second.v[e];
    const auto om = mixed.run();
    for (std::size_t e = 0; e < om.size(); ++e) EXPECT_NEAR(om[e], 0.75 * base[e] - 2.0 * o2[e], 1e-12);
  }
}

// Largest amount by which an output coordinate leaves [min_j v_jd, max_j v_jd] over the first n keys.
double hull_excess(const Rfa& r, const std::vector<double>& out, Index n) {
  double excess = 0;
  for (Index d = 0; d < r.Dv; ++d) {
    double lo = 1e300, hi = -1e300;
    for (Index j = 0; j < n; ++j) {
      lo = std::min(lo, r.v[ix(j * r.Dv + d)]);
      hi = std::max(hi, r.v[ix(j * r.Dv + d)]);
    }
    for (Index i = 0; i < r.Lq; ++i) {
      const double o = out[ix(i * r.Dv + d)];
      excess = std::max({excess, lo - o, o - hi});
    }
  }
  return excess;
}

TEST(ReferenceRfa, PositiveFeaturesStayInTheConvexHull) {
  // Moderate and large norms (|q'| up to ~3), where the estimator is poor but still convex.
  for (Feature f : {Feature::positive, Feature::hyperbolic})
    for (double qk_std : {0.35, 1.0, 2.0})
      for (std::uint64_t seed = 30; seed < 34; ++seed) {
        const Rfa r = random_case(f, 8, 12, seed, 4, qk_std);
        EXPECT_LE(hull_excess(r, r.run(), r.Lk), 1e-12) << r.describe() << " seed " << seed;
      }
}

TEST(ReferenceRfa, TrigonometricFeaturesLeaveTheConvexHull) {
  // Negative test: sin/cos features give weights of either sign, so some output leaves the hull of
  // the values. A low temperature and few features make that certain rather than rare.
  double worst = 0;
  for (Feature f : {Feature::trigonometric, Feature::hkunlp_fourier})
    for (std::uint64_t seed = 40; seed < 44; ++seed) {
      Rfa r = random_case(f, 8, 12, seed, 2, 1.0);
      r.config.temperature = 0.5;
      worst = std::max(worst, hull_excess(r, r.run(), r.Lk));
    }
  EXPECT_GT(worst, 0.1);
}

TEST(ReferenceRfa, PermutationsOfQueriesAndKeyValuePairs) {
  for (Feature f : kExponential) {
    const Rfa r = random_case(f, 6, 10, 25, 16, 0.35);
    const auto base = r.run();
    const std::vector<Index> pq{3, 0, 5, 1, 4, 2}, pk{9, 2, 7, 0, 5, 3, 8, 1, 6, 4};
    Rfa p = r;
    for (Index i = 0; i < r.Lq; ++i)
      for (Index d = 0; d < r.D; ++d) p.q[ix(i * r.D + d)] = r.q[ix(pq[ix(i)] * r.D + d)];
    for (Index j = 0; j < r.Lk; ++j) {
      for (Index d = 0; d < r.D; ++d) p.k[ix(j * r.D + d)] = r.k[ix(pk[ix(j)] * r.D + d)];
      for (Index d = 0; d < r.Dv; ++d) p.v[ix(j * r.Dv + d)] = r.v[ix(pk[ix(j)] * r.Dv + d)];
    }
    const auto out = p.run();
    for (Index i = 0; i < r.Lq; ++i)
      for (Index d = 0; d < r.Dv; ++d)
        EXPECT_NEAR(out[ix(i * r.Dv + d)], base[ix(pq[ix(i)] * r.Dv + d)], 1e-12) << r.describe();
  }
}

// ---- Performer -> softmax as m grows (rfa.md 9.12) ----

TEST(ReferenceRfa, PositiveFeaturesApproachSoftmax) {
  // n = 16, d = 8, dv = 4, q, k ~ N(0, 0.18^2) (|q'| ~ 0.4), v ~ N(0, 1), iid Gaussian W.
  const Index n = 16, d = 8, dv = 4;
  Rng rng(9012);
  const auto q = normals(rng, n * d, 0.18), k = normals(rng, n * d, 0.18), v = normals(rng, n * dv, 1.0);
  std::vector<double> exact(ix(n * dv));
  effattn::reference::softmax_attention<double>(
      ConstTensor4<double>(q.data(), 1, 1, n, d), ConstTensor4<double>(k.data(), 1, 1, n, d),
      ConstTensor4<double>(v.data(), 1, 1, n, dv), Tensor4<double>(exact.data(), 1, 1, n, dv));
  const auto error_at = [&](Index m) {
    RfaConfig config;
    config.num_features = m;
    const Projection w = gaussian_projection(rng, 1, m, d);
    std::vector<double> out(ix(n * dv));
    effattn::reference::rfa_attention<double>(
        ConstTensor4<double>(q.data(), 1, 1, n, d), ConstTensor4<double>(k.data(), 1, 1, n, d),
        ConstTensor4<double>(v.data(), 1, 1, n, dv), Tensor4<double>(out.data(), 1, 1, n, dv), Mask{}, config, w);
    return max_abs_diff(out, exact);
  };
  const double e64 = error_at(64), e16384 = error_at(16384);
  ::testing::Test::RecordProperty("max_abs_err_m64", sci(e64));
  ::testing::Test::RecordProperty("max_abs_err_m16384", sci(e16384));
  EXPECT_LE(e16384, 0.02);
  EXPECT_GT(e64, e16384);
}

// ---- causal, padding and the gate ----

TEST(ReferenceRfa, CausalOutputsIgnoreLaterKeys) {
  // Bit-identical: each query's key stabiliser ranges over its own visible keys only.
  for (Feature f : kAll)
    for (Causal causal : {Causal::top_left, Causal::bottom_right})
      for (bool gated : {false, true}) {
        Rfa r = random_case(f, 6, 9, 26, 8, 0.6);
        r.causal = causal;
        if (gated) {
          Rng rng(27);
          for (Index j = 0; j < r.Lk; ++j) r.gate.push_back(0.05 + 0.9 * rng.uniform());
        }
        const auto base = r.run();
        const Index shift = causal == Causal::bottom_right ? r.Lk - r.Lq : 0;
        for (Index i = 0; i < r.Lq; ++i) {
          Rfa later = r;
          Rng rng(28 + static_cast<std::uint64_t>(i));
          for (Index j = i + shift + 1; j < r.Lk; ++j) {
            for (Index d = 0; d < r.D; ++d) later.k_at(0, 0, j, d) = 3.0 * rng.normal();
            for (Index d = 0; d < r.Dv; ++d) later.v_at(0, 0, j, d) = rng.normal();
            if (gated) later.gate[ix(j)] = rng.uniform();
          }
          const auto out = later.run();
          for (Index ii = 0; ii <= i; ++ii)
            for (Index d = 0; d < r.Dv; ++d)
              EXPECT_EQ(out[ix(ii * r.Dv + d)], base[ix(ii * r.Dv + d)]) << r.describe() << " i=" << i << " ii=" << ii;
        }
      }
}

TEST(ReferenceRfa, CausalMatchesNonCausalOnPrefixes) {
  // Query i of a causal call equals the non-causal call on keys [0, i + shift] alone.
  for (Feature f : kAll)
    for (Causal causal : {Causal::top_left, Causal::bottom_right}) {
      Rfa r = random_case(f, 5, 8, 29, 8, 0.5);
      r.causal = causal;
      const auto full = r.run();
      const Index shift = causal == Causal::bottom_right ? r.Lk - r.Lq : 0;
      for (Index i = 0; i < r.Lq; ++i) {
        Rfa prefix = r;
        prefix.causal = Causal::none;
        prefix.Lq = 1;
        prefix.Lk = i + shift + 1;
        prefix.q.assign(r.q.begin() + i * r.D, r.q.begin() + (i + 1) * r.D);
        prefix.k.resize(ix(prefix.Lk * r.D));
        prefix.v.resize(ix(prefix.Lk * r.Dv));
        const auto out = prefix.run();
        for (Index d = 0; d < r.Dv; ++d)
          EXPECT_NEAR(out[ix(d)], full[ix(i * r.Dv + d)], 1e-14 * std::max(1.0, std::abs(out[ix(d)])))
              << r.describe() << " i=" << i;
      }
    }
}

TEST(ReferenceRfa, PaddingEqualsTruncation) {
  // compat none: padded keys are invisible; bottom-right aligns to each batch's valid length.
  for (Feature f : kAll)
    for (Causal causal : {Causal::none, Causal::top_left, Causal::bottom_right}) {
      Rfa r = random_case(f, 4, 9, 31, 8, 0.5, 3, 2, 1, 5, 2);
      r.causal = causal;
      r.key_lengths = {9, 6, 0};
      const auto full = r.run();
      for (Index b = 0; b < r.B; ++b) {
        const Index len = r.key_lengths[ix(b)];
        Rfa t = r;
        t.B = 1;
        t.Lk = len;
        t.key_lengths.clear();
        t.q.assign(r.q.begin() + b * r.H * r.Lq * r.D, r.q.begin() + (b + 1) * r.H * r.Lq * r.D);
        t.k.assign(r.k.begin() + b * r.Lk * r.D, r.k.begin() + (b * r.Lk + len) * r.D);
        t.v.assign(r.v.begin() + b * r.Lk * r.Dv, r.v.begin() + (b * r.Lk + len) * r.Dv);
        const auto out = t.run();
        EXPECT_TRUE(all_close("out", out.data(), &full[ix(b * r.H * r.Lq * r.Dv)], {r.H, r.Lq, r.Dv}, "[h,i,d]", {0, 0},
                              r.describe() + " b=" + std::to_string(b)));
      }
    }
}

TEST(ReferenceRfa, ZeroGateReadsTheLastVisibleKey) {
  // g = 0 everywhere: S_j = phi(k_j) v_j^T, so query i reads only its last visible key.
  for (Feature f : kExponential)
    for (Causal causal : {Causal::top_left, Causal::bottom_right}) {
      Rfa r = random_case(f, 7, 5, 32, 8, 0.5);
      r.causal = causal;
      r.gate.assign(ix(r.Lk), 0.0);
      const auto out = r.run();
      const Index shift = causal == Causal::bottom_right ? r.Lk - r.Lq : 0;
      for (Index i = 0; i < r.Lq; ++i) {
        const Index hi = std::min(r.Lk, i + shift + 1);
        for (Index d = 0; d < r.Dv; ++d)
          EXPECT_NEAR(out[ix(i * r.Dv + d)], hi > 0 ? r.v_at(0, 0, hi - 1, d) : 0.0, 1e-15)
              << r.describe() << " i=" << i;
      }
      // g = 1 everywhere admits no key at all: every denominator is 0, every output 0.
      r.gate.assign(ix(r.Lk), 1.0);
      for (double o : r.run()) EXPECT_EQ(o, 0.0) << r.describe();
    }
}

TEST(ReferenceRfa, GateEqualsTheRecurrence) {
  // S_j = g_j S_{j-1} + (1 - g_j) phi(k_j) v_j^T, z_j likewise, stepped key by key with hand-written
  // features; query i reads (S, z) after its last visible key. Key padding stops the recurrence.
  for (Feature f : {Feature::positive, Feature::trigonometric, Feature::elu_plus_one})
    for (Causal causal : {Causal::top_left, Causal::bottom_right}) {
      Rfa r = random_case(f, 5, 8, 33, 6, 0.5, 2, 2, 1, 4, 3);
      r.causal = causal;
      r.key_lengths = {8, 6};
      Rng rng(34);
      for (Index j = 0; j < r.B * r.Lk; ++j) r.gate.push_back(rng.uniform());
      const auto got = r.run();
      const double scale = 0.5;  // 1 / sqrt(D)
      for (Index b = 0; b < r.B; ++b) {
        const Index valid = r.key_lengths[ix(b)];
        const Index shift = causal == Causal::bottom_right ? valid - r.Lq : 0;
        const auto row = [&](const std::vector<double>& t, Index start) {
          return phi_by_hand(r.config, r.projection, std::vector<double>(t.begin() + start, t.begin() + start + r.D),
                             scale);
        };
        const std::size_t F = row(r.k, 0).size();
        std::vector<std::vector<double>> S;  // after key j: [F][Dv], flattened
        std::vector<std::vector<double>> z;
        std::vector<double> s(F * ix(r.Dv), 0.0), zz(F, 0.0);
        for (Index j = 0; j < valid; ++j) {
          const auto pk = row(r.k, (b * r.Lk + j) * r.D);
          const double g = r.gate[ix(b * r.Lk + j)];
          for (std::size_t a = 0; a < F; ++a) {
            zz[a] = g * zz[a] + (1 - g) * pk[a];
            for (Index d = 0; d < r.Dv; ++d)
              s[a * ix(r.Dv) + ix(d)] = g * s[a * ix(r.Dv) + ix(d)] + (1 - g) * pk[a] * r.v_at(b, 0, j, d);
          }
          S.push_back(s);
          z.push_back(zz);
        }
        for (Index h = 0; h < r.H; ++h)
          for (Index i = 0; i < r.Lq; ++i) {
            const Index hi = std::clamp<Index>(i + shift + 1, 0, valid);
            const auto pq = row(r.q, ((b * r.H + h) * r.Lq + i) * r.D);
            for (Index d = 0; d < r.Dv; ++d) {
              double num = 0, den = 0;
              if (hi > 0)
                for (std::size_t a = 0; a < F; ++a) {
                  num += pq[a] * S[ix(hi - 1)][a * ix(r.Dv) + ix(d)];
                  den += pq[a] * z[ix(hi - 1)][a];
                }
              const double want = hi > 0 ? num / den : 0.0;
              const double o = got[ix(((b * r.H + h) * r.Lq + i) * r.Dv + d)];
              EXPECT_NEAR(o, want, 1e-12 * std::max(1.0, std::abs(want)))
                  << r.describe() << " b=" << b << " h=" << h << " i=" << i;
            }
          }
      }
    }
}

// ---- heads and layout ----

TEST(ReferenceRfa, GroupedQueryHeadsEqualRepeatedKvHeads) {
  // H = 4 over Hkv = 2 with a projection per KV head equals H = 4 over 4 repeated KV heads with the
  // projections repeated likewise.
  for (Feature f : {Feature::positive, Feature::trigonometric, Feature::relu}) {
    Rfa r = random_case(f, 3, 5, 35, 4, 0.5, 2, 4, 2, 3, 2);
    const auto gqa = r.run();
    Rfa rep = r;
    rep.Hkv = 4;
    rep.k.clear();
    rep.v.clear();
    std::vector<double> w;
    for (Index b = 0; b < r.B; ++b)
      for (Index h = 0; h < 4; ++h) {
        const Index kv = h / 2;
        rep.k.insert(rep.k.end(), r.k.begin() + (b * 2 + kv) * r.Lk * r.D, r.k.begin() + (b * 2 + kv + 1) * r.Lk * r.D);
        rep.v.insert(rep.v.end(), r.v.begin() + (b * 2 + kv) * r.Lk * r.Dv,
                     r.v.begin() + (b * 2 + kv + 1) * r.Lk * r.Dv);
        if (b == 0)
          for (Index row = 0; row < r.projection.rows(); ++row)
            w.insert(w.end(), r.projection.row(kv, row), r.projection.row(kv, row) + r.D);
      }
    rep.projection = Projection(w, 4, r.projection.rows(), r.D);
    const auto out = rep.run();
    EXPECT_TRUE(all_close("out", out.data(), gqa.data(), {r.B, r.H, r.Lq, r.Dv}, "[b,h,i,d]", {0, 0}, r.describe()));
    // A shared projection (heads() == 1) equals a per-head copy of it.
    Rfa shared = r;
    shared.projection =
        Projection(std::vector<double>(r.projection.row(0, 0), r.projection.row(0, 0) + 4 * r.D), 1, 4, r.D);
    Rfa copied = shared;
    std::vector<double> two(shared.projection.values());
    two.insert(two.end(), shared.projection.values().begin(), shared.projection.values().end());
    copied.projection = Projection(two, 2, 4, r.D);
    const auto a = shared.run(), c = copied.run();
    EXPECT_TRUE(all_close("out", a.data(), c.data(), {r.B, r.H, r.Lq, r.Dv}, "[b,h,i,d]", {0, 0}, r.describe()));
  }
}

TEST(ReferenceRfa, BlhdLayoutIsATranspose) {
  Rfa r = random_case(Feature::positive, 5, 7, 36, 8, 0.5, 2, 2, 2, 3, 2);
  r.causal = Causal::bottom_right;
  const auto bhld = r.run();
  Rfa t = r;
  t.q = bhld_to_blhd(r.q, r.B, r.H, r.Lq, r.D);
  t.k = bhld_to_blhd(r.k, r.B, r.Hkv, r.Lk, r.D);
  t.v = bhld_to_blhd(r.v, r.B, r.Hkv, r.Lk, r.Dv);
  const auto blhd = t.run(Layout::blhd);
  const auto want = bhld_to_blhd(bhld, r.B, r.H, r.Lq, r.Dv);
  EXPECT_TRUE(all_close("out", blhd.data(), want.data(), {r.B, r.Lq, r.H, r.Dv}, "[b,i,h,d]", {0, 0}, r.describe()));
}

// ---- compat presets beyond the golden cases ----

TEST(ReferenceRfa, LucidrainsKeyMaxSpansLaterKeys) {
  // performer-pytorch's key max covers every position, and its +1e-4 does not cancel, so a causal
  // query's output moves when a later key grows; compat none does not.
  for (Compat compat : {Compat::lucidrains, Compat::none}) {
    Rfa r = random_case(Feature::positive, 6, 6, 37, 16, 0.35);
    r.config.compat = compat;
    r.causal = Causal::top_left;
    const auto base = r.run();
    for (Index d = 0; d < r.D; ++d) r.k_at(0, 0, 5, d) *= 6.0;
    const auto out = r.run();
    double moved = 0;  // over the queries that do not see key 5
    for (Index e = 0; e < 5 * r.Dv; ++e) moved = std::max(moved, std::abs(out[ix(e)] - base[ix(e)]));
    if (compat == Compat::lucidrains)
      EXPECT_GT(moved, 1e-6);
    else
      EXPECT_EQ(moved, 0.0);
  }
}

TEST(ReferenceRfa, LucidrainsPaddingZeroesValueRowsOnly) {
  // performer-pytorch's padding: the same call without a mask on values whose padded rows are 0.
  for (Causal causal : {Causal::none, Causal::top_left, Causal::bottom_right}) {
    Rfa r = random_case(Feature::positive, 6, 8, 38, 16, 0.35, 2, 1, 1, 4, 3);
    r.config.compat = Compat::lucidrains;
    r.causal = causal;
    r.key_lengths = {8, 5};
    const auto padded = r.run();
    Rfa zeroed = r;
    zeroed.key_lengths.clear();
    for (Index j = 5; j < r.Lk; ++j)
      for (Index d = 0; d < r.Dv; ++d) zeroed.v_at(1, 0, j, d) = 0.0;
    const auto want = zeroed.run();
    EXPECT_TRUE(
        all_close("out", padded.data(), want.data(), {r.B, r.H, r.Lq, r.Dv}, "[b,h,i,d]", {0, 0}, r.describe()));
  }
}

TEST(ReferenceRfa, HkunlpPaddingKeepsKeysInTheMax) {
  for (Feature f : {Feature::positive, Feature::hkunlp_fourier}) {
    Rfa r = random_case(f, 5, 8, 39, 16, 0.35, 1, 1, 1, 4, 3);
    r.config.compat = Compat::hkunlp;
    r.key_lengths = {5};
    Rfa truncated = r;
    truncated.key_lengths.clear();
    truncated.Lk = 5;
    truncated.k.resize(ix(5 * r.D));
    truncated.v.resize(ix(5 * r.Dv));
    const auto want = truncated.run();
    // Padded keys of zeros raise neither maximum (u = 0 and h = 0 there): padding = truncation.
    for (Index j = 5; j < r.Lk; ++j)
      for (Index d = 0; d < r.D; ++d) r.k_at(0, 0, j, d) = 0.0;
    const auto zero_padded = r.run();
    EXPECT_TRUE(all_close("out", zero_padded.data(), want.data(), {r.Lq, r.Dv}, "[i,d]", {1e-15, 1e-14}, r.describe()));
    // Large padded keys set the maximum, which shifts the valid keys' features against the eps (or,
    // for fourier, scales the denominator below the clamp): the output changes although those keys
    // are masked.
    for (Index j = 5; j < r.Lk; ++j)
      for (Index d = 0; d < r.D; ++d) r.k_at(0, 0, j, d) = 4.0;
    EXPECT_GT(max_abs_diff(r.run(), want), 1e-6) << r.describe();
  }
}

TEST(ReferenceRfa, HkunlpClampScalesSmallDenominators) {
  // One key far from the query: q'.k' < 1e-2, so out = v * (q'.k') / 1e-2, the same ratio for every
  // value coordinate and below 1. A clamp of 0 restores out = v.
  Rfa r = random_case(Feature::positive, 2, 1, 40, 64, 0.35, 1, 1, 1, 8, 3);
  r.config.compat = Compat::hkunlp;
  for (Index d = 0; d < r.D; ++d) r.k_at(0, 0, 0, d) = d % 2 == 0 ? 3.0 : -3.0;
  const auto out = r.run();
  for (Index i = 0; i < r.Lq; ++i) {
    const double ratio = out[ix(i * r.Dv)] / r.v[0];
    EXPECT_GT(ratio, 0.0);
    EXPECT_LT(ratio, 0.5);
    for (Index d = 1; d < r.Dv; ++d) EXPECT_NEAR(out[ix(i * r.Dv + d)] / r.v[ix(d)], ratio, 1e-12);
  }
  r.config.clamp = 0.0;
  const auto unclamped = r.run();
  for (Index i = 0; i < r.Lq; ++i)
    for (Index d = 0; d < r.Dv; ++d) EXPECT_NEAR(unclamped[ix(i * r.Dv + d)], r.v[ix(d)], 1e-14);
}

// ---- edge cases and refusals ----

TEST(ReferenceRfa, EmptyExtents) {
  for (Compat compat : {Compat::none, Compat::lucidrains, Compat::hkunlp}) {
    Rfa r = random_case(Feature::positive, 3, 2, 41, 4, 0.5, 2, 1, 1, 4, 2);
    r.config.compat = compat;
    r.Lk = 0;
    r.k.clear();
    r.v.clear();
    for (double o : r.run()) EXPECT_EQ(o, 0.0);
    r.Lq = 0;
    r.q.clear();
    EXPECT_NO_THROW(r.run());
  }
}

TEST(ReferenceRfa, RefusesWhatItCannotHonour) {
  using effattn::config_error;
  using effattn::shape_error;
  using effattn::unsupported_error;
  const Rfa base = random_case(Feature::positive, 3, 4, 42, 4, 0.5, 1, 2, 2, 4, 2);
  std::vector<double> out(ix(base.B * base.H * base.Lq * base.Dv));
  const auto call = [&](const Rfa& r, const Mask& m, std::optional<ConstTensor3<double>> gate = std::nullopt) {
    effattn::reference::rfa_attention<double>(
        ConstTensor4<double>(r.q.data(), r.B, r.H, r.Lq, r.D), ConstTensor4<double>(r.k.data(), r.B, r.Hkv, r.Lk, r.D),
        ConstTensor4<double>(r.v.data(), r.B, r.Hkv, r.Lk, r.Dv), Tensor4<double>(out.data(), r.B, r.H, r.Lq, r.Dv), m,
        r.config, r.projection, Layout::bhld, gate);
  };
  EXPECT_NO_THROW(call(base, Mask{}));
  // Masks the kind cannot apply.
  const bool keep[4] = {true, true, false, true};
  Mask bias;
  bias.bias = effattn::Bias::boolean(keep, {1, 1, 1, 4});
  EXPECT_THROW(call(base, bias), unsupported_error);
  Mask window;
  window.window = {1, 0};
  EXPECT_THROW(call(base, window), unsupported_error);
  const std::vector<Index> cu{0, 3}, cu_k{0, 4};
  Mask packed;
  packed.cu_seqlens_q = cu;
  packed.cu_seqlens_k = cu_k;
  EXPECT_THROW(call(base, packed), unsupported_error);
  // HKUNLP has no causal Performer; the gate is causal only and compat none only.
  Rfa hk = base;
  hk.config.compat = Compat::hkunlp;
  Mask causal;
  causal.causal = Causal::top_left;
  EXPECT_THROW(call(hk, causal), unsupported_error);
  EXPECT_NO_THROW(call(hk, Mask{}));
  const std::vector<double> g(ix(base.B * base.Hkv * base.Lk), 0.5);
  const ConstTensor3<double> gate(g.data(), base.B, base.Hkv, base.Lk);
  EXPECT_NO_THROW(call(base, causal, gate));
  EXPECT_THROW(call(base, Mask{}, gate), unsupported_error);
  Rfa lu = base;
  lu.config.compat = Compat::lucidrains;
  EXPECT_THROW(call(lu, causal, gate), unsupported_error);
  EXPECT_THROW(call(base, causal, ConstTensor3<double>(g.data(), base.B, base.Hkv, base.Lk - 1)), shape_error);
  // Config errors: a preset with a map it does not have, a projected map without a projection.
  lu.config.feature = Feature::hyperbolic;
  EXPECT_THROW(call(lu, Mask{}), config_error);
  Rfa bare = base;
  bare.projection = Projection();
  EXPECT_THROW(call(bare, Mask{}), config_error);
  bare.config.feature = Feature::elu_plus_one;
  EXPECT_NO_THROW(call(bare, Mask{}));
  // Shapes: projection width or head count, key lengths, q/k/v/out extents.
  Rfa wide = base;
  wide.projection = Projection(std::vector<double>(4 * 5, 0.1), 1, 4, 5);
  EXPECT_THROW(call(wide, Mask{}), shape_error);
  Rfa heads = base;
  heads.projection = Projection(std::vector<double>(3 * 4 * 4, 0.1), 3, 4, 4);
  EXPECT_THROW(call(heads, Mask{}), shape_error);
  const std::vector<Index> lens_count{4, 4}, lens_range{5};
  Mask bad_lens;
  bad_lens.key_lengths = lens_count;
  EXPECT_THROW(call(base, bad_lens), shape_error);
  bad_lens.key_lengths = lens_range;
  EXPECT_THROW(call(base, bad_lens), shape_error);
  EXPECT_THROW(effattn::reference::rfa_attention<double>(
                   ConstTensor4<double>(base.q.data(), 1, 2, 3, 4), ConstTensor4<double>(base.k.data(), 1, 2, 4, 4),
                   ConstTensor4<double>(base.v.data(), 1, 2, 4, 2), Tensor4<double>(out.data(), 1, 2, 3, 1), Mask{},
                   base.config, base.projection),
               shape_error);
  EXPECT_THROW(effattn::reference::rfa_attention<double>(
                   ConstTensor4<double>(base.q.data(), 1, 2, 3, 4), ConstTensor4<double>(base.k.data(), 1, 2, 4, 3),
                   ConstTensor4<double>(base.v.data(), 1, 2, 4, 2), Tensor4<double>(out.data(), 1, 2, 3, 2), Mask{},
                   base.config, base.projection),
               shape_error);
}

}  // namespace
}  // namespace effattn_test
