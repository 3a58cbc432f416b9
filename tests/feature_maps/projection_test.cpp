// The counter-based stream (Philox4x32-10) and the random projections drawn from it: determinism and
// layout, iid and orthogonal (ORF) structure, and the statistical properties the positive random
// features rely on (kernel unbiasedness, the QR sign fix, ORF variance). Everything is double, with
// fixed seeds, so every result is reproducible; statistical tolerances are stated in standard errors
// (SE) estimated from the same samples, or derived from the distribution, where each test says.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numbers>
#include <vector>

#include <gtest/gtest.h>

#include <effattn/feature_maps/counter_rng.hpp>
#include <effattn/feature_maps/random_projection.hpp>

namespace effattn_test {
namespace {

using effattn::Index;
using effattn::Projection;
using effattn::detail::CounterRng;
using effattn::detail::PhiloxCounter;
using Vec = std::vector<double>;

// Sample mean and unbiased variance.
struct Moments {
  double mean = 0, var = 0;
  Index n = 0;
  [[nodiscard]] double se() const { return std::sqrt(var / static_cast<double>(n)); }
};
Moments moments(const Vec& v) {
  Moments m;
  m.n = static_cast<Index>(v.size());
  for (double x : v) m.mean += x;
  m.mean /= static_cast<double>(m.n);
  for (double x : v) m.var += (x - m.mean) * (x - m.mean);
  m.var /= static_cast<double>(m.n - 1);
  return m;
}

double dot(const double* a, const double* b, Index n) {
  double s = 0;
  for (Index i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

Vec scaled_to(Vec v, double length) {
  const double n = std::sqrt(dot(v.data(), v.data(), static_cast<Index>(v.size())));
  for (double& x : v) x *= length / n;
  return v;
}

// The positive random-feature estimate of exp(x.y) with the m rows of w ([m, d] row-major):
// phi(x).phi(y), phi(x)_i = m^-1/2 exp(w_i.x - |x|^2/2), computed directly.
double positive_rf_estimate(const double* w, Index m, const Vec& x, const Vec& y) {
  const Index d = static_cast<Index>(x.size());
  const double hx = dot(x.data(), x.data(), d) / 2, hy = dot(y.data(), y.data(), d) / 2;
  double s = 0;
  for (Index i = 0; i < m; ++i) s += std::exp(dot(w + i * d, x.data(), d) - hx) * std::exp(dot(w + i * d, y.data(), d) - hy);
  return s / static_cast<double>(m);
}

// ---------------------------------------------------------------------------------------------
// CounterRng

// Known-answer vectors published with the reference implementation of Philox4x32-10 (zero, all-ones
// and pi-digit counters and keys): any deviation in the round function or constants changes them.
TEST(CounterRng, PhiloxKnownAnswers) {
  using effattn::detail::philox4x32_10;
  EXPECT_EQ(philox4x32_10({0, 0, 0, 0}, {0, 0}), (PhiloxCounter{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}));
  EXPECT_EQ(philox4x32_10({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff}),
            (PhiloxCounter{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}));
  EXPECT_EQ(philox4x32_10({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}),
            (PhiloxCounter{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}));
  static_assert(philox4x32_10({0, 0, 0, 0}, {0, 0})[0] == 0x6627e8d5u, "known answer, evaluated at compile time");
}

// A value is a function of its position only: the bulk fill from any (odd or even) start, single
// calls in reverse order and a second stream object with the same key all agree bit for bit.
TEST(CounterRng, ValueDependsOnlyOnPosition) {
  const CounterRng a(42, 3, 7), b(42, 3, 7);
  constexpr Index n = 37;
  for (std::uint64_t first : {0ull, 1ull, 10ull, 11ull, (1ull << 62) + 1}) {
    Vec bulk(n);
    a.normals(first, n, bulk.data());
    for (Index k = n - 1; k >= 0; --k) {
      const auto i = first + static_cast<std::uint64_t>(k);
      EXPECT_EQ(bulk[static_cast<std::size_t>(k)], b.normal(i)) << "position " << i;
      EXPECT_EQ(a.uniform(i), b.uniform(i)) << "position " << i;
    }
  }
  Vec odd(1);
  a.normals(5, 1, odd.data());
  EXPECT_EQ(odd[0], a.normal(5));
}

// Changing any key component, or swapping stream and sub, gives unrelated values. uniform() and
// normal() use separate counters: normal(0) is not the Box-Muller value of uniform(0), uniform(1).
TEST(CounterRng, KeysAndKindsAreSeparate) {
  const CounterRng base(1, 2, 3);
  for (const CounterRng& other : {CounterRng(2, 2, 3), CounterRng(1, 3, 3), CounterRng(1, 2, 4), CounterRng(1, 3, 2)})
    for (std::uint64_t i = 0; i < 4; ++i) {
      EXPECT_NE(base.uniform(i), other.uniform(i));
      EXPECT_NE(base.normal(i), other.normal(i));
    }
  const double from_uniforms =
      std::sqrt(-2 * std::log(base.uniform(0))) * std::cos(2 * std::numbers::pi * base.uniform(1));
  EXPECT_NE(base.normal(0), from_uniforms);
}

// Moments of 2^17 values. Tolerances are 5 SE of the sample statistic, from the distribution:
// uniform mean SE sqrt(1/12/n) = 8e-4, variance SE sqrt(1/180/n) = 2.1e-4; normal mean SE
// 1/sqrt(n) = 2.8e-3, variance SE sqrt(2/n) = 3.9e-3, fourth moment SE sqrt(96/n) = 0.027,
// P(|z| > 1.96) = 0.05 with SE sqrt(0.05 * 0.95 / n) = 6e-4. Also: every uniform in (0, 1), and
// uniform(i) uncorrelated with normal(i) (correlation SE 1/sqrt(n) = 2.8e-3).
TEST(CounterRng, UniformAndNormalMoments) {
  const CounterRng rng(2024, 0, 0);
  constexpr Index n = Index{1} << 17;
  Vec u(n), z(n);
  rng.normals(0, n, z.data());
  for (Index i = 0; i < n; ++i) u[static_cast<std::size_t>(i)] = rng.uniform(static_cast<std::uint64_t>(i));
  EXPECT_GT(*std::min_element(u.begin(), u.end()), 0.0);
  EXPECT_LT(*std::max_element(u.begin(), u.end()), 1.0);
  const Moments mu = moments(u), mz = moments(z);
  EXPECT_NEAR(mu.mean, 0.5, 5 * 8e-4);
  EXPECT_NEAR(mu.var, 1.0 / 12, 5 * 2.1e-4);
  EXPECT_NEAR(mz.mean, 0.0, 5 * 2.8e-3);
  EXPECT_NEAR(mz.var, 1.0, 5 * 3.9e-3);
  double m4 = 0, tail = 0, cross = 0;
  for (Index i = 0; i < n; ++i) {
    const double x = z[static_cast<std::size_t>(i)];
    m4 += x * x * x * x;
    tail += std::abs(x) > 1.959963984540054 ? 1 : 0;
    cross += (u[static_cast<std::size_t>(i)] - 0.5) * x;
  }
  EXPECT_NEAR(m4 / n, 3.0, 5 * 0.027);
  EXPECT_NEAR(tail / n, 0.05, 5 * 6e-4);
  EXPECT_NEAR(cross / n / std::sqrt(1.0 / 12), 0.0, 5 * 2.8e-3);
}

// ---------------------------------------------------------------------------------------------
// draw_projection: structure and determinism

TEST(ProjectionDraw, ShapesAndBadExtents) {
  for (bool orth : {false, true}) {
    const Projection p = effattn::draw_projection(3, 20, 8, 1, 0, orth);
    EXPECT_EQ(p.heads(), 3);
    EXPECT_EQ(p.rows(), 20);
    EXPECT_EQ(p.dim(), 8);
    EXPECT_EQ(p.values().size(), 3u * 20 * 8);
    for (double v : p.values()) EXPECT_TRUE(std::isfinite(v));
    EXPECT_THROW(effattn::draw_projection(0, 20, 8, 1, 0, orth), effattn::config_error);
    EXPECT_THROW(effattn::draw_projection(1, 0, 8, 1, 0, orth), effattn::config_error);
    EXPECT_THROW(effattn::draw_projection(1, 20, 0, 1, 0, orth), effattn::config_error);
    EXPECT_THROW(effattn::draw_projection(1, -1, 8, 1, 0, orth), effattn::config_error);
  }
}

// Same arguments give bit-identical matrices; seed, draw and head each change them; a head's matrix
// does not depend on how many heads are drawn; fewer rows are a prefix of more rows.
TEST(ProjectionDraw, Determinism) {
  for (bool orth : {false, true}) {
    const Projection p = effattn::draw_projection(3, 20, 8, 77, 5, orth);
    EXPECT_EQ(p.values(), effattn::draw_projection(3, 20, 8, 77, 5, orth).values());
    auto head = [](const Projection& q, Index h) {
      return Vec(q.row(h, 0), q.row(h, 0) + q.rows() * q.dim());
    };
    EXPECT_NE(head(p, 0), head(effattn::draw_projection(3, 20, 8, 78, 5, orth), 0)) << "seed";
    EXPECT_NE(head(p, 0), head(effattn::draw_projection(3, 20, 8, 77, 6, orth), 0)) << "draw";
    EXPECT_NE(head(p, 0), head(p, 1)) << "head";
    EXPECT_NE(head(p, 1), head(p, 2)) << "head";
    EXPECT_EQ(head(p, 0), effattn::draw_projection(1, 20, 8, 77, 5, orth).values()) << "heads = 1";
    EXPECT_EQ(head(p, 1), head(effattn::draw_projection(2, 20, 8, 77, 5, orth), 1)) << "heads = 2";
    const Projection fewer = effattn::draw_projection(1, 11, 8, 77, 5, orth);
    EXPECT_TRUE(std::equal(fewer.values().begin(), fewer.values().end(), p.values().begin())) << "prefix";
  }
}

// iid entries: 2^16 values, mean 0 and variance 1 within 5 SE (SE 1/256 = 3.9e-3 for the mean,
// sqrt(2) / 256 = 5.5e-3 for the variance), and no column or row index is special: each column's
// mean (4096 values, SE 1/64) within 5 SE.
TEST(ProjectionDraw, IidEntriesAreStandardNormal) {
  const Projection p = effattn::draw_projection(1, 4096, 16, 9, 0, false);
  const Moments m = moments(p.values());
  EXPECT_NEAR(m.mean, 0.0, 5 * 3.9e-3);
  EXPECT_NEAR(m.var, 1.0, 5 * 5.5e-3);
  for (Index d = 0; d < 16; ++d) {
    double s = 0;
    for (Index r = 0; r < 4096; ++r) s += p(0, r, d);
    EXPECT_NEAR(s / 4096, 0.0, 5.0 / 64) << "column " << d;
  }
}

// ORF: rows of one block are mutually orthogonal to rounding (|cos| < 1e-12; measured max 5e-16),
// rows of different blocks are not (independent directions in 8 dimensions have |cos| < 1e-6 with
// probability about 2e-6 per pair; measured min 6e-4), the last block is truncated, and rows < dim
// keeps part of one block.
TEST(ProjectionDraw, OrthogonalBlocks) {
  constexpr Index dim = 8;
  for (Index rows : {Index{5}, Index{8}, Index{20}}) {
    const Projection p = effattn::draw_projection(2, rows, dim, 31, 0, true);
    for (Index h = 0; h < 2; ++h)
      for (Index i = 0; i < rows; ++i)
        for (Index j = i + 1; j < rows; ++j) {
          const double c = dot(p.row(h, i), p.row(h, j), dim) /
                           std::sqrt(dot(p.row(h, i), p.row(h, i), dim) * dot(p.row(h, j), p.row(h, j), dim));
          if (i / dim == j / dim)
            EXPECT_LT(std::abs(c), 1e-12) << "rows " << rows << " head " << h << " pair " << i << ", " << j;
          else
            EXPECT_GT(std::abs(c), 1e-6) << "rows " << rows << " head " << h << " pair " << i << ", " << j;
        }
  }
}

// ORF row lengths are chi(dim), not all sqrt(dim): over 4096 rows at dim = 8 the squared lengths are
// chi^2(8), mean 8 and variance 16. Tolerances 5 SE: mean SE sqrt(16 / 4096) = 0.0625, variance SE
// about 16 * sqrt((kurtosis - 1) / 4096) = 0.74 (chi^2(8) kurtosis 4.5). Rows all scaled to sqrt(8)
// would have variance 0; unit rows would have mean 1.
TEST(ProjectionDraw, OrthogonalRowLengthsAreChi) {
  constexpr Index dim = 8, rows = 4096;
  const Projection p = effattn::draw_projection(1, rows, dim, 12, 0, true);
  Vec sq(rows);
  for (Index r = 0; r < rows; ++r) sq[static_cast<std::size_t>(r)] = dot(p.row(0, r), p.row(0, r), dim);
  const Moments m = moments(sq);
  EXPECT_NEAR(m.mean, 8.0, 5 * 0.0625);
  EXPECT_NEAR(m.var, 16.0, 5 * 0.74);
}

// ---------------------------------------------------------------------------------------------
// Statistical properties (design note on RFA, section 9, items 8-11)

// 9.8 Kernel unbiasedness of iid positive random features. d = 8, m = 16, R = 20000 independent draws
// (draw index r). x = 0.5 (1,1,1,1,1,1,1,1)/sqrt(8), y = 0.5 (1,1,-1,-1,-1,-1,-1,-1)/sqrt(8):
// |x| = |y| = 0.5, x.y = -0.125, |x+y|^2 = 0.25.
// Thresholds (design note): |mean / exp(x.y) - 1| <= 5 SE with the SE from the samples, and sample
// variance within 5% of exp(2x.y)(exp(|x+y|^2) - 1)/m (Performer Lemma 2) = 0.013825; the sampling SE
// of that variance is 1.1% here (sample kurtosis of the estimates 3.3), so 5% is 4.6 SE. Measured:
// mean 0.882649 vs exp(x.y) = 0.882497 (+0.017%, SE 0.093%, z = +0.18); variance 0.013526, ratio
// 0.978 (2 SE low; over seeds 800-819 the ratio ranged from 0.978 to 1.017, this seed is the lowest).
TEST(ProjectionStatistics, IidPositiveFeaturesAreUnbiased) {
  constexpr Index d = 8, m = 16, R = 20000;
  const double c = 0.5 / std::sqrt(8.0);
  const Vec x(d, c);
  const Vec y{c, c, -c, -c, -c, -c, -c, -c};
  const double xy = dot(x.data(), y.data(), d), truth = std::exp(xy);
  const double s2 = 2 * dot(x.data(), x.data(), d) + 2 * xy;
  const double var_theory = std::exp(2 * xy) * (std::exp(s2) - 1) / m;
  Vec est(R);
  for (Index r = 0; r < R; ++r) {
    const Projection w = effattn::draw_projection(1, m, d, 808, static_cast<std::uint64_t>(r), false);
    est[static_cast<std::size_t>(r)] = positive_rf_estimate(w.values().data(), m, x, y);
  }
  const Moments s = moments(est);
  EXPECT_LE(std::abs(s.mean - truth), 5 * s.se()) << "mean " << s.mean << " truth " << truth << " SE " << s.se();
  EXPECT_NEAR(s.var / var_theory, 1.0, 0.05) << "variance " << s.var << " theory " << var_theory;
}

// 9.9 ORF block mean. d = 8, 20000 blocks from independent Gaussian G (stream (seed, 0, b)). For a
// Haar Q every entry has mean 0 and variance 1/d, so each entry of the mean block has SE
// sqrt(1/8/20000) = 0.0025: threshold 0.02 = 8 SE (design note; max over 64 entries expected ~0.008).
// Measured max 0.0066 with the fix. The same G without the fix give a mean block close to -0.25 I
// (diagonal -0.292 at (0, 0) rising to -0.228 at (6, 6), then +0.222 at (7, 7); off-diagonal <= 0.005),
// so asserting > 0.1 shows the bias at 40 SE: Eigen's QR is not Haar.
TEST(ProjectionStatistics, OrthogonalBlockMeanIsZeroOnlyWithSignFix) {
  constexpr Index d = 8, blocks = 20000;
  Eigen::MatrixXd fixed = Eigen::MatrixXd::Zero(d, d), unfixed = fixed;
  Eigen::Matrix<double, d, d, Eigen::RowMajor> g;
  for (Index b = 0; b < blocks; ++b) {
    CounterRng(11, 0, static_cast<std::uint64_t>(b)).normals(0, d * d, g.data());
    fixed += effattn::detail::orthogonal_block(g, true);
    unfixed += effattn::detail::orthogonal_block(g, false);
  }
  fixed /= static_cast<double>(blocks);
  unfixed /= static_cast<double>(blocks);
  EXPECT_LE(fixed.cwiseAbs().maxCoeff(), 0.02) << fixed;
  EXPECT_GT(unfixed.cwiseAbs().maxCoeff(), 0.1) << unfixed;
}

// 9.10 ORF unbiasedness and 9.11 ORF variance <= iid variance. d = m = 8 (one full block), R = 40000
// draws, |x| = |y| = 1, two pairs:
//   A  x = e0, y = -e0/2 + (sqrt(3)/2) e1           (x.y = -0.5, axis-aligned: the QR's worst case)
//   B  x ~ (1,2,3,4,5,6,7,8), y ~ (8,-7,6,-5,4,-3,2,-1), normalised (x.y = 0, general position)
// The production path (sign fix) must be within 5 SE of exp(x.y) (design note). The same streams
// without the fix (paired: only the column signs differ) are biased by far more than 10 SE (design
// note's z > 10); measured -11.8% at z = -60 (A) and -14.8% at z = -41 (B), against z = -0.8 and -1.7
// with the fix. Unlike the design note's measurement with LAPACK (+3.3%, +10.6% for its pairs), the
// bias here is negative for both pairs; it depends on the orientation of x and y relative to the axes
// (the unfixed mean block is far from isotropic, see above), so other pairs can show less. Variances,
// measured: A ORF 0.0638 vs iid 0.0806 (theory 0.0790), B 0.631 vs 0.831 (theory 0.799); the iid
// draws use the same seeds.
TEST(ProjectionStatistics, OrthogonalFeaturesAreUnbiasedAndBeatIid) {
  constexpr Index d = 8, m = 8, R = 40000;
  constexpr std::uint64_t seed = 5;
  const double h = std::sqrt(3.0) / 2;
  struct Pair {
    const char* name;
    Vec x, y;
  };
  const std::vector<Pair> pairs{
      {"A", {1, 0, 0, 0, 0, 0, 0, 0}, {-0.5, h, 0, 0, 0, 0, 0, 0}},
      {"B", scaled_to({1, 2, 3, 4, 5, 6, 7, 8}, 1), scaled_to({8, -7, 6, -5, 4, -3, 2, -1}, 1)},
  };
  std::vector<Vec> orf(pairs.size(), Vec(R)), nofix(pairs.size(), Vec(R)), iid(pairs.size(), Vec(R));
  Vec w(static_cast<std::size_t>(m * d));
  for (Index r = 0; r < R; ++r) {
    const auto draw = static_cast<std::uint64_t>(r);
    const Projection fixed = effattn::draw_projection(1, m, d, seed, draw, true);
    const Projection plain = effattn::draw_projection(1, m, d, seed, draw, false);
    effattn::detail::draw_matrix(CounterRng(seed, 0, draw), m, d, true, false, w.data());
    for (std::size_t k = 0; k < pairs.size(); ++k) {
      const auto i = static_cast<std::size_t>(r);
      orf[k][i] = positive_rf_estimate(fixed.values().data(), m, pairs[k].x, pairs[k].y);
      nofix[k][i] = positive_rf_estimate(w.data(), m, pairs[k].x, pairs[k].y);
      iid[k][i] = positive_rf_estimate(plain.values().data(), m, pairs[k].x, pairs[k].y);
    }
  }
  for (std::size_t k = 0; k < pairs.size(); ++k) {
    const Vec& x = pairs[k].x;
    const double truth = std::exp(dot(x.data(), pairs[k].y.data(), d));
    const Moments f = moments(orf[k]), u = moments(nofix[k]), i = moments(iid[k]);
    const double zf = (f.mean - truth) / f.se(), zu = (u.mean - truth) / u.se();
    EXPECT_LE(std::abs(zf), 5.0) << pairs[k].name << ": ORF mean " << f.mean << " truth " << truth << " SE " << f.se();
    EXPECT_GT(std::abs(zu), 10.0) << pairs[k].name << ": unfixed ORF mean " << u.mean << " SE " << u.se();
    EXPECT_LE(f.var, i.var) << pairs[k].name << ": ORF variance " << f.var << " iid " << i.var;
  }
}

}  // namespace
}  // namespace effattn_test
