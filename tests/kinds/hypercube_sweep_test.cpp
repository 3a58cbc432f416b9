// HypercubeAttention against the double reference (reference::hypercube_attention: the builder's
// graph and dense masked softmax) in float and double, token level (block = 1, the gather path) and
// block level (the tile-list path):
//   n in {1, 2, 3, 15, 16, 17, 100, 128, 129, 1000} (powers of two, one off either side, a truncated
//   cube) times block in {1, 2, 4, 7, 16, 32, 200} (n not a multiple of the block, block > n, a block
//   longer than a key tile of the core);
//   key padding: no key, lengths ending mid-block and on a block boundary, one short, full;
//   GQA and MQA, the blhd layout, misaligned buffers, Dqk != Dv (including 1 and wide heads), a custom
//   scale, large logits, Options::lse on and off, and a multi-threaded run.
// Tolerances: kCubeTol (support/hypercube_case.hpp), relative to max|v| for out and to max(1, |lse|)
// for lse; a row that sees no key must be exactly 0 with lse -inf. Measured worst: float 6.7e-7
// (9.4e-7 with large logits), double 1.1e-15 (1.8e-15), recorded per test as a test property.

#include <array>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <effattn/kinds/hypercube.hpp>

#include "support/compare.hpp"
#include "support/hypercube_case.hpp"

namespace effattn_test {
namespace {

template <class T>
class HypercubeSweep : public ::testing::Test {};
TYPED_TEST_SUITE(HypercubeSweep, Scalars);

constexpr Index kLengths[] = {1, 2, 3, 15, 16, 17, 100, 128, 129};
constexpr Index kBlocks[] = {1, 2, 4, 7, 16, 32, 200};

// Every length with every block, B = 2 and H = 2 over one KV head; lse on all but every fourth case.
// n = 1000 at blocks 1, 4 and 16 only: the reference is O(n^2).
TYPED_TEST(HypercubeSweep, LengthsAndBlocks) {
  using T = TypeParam;
  double worst = 0;
  std::uint64_t seed = 100;
  Index r = 0;
  for (Index n : kLengths)
    for (Index block : kBlocks) {
      CubeSpec s;
      s.B = 2, s.H = 2, s.Hkv = 1, s.L = n;
      s.config.block = block;
      s.with_lse = r++ % 4 != 3;
      s.seed = seed++;
      EXPECT_TRUE(check_cube_case<T>(s, &worst));
    }
  for (Index block : {1, 4, 16}) {
    CubeSpec s;
    s.L = 1000;
    s.config.block = block;
    s.Dqk = s.Dv = 16;
    s.seed = seed++;
    EXPECT_TRUE(check_cube_case<T>(s, &worst));
  }
  ::testing::Test::RecordProperty("worst_rel_error", sci(worst));
}

// Key padding, one batch entry per kind of length: all keys, none, one ending mid-block, one ending on
// a block boundary, one short of the end. Padded queries are not zeroed: they attend to the real keys
// of their neighbourhood, and a row whose neighbourhood holds no real key is 0 with lse -inf.
TYPED_TEST(HypercubeSweep, KeyPadding) {
  using T = TypeParam;
  double worst = 0;
  std::uint64_t seed = 200;
  for (Index n : {1, 2, 3, 15, 16, 17, 100, 129})
    for (Index block : {1, 2, 4, 7, 16}) {
      CubeSpec s;
      s.B = 5, s.H = 2, s.Hkv = 2, s.L = n, s.Dqk = 6, s.Dv = 5;
      s.config.block = block;
      const Index mid = std::min(n, (n / 2) / block * block + (block > 1 ? block / 2 : 0) + 1);
      const Index boundary = std::min(n, std::max<Index>(1, n / 2) / block * block);
      s.key_lengths = {n, 0, mid, boundary, n - 1};
      s.seed = seed++;
      EXPECT_TRUE(check_cube_case<T>(s, &worst));
    }
  for (Index block : {1, 16}) {
    CubeSpec s;
    s.B = 2, s.L = 1000;
    s.config.block = block;
    s.key_lengths = {517, 3};
    s.seed = seed++;
    EXPECT_TRUE(check_cube_case<T>(s, &worst));
  }
  ::testing::Test::RecordProperty("worst_rel_error", sci(worst));
}

// Heads, layouts, alignment and head dims rotate across token and block level so each meets several
// of the others: GQA (6 over 2), MQA (4 over 1), MHA; blhd; buffers one element off; head dims from 1
// (a single multiply) to 64 and 65 (full packets and a tail), Dqk != Dv both ways.
TYPED_TEST(HypercubeSweep, HeadsLayoutsAndDims) {
  using T = TypeParam;
  double worst = 0;
  const std::vector<std::array<Index, 2>> heads = {{6, 2}, {4, 1}, {3, 3}};
  const std::vector<std::array<Index, 2>> dims = {{5, 3}, {1, 7}, {64, 16}, {32, 65}, {65, 64}, {8, 1}};
  std::uint64_t seed = 300;
  Index r = 0;
  for (Index block : {1, 4, 16})
    for (Index n : {17, 100, 129})
      for (int variant = 0; variant < 4; ++variant, ++r) {
        CubeSpec s;
        s.B = 2, s.L = n;
        s.H = heads[static_cast<std::size_t>(r % 3)][0];
        s.Hkv = heads[static_cast<std::size_t>(r % 3)][1];
        s.Dqk = dims[static_cast<std::size_t>(r % 6)][0];
        s.Dv = dims[static_cast<std::size_t>(r % 6)][1];
        s.layout = variant % 2 ? Layout::blhd : Layout::bhld;
        s.offset = variant / 2;
        s.with_lse = r % 5 != 2;
        if (variant == 3) s.key_lengths = {n, n / 3};
        s.config.block = block;
        s.seed = seed++;
        EXPECT_TRUE(check_cube_case<T>(s, &worst));
      }
  ::testing::Test::RecordProperty("worst_rel_error", sci(worst));
}

// A custom scale (including 0, which makes every visible key equally likely, and a negative one),
// and large logits: q, k ~ N(0, 3^2) at Dqk = 16 gives |s| up to ~100, so anything not done relative
// to the row maximum overflows. The float logits' rounding grows with |s| (measured worst 9.4e-7),
// still 10x inside the default tolerance.
TYPED_TEST(HypercubeSweep, ScaleAndLargeLogits) {
  using T = TypeParam;
  double worst = 0;
  std::uint64_t seed = 400;
  for (Index block : {1, 4, 16})
    for (double scale : {0.0, -0.3, 1.7}) {
      CubeSpec s;
      s.B = 2, s.H = 2, s.L = 70;
      s.config.block = block;
      s.config.scale = scale;
      s.key_lengths = {70, 33};
      s.seed = seed++;
      EXPECT_TRUE(check_cube_case<T>(s, &worst));
    }
  double worst_large = 0;
  for (Index block : {1, 16}) {
    CubeSpec s;
    s.B = 2, s.H = 2, s.L = 129, s.Dqk = 16;
    s.config.block = block;
    s.qk_std = 3.0;
    s.key_lengths = {129, 50};
    s.seed = seed++;
    EXPECT_TRUE(check_cube_case<T>(s, &worst_large));
  }
  ::testing::Test::RecordProperty("worst_rel_error", sci(worst));
  ::testing::Test::RecordProperty("worst_rel_error_large_logits", sci(worst_large));
}

// The executor must not change the result against the reference either (bit identity across thread
// counts is the properties test's business): two threads, more work items than threads.
TYPED_TEST(HypercubeSweep, TwoThreads) {
  using T = TypeParam;
  double worst = 0;
  std::uint64_t seed = 500;
  for (Index block : {1, 16}) {
    CubeSpec s;
    s.B = 3, s.H = 2, s.Hkv = 1, s.L = 600;
    s.config.block = block;
    s.key_lengths = {600, 301, 0};
    s.seed = seed++;
    const CubeInputs<T> in = make_cube_inputs<T>(s);
    const CubeRef want = cube_reference(in);
    const CubeOut<T> got = run_cube(in, effattn::Executor::openmp(2));
    EXPECT_TRUE(compare_cube(in, got, want.out, &want.lse, kCubeTol<T>, s.describe() + " openmp(2)", &worst));
  }
  ::testing::Test::RecordProperty("worst_rel_error", sci(worst));
}

}  // namespace
}  // namespace effattn_test
