// Properties of HypercubeAttention that need no reference implementation (hypercube.md section 6):
// normalisation (V = const gives that constant), the small cases that are full attention (n = 1,
// n = 2 at token level, n <= 2B at block level, B >= n), block level on block-constant q and k as
// token level over the nodes (which ties the tile path to the gather path), XOR-translation
// equivariance at powers of two (token level, and block level with a block-index XOR), locality (a
// one-hot value reaches exactly the rows of its neighbourhood, exact zeros elsewhere), padding that
// cannot leak (bit for bit), bit-identical results across executors, workspaces and batching, huge
// logits, and the cost model's keys per query.
//
// Tolerances are kCubeTol (support/hypercube_case.hpp): the identities compare two kernel runs (or the
// kernel and SoftmaxAttention) that add the same terms in different orders or groupings, which is the
// same error budget as against the reference.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <unsupported/Eigen/CXX11/ThreadPool>

#include <effattn/kinds/hypercube.hpp>
#include <effattn/kinds/softmax.hpp>

#include "support/compare.hpp"
#include "support/hypercube_case.hpp"

namespace effattn_test {
namespace {

using effattn::Executor;

static_assert(effattn::Attention<HypercubeAttention<float>>);
static_assert(effattn::Attention<HypercubeAttention<double>>);
static_assert(HypercubeAttention<float>::complexity == effattn::Complexity::n_log_n);
static_assert(HypercubeAttention<double>::name == "HypercubeAttention");

template <class T>
class HypercubeProperties : public ::testing::Test {};
TYPED_TEST_SUITE(HypercubeProperties, Scalars);

std::size_t ix(Index i) { return static_cast<std::size_t>(i); }

CubeSpec spec_of(Index L, Index block, std::uint64_t seed, Index B = 1, Index H = 1, Index Hkv = 1, Index Dqk = 8,
                 Index Dv = 4) {
  CubeSpec s;
  s.B = B, s.H = H, s.Hkv = Hkv, s.L = L, s.Dqk = Dqk, s.Dv = Dv;
  s.config.block = block;
  s.seed = seed;
  return s;
}

// Whether token t sees any real key: some node adjacent to its own holds a key below `valid`.
bool sees_a_key(Index t, Index L, Index block, Index valid) {
  const Index N = (L + block - 1) / block;
  for (Index J : effattn::hypercube_neighbours(t / block, N))
    if (J * block < valid) return true;
  return false;
}

// Exact SoftmaxAttention<T> of the inputs with their key padding and the config's scale.
template <class T>
CubeOut<T> run_softmax(const CubeInputs<T>& in) {
  CubeOut<T> r{Buffer<T>(in.out_size(), in.spec.offset, std::numeric_limits<T>::quiet_NaN()),
               Buffer<T>(in.lse_size(), in.spec.offset, std::numeric_limits<T>::quiet_NaN())};
  effattn::SoftmaxConfig c;
  c.scale = in.spec.config.scale;
  effattn::Options<T> options;
  options.layout = in.spec.layout;
  options.executor = Executor::serial();
  options.lse = effattn::Tensor3<T>(r.lse.data(), in.spec.B, in.spec.H, in.spec.L);
  const effattn::Mask mask = in.mask();
  effattn::SoftmaxAttention<T>(c).forward(in.qv(), in.kv(), in.vv(), effattn::Tensor4<T>(r.out.data(), in.out_dims()),
                                          mask, options);
  return r;
}

// ---- normalisation and the small cases (6.3, 6.4) ----

// Attention rows sum to one: V = 1 gives ones and V = c (a constant per column) gives c, on every
// row that sees a key; a row that sees none is exactly 0 with lse -inf. Token and block level, a
// truncated cube, partial last block, key padding (none, mid-block, full).
TYPED_TEST(HypercubeProperties, RowsSumToOne) {
  using T = TypeParam;
  std::uint64_t seed = 100;
  for (Index block : {1, 4, 16})
    for (bool ones : {true, false}) {
      CubeSpec s = spec_of(45, block, seed++, 3, 2, 1);
      s.key_lengths = {45, 10, 0};
      s.qk_std = 2.0;
      CubeInputs<T> in = make_cube_inputs<T>(s);
      for (Index b = 0; b < s.B; ++b)
        for (Index j = 0; j < s.L; ++j)
          for (Index d = 0; d < s.Dv; ++d) in.v[in.v_at(b, 0, j, d)] = ones ? T(1) : static_cast<T>(0.75 - 0.5 * d);
      const CubeOut<T> got = run_cube(in);
      std::vector<double> want(ix(in.out_size())), want_lse(ix(in.lse_size()));
      for (Index b = 0; b < s.B; ++b)
        for (Index h = 0; h < s.H; ++h)
          for (Index t = 0; t < s.L; ++t) {
            const bool sees = sees_a_key(t, s.L, block, in.valid(b));
            for (Index d = 0; d < s.Dv; ++d) want[ix(in.out_at(b, h, t, d))] = sees ? (ones ? 1.0 : 0.75 - 0.5 * d) : 0.0;
            // Only the rows that see nothing have a known lse; the others copy the kernel's value.
            const double g = static_cast<double>(got.lse[in.lse_at(b, h, t)]);
            want_lse[ix(in.lse_at(b, h, t))] = sees ? g : -std::numeric_limits<double>::infinity();
            if (sees) {
              EXPECT_TRUE(std::isfinite(g)) << s.describe() << " row " << t;
            }
          }
      EXPECT_TRUE(compare_cube(in, got, want, &want_lse, kCubeTol<T>, s.describe() + (ones ? " V = 1" : " V = c")));
    }
}

// n = 1: the one query sees its own key only, so Y = V and lse = scale q.k, at any block; with that
// key padded the row is 0 and lse -inf.
TYPED_TEST(HypercubeProperties, OneTokenCopiesV) {
  using T = TypeParam;
  for (Index block : {1, 16}) {
    CubeSpec s = spec_of(1, block, 200 + static_cast<std::uint64_t>(block), 2, 2, 1, 8, 5);
    s.key_lengths = {1, 0};
    const CubeInputs<T> in = make_cube_inputs<T>(s);
    const CubeOut<T> got = run_cube(in);
    std::vector<double> want(ix(in.out_size())), want_lse(ix(in.lse_size()));
    for (Index h = 0; h < 2; ++h) {
      double dot = 0;
      for (Index d = 0; d < s.Dqk; ++d)
        dot += static_cast<double>(in.q[in.q_at(0, h, 0, d)]) * static_cast<double>(in.k[in.k_at(0, 0, 0, d)]);
      want_lse[ix(in.lse_at(0, h, 0))] = dot / std::sqrt(8.0);
      want_lse[ix(in.lse_at(1, h, 0))] = -std::numeric_limits<double>::infinity();
      for (Index d = 0; d < s.Dv; ++d) {
        want[ix(in.out_at(0, h, 0, d))] = static_cast<double>(in.v[in.v_at(0, 0, 0, d)]);
        want[ix(in.out_at(1, h, 0, d))] = 0.0;
      }
    }
    EXPECT_TRUE(compare_cube(in, got, want, &want_lse, kCubeTol<T>, s.describe()));
  }
}

// One node (block >= n) or two (n <= 2 block, including n = 2 at token level) form a complete graph:
// the result is exact softmax attention. With three nodes it is not (nodes 0 and 2 are not adjacent),
// which shows the comparison can tell the two apart.
TYPED_TEST(HypercubeProperties, OneOrTwoNodesAreFullAttention) {
  using T = TypeParam;
  const std::vector<std::array<Index, 2>> cases = {// block, n
                                                   {1, 1},   {1, 2},   {2, 3},   {2, 4},   {4, 1},   {4, 5},
                                                   {4, 8},   {16, 5},  {16, 16}, {16, 17}, {16, 31}, {16, 32},
                                                   {200, 37}, {200, 129}, {200, 400}, {64, 100}};
  std::uint64_t seed = 300;
  for (const auto& [block, n] : cases) {
    CubeSpec s = spec_of(n, block, seed++, 3, 4, 2, 8, 6);
    s.key_lengths = {n, (n + 1) / 2, 0};
    s.layout = seed % 2 ? Layout::blhd : Layout::bhld;
    const CubeInputs<T> in = make_cube_inputs<T>(s);
    const CubeOut<T> want = run_softmax(in);
    const std::vector<double> want_lse = as_double(want.lse);
    EXPECT_TRUE(compare_cube(in, run_cube(in), as_double(want.out), &want_lse, kCubeTol<T>, s.describe()));
  }
  for (Index block : {1, 5}) {
    const CubeSpec s = spec_of(3 * block, block, seed++);
    const CubeInputs<T> in = make_cube_inputs<T>(s);
    EXPECT_GT(max_abs_diff(as_double(run_cube(in).out), as_double(run_softmax(in).out)), 1e-3)
        << "three nodes gave full attention; " << s.describe();
  }
}

// Block level with q and k constant inside each block is token level over the nodes: the B copies of
// a key add log B to the node's weight, the same for every node when all blocks are full, so the
// query rows of block I get token-level row I over the block means of v, and lse gains log B. This
// ties the tile-list path to the gather path; N covers powers of two, a truncated cube and N = 1.
TYPED_TEST(HypercubeProperties, ConstantBlocksAreTokenLevelOverTheNodes) {
  using T = TypeParam;
  std::uint64_t seed = 400;
  for (Index N : {1, 5, 12, 16, 17})
    for (Index block : {2, 4, 16, 33}) {
      const Index n = N * block;
      const CubeSpec tok_spec = spec_of(N, 1, seed++, 2, 2, 1, 8, 3);
      CubeInputs<T> tok = make_cube_inputs<T>(tok_spec);
      CubeSpec blk_spec = spec_of(n, block, seed++, 2, 2, 1, 8, 3);
      CubeInputs<T> blk = make_cube_inputs<T>(blk_spec);
      for (Index b = 0; b < 2; ++b) {
        for (Index t = 0; t < n; ++t) {
          for (Index h = 0; h < 2; ++h)
            for (Index d = 0; d < 8; ++d) blk.q[blk.q_at(b, h, t, d)] = tok.q[tok.q_at(b, h, t / block, d)];
          for (Index d = 0; d < 8; ++d) blk.k[blk.k_at(b, 0, t, d)] = tok.k[tok.k_at(b, 0, t / block, d)];
        }
        for (Index J = 0; J < N; ++J)
          for (Index d = 0; d < 3; ++d) {
            double mean = 0;
            for (Index t = J * block; t < (J + 1) * block; ++t) mean += static_cast<double>(blk.v[blk.v_at(b, 0, t, d)]);
            tok.v[tok.v_at(b, 0, J, d)] = static_cast<T>(mean / static_cast<double>(block));
          }
      }
      const CubeOut<T> token = run_cube(tok);
      std::vector<double> want(ix(blk.out_size())), want_lse(ix(blk.lse_size()));
      for (Index b = 0; b < 2; ++b)
        for (Index h = 0; h < 2; ++h)
          for (Index t = 0; t < n; ++t) {
            want_lse[ix(blk.lse_at(b, h, t))] =
                static_cast<double>(token.lse[tok.lse_at(b, h, t / block)]) + std::log(static_cast<double>(block));
            for (Index d = 0; d < 3; ++d)
              want[ix(blk.out_at(b, h, t, d))] = static_cast<double>(token.out[tok.out_at(b, h, t / block, d)]);
          }
      // The block means in T add one rounding of v to the token side.
      EXPECT_TRUE(compare_cube(blk, run_cube(blk), want, &want_lse, kCubeTol<T>,
                               blk_spec.describe() + " vs token level over N = " + std::to_string(N)));
    }
}

// ---- symmetry and locality (6.5, 6.6) ----

// Rows of q, k and v moved by p -> p XOR c move the output rows the same way when the node count is a
// power of two (every XOR translation is an automorphism of the cube). Token level: p is the token;
// block level: p is the block index and tokens keep their place inside the block.
TYPED_TEST(HypercubeProperties, XorTranslationEquivariance) {
  using T = TypeParam;
  const std::vector<std::array<Index, 2>> cases = {{1, 16}, {1, 64}, {1, 128}, {4, 64}, {16, 128}, {7, 28}, {32, 64}};
  std::uint64_t seed = 500;
  for (const auto& [block, n] : cases) {
    const Index N = n / block;
    for (Index c : {Index{1}, Index{5} % N, N - 1, N / 2 + 1}) {
      if (c == 0 || c >= N) continue;
      CubeSpec s = spec_of(n, block, seed++, 2, 2, 1, 8, 3);
      const CubeInputs<T> in = make_cube_inputs<T>(s);
      CubeInputs<T> moved = make_cube_inputs<T>(s);
      const auto image = [&](Index t) { return ((t / block) ^ c) * block + t % block; };
      for (Index b = 0; b < 2; ++b)
        for (Index t = 0; t < n; ++t) {
          for (Index h = 0; h < 2; ++h)
            for (Index d = 0; d < 8; ++d) moved.q[moved.q_at(b, h, t, d)] = in.q[in.q_at(b, h, image(t), d)];
          for (Index d = 0; d < 8; ++d) moved.k[moved.k_at(b, 0, t, d)] = in.k[in.k_at(b, 0, image(t), d)];
          for (Index d = 0; d < 3; ++d) moved.v[moved.v_at(b, 0, t, d)] = in.v[in.v_at(b, 0, image(t), d)];
        }
      const CubeOut<T> base = run_cube(in);
      std::vector<double> want(ix(in.out_size())), want_lse(ix(in.lse_size()));
      for (Index b = 0; b < 2; ++b)
        for (Index h = 0; h < 2; ++h)
          for (Index t = 0; t < n; ++t) {
            want_lse[ix(in.lse_at(b, h, t))] = static_cast<double>(base.lse[in.lse_at(b, h, image(t))]);
            for (Index d = 0; d < 3; ++d)
              want[ix(in.out_at(b, h, t, d))] = static_cast<double>(base.out[in.out_at(b, h, image(t), d)]);
          }
      EXPECT_TRUE(compare_cube(moved, run_cube(moved), want, &want_lse, kCubeTol<T>,
                               s.describe() + " XOR " + std::to_string(c)));
    }
  }
}

// A value that is one-hot at key u (all other value rows zero) reaches exactly the queries that see
// u: at token level the rows Nbr(u) (the graph is symmetric), at block level every row of every block
// adjacent to u's. Every other row is exactly 0, not merely small.
TYPED_TEST(HypercubeProperties, OneHotValueReachesExactlyItsNeighbourhood) {
  using T = TypeParam;
  const std::vector<std::array<Index, 3>> cases = {// block, n, u
                                                   {1, 16, 0},  {1, 16, 5},  {1, 23, 22}, {1, 100, 37},
                                                   {1, 129, 64}, {4, 50, 21}, {16, 129, 128}, {7, 100, 50}};
  std::uint64_t seed = 600;
  for (const auto& [block, n, u] : cases) {
    const CubeSpec s = spec_of(n, block, seed++, 1, 2, 1, 8, 2);
    CubeInputs<T> in = make_cube_inputs<T>(s);
    for (Index j = 0; j < n; ++j)
      for (Index d = 0; d < 2; ++d) in.v[in.v_at(0, 0, j, d)] = j == u ? T(1) : T(0);
    const CubeOut<T> got = run_cube(in);
    const Index N = (n + block - 1) / block;
    const auto nbr = effattn::hypercube_neighbours(u / block, N);
    for (Index h = 0; h < 2; ++h)
      for (Index t = 0; t < n; ++t) {
        const bool adjacent = std::find(nbr.begin(), nbr.end(), t / block) != nbr.end();
        for (Index d = 0; d < 2; ++d) {
          const T y = got.out[in.out_at(0, h, t, d)];
          if (adjacent) {
            EXPECT_GT(y, T(0)) << s.describe() << " u " << u << " row " << t;
          } else {
            EXPECT_EQ(y, T(0)) << s.describe() << " u " << u << " row " << t;
          }
        }
      }
  }
}

// ---- padding (6.7) ----

// Padded keys cannot reach any output: new k and v there (4x the spread) leave every output and lse
// unchanged bit for bit, padded query rows included (they attend like the others, to real keys only).
// New q at padded queries changes only those rows. Padded rows that see a real key are not zero.
TYPED_TEST(HypercubeProperties, PaddingCannotLeak) {
  using T = TypeParam;
  std::uint64_t seed = 700;
  for (Index block : {1, 4, 16})
    for (Layout layout : {Layout::bhld, Layout::blhd}) {
      CubeSpec s = spec_of(77, block, seed++, 3, 4, 2, 8, 5);
      s.layout = layout;
      s.offset = layout == Layout::blhd ? 1 : 0;
      s.key_lengths = {77, 29, 0};
      const CubeInputs<T> in = make_cube_inputs<T>(s);
      CubeInputs<T> keys = make_cube_inputs<T>(s), queries = make_cube_inputs<T>(s);
      Rng rng(seed * 31);
      for (Index b = 0; b < s.B; ++b) {
        for (Index j = in.valid(b); j < s.L; ++j)
          for (Index h = 0; h < s.Hkv; ++h) {
            for (Index d = 0; d < s.Dqk; ++d) keys.k[keys.k_at(b, h, j, d)] = static_cast<T>(4 * rng.normal());
            for (Index d = 0; d < s.Dv; ++d) keys.v[keys.v_at(b, h, j, d)] = static_cast<T>(4 * rng.normal());
          }
        for (Index i = in.valid(b); i < s.L; ++i)
          for (Index h = 0; h < s.H; ++h)
            for (Index d = 0; d < s.Dqk; ++d) queries.q[queries.q_at(b, h, i, d)] = static_cast<T>(4 * rng.normal());
      }
      const CubeOut<T> base = run_cube(in);
      const CubeOut<T> new_keys = run_cube(keys);
      EXPECT_TRUE(same_bits(base.out, new_keys.out)) << "padded keys reached an output; " << s.describe();
      EXPECT_TRUE(same_bits(base.lse, new_keys.lse)) << "padded keys reached an lse; " << s.describe();
      const CubeOut<T> new_queries = run_cube(queries);
      Index differing = 0, nonzero_padded = 0;
      for (Index b = 0; b < s.B; ++b)
        for (Index h = 0; h < s.H; ++h)
          for (Index t = 0; t < s.L; ++t) {
            const bool padded = t >= in.valid(b);
            for (Index d = 0; d < s.Dv; ++d) {
              const Index o = in.out_at(b, h, t, d);
              if (!padded && std::memcmp(&base.out[o], &new_queries.out[o], sizeof(T)) != 0) ++differing;
              if (padded && sees_a_key(t, s.L, block, in.valid(b)) && base.out[o] != T(0)) ++nonzero_padded;
            }
          }
      EXPECT_EQ(differing, 0) << "padded queries changed real rows; " << s.describe();
      EXPECT_GT(nonzero_padded, 0) << "padded queries were zeroed; " << s.describe();
    }
}

// ---- determinism and batching ----

// Serial, a repeated call, a second object, OpenMP with 1 and 2 threads, an Eigen pool and a caller
// workspace of exactly workspace_bytes() all give the same bits, out and lse, token and block level.
TYPED_TEST(HypercubeProperties, BitIdenticalAcrossExecutorsAndWorkspaces) {
  using T = TypeParam;
  Eigen::ThreadPool pool(2);
  std::uint64_t seed = 800;
  for (Index block : {1, 4, 16}) {
    CubeSpec s = spec_of(600, block, seed++, 2, 3, 1, 16, 8);
    s.key_lengths = {600, 333};
    const CubeInputs<T> in = make_cube_inputs<T>(s);
    const HypercubeAttention<T> attn(s.config);
    const CubeOut<T> serial = run_cube(in, attn);
    // The serial result is itself right, so bit equality is not equality of two wrong answers.
    const CubeRef want = cube_reference(in);
    ASSERT_TRUE(compare_cube(in, serial, want.out, &want.lse, kCubeTol<T>, s.describe()));
    const auto same = [&](const CubeOut<T>& got, const std::string& what) {
      EXPECT_TRUE(same_bits(serial.out, got.out)) << "out differs from serial with " << what << "; " << s.describe();
      EXPECT_TRUE(same_bits(serial.lse, got.lse)) << "lse differs from serial with " << what << "; " << s.describe();
    };
    same(run_cube(in, attn), "a repeated call");
    same(run_cube(in, HypercubeAttention<T>(s.config)), "a second object");
    same(run_cube(in, attn, Executor::openmp(1)), "openmp(1)");
    same(run_cube(in, attn, Executor::openmp(2)), "openmp(2)");
    same(run_cube(in, attn, Executor::pool(pool)), "pool(2)");
    const auto p = effattn::Problem::of<T>(in.qv(), in.kv(), in.vv(), s.layout);
    for (int threads : {1, 2}) {
      std::vector<std::byte> ws(attn.workspace_bytes(p, threads));
      same(run_cube(in, attn, threads == 1 ? Executor::serial() : Executor::openmp(2), ws),
           "a caller workspace, " + std::to_string(threads) + " thread(s)");
    }
  }
}

// Each (batch, head) slice run alone (B = 1, H = Hkv = 1, its own key length) gives the bits the
// batched call gave it: nothing of one slice reaches another, and GQA reads the right KV head.
TYPED_TEST(HypercubeProperties, BatchedEqualsPerSlice) {
  using T = TypeParam;
  std::uint64_t seed = 900;
  for (Index block : {1, 4, 16}) {
    CubeSpec s = spec_of(37, block, seed++, 3, 4, 2, 8, 5);
    s.layout = block == 4 ? Layout::blhd : Layout::bhld;
    s.key_lengths = {37, 20, 0};
    const CubeInputs<T> in = make_cube_inputs<T>(s);
    const CubeOut<T> all = run_cube(in);
    for (Index b = 0; b < s.B; ++b)
      for (Index h = 0; h < s.H; ++h) {
        CubeSpec one_spec = spec_of(s.L, block, 0, 1, 1, 1, s.Dqk, s.Dv);
        one_spec.key_lengths = {in.valid(b)};
        CubeInputs<T> one = make_cube_inputs<T>(one_spec);
        const Index hk = h / (s.H / s.Hkv);
        for (Index t = 0; t < s.L; ++t) {
          for (Index d = 0; d < s.Dqk; ++d) {
            one.q[one.q_at(0, 0, t, d)] = in.q[in.q_at(b, h, t, d)];
            one.k[one.k_at(0, 0, t, d)] = in.k[in.k_at(b, hk, t, d)];
          }
          for (Index d = 0; d < s.Dv; ++d) one.v[one.v_at(0, 0, t, d)] = in.v[in.v_at(b, hk, t, d)];
        }
        const CubeOut<T> got = run_cube(one);
        Index differing = 0;
        for (Index t = 0; t < s.L; ++t) {
          if (std::memcmp(&got.lse[one.lse_at(0, 0, t)], &all.lse[in.lse_at(b, h, t)], sizeof(T)) != 0) ++differing;
          for (Index d = 0; d < s.Dv; ++d)
            if (std::memcmp(&got.out[one.out_at(0, 0, t, d)], &all.out[in.out_at(b, h, t, d)], sizeof(T)) != 0)
              ++differing;
        }
        EXPECT_EQ(differing, 0) << "slice (" << b << ", " << h << ") differs from the batched call; " << s.describe();
      }
  }
}

// ---- robustness and cost ----

// q, k ~ N(0, 30^2) at Dqk = 16: logits reach ~1e4, so anything not done relative to the row maximum
// overflows. Every output is finite and inside the range of the values.
TYPED_TEST(HypercubeProperties, HugeLogitsGiveFiniteOutputs) {
  using T = TypeParam;
  std::uint64_t seed = 1000;
  for (Index block : {1, 16}) {
    CubeSpec s = spec_of(129, block, seed++, 2, 2, 1, 16, 4);
    s.qk_std = 30.0;
    s.key_lengths = {129, 40};
    const CubeInputs<T> in = make_cube_inputs<T>(s);
    const CubeOut<T> got = run_cube(in);
    const double unit = in.value_unit();
    for (Index i = 0; i < got.out.size(); ++i) {
      ASSERT_TRUE(std::isfinite(static_cast<double>(got.out[i]))) << s.describe() << " flat " << i;
      ASSERT_LE(std::abs(static_cast<double>(got.out[i])), unit * (1 + kCubeTol<T>)) << s.describe() << " flat " << i;
    }
    for (Index i = 0; i < got.lse.size(); ++i) ASSERT_FALSE(std::isnan(static_cast<double>(got.lse[i]))) << s.describe();
  }
}

// cost() counts the visible (query, key) pairs, Dqk + Dv multiply-adds each: at block 16 the keys per
// query of the official model's lengths (hypercube.md section 2: 64, 96, 112, 128, 144 for n = 128 ..
// 4096), k + 1 at token level for n = 2^k, and a padded batch counts only its real keys.
TYPED_TEST(HypercubeProperties, CostCountsKeysPerQuery) {
  using T = TypeParam;
  const auto keys_per_query = [](Index n, Index block, std::vector<Index> lens = {}) {
    const HypercubeAttention<T> attn(HypercubeConfig{.block = block});
    effattn::Mask m;
    m.key_lengths = lens;
    const effattn::Problem p{1, 1, 1, n, n, 24, 8};
    return attn.cost(p, m).flops / (2.0 * 32.0 * static_cast<double>(n));
  };
  const std::vector<std::array<Index, 2>> table = {{128, 64}, {512, 96}, {1024, 112}, {2048, 128}, {4096, 144}};
  for (const auto& [n, keys] : table) EXPECT_DOUBLE_EQ(keys_per_query(n, 16), static_cast<double>(keys)) << "n " << n;
  EXPECT_DOUBLE_EQ(keys_per_query(4096, 1), 13.0);
  EXPECT_DOUBLE_EQ(keys_per_query(1, 16), 1.0);
  // A truncated cube (n = 12, degrees 4..5): the pairs of the closed form.
  Index pairs = 0;
  for (Index p = 0; p < 12; ++p) pairs += static_cast<Index>(effattn::hypercube_neighbours(p, 12).size());
  EXPECT_DOUBLE_EQ(keys_per_query(12, 1) * 12.0, static_cast<double>(pairs));
  // Keys >= 8 of n = 16 padded: token t sees its neighbours below 8.
  Index real = 0;
  for (Index p = 0; p < 16; ++p)
    for (Index q : effattn::hypercube_neighbours(p, 16)) real += q < 8 ? 1 : 0;
  EXPECT_DOUBLE_EQ(keys_per_query(16, 1, {8}) * 16.0, static_cast<double>(real));
}

}  // namespace
}  // namespace effattn_test
