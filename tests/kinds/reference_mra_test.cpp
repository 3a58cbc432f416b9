// The double-precision MRA reference itself (reference::mra_coarse, mra_selection, mra_attention),
// against the exact statements of mra.md section 6 that need no kernel: every pair selected is exact
// softmax, block 1 and piecewise-constant inputs are exact in full mode, the coarse logit is the block
// mean of the logits and never overestimates a block's mass (Jensen), outputs of constant values are
// those values, the selection invariants, a case computed by hand, layouts and GQA, and the refusals.
// Every MRA kernel test trusts this file.
//
// Tolerances: the reference and reference::softmax_attention are both plain double loops over O(1)
// values (logits and values of magnitude < 10, rows of <= 60 keys), so where the two forms agree
// mathematically they differ by a few ulp of the sums, ~1e-15; 1e-12 leaves room for other compilers,
// while a wrong block, mean or mask moves an output by O(1e-2) or more.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <effattn/kinds/mra_config.hpp>
#include <effattn/reference/mra.hpp>
#include <effattn/reference/softmax.hpp>

#include "support/compare.hpp"
#include "support/random.hpp"

namespace effattn_test {
namespace {

using effattn::ConstTensor4;
using effattn::Layout;
using effattn::Mask;
using effattn::MraConfig;
using effattn::MraMode;
using effattn::MraSelection;
using effattn::Tensor3;
using effattn::Tensor4;
namespace ref = effattn::reference;

constexpr double kTol = 1e-12;
constexpr double kNegInf = -std::numeric_limits<double>::infinity();

std::size_t ix(Index i) { return static_cast<std::size_t>(i); }

// One problem in bhld layout, inputs in double.
struct Prob {
  Index B = 1, H = 1, Hkv = 1, Lq = 1, Lk = 1, D = 8, Dv = 3;
  std::vector<double> q, k, v;
  std::vector<Index> key_lengths;

  [[nodiscard]] Mask mask() const {
    Mask m;
    m.key_lengths = key_lengths;
    return m;
  }
  [[nodiscard]] ConstTensor4<double> qv() const { return {q.data(), B, H, Lq, D}; }
  [[nodiscard]] ConstTensor4<double> kv() const { return {k.data(), B, Hkv, Lk, D}; }
  [[nodiscard]] ConstTensor4<double> vv() const { return {v.data(), B, Hkv, Lk, Dv}; }

  double& q_at(Index b, Index h, Index i, Index d) { return q[ix(((b * H + h) * Lq + i) * D + d)]; }
  double& k_at(Index b, Index h, Index j, Index d) { return k[ix(((b * Hkv + h) * Lk + j) * D + d)]; }
  double& v_at(Index b, Index h, Index j, Index d) { return v[ix(((b * Hkv + h) * Lk + j) * Dv + d)]; }
  [[nodiscard]] double qc(Index b, Index h, Index i, Index d) const { return q[ix(((b * H + h) * Lq + i) * D + d)]; }
  [[nodiscard]] double kc(Index b, Index h, Index j, Index d) const { return k[ix(((b * Hkv + h) * Lk + j) * D + d)]; }

  [[nodiscard]] Index real_keys(Index b) const { return key_lengths.empty() ? Lk : key_lengths[ix(b)]; }
  // With Lq == Lk the key length pads the queries too.
  [[nodiscard]] bool query_real(Index b, Index i) const {
    return key_lengths.empty() || Lq != Lk || i < key_lengths[ix(b)];
  }

  [[nodiscard]] std::string describe() const {
    std::string s = "B=" + std::to_string(B) + " H=" + std::to_string(H) + " Hkv=" + std::to_string(Hkv) +
                    " Lq=" + std::to_string(Lq) + " Lk=" + std::to_string(Lk) + " D=" + std::to_string(D) +
                    " Dv=" + std::to_string(Dv);
    if (!key_lengths.empty()) {
      s += " key_lengths={";
      for (Index len : key_lengths) s += std::to_string(len) + ",";
      s += "}";
    }
    return s;
  }
};

std::string describe(const MraConfig& c) {
  std::string s = " | block=" + std::to_string(c.block) + " " + (c.mode == MraMode::full ? "full" : "sparse");
  s += c.num_blocks > 0 ? " num_blocks=" + std::to_string(c.num_blocks)
                        : " blocks_per_row=" + std::to_string(c.blocks_per_row);
  if (c.prior_first) s += " prior_first=" + std::to_string(c.prior_first);
  if (c.prior_diag) s += " prior_diag=" + std::to_string(c.prior_diag);
  if (c.scale) s += " scale=" + std::to_string(*c.scale);
  return s;
}

// q, k ~ N(0, qk_std^2), v ~ N(0, 1).
Prob random_prob(Index Lq, Index Lk, std::uint64_t seed, Index B = 1, Index H = 1, Index Hkv = 1, Index D = 8,
                 Index Dv = 3, double qk_std = 1.0) {
  Rng rng(seed);
  Prob p;
  p.B = B, p.H = H, p.Hkv = Hkv, p.Lq = Lq, p.Lk = Lk, p.D = D, p.Dv = Dv;
  p.q = normals(rng, B * H * Lq * D, qk_std);
  p.k = normals(rng, B * Hkv * Lk * D, qk_std);
  p.v = normals(rng, B * Hkv * Lk * Dv, 1.0);
  return p;
}

Index blocks(Index len, Index block) { return (len + block - 1) / block; }

struct Result {
  std::vector<double> out, lse;
};

Result run_mra(const Prob& p, const MraConfig& c, const MraSelection& s) {
  Result r{std::vector<double>(ix(p.B * p.H * p.Lq * p.Dv), -7.0), std::vector<double>(ix(p.B * p.H * p.Lq), -7.0)};
  ref::mra_attention<double>(p.qv(), p.kv(), p.vv(), Tensor4<double>(r.out.data(), p.B, p.H, p.Lq, p.Dv), p.mask(), c,
                             s, Layout::bhld, Tensor3<double>(r.lse.data(), p.B, p.H, p.Lq));
  return r;
}
Result run_mra(const Prob& p, const MraConfig& c) {
  return run_mra(p, c, ref::mra_selection<double>(p.qv(), p.kv(), p.mask(), c));
}

Result run_softmax(const Prob& p, std::optional<double> scale = {}) {
  Result r{std::vector<double>(ix(p.B * p.H * p.Lq * p.Dv), -7.0), std::vector<double>(ix(p.B * p.H * p.Lq), -7.0)};
  effattn::SoftmaxConfig c;
  c.scale = scale;
  ref::softmax_attention<double>(p.qv(), p.kv(), p.vv(), Tensor4<double>(r.out.data(), p.B, p.H, p.Lq, p.Dv),
                                 p.mask(), c, Layout::bhld, Tensor3<double>(r.lse.data(), p.B, p.H, p.Lq));
  return r;
}

// A selection with no tile at all: full mode is then the coarse level alone.
MraSelection empty_selection(const Prob& p, Index block) {
  MraSelection s;
  s.batch = p.B, s.heads = p.H, s.block = block;
  s.query_blocks = blocks(p.Lq, block), s.key_blocks = blocks(p.Lk, block);
  s.offsets.assign(ix(p.B * p.H * (s.query_blocks + 1)), 0);
  return s;
}

// MRA's rows equal `want` on real query rows; padded query rows are exactly 0 with LSE -inf.
::testing::AssertionResult matches_on_real_rows(const Prob& p, const Result& got, const Result& want, double tol,
                                                const std::string& context) {
  std::vector<double> w_out = want.out, w_lse = want.lse;
  for (Index b = 0; b < p.B; ++b)
    for (Index h = 0; h < p.H; ++h)
      for (Index i = 0; i < p.Lq; ++i) {
        if (p.query_real(b, i)) continue;
        for (Index d = 0; d < p.Dv; ++d) w_out[ix(((b * p.H + h) * p.Lq + i) * p.Dv + d)] = 0.0;
        w_lse[ix((b * p.H + h) * p.Lq + i)] = kNegInf;
      }
  auto r = all_close("out", got.out.data(), w_out.data(), {p.B, p.H, p.Lq, p.Dv}, "[b,h,i,d]", {tol, 0}, context);
  if (!r) return r;
  return all_close_with(
      "lse", got.lse.data(), w_lse.data(), {p.B, p.H, p.Lq}, "[b,h,i]",
      [&](Index i) {
        // A padded row must be exactly 0 / -inf, not merely close.
        return Tolerance{std::isinf(w_lse[ix(i)]) ? 0.0 : tol, 0};
      },
      context);
}

// Shapes with a partial last block, n < block, cross attention both ways, GQA, padding that ends
// mid-block, a fully padded sequence and a padded length of 1.
std::vector<Prob> padded_shapes(std::uint64_t seed) {
  std::vector<Prob> ps;
  ps.push_back(random_prob(37, 37, seed, 2, 2, 1));
  ps.back().key_lengths = {37, 21};
  ps.push_back(random_prob(40, 40, seed + 1, 3, 4, 2, 6, 4));
  ps.back().key_lengths = {0, 40, 1};
  ps.push_back(random_prob(5, 5, seed + 2, 2, 1, 1));
  ps.back().key_lengths = {3, 5};
  ps.push_back(random_prob(19, 45, seed + 3, 2, 2, 2));
  ps.back().key_lengths = {45, 13};
  ps.push_back(random_prob(45, 19, seed + 4, 2, 2, 1));
  ps.back().key_lengths = {0, 19};
  ps.push_back(random_prob(24, 24, seed + 5, 1, 2, 2));
  return ps;
}

// ---- mra.md 6.1, 6.3, 6.4: where the closed form is exact attention ----

TEST(ReferenceMra, AllPairsSelectedIsExactSoftmax) {
  for (const Prob& p : padded_shapes(100))
    for (Index block : {1, 3, 8, 32})
      for (MraMode mode : {MraMode::full, MraMode::sparse}) {
        const Index pairs = blocks(p.Lq, block) * blocks(p.Lk, block);
        const Result want = run_softmax(p);
        // Exactly every pair, far beyond (clamped), and through blocks_per_row.
        for (int budget = 0; budget < 3; ++budget) {
          MraConfig c;
          c.block = block;
          c.mode = mode;
          if (budget == 0) c.num_blocks = pairs;
          if (budget == 1) c.num_blocks = 1000000;
          if (budget == 2) c.blocks_per_row = blocks(p.Lk, block);
          const MraSelection s = ref::mra_selection<double>(p.qv(), p.kv(), p.mask(), c);
          for (Index b = 0; b < p.B; ++b)
            for (Index h = 0; h < p.H; ++h) ASSERT_EQ(s.tiles(b, h), pairs) << p.describe() << describe(c);
          EXPECT_TRUE(matches_on_real_rows(p, run_mra(p, c, s), want, kTol, p.describe() + describe(c)));
        }
      }
}

TEST(ReferenceMra, BlockOneFullModeIsExactForAnyBudget) {
  for (const Prob& p : padded_shapes(200))
    for (Index budget : {1, 2, 7, 100, 5000})
      for (Index prior_first : {0, 2}) {
        MraConfig c;
        c.block = 1;
        c.num_blocks = budget;
        c.prior_first = prior_first;
        if (p.Lq == p.Lk) c.prior_diag = 3;
        EXPECT_TRUE(matches_on_real_rows(p, run_mra(p, c), run_softmax(p), kTol, p.describe() + describe(c)));
      }
  // The comparison has power: sparse mode at a small budget is far from exact.
  const Prob p = random_prob(20, 20, 201);
  MraConfig c;
  c.block = 1;
  c.num_blocks = 10;
  c.mode = MraMode::sparse;
  EXPECT_GT(max_abs_diff(run_mra(p, c).out, run_softmax(p).out), 0.1);
}

TEST(ReferenceMra, PiecewiseConstantQueriesAndKeysAreExactInFullMode) {
  // Q and K constant over the real tokens of each block: the block mean is that constant, so the
  // coarse logit is every token pair's logit. Padded tokens get their own values, which must not
  // enter the means.
  for (Prob p : padded_shapes(300))
    for (Index block : {3, 8})
      for (Index budget : {1, 3, 11}) {
        for (Index b = 0; b < p.B; ++b) {
          const Index nk = p.real_keys(b);
          for (Index h = 0; h < p.H; ++h)
            for (Index i = 0; i < p.Lq; ++i)
              if (p.query_real(b, i) && i % block != 0)
                for (Index d = 0; d < p.D; ++d) p.q_at(b, h, i, d) = p.q_at(b, h, i - i % block, d);
          for (Index h = 0; h < p.Hkv; ++h)
            for (Index j = 1; j < nk; ++j)
              if (j % block != 0)
                for (Index d = 0; d < p.D; ++d) p.k_at(b, h, j, d) = p.k_at(b, h, j - j % block, d);
        }
        MraConfig c;
        c.block = block;
        c.num_blocks = budget;
        EXPECT_TRUE(matches_on_real_rows(p, run_mra(p, c), run_softmax(p), kTol, p.describe() + describe(c)));
        c.mode = MraMode::sparse;  // no such identity without the coarse part
        if (blocks(p.Lq, block) * blocks(p.Lk, block) > budget && p.key_lengths.empty()) {
          EXPECT_GT(max_abs_diff(run_mra(p, c).out, run_softmax(p).out), 1e-3) << p.describe() << describe(c);
        }
      }
}

// ---- mra.md 6.5: the coarse logit ----

TEST(ReferenceMra, CoarseLogitIsTheBlockMeanLogitAndNeverOverestimatesTheMass) {
  double min_gap = INFINITY;
  for (const Prob& p : padded_shapes(400))
    for (Index block : {1, 4, 8})
      for (std::optional<double> scale : {std::optional<double>{}, std::optional<double>{0.9}}) {
        MraConfig c;
        c.block = block;
        c.scale = scale;
        const double sc = scale ? *scale : 1.0 / std::sqrt(static_cast<double>(p.D));
        const std::string context = p.describe() + describe(c);
        const ref::MraCoarse co = ref::mra_coarse<double>(p.qv(), p.kv(), p.mask(), c);
        const Index nq = blocks(p.Lq, block), nk = blocks(p.Lk, block), group = p.H / p.Hkv;
        ASSERT_EQ(co.query_blocks, nq);
        ASSERT_EQ(co.key_blocks, nk);
        for (Index b = 0; b < p.B; ++b)
          for (Index h = 0; h < p.H; ++h)
            for (Index I = 0; I < nq; ++I)
              for (Index J = 0; J < nk; ++J) {
                double sum = 0, sum_exp = 0;
                Index cq = 0, ck = 0;
                for (Index t = I * block; t < std::min((I + 1) * block, p.Lq); ++t) cq += p.query_real(b, t);
                for (Index u = J * block; u < std::min((J + 1) * block, p.real_keys(b)); ++u) ++ck;
                ASSERT_EQ(co.query_count(b, I), cq) << context;
                ASSERT_EQ(co.key_count(b, J), ck) << context;
                if (cq == 0 || ck == 0) {
                  EXPECT_EQ(co.logit(b, h, I, J), 0.0) << "an empty block's mean is 0; " << context;
                  continue;
                }
                for (Index t = I * block; t < std::min((I + 1) * block, p.Lq); ++t) {
                  if (!p.query_real(b, t)) continue;
                  for (Index u = J * block; u < std::min((J + 1) * block, p.real_keys(b)); ++u) {
                    double s = 0;
                    for (Index d = 0; d < p.D; ++d) s += p.qc(b, h, t, d) * p.kc(b, h / group, u, d);
                    sum += sc * s;
                    sum_exp += std::exp(sc * s);
                  }
                }
                const double pairs = static_cast<double>(cq * ck);
                const double C = co.logit(b, h, I, J);
                EXPECT_NEAR(C, sum / pairs, kTol) << "bilinearity at " << b << "," << h << "," << I << "," << J << "; "
                                                  << context;
                EXPECT_LE(std::exp(C), sum_exp / pairs * (1 + kTol)) << "Jensen at " << b << "," << h << "," << I << ","
                                                                     << J << "; " << context;
                if (block > 1 && cq * ck > 1) min_gap = std::min(min_gap, std::log(sum_exp / pairs) - C);
              }
      }
  // Blocks of random tokens have a strictly positive gap; the bound is not met by equality.
  EXPECT_GT(min_gap, 0.0);
  ::testing::Test::RecordProperty("min_jensen_gap", sci(min_gap));
}

TEST(ReferenceMra, CoarseLevelAloneIsPerBlockAndBelowTheExactMass) {
  // Full mode over an empty selection: every real query of block I has the same row, and its LSE
  // log sum_J c_J exp(C_IJ) is at most log mean_{t in I} exp(LSE_t) of exact attention (Jensen, summed
  // over J).
  for (const Prob& p : padded_shapes(500))
    for (Index block : {4, 8}) {
      MraConfig c;
      c.block = block;
      const std::string context = p.describe() + describe(c);
      const Result coarse = run_mra(p, c, empty_selection(p, block));
      const Result exact = run_softmax(p);
      for (Index b = 0; b < p.B; ++b)
        for (Index h = 0; h < p.H; ++h)
          for (Index I = 0; I < blocks(p.Lq, block); ++I) {
            Index first = -1;
            double mean_mass = 0;
            Index n = 0;
            for (Index t = I * block; t < std::min((I + 1) * block, p.Lq); ++t) {
              if (!p.query_real(b, t)) continue;
              const Index row = (b * p.H + h) * p.Lq + t;
              if (first < 0) first = row;
              EXPECT_EQ(coarse.lse[ix(row)], coarse.lse[ix(first)]) << context;
              for (Index d = 0; d < p.Dv; ++d)
                EXPECT_EQ(coarse.out[ix(row * p.Dv + d)], coarse.out[ix(first * p.Dv + d)]) << context;
              mean_mass += std::exp(exact.lse[ix(row)]);
              ++n;
            }
            if (n == 0 || p.real_keys(b) == 0) continue;
            EXPECT_LE(coarse.lse[ix(first)], std::log(mean_mass / static_cast<double>(n)) + kTol) << context;
          }
    }
}

// ---- mra.md 6.6, 6.7: constant values ----

TEST(ReferenceMra, ConstantValuesPassThrough) {
  // Every output is a convex combination of real keys' value rows, so v_u = w for all real u gives w
  // (V = 1 gives the row sums); padded keys' values are left random: they must not count.
  const std::vector<double> w{1.0, -2.0, 0.5};
  std::uint64_t seed = 600;
  for (Prob p : padded_shapes(600))
    for (Index block : {1, 5, 8})
      for (MraMode mode : {MraMode::full, MraMode::sparse})
        for (int variant = 0; variant < 4; ++variant) {
          for (Index b = 0; b < p.B; ++b)
            for (Index h = 0; h < p.Hkv; ++h)
              for (Index j = 0; j < p.real_keys(b); ++j)
                for (Index d = 0; d < p.Dv; ++d) p.v_at(b, h, j, d) = variant % 2 ? 1.0 : w[ix(d)];
          MraConfig c;
          c.block = block;
          c.mode = mode;
          c.num_blocks = 1 + static_cast<Index>(seed++ % 9);
          if (variant >= 2) {
            c.prior_first = 1;
            if (p.Lq == p.Lk) c.prior_diag = 1;
          }
          // Sparse with the diagonal prior: a real query's diagonal tile holds its own key, so once the
          // budget covers every diagonal tile each real row has a finite entry.
          const bool diagonal_covered = mode == MraMode::sparse && c.prior_diag > 0;
          if (diagonal_covered) c.num_blocks = 3 * blocks(p.Lq, block);
          const std::string context = p.describe() + describe(c);
          const Result r = run_mra(p, c);
          for (Index b = 0; b < p.B; ++b)
            for (Index h = 0; h < p.H; ++h)
              for (Index i = 0; i < p.Lq; ++i) {
                const Index row = (b * p.H + h) * p.Lq + i;
                const bool sees = p.query_real(b, i) && p.real_keys(b) > 0;
                const bool finite = std::isfinite(r.lse[ix(row)]);
                if (mode == MraMode::full || diagonal_covered) {
                  EXPECT_EQ(finite, sees) << "row " << row << "; " << context;
                }
                if (!sees) {
                  EXPECT_FALSE(finite) << context;
                }
                for (Index d = 0; d < p.Dv; ++d) {
                  const double want = finite ? (variant % 2 ? 1.0 : w[ix(d)]) : 0.0;
                  EXPECT_NEAR(r.out[ix(row * p.Dv + d)], want, 1e-13) << "row " << row << "; " << context;
                  if (!finite) {
                    EXPECT_EQ(r.out[ix(row * p.Dv + d)], 0.0) << context;
                  }
                }
              }
        }
}

// ---- mra.md 6.8: the selection ----

// The tier of (I, J) restated: priors earned, minus 2 for a pair without a real query or key.
int tier_of(const MraConfig& c, Index I, Index J, bool empty) {
  const int priors = (c.prior_diag > 0 && std::abs(I - J) * 2 <= c.prior_diag - c.prior_diag % 2) +
                     (I < c.prior_first) + (J < c.prior_first);
  return priors - (empty ? 2 : 0);
}

TEST(ReferenceMra, SelectionInvariants) {
  Rng rng(700);
  int argmax_checked = 0, prior_checked = 0, pad_checked = 0;
  for (int r = 0; r < 300; ++r) {
    const bool cross = r % 4 == 3;
    const Index L = rng.integer(1, 60);
    const Index Lk = cross ? rng.integer(1, 60) : L;
    Prob p = random_prob(L, Lk, 700 + static_cast<std::uint64_t>(r), 2, 2, r % 2 ? 1 : 2, 4, 1);
    const bool padded = r % 3 == 1;
    if (padded) p.key_lengths = {rng.integer(0, Lk), rng.integer(0, Lk)};
    MraConfig c;
    c.block = std::array<Index, 5>{1, 3, 4, 8, 16}[ix(rng.integer(0, 4))];
    const Index nq = blocks(p.Lq, c.block), nk = blocks(p.Lk, c.block);
    if (r % 2) c.num_blocks = rng.integer(1, nq * nk + 3);
    else c.blocks_per_row = rng.integer(1, nk + 1);
    const bool priors = r % 5 >= 2;
    if (priors) {
      c.prior_first = rng.integer(0, 2);
      if (!cross) c.prior_diag = rng.integer(0, 5);
    }
    const std::string context = p.describe() + describe(c);
    const MraSelection s = ref::mra_selection<double>(p.qv(), p.kv(), p.mask(), c);
    const ref::MraCoarse co = ref::mra_coarse<double>(p.qv(), p.kv(), p.mask(), c);
    const Index budget = std::min(c.num_blocks > 0 ? c.num_blocks : c.blocks_per_row * nq, nq * nk);
    ASSERT_EQ(s.batch, p.B);
    ASSERT_EQ(s.heads, p.H);
    ASSERT_EQ(s.query_blocks, nq);
    ASSERT_EQ(s.key_blocks, nk);
    ASSERT_EQ(s.block, c.block);
    ASSERT_EQ(s.offsets.size(), ix(p.B * p.H * (nq + 1)));
    for (Index b = 0; b < p.B; ++b)
      for (Index h = 0; h < p.H; ++h) {
        // Exactly the budget, each row's key blocks strictly increasing and in range.
        ASSERT_EQ(s.tiles(b, h), budget) << context;
        for (Index I = 0; I < nq; ++I) {
          const auto row = s.key_blocks_of(b, h, I);
          for (std::size_t j = 0; j < row.size(); ++j) {
            ASSERT_TRUE(row[j] >= 0 && row[j] < nk) << context;
            if (j) {
              ASSERT_LT(row[j - 1], row[j]) << context;
            }
          }
        }
        // Every selected pair outranks every unselected one by (tier, P, -flat): the worst selected
        // key is above the best unselected one.
        using Key = std::tuple<int, double, Index>;
        std::optional<Key> worst_in, best_out;
        for (Index I = 0; I < nq; ++I) {
          double rho = -INFINITY;
          for (Index J = 0; J < nk; ++J) rho = std::max(rho, co.logit(b, h, I, J));
          for (Index J = 0; J < nk; ++J) {
            const bool empty = co.query_count(b, I) == 0 || co.key_count(b, J) == 0;
            const Key key{tier_of(c, I, J, empty), co.logit(b, h, I, J) - rho, -(I * nk + J)};
            if (s.contains(b, h, I, J))
              worst_in = worst_in ? std::min(*worst_in, key) : key;
            else
              best_out = best_out ? std::max(*best_out, key) : key;
          }
        }
        if (worst_in && best_out) {
          EXPECT_GT(*worst_in, *best_out) << "selected pair " << -std::get<2>(*worst_in) << " ranks below unselected "
                                          << -std::get<2>(*best_out) << "; " << context;
        }
        // Prior tiles: all selected when the budget covers them and none is an all-pad pair.
        Index prior_tiles = 0;
        bool prior_empty = false;
        for (Index I = 0; I < nq; ++I)
          for (Index J = 0; J < nk; ++J)
            if (tier_of(c, I, J, false) > 0) {
              ++prior_tiles;
              prior_empty |= co.query_count(b, I) == 0 || co.key_count(b, J) == 0;
            }
        if (prior_tiles > 0 && !prior_empty && budget >= prior_tiles) {
          ++prior_checked;
          for (Index I = 0; I < nq; ++I)
            for (Index J = 0; J < nk; ++J)
              if (tier_of(c, I, J, false) > 0) {
                EXPECT_TRUE(s.contains(b, h, I, J)) << context;
              }
        }
        // No priors, no padding, k >= nq: each row block has its coarse argmax.
        if (!priors && !padded && budget >= nq) {
          ++argmax_checked;
          for (Index I = 0; I < nq; ++I) {
            Index best = 0;
            for (Index J = 1; J < nk; ++J)
              if (co.logit(b, h, I, J) > co.logit(b, h, I, best)) best = J;
            EXPECT_TRUE(s.contains(b, h, I, best)) << "row block " << I << " lacks its argmax " << best << "; " << context;
          }
        }
        // At most one prior per pair (none, or the diagonal alone): an all-pad pair only once every
        // non-empty pair is in.
        if (c.prior_first == 0) {
          Index nonempty = 0, nonempty_selected = 0, empty_selected = 0;
          for (Index I = 0; I < nq; ++I)
            for (Index J = 0; J < nk; ++J) {
              const bool empty = co.query_count(b, I) == 0 || co.key_count(b, J) == 0;
              nonempty += !empty;
              nonempty_selected += !empty && s.contains(b, h, I, J);
              empty_selected += empty && s.contains(b, h, I, J);
            }
          if (empty_selected > 0) {
            ++pad_checked;
            EXPECT_EQ(nonempty_selected, nonempty) << context;
          }
          EXPECT_EQ(nonempty_selected, std::min(budget, nonempty)) << context;
        }
      }
  }
  // The random cases reach every branch.
  EXPECT_GT(argmax_checked, 20);
  EXPECT_GT(prior_checked, 20);
  EXPECT_GT(pad_checked, 5);
}

// ---- a case by hand ----

// L = 4, D = 2, block 2, scale 1. q: (1,0) (1,2) | (0,0) (2,0); k: (2,0) (0,0) | (0,1) (0,3); v = 1..4.
// Means: qbar = (1,1), (1,0); kbar = (1,0), (0,2). C = [[1, 2], [1, 0]], rho = (2, 1),
// P = [[-1, 0], [0, -1]].
Prob hand_prob() {
  Prob p;
  p.Lq = p.Lk = 4, p.D = 2, p.Dv = 1;
  p.q = {1, 0, 1, 2, 0, 0, 2, 0};
  p.k = {2, 0, 0, 0, 0, 1, 0, 3};
  p.v = {1, 2, 3, 4};
  return p;
}

std::vector<std::vector<Index>> rows_of(const MraSelection& s) {
  std::vector<std::vector<Index>> rows;
  for (Index I = 0; I < s.query_blocks; ++I) {
    const auto r = s.key_blocks_of(0, 0, I);
    rows.emplace_back(r.begin(), r.end());
  }
  return rows;
}

TEST(ReferenceMra, HandComputedSelection) {
  using Rows = std::vector<std::vector<Index>>;
  Prob p = hand_prob();
  const auto select = [&](Index budget, Index prior_first, Index prior_diag) {
    MraConfig c;
    c.block = 2;
    c.scale = 1.0;
    c.num_blocks = budget;
    c.prior_first = prior_first;
    c.prior_diag = prior_diag;
    return rows_of(ref::mra_selection<double>(p.qv(), p.kv(), p.mask(), c));
  };
  MraConfig c;
  c.block = 2;
  c.scale = 1.0;
  const ref::MraCoarse co = ref::mra_coarse<double>(p.qv(), p.kv(), p.mask(), c);
  EXPECT_EQ(co.logits, (std::vector<double>{1, 2, 1, 0}));
  // P = 0 at flat 1 and 2, then P = -1 at flat 0 and 3; ties by the smaller flat index.
  EXPECT_EQ(select(1, 0, 0), (Rows{{1}, {}}));
  EXPECT_EQ(select(2, 0, 0), (Rows{{1}, {0}}));
  EXPECT_EQ(select(3, 0, 0), (Rows{{0, 1}, {0}}));
  EXPECT_EQ(select(4, 0, 0), (Rows{{0, 1}, {0, 1}}));
  // The diagonal prior 1 (|I - J| <= 0) lifts (0,0) and (1,1) above all; 2 and 3 cover |I - J| <= 1,
  // every pair here, so P decides again.
  EXPECT_EQ(select(2, 0, 1), (Rows{{0}, {1}}));
  EXPECT_EQ(select(2, 0, 2), (Rows{{1}, {0}}));
  EXPECT_EQ(select(3, 0, 1), (Rows{{0, 1}, {1}}));
  EXPECT_EQ(select(1, 0, 3), (Rows{{1}, {}}));
  // prior_first 1: tiers (0,0) 2, (0,1) 1, (1,0) 1, (1,1) 0.
  EXPECT_EQ(select(1, 1, 0), (Rows{{0}, {}}));
  EXPECT_EQ(select(2, 1, 0), (Rows{{0, 1}, {}}));
  EXPECT_EQ(select(3, 1, 0), (Rows{{0, 1}, {0}}));
  // Key length 3 pads key 3 and query 3: qbar_1 = (0,0), kbar_1 = (0,1); C = [[1, 1], [0, 0]],
  // every P = 0, so the flat index alone decides.
  const std::vector<Index> lens{3};
  p.key_lengths = lens;
  const ref::MraCoarse cp = ref::mra_coarse<double>(p.qv(), p.kv(), p.mask(), c);
  EXPECT_EQ(cp.logits, (std::vector<double>{1, 1, 0, 0}));
  EXPECT_EQ(cp.query_counts, (std::vector<Index>{2, 1}));
  EXPECT_EQ(cp.key_counts, (std::vector<Index>{2, 1}));
  EXPECT_EQ(select(1, 0, 0), (Rows{{0}, {}}));
  EXPECT_EQ(select(3, 0, 0), (Rows{{0, 1}, {0}}));
  // Key length 1: only (0,0) has real tokens on both sides (C = [[2, 0], [0, 0]]), so it comes first;
  // the empty pairs then rank by their own P, with rho over every key block: (1,0) and (1,1) have
  // P = 0, (0,1) has P = 0 - 2.
  const std::vector<Index> one{1};
  p.key_lengths = one;
  EXPECT_EQ(select(1, 0, 0), (Rows{{0}, {}}));
  EXPECT_EQ(select(2, 0, 0), (Rows{{0}, {0}}));
  EXPECT_EQ(select(3, 0, 0), (Rows{{0}, {0, 1}}));
}

TEST(ReferenceMra, HandComputedOutputs) {
  const double e = std::exp(1.0);
  const Prob p = hand_prob();
  const auto run = [&](const Prob& x, Index budget, MraMode mode) {
    MraConfig c;
    c.block = 2;
    c.scale = 1.0;
    c.num_blocks = budget;
    c.mode = mode;
    return run_mra(x, c);
  };
  // Budget 1 selects (0,1). Row 0: coarse 1, 1 on keys 0, 1; exact q0.k2 = 0, q0.k3 = 0. Row 1: coarse
  // 1, 1; exact 2, 6. Rows 2, 3 (no tile): coarse C_10 = 1 on keys 0, 1 and C_11 = 0 on keys 2, 3.
  const Result full = run(p, 1, MraMode::full);
  const double r0 = (3 * e + 7) / (2 * e + 2);
  const double z1 = 2 * e + e * e + std::exp(6.0);
  const std::vector<double> want_full{r0, (3 * e + 3 * e * e + 4 * std::exp(6.0)) / z1, r0, r0};
  const std::vector<double> want_full_lse{std::log(2 * e + 2), std::log(z1), std::log(2 * e + 2), std::log(2 * e + 2)};
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_NEAR(full.out[i], want_full[i], kTol) << "row " << i;
    EXPECT_NEAR(full.lse[i], want_full_lse[i], kTol) << "row " << i;
  }
  // Sparse: rows 0, 1 see keys 2, 3 only; rows 2, 3 have no tile and give 0 / -inf.
  const Result sparse = run(p, 1, MraMode::sparse);
  const double e2 = std::exp(2.0), e6 = std::exp(6.0);
  EXPECT_NEAR(sparse.out[0], 3.5, kTol);
  EXPECT_NEAR(sparse.lse[0], std::log(2.0), kTol);
  EXPECT_NEAR(sparse.out[1], (3 * e2 + 4 * e6) / (e2 + e6), kTol);
  EXPECT_NEAR(sparse.lse[1], std::log(e2 + e6), kTol);
  for (std::size_t i : {2u, 3u}) {
    EXPECT_EQ(sparse.out[i], 0.0);
    EXPECT_EQ(sparse.lse[i], kNegInf);
  }
  // Key length 3, budget 1 selects (0,0). Row 0: exact 2, 0 on keys 0, 1, coarse C_01 = 1 on key 2,
  // key 3 padded. Row 2: coarse 0, 0, 0 (qbar_1 = 0). Row 3 is a padded query: 0 / -inf.
  Prob padded = p;
  const std::vector<Index> lens{3};
  padded.key_lengths = lens;
  const Result pf = run(padded, 1, MraMode::full);
  EXPECT_NEAR(pf.out[0], (e * e + 2 + 3 * e) / (e * e + 1 + e), kTol);
  EXPECT_NEAR(pf.out[2], 2.0, kTol);
  EXPECT_NEAR(pf.lse[2], std::log(3.0), kTol);
  EXPECT_EQ(pf.out[3], 0.0);
  EXPECT_EQ(pf.lse[3], kNegInf);
}

// ---- layouts, heads and batches ----

TEST(ReferenceMra, BlhdLayoutIsATranspose) {
  Prob p = random_prob(21, 21, 800, 2, 4, 2, 5, 3);
  p.key_lengths = {21, 10};
  MraConfig c;
  c.block = 4;
  c.num_blocks = 9;
  c.prior_diag = 1;
  for (MraMode mode : {MraMode::full, MraMode::sparse}) {
    c.mode = mode;
    const MraSelection s = ref::mra_selection<double>(p.qv(), p.kv(), p.mask(), c);
    const Result want = run_mra(p, c, s);
    const auto q = bhld_to_blhd(p.q, p.B, p.H, p.Lq, p.D), k = bhld_to_blhd(p.k, p.B, p.Hkv, p.Lk, p.D),
               v = bhld_to_blhd(p.v, p.B, p.Hkv, p.Lk, p.Dv);
    const ConstTensor4<double> qv(q.data(), p.B, p.Lq, p.H, p.D), kv(k.data(), p.B, p.Lk, p.Hkv, p.D),
        vv(v.data(), p.B, p.Lk, p.Hkv, p.Dv);
    const MraSelection s2 = ref::mra_selection<double>(qv, kv, p.mask(), c, Layout::blhd);
    EXPECT_EQ(s2.offsets, s.offsets);
    EXPECT_EQ(s2.cols, s.cols);
    std::vector<double> out(want.out.size()), lse(want.lse.size());
    ref::mra_attention<double>(qv, kv, vv, Tensor4<double>(out.data(), p.B, p.Lq, p.H, p.Dv), p.mask(), c, s2,
                               Layout::blhd, Tensor3<double>(lse.data(), p.B, p.H, p.Lq));
    // Not bit for bit: the compiler may contract the two layouts' loops into FMAs differently.
    EXPECT_LE(max_abs_diff(out, bhld_to_blhd(want.out, p.B, p.H, p.Lq, p.Dv)), kTol);
    EXPECT_LE(max_abs_diff(lse, want.lse), kTol);
  }
}

TEST(ReferenceMra, GroupedQueryHeadsEqualRepeatedKvHeads) {
  Prob p = random_prob(17, 26, 810, 2, 6, 2, 4, 3);
  p.key_lengths = {26, 9};
  Prob r = p;  // every KV head repeated for its group of query heads
  r.Hkv = p.H;
  r.k.assign(ix(p.B * p.H * p.Lk * p.D), 0.0);
  r.v.assign(ix(p.B * p.H * p.Lk * p.Dv), 0.0);
  for (Index b = 0; b < p.B; ++b)
    for (Index h = 0; h < p.H; ++h)
      for (Index j = 0; j < p.Lk; ++j) {
        for (Index d = 0; d < p.D; ++d) r.k_at(b, h, j, d) = p.k_at(b, h / 3, j, d);
        for (Index d = 0; d < p.Dv; ++d) r.v_at(b, h, j, d) = p.v_at(b, h / 3, j, d);
      }
  MraConfig c;
  c.block = 5;
  c.blocks_per_row = 2;
  for (MraMode mode : {MraMode::full, MraMode::sparse}) {
    c.mode = mode;
    const MraSelection s = ref::mra_selection<double>(p.qv(), p.kv(), p.mask(), c);
    const MraSelection sr = ref::mra_selection<double>(r.qv(), r.kv(), r.mask(), c);
    EXPECT_EQ(s.offsets, sr.offsets);
    EXPECT_EQ(s.cols, sr.cols);
    const Result a = run_mra(p, c, s), b = run_mra(r, c, sr);
    EXPECT_LE(max_abs_diff(a.out, b.out), kTol);
    EXPECT_LE(max_abs_diff(a.lse, b.lse), kTol);
  }
}

TEST(ReferenceMra, BatchedEqualsPerHead) {
  Prob p = random_prob(23, 23, 820, 3, 2, 1, 6, 2);
  p.key_lengths = {23, 0, 14};
  MraConfig c;
  c.block = 4;
  c.num_blocks = 7;
  c.prior_first = 1;
  const MraSelection s = ref::mra_selection<double>(p.qv(), p.kv(), p.mask(), c);
  const Result all = run_mra(p, c, s);
  for (Index b = 0; b < p.B; ++b)
    for (Index h = 0; h < p.H; ++h) {
      Prob one;
      one.Lq = p.Lq, one.Lk = p.Lk, one.D = p.D, one.Dv = p.Dv;
      one.key_lengths = {p.key_lengths[ix(b)]};
      for (Index i = 0; i < p.Lq; ++i)
        for (Index d = 0; d < p.D; ++d) one.q.push_back(p.q_at(b, h, i, d));
      for (Index j = 0; j < p.Lk; ++j) {
        for (Index d = 0; d < p.D; ++d) one.k.push_back(p.k_at(b, 0, j, d));
        for (Index d = 0; d < p.Dv; ++d) one.v.push_back(p.v_at(b, 0, j, d));
      }
      const MraSelection s1 = ref::mra_selection<double>(one.qv(), one.kv(), one.mask(), c);
      for (Index I = 0; I < s.query_blocks; ++I) {
        const auto a = s.key_blocks_of(b, h, I), b1 = s1.key_blocks_of(0, 0, I);
        EXPECT_EQ(std::vector<Index>(a.begin(), a.end()), std::vector<Index>(b1.begin(), b1.end()));
      }
      const Result r = run_mra(one, c, s1);
      for (Index i = 0; i < p.Lq; ++i) {
        const double lse = all.lse[ix((b * p.H + h) * p.Lq + i)];
        if (std::isinf(lse)) {
          EXPECT_EQ(r.lse[ix(i)], lse);
        } else {
          EXPECT_NEAR(r.lse[ix(i)], lse, kTol);
        }
        for (Index d = 0; d < p.Dv; ++d)
          EXPECT_NEAR(r.out[ix(i * p.Dv + d)], all.out[ix(((b * p.H + h) * p.Lq + i) * p.Dv + d)], kTol);
      }
    }
}

TEST(ReferenceMra, EmptyExtents) {
  // Lq = 0 or B = 0: no block, nothing written, no failure.
  for (const auto& [B, Lq, Lk] : std::vector<std::array<Index, 3>>{{1, 0, 5}, {0, 4, 4}, {1, 3, 0}}) {
    Prob p = random_prob(Lq, Lk, 830, B, 1, 1, 4, 2);
    MraConfig c;
    c.block = 2;
    const MraSelection s = ref::mra_selection<double>(p.qv(), p.kv(), p.mask(), c);
    EXPECT_EQ(s.offsets.size(), ix(B * (blocks(Lq, 2) + 1)));
    EXPECT_TRUE(s.cols.empty());
    const Result r = run_mra(p, c, s);
    for (double x : r.out) EXPECT_EQ(x, 0.0);  // Lk = 0: no key for any row
    for (double x : r.lse) EXPECT_EQ(x, kNegInf);
  }
}

TEST(ReferenceMra, RefusesWhatItCannotHonour) {
  using ::testing::HasSubstr;
  using ::testing::ThrowsMessage;
  const Prob p = random_prob(6, 6, 840, 2, 2, 1, 4, 2);
  std::vector<double> out(ix(p.B * p.H * p.Lq * p.Dv));
  const MraConfig c{.block = 2};
  const MraSelection s = ref::mra_selection<double>(p.qv(), p.kv(), p.mask(), c);
  const auto attend = [&](const Mask& m, const MraConfig& cfg, const MraSelection& sel) {
    ref::mra_attention<double>(p.qv(), p.kv(), p.vv(), Tensor4<double>(out.data(), p.B, p.H, p.Lq, p.Dv), m, cfg, sel);
  };
  const auto select = [&](const Mask& m, const MraConfig& cfg) { (void)ref::mra_selection<double>(p.qv(), p.kv(), m, cfg); };
  EXPECT_NO_THROW(attend(Mask{}, c, s));
  // Masks MRA does not define.
  Mask causal;
  causal.causal = effattn::Causal::top_left;
  Mask window;
  window.window = {1, 1};
  const std::vector<double> add(200, 0.0);
  Mask bias;
  bias.bias = effattn::Bias::additive(add.data(), {1, 1, 6, 6});
  const std::vector<Index> cu{0, 6};
  Mask packed;
  packed.cu_seqlens_q = cu;
  packed.cu_seqlens_k = cu;
  for (const auto& [m, what] : std::vector<std::pair<Mask, std::string>>{
           {causal, "causal"}, {window, "window"}, {bias, "bias"}, {packed, "packed"}}) {
    EXPECT_THAT([&] { attend(m, c, s); }, ThrowsMessage<effattn::unsupported_error>(HasSubstr(what)));
    EXPECT_THAT([&] { select(m, c); }, ThrowsMessage<effattn::unsupported_error>(HasSubstr(what)));
  }
  // A diagonal prior needs Lq == Lk.
  const Prob cross = random_prob(6, 9, 841, 1, 1, 1, 4, 2);
  MraConfig diag = c;
  diag.prior_diag = 1;
  EXPECT_THAT([&] { (void)ref::mra_selection<double>(cross.qv(), cross.kv(), Mask{}, diag); },
              ThrowsMessage<effattn::unsupported_error>(HasSubstr("prior_diag")));
  // Bad configs.
  for (MraConfig bad : {MraConfig{.block = 0}, MraConfig{.blocks_per_row = 0}, MraConfig{.num_blocks = -1},
                        MraConfig{.prior_first = -1}, MraConfig{.scale = std::numeric_limits<double>::infinity()}})
    EXPECT_THROW(select(Mask{}, bad), effattn::config_error);
  // Shapes: key_lengths, out, and a selection of another call.
  const std::vector<Index> lens1{6}, lens_big{6, 7};
  Mask m1;
  m1.key_lengths = lens1;
  EXPECT_THROW(select(m1, c), effattn::shape_error);
  m1.key_lengths = lens_big;
  EXPECT_THROW(select(m1, c), effattn::shape_error);
  EXPECT_THROW(ref::mra_attention<double>(p.qv(), p.kv(), p.vv(), Tensor4<double>(out.data(), p.B, p.H, p.Lq, 1), Mask{},
                                          c, s),
               effattn::shape_error);
  MraConfig other = c;
  other.block = 3;
  EXPECT_THAT([&] { attend(Mask{}, other, s); }, ThrowsMessage<effattn::shape_error>(HasSubstr("selection")));
  MraSelection bad_col = s;
  bad_col.cols[0] = 7;
  EXPECT_THAT([&] { attend(Mask{}, c, bad_col); }, ThrowsMessage<effattn::shape_error>(HasSubstr("key block 7")));
}

}  // namespace
}  // namespace effattn_test
