#pragma once
// What every row set of effattn_bench shares: the machine's measured limits, the counters derived
// from them, the seeded inputs of one shape and their exact (double) answers, the timed loop with its
// allocation count, the heap row, and registration. Row sets live in their own source files
// (softmax_rows.cpp, rfa_rows.cpp, lara_rows.cpp) and are registered from main.cpp.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <benchmark/benchmark.h>

// GCC 12 reports -Wmaybe-uninitialized inside the AVX-512 transposes of Eigen 3.4's GEMM kernel (in
// the intrinsics headers) once the naive baseline inlines them: a known false positive. The warning
// state that counts is the one where the intrinsics are defined, so it is switched off for this
// include only, the first one that pulls them in (this header comes first in every source file).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <Eigen/Core>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#include <effattn/attention.hpp>
#include <effattn/kinds/rfa_config.hpp>

#include "heap_tracker.hpp"
#include "inputs.hpp"
#include "summary_reporter.hpp"

namespace effattn_bench {

using effattn::Index;

inline constexpr Index kBatch = 1;
inline constexpr Index kHeads = 8;
inline constexpr double kMiB = 1024.0 * 1024.0;

// ---- machine limits, measured once in main() -----------------------------------------------------------

struct Machine {
  double peak_1t = 0;  // GFLOP/s of one core
  double peak_nt = 0;  // GFLOP/s of all threads together
  double triad_1t = 0;  // GB/s, streaming stores: the %bw reference
  double triad_nt = 0;
  double triad_plain_1t = 0;  // GB/s, plain stores (STREAM's usual build), for comparison only
  double triad_plain_nt = 0;
  int threads = 1;
};
extern Machine g_machine;

// Peak of `threads` cores: the per-core figure times the thread count, the ceiling a perfectly
// parallel kernel would reach (the measured all-thread figure is in the context, for comparison).
double peak_flops(int threads);
double triad_bytes(int threads);

effattn::Executor executor_for(int threads);
effattn::Mask make_mask(bool causal);

// ---- counters ------------------------------------------------------------------------------------------

// Rate counters divide by the run's time (real time: every row uses UseRealTime()), so "%peak" is
// flops / (peak * threads) per second of the same clock that "FLOP/s" and the time column use.
void flop_counters(benchmark::State& state, double flops, int threads);
void byte_counters(benchmark::State& state, double bytes, int threads);

// max|o32 - o64| / max|o64| over the first n elements.
double relative_error(const float* o32, const double* o64, std::size_t n);
// |o32 - o64|_F / |o64|_F over the first n elements (the approximation papers' measure).
double frobenius_error(const float* o32, const double* o64, std::size_t n);

// ---- inputs, shared by the rows of one shape -----------------------------------------------------------

// Above this length the softmax rows' rel_err compares head 0 only: the double kernel would otherwise
// cost more than the float rows it checks. Heads are independent, so one head's error is a fair sample.
inline constexpr Index kAllHeadsErrorMaxLen = 4096;
// Query rows of head 0 in the sampled references (sample_reference): cheap at any L.
inline constexpr Index kSampleRows = 256;

// Inputs of one (L, D) with B = kBatch and H = Hkv = kHeads, kept while consecutive rows use them (rows
// are registered shape by shape), and the double kernel's outputs, computed on first use and reused by
// every row of that shape.
struct AttentionInputs {
  Index len = -1;
  Index dim = -1;
  Index ref_heads = 0;
  AlignedBuffer<float> q, k, v;      // [B,H,L,D]
  AlignedBuffer<double> qd, kd, vd;  // [1,ref_heads,L,D]: the same values, widened
  AlignedBuffer<double> ref[2];      // [1,ref_heads,L,D], by causal
  AlignedBuffer<double> sample[2];   // [1,1,kSampleRows,D], by causal: see sample_reference

  [[nodiscard]] std::size_t elements() const { return static_cast<std::size_t>(kBatch * kHeads * len * dim); }
  [[nodiscard]] std::size_t ref_elements() const { return static_cast<std::size_t>(ref_heads * len * dim); }
  [[nodiscard]] std::size_t sample_elements() const {
    return static_cast<std::size_t>(std::min(kSampleRows, len) * dim);
  }
};

// The inputs of (len, dim); a different shape releases the previous one first. The values depend only
// on the shape, so every kind sees the same q, k and v at the same (L, D).
AttentionInputs& attention_inputs(Index len, Index dim);

// Exact softmax attention in double over ref_elements(): every head up to kAllHeadsErrorMaxLen, head 0
// beyond.
const double* attention_reference(AttentionInputs& in, bool causal);

// Exact softmax attention in double of the first kSampleRows query rows of head 0 (the first
// sample_elements() of the output): every key without a mask; with a causal mask the first
// kSampleRows keys, all those rows see.
const double* attention_sample_reference(AttentionInputs& in, bool causal);

// The same for raw head-0 inputs: q [rows, D] and k, v [len, D] floats, widened here.
AlignedBuffer<double> sample_reference(const float* q, const float* k, const float* v, Index rows, Index len,
                                       Index dim, bool causal);

// ---- the timed loop, shared by every row that times a kernel -------------------------------------------

// Runs call() under the benchmark loop and records "allocs", heap allocations per steady-state call,
// which should be 0 when the call has its workspace.
template <class Call>
void timed_calls(benchmark::State& state, Call&& call) {
  const std::uint64_t allocs_before = heap::allocations();
  for (auto _ : state) {
    call();
    benchmark::ClobberMemory();
  }
  const std::uint64_t allocs = heap::allocations() - allocs_before;
  state.counters["allocs"] =
      static_cast<double>(allocs) / static_cast<double>(std::max<benchmark::IterationCount>(state.iterations(), 1));
}

// forward() under timed_calls with a caller-owned workspace (a plain vector, as a user would pass it:
// any alignment must do); its size, from workspace_bytes(), is the row's "ws_MiB". Returns false (the
// row skipped with the error) when check() refuses the call.
template <effattn::Attention A>
bool timed_forward(benchmark::State& state, const A& attn, effattn::ConstTensor4<float> q,
                   effattn::ConstTensor4<float> k, effattn::ConstTensor4<float> v, effattn::Tensor4<float> out,
                   const effattn::Mask& mask, int threads) {
  effattn::Options<float> options;
  options.executor = executor_for(threads);
  std::vector<std::byte> workspace(attn.workspace_bytes(effattn::Problem::of<float>(q, k, v), threads));
  options.workspace = workspace;
  if (const effattn::Status s = attn.check(q, k, v, out, mask, options); !s) {
    state.SkipWithError(s.message().c_str());
    return false;
  }
  state.counters["ws_MiB"] = static_cast<double>(workspace.size()) / kMiB;
  timed_calls(state, [&] {
    attn.forward(q, k, v, out, mask, options);
    benchmark::DoNotOptimize(out.data());
  });
  return true;
}

// A kernel row: attn.forward on the inputs of (L, D) = (in.len, in.dim) under the timed loop, FLOP
// counters from the kind's cost(), and rel_err and frob_err of the first `compared` output values
// against `expected` (the double reference of the same rows).
template <effattn::Attention A>
void kernel_row(benchmark::State& state, AttentionInputs& in, const A& attn, bool causal, int threads,
                const double* (*expected)(AttentionInputs&, bool), std::size_t compared) {
  AlignedBuffer<float> out_buf(in.elements());
  out_buf.fill_zero();
  const effattn::ConstTensor4<float> q(in.q.data(), kBatch, kHeads, in.len, in.dim);
  const effattn::ConstTensor4<float> k(in.k.data(), kBatch, kHeads, in.len, in.dim);
  const effattn::ConstTensor4<float> v(in.v.data(), kBatch, kHeads, in.len, in.dim);
  const effattn::Tensor4<float> out(out_buf.data(), kBatch, kHeads, in.len, in.dim);
  const effattn::Mask mask = make_mask(causal);
  if (!timed_forward(state, attn, q, k, v, out, mask, threads)) return;
  flop_counters(state, attn.cost(effattn::Problem::of<float>(q, k, v), mask).flops, threads);
  const double* exact = expected(in, causal);
  state.counters["rel_err"] = relative_error(out_buf.data(), exact, compared);
  state.counters["frob_err"] = frobenius_error(out_buf.data(), exact, compared);
}

// ---- memory rows: heap beyond inputs and outputs, at L = 65536 unless a row set sweeps L ------------

inline constexpr Index kMemoryLen = 65536;
inline constexpr Index kMemoryDim = 64;

// One non-causal call of `attn` on H = 1, L = len, D = kMemoryDim, single thread, without a workspace:
// the call allocates what it needs, and that is what the row measures ("extra_MiB", next to "ws_MiB",
// what workspace_bytes() asks for, and "LxL_MiB", one float score matrix). rel_err is against exact
// softmax on the first kSampleRows rows (the double kernel over all 65536 queries would take minutes,
// and without a causal mask every query sees the same keys).
template <effattn::Attention A>
void memory_row(benchmark::State& state, const A& attn, Index len = kMemoryLen) {
  try {
    const auto n = static_cast<std::size_t>(len * kMemoryDim);
    const AlignedBuffer<float> qb = normal_buffer<float>(n, make_seed(21, len, kMemoryDim));
    const AlignedBuffer<float> kb = normal_buffer<float>(n, make_seed(22, len, kMemoryDim));
    const AlignedBuffer<float> vb = normal_buffer<float>(n, make_seed(23, len, kMemoryDim));
    AlignedBuffer<float> ob(n);
    ob.fill_zero();
    const effattn::ConstTensor4<float> q(qb.data(), 1, 1, len, kMemoryDim);
    const effattn::ConstTensor4<float> k(kb.data(), 1, 1, len, kMemoryDim);
    const effattn::ConstTensor4<float> v(vb.data(), 1, 1, len, kMemoryDim);
    const effattn::Tensor4<float> out(ob.data(), 1, 1, len, kMemoryDim);
    const effattn::Mask mask{};
    const effattn::Problem problem = effattn::Problem::of<float>(q, k, v);
    effattn::Options<float> options;
    options.executor = effattn::Executor::serial();

    double extra = 0;
    for (auto _ : state) {
      heap::reset_peak();
      const std::size_t base = heap::live_bytes();
      attn.forward(q, k, v, out, mask, options);
      extra = std::max(extra, static_cast<double>(heap::peak_bytes() - base));
      benchmark::DoNotOptimize(ob.data());
      benchmark::ClobberMemory();
    }
    flop_counters(state, attn.cost(problem, mask).flops, 1);
    state.counters["extra_MiB"] = extra / kMiB;
    state.counters["ws_MiB"] = static_cast<double>(attn.workspace_bytes(problem, 1)) / kMiB;
    state.counters["LxL_MiB"] = static_cast<double>(len) * static_cast<double>(len) * sizeof(float) / kMiB;

    const AlignedBuffer<double> ref =
        sample_reference(qb.data(), kb.data(), vb.data(), std::min(kSampleRows, len), len, kMemoryDim, false);
    state.counters["rel_err"] = relative_error(ob.data(), ref.data(), ref.size());
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

// ---- registration --------------------------------------------------------------------------------------

// Registers fn under `name` (real time, milliseconds) and describes the row for the summary table.
template <class Fn>
benchmark::internal::Benchmark* add(const std::string& name, RowInfo info, Fn&& fn) {
  describe_row(name, std::move(info));
  return benchmark::RegisterBenchmark(name.c_str(), std::forward<Fn>(fn))->UseRealTime()->Unit(benchmark::kMillisecond);
}

// kind/L:len/D:dim/causal:0|1/threads:n
std::string row_name(std::string_view kind, Index len, Index dim, bool causal, int threads);

// The row sets, one per source file.
void register_softmax_rows(bool quick);
void register_rfa_rows(bool quick);
void register_lara_rows(bool quick);
void register_block_sparse_rows(bool quick);

// The map of the rfa rows (Performer: positive features, orthogonal projections, a fixed seed) with
// `num_features` projections, for every row set that compares against it.
effattn::RfaConfig rfa_config(Index num_features);

// The summary block of the accuracy rows of lara_rows.cpp.
SummaryReporter::ErrorTable lara_accuracy_table();
// The summary block of the accuracy rows of block_sparse_rows.cpp.
SummaryReporter::ErrorTable mra_accuracy_table();

}  // namespace effattn_bench
