// A steady-state forward with a caller's workspace of workspace_bytes(problem, threads) allocates
// nothing. This binary replaces the global operator new/delete to count allocations, which is why it
// is an executable of its own.

#include <atomic>
#include <cstdlib>
#include <memory>
#include <new>
#include <span>
#include <vector>

#include <gtest/gtest.h>

#include <effattn/kinds/hypercube.hpp>
#include <effattn/kinds/lara.hpp>
#include <effattn/kinds/mra.hpp>
#include <effattn/kinds/rfa.hpp>
#include <effattn/kinds/softmax.hpp>

#include "support/softmax_case.hpp"

// Our replacement operators pair new with free on purpose (allocate() is malloc-based); GCC cannot
// see through the replacement and warns at every call site.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace {

std::atomic<bool> g_counting{false};
std::atomic<long> g_allocations{0};

void* allocate(std::size_t n, std::size_t align) {
  if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (n == 0) n = 1;
  void* p = align <= alignof(std::max_align_t) ? std::malloc(n) : std::aligned_alloc(align, (n + align - 1) / align * align);
  return p;
}

}  // namespace

void* operator new(std::size_t n) {
  if (void* p = allocate(n, 0)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) {
  if (void* p = allocate(n, 0)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t n, std::align_val_t a) {
  if (void* p = allocate(n, static_cast<std::size_t>(a))) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n, std::align_val_t a) {
  if (void* p = allocate(n, static_cast<std::size_t>(a))) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return allocate(n, 0); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return allocate(n, 0); }
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return allocate(n, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return allocate(n, static_cast<std::size_t>(a));
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }

namespace effattn_test {
namespace {

// Allocations made by f.
template <class F>
long count_allocations(F&& f) {
  g_allocations = 0;
  g_counting = true;
  f();
  g_counting = false;
  return g_allocations.load();
}

TEST(AllocationCounter, SeesAllocations) {
  // Through a volatile pointer: a new/delete pair the optimiser can see may be removed entirely.
  static int* volatile sink = nullptr;
  const long n = count_allocations([] {
    sink = new int(1);
    delete sink;
  });
  EXPECT_EQ(n, 1) << "the replaced operator new is not in effect";
}

template <class T>
class SteadyState : public ::testing::Test {};
TYPED_TEST_SUITE(SteadyState, Scalars);

template <class T>
std::vector<CaseSpec> allocation_cases() {
  std::vector<CaseSpec> cases;
  cases.push_back({.B = 2, .H = 3, .Hkv = 3, .Lq = 100, .Lk = 300, .Dqk = 64, .Dv = 64});
  CaseSpec s{.B = 2, .H = 4, .Hkv = 2, .Lq = 70, .Lk = 200, .Dqk = 33, .Dv = 17, .layout = Layout::blhd,
             .causal = Causal::bottom_right};
  s.key_lengths = {200, 50};
  s.window = {30, 2};
  s.bias = BiasKind::additive_f32;
  s.bias_shape = {1, 4, 70, 200};
  s.config.softcap = 5;
  s.config.alibi_slopes = alibi_slopes(4);
  cases.push_back(s);
  CaseSpec packed{.B = 1, .H = 2, .Hkv = 1, .Lq = 60, .Lk = 90, .Dqk = 16, .Dv = 16, .causal = Causal::top_left};
  packed.cu_q = {0, 20, 20, 60};
  packed.cu_k = {0, 30, 50, 90};
  cases.push_back(packed);
  for (Index split : {0, 3}) {
    CaseSpec decode{.B = 2, .H = 8, .Hkv = 2, .Lq = 1, .Lk = 1000, .Dqk = 64, .Dv = 64};
    decode.config.split_kv = split;
    cases.push_back(decode);
    decode.Lq = 4;
    decode.causal = Causal::bottom_right;
    cases.push_back(decode);
  }
  return cases;
}

// Runs every case with a workspace of exactly workspace_bytes(problem, 1) bytes starting `misalign`
// bytes past a 64-byte boundary, and expects no allocation in the second call.
template <class T>
void expect_no_steady_state_allocation(std::size_t misalign) {
  for (CaseSpec s : allocation_cases<T>()) {
    s.seed = 11000;
    const Inputs<T> in = make_inputs<T>(s);
    const effattn::SoftmaxAttention<T> attn(s.config);
    const auto executor = effattn::Executor::serial();
    const effattn::Problem problem = effattn::Problem::of<T>(in.qv(), in.kv(), in.vv(), s.layout);
    const std::size_t bytes = attn.workspace_bytes(problem, executor.num_threads());
    struct Free {
      void operator()(std::byte* p) const { ::operator delete(p, std::align_val_t{64}); }
    };
    const std::unique_ptr<std::byte, Free> block(static_cast<std::byte*>(::operator new(bytes + 64, std::align_val_t{64})));
    const std::span<std::byte> workspace(block.get() + misalign, bytes);
    Buffer<T> out(in.out_size()), lse(in.lse_size());
    effattn::Options<T> options;
    options.layout = s.layout;
    options.executor = executor;
    options.workspace = workspace;
    options.lse = effattn::Tensor3<T>(lse.data(), s.B, s.H, s.Lq);
    const effattn::Mask mask = in.mask();
    const effattn::Tensor4<T> out_view(out.data(), in.out_dims());
    const auto call = [&] { attn.forward(in.qv(), in.kv(), in.vv(), out_view, mask, options); };
    call();  // first call: anything lazily initialised happens here
    EXPECT_EQ(count_allocations(call), 0) << "workspace of " << bytes << " bytes at " << misalign
                                          << " bytes past a 64-byte boundary; case: " << s.describe();
    // The result is still right.
    const RefResult want = reference(in);
    const KernelResult<T> got{std::move(out), std::move(lse)};
    EXPECT_TRUE(compare(in, got, want));
  }
}

TYPED_TEST(SteadyState, AlignedWorkspace) { expect_no_steady_state_allocation<TypeParam>(0); }

// Options::workspace asks for a span of at least workspace_bytes() and nothing about its alignment,
// so an ordinary byte buffer (std::vector<std::byte> is only 16-byte aligned) must do as well.
TYPED_TEST(SteadyState, WorkspaceOfAnyAlignment) {
  for (std::size_t misalign : {8, 16, 40}) expect_no_steady_state_allocation<TypeParam>(misalign);
}

// Random-feature attention: forward in both modes and the decode step, with a workspace sized for
// two threads and run on two, allocate nothing either.
TYPED_TEST(SteadyState, RandomFeatureAttention) {
  using T = TypeParam;
  const Index B = 2, H = 4, Hkv = 2, L = 150, D = 32, Dv = 16;
  CaseSpec s{.B = B, .H = H, .Hkv = Hkv, .Lq = L, .Lk = L, .Dqk = D, .Dv = Dv};
  s.seed = 11100;
  const Inputs<T> in = make_inputs<T>(s);
  const effattn::ConstTensor4<T> one_q(in.q.data(), B, H, 1, D), one_k(in.k.data(), B, Hkv, 1, D),
      one_v(in.v.data(), B, Hkv, 1, Dv);
  for (const effattn::Compat compat : {effattn::Compat::none, effattn::Compat::lucidrains}) {
    effattn::RfaConfig config;
    config.num_features = 40;
    config.compat = compat;
    const effattn::RfaAttention<T> attn(config, Hkv, D);
    effattn::Options<T> options;
    options.executor = effattn::Executor::openmp(2);
    std::vector<std::byte> workspace(attn.workspace_bytes(effattn::Problem::of<T>(in.qv(), in.kv(), in.vv()), 2));
    options.workspace = workspace;
    Buffer<T> out(in.out_size());
    const effattn::Tensor4<T> out_view(out.data(), in.out_dims());
    std::vector<Index> lengths{L, 70};
    for (const Causal causal : {Causal::none, Causal::bottom_right}) {
      effattn::Mask mask;
      mask.causal = causal;
      mask.key_lengths = lengths;
      const auto call = [&] { attn.forward(in.qv(), in.kv(), in.vv(), out_view, mask, options); };
      call();
      EXPECT_EQ(count_allocations(call), 0) << "compat " << effattn::to_string(compat) << ", causal " << static_cast<int>(causal);
    }
    if (compat != effattn::Compat::none) continue;
    auto state = attn.make_state(B, Hkv, Dv);
    const effattn::Tensor4<T> one_out(out.data(), B, H, 1, Dv);
    const auto step = [&] { attn.extend(state, one_q, one_k, one_v, one_out, options); };
    step();
    EXPECT_EQ(count_allocations(step), 0) << "decode step";
  }
}

// RA and LARA: every sampling mode with a workspace of workspace_bytes(problem, 2), run on two threads.
TYPED_TEST(SteadyState, RandomizedAttention) {
  using T = TypeParam;
  const Index B = 2, H = 4, Hkv = 2, L = 150, D = 32, Dv = 16;
  CaseSpec s{.B = B, .H = H, .Hkv = Hkv, .Lq = L, .Lk = L, .Dqk = D, .Dv = Dv};
  s.seed = 11200;
  const Inputs<T> in = make_inputs<T>(s);
  const effattn::Problem problem = effattn::Problem::of<T>(in.qv(), in.kv(), in.vv());
  Buffer<T> out(in.out_size());
  const effattn::Tensor4<T> out_view(out.data(), in.out_dims());
  std::vector<Index> lengths{L, 70};
  effattn::Mask mask;
  mask.key_lengths = lengths;
  const auto expect_none = [&](const auto& attn, const effattn::Mask& m, const char* what) {
    effattn::Options<T> options;
    options.executor = effattn::Executor::openmp(2);
    std::vector<std::byte> workspace(attn.workspace_bytes(problem, 2));
    options.workspace = workspace;
    const auto call = [&] { attn.forward(in.qv(), in.kv(), in.vv(), out_view, m, options); };
    call();
    EXPECT_EQ(count_allocations(call), 0) << what;
  };
  for (const effattn::Weighting weighting :
       {effattn::Weighting::mis_opt, effattn::Weighting::mis_bh, effattn::Weighting::mis_biased}) {
    effattn::LaraConfig config;
    config.num_landmarks = 16;
    config.weighting = weighting;
    expect_none(effattn::LaraAttention<T>(config), mask, "LARA deterministic");
    config.sampling = effattn::Sampling::stochastic;
    config.samples_per_proposal = 2;
    config.antithetic = true;
    expect_none(effattn::LaraAttention<T>(config), mask, "LARA stochastic, antithetic");
  }
  effattn::Mask causal = mask;
  causal.causal = Causal::bottom_right;
  for (const effattn::RaMean mean : {effattn::RaMean::sampled_key, effattn::RaMean::expected_key, effattn::RaMean::mean_key}) {
    effattn::RaConfig config;
    config.mean = mean;
    config.samples = 3;
    expect_none(effattn::RandomizedAttention<T>(config), causal, "RA");
  }
}

// MRA-2 (both modes, with priors and with the LSE output) and hypercube attention (token and block
// level), with a workspace of workspace_bytes(problem, 2), run on two threads.
TYPED_TEST(SteadyState, BlockSparseAttention) {
  using T = TypeParam;
  const Index B = 2, H = 4, Hkv = 2, L = 150, D = 32, Dv = 16;
  CaseSpec s{.B = B, .H = H, .Hkv = Hkv, .Lq = L, .Lk = L, .Dqk = D, .Dv = Dv};
  s.seed = 11300;
  const Inputs<T> in = make_inputs<T>(s);
  const effattn::Problem problem = effattn::Problem::of<T>(in.qv(), in.kv(), in.vv());
  Buffer<T> out(in.out_size()), lse(in.lse_size());
  const effattn::Tensor4<T> out_view(out.data(), in.out_dims());
  std::vector<Index> lengths{L, 70};
  effattn::Mask mask;
  mask.key_lengths = lengths;
  const auto expect_none = [&](const auto& attn, const char* what) {
    effattn::Options<T> options;
    options.executor = effattn::Executor::openmp(2);
    std::vector<std::byte> workspace(attn.workspace_bytes(problem, 2));
    options.workspace = workspace;
    options.lse = effattn::Tensor3<T>(lse.data(), B, H, L);
    const auto call = [&] { attn.forward(in.qv(), in.kv(), in.vv(), out_view, mask, options); };
    call();
    EXPECT_EQ(count_allocations(call), 0) << what;
  };
  for (const effattn::MraMode mode : {effattn::MraMode::full, effattn::MraMode::sparse}) {
    effattn::MraConfig config;
    config.block = 16;
    config.mode = mode;
    config.prior_first = 1;
    config.prior_diag = 3;
    expect_none(effattn::MraAttention<T>(config), "MRA");
  }
  for (const Index block : {1, 16}) {
    effattn::HypercubeConfig config;
    config.block = block;
    expect_none(effattn::HypercubeAttention<T>(config), "hypercube");
  }
}

}  // namespace
}  // namespace effattn_test
