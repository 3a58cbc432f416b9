// Outputs are bitwise identical for every executor and thread count: serial, OpenMP with 1..4
// threads, and a caller's Eigen::ThreadPool. Without OpenMP, Executor::openmp() is serial and the
// OpenMP rows compare serial against serial.

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <unsupported/Eigen/CXX11/ThreadPool>

#include <effattn/kinds/softmax.hpp>

#include "support/softmax_case.hpp"

namespace effattn_test {
namespace {

template <class T>
class ThreadDeterminism : public ::testing::Test {};
TYPED_TEST_SUITE(ThreadDeterminism, Scalars);

template <class T>
bool same_bytes(const Buffer<T>& a, const Buffer<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.size()) * sizeof(T)) == 0;
}

template <class T>
std::vector<CaseSpec> determinism_cases() {
  std::vector<CaseSpec> cases;
  for (Causal causal : {Causal::none, Causal::top_left, Causal::bottom_right}) {
    cases.push_back({.B = 1, .H = 1, .Hkv = 1, .Lq = 301, .Lk = 301, .Dqk = 64, .Dv = 64, .causal = causal});
    cases.push_back({.B = 2, .H = 5, .Hkv = 1, .Lq = 77, .Lk = 260, .Dqk = 33, .Dv = 20, .layout = Layout::blhd, .causal = causal});
    CaseSpec packed{.B = 1, .H = 3, .Hkv = 3, .Lq = 120, .Lk = 200, .Dqk = 16, .Dv = 16, .causal = causal};
    packed.cu_q = {0, 50, 50, 120};
    packed.cu_k = {0, 10, 90, 200};
    cases.push_back(packed);
    CaseSpec masked{.B = 3, .H = 2, .Hkv = 2, .Lq = 90, .Lk = 150, .Dqk = 24, .Dv = 24, .causal = causal};
    masked.key_lengths = {150, 3, 77};
    masked.window = {40, 5};
    masked.bias = BiasKind::additive_f32;
    masked.bias_shape = {1, 2, 90, 150};
    masked.config.alibi_slopes = alibi_slopes(2);
    masked.config.softcap = 8;
    cases.push_back(masked);
    // Decode, plain and split-KV (a different summation order than no split, but the same one for
    // every thread count).
    for (Index split : {0, 3}) {
      CaseSpec decode{.B = 2, .H = 8, .Hkv = 2, .Lq = 1, .Lk = 2000, .Dqk = 64, .Dv = 64, .causal = causal};
      decode.config.split_kv = split;
      cases.push_back(decode);
      decode.Lq = 4;
      decode.key_lengths = {2000, 999};
      cases.push_back(decode);
    }
  }
  return cases;
}

TYPED_TEST(ThreadDeterminism, BitIdenticalAcrossExecutors) {
  using T = TypeParam;
  Eigen::ThreadPool pool2(2), pool3(3);
  struct Named {
    std::string name;
    effattn::Executor executor;
  };
  const std::vector<Named> executors = {
      {"openmp(1)", effattn::Executor::openmp(1)}, {"openmp(2)", effattn::Executor::openmp(2)},
      {"openmp(3)", effattn::Executor::openmp(3)}, {"openmp(4)", effattn::Executor::openmp(4)},
      {"default", effattn::Executor{}},           {"pool(2)", effattn::Executor::pool(pool2)},
      {"pool(3)", effattn::Executor::pool(pool3)},
  };
  std::uint64_t seed = 10000;
  for (CaseSpec s : determinism_cases<T>()) {
    s.seed = seed++;
    const Inputs<T> in = make_inputs<T>(s);
    const KernelResult<T> serial = run_kernel(in, effattn::Executor::serial());
    // The serial result is itself right (so bit equality is not equality of two wrong answers).
    EXPECT_TRUE(compare(in, serial, reference(in)));
    for (const Named& e : executors) {
      const KernelResult<T> got = run_kernel(in, e.executor);
      EXPECT_TRUE(same_bytes(got.out, serial.out)) << "out differs from serial with " << e.name << "; case: " << s.describe();
      EXPECT_TRUE(same_bytes(got.lse, serial.lse)) << "lse differs from serial with " << e.name << "; case: " << s.describe();
    }
    // And a repeated call with the same executor.
    const KernelResult<T> again = run_kernel(in, effattn::Executor::openmp(2));
    EXPECT_TRUE(same_bytes(again.out, serial.out)) << "repeat with openmp(2); case: " << s.describe();
  }
}

}  // namespace
}  // namespace effattn_test
