// Exact softmax attention (SoftmaxAttention<float>) measured against this machine's own limits:
//  * softmax/...  forward over L, D, causal and thread count: GFLOP/s and % of the measured FMA peak,
//                 plus rel_err against the double kernel and heap allocations per steady-state call;
//  * naive/...    the textbook baseline that materialises S = Q K^T with Eigen (single thread), to show
//                 what the tiled kernel buys; it stops at L = 4096 (its L x L matrix is 64 MiB there);
//  * decode/...   one query against a 64K-token KV cache: memory bound, so GB/s and % of STREAM triad;
//  * memory/...   one L = 65536 call: heap the kernel needs beyond its inputs and outputs.
// A probe of FMA peak and triad bandwidth runs first; its figures go to the benchmark context.
//
//   effattn_bench_softmax            full sweep (about 2 minutes on 2 cores with a kernel near 100
//                                    GFLOP/s per core; under 10 even at a fifth of that)
//   effattn_bench_softmax --quick    L in {1024, 4096}, D = 64, plus decode and memory
// Any Google Benchmark flag works as usual (--benchmark_filter=softmax/L:4096, --benchmark_out=x.json
// --benchmark_out_format=json, --benchmark_min_time=1, ...).

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <string_view>
#include <vector>

#include <benchmark/benchmark.h>

// GCC 12 reports -Wmaybe-uninitialized inside the AVX-512 transposes of Eigen 3.4's GEMM kernel (in
// the intrinsics headers) once the naive baseline inlines them: a known false positive. The warning
// state that counts is the one where the intrinsics are defined, so it is switched off for this
// include only, the first one that pulls them in.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <Eigen/Core>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#include <effattn/kinds/softmax.hpp>
#include <effattn/version.hpp>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

#include "heap_tracker.hpp"
#include "inputs.hpp"
#include "probes.hpp"
#include "summary_reporter.hpp"

namespace {

using effattn::Index;
using namespace effattn_bench;

constexpr Index kBatch = 1;
constexpr Index kHeads = 8;
// Above this length rel_err compares head 0 only: the double kernel would otherwise cost more than the
// float rows it checks. Heads are independent, so one head's error is a fair sample.
constexpr Index kAllHeadsErrorMaxLen = 4096;
// The naive baseline holds an L x L float matrix per head it works on.
constexpr Index kNaiveMaxLen = 4096;
constexpr double kMiB = 1024.0 * 1024.0;

// ---- machine limits, measured once in main() ---------------------------------------------------------

struct Machine {
  double peak_1t = 0;  // GFLOP/s of one core
  double peak_nt = 0;  // GFLOP/s of all threads together
  double triad_1t = 0;  // GB/s, streaming stores: the %bw reference
  double triad_nt = 0;
  double triad_plain_1t = 0;  // GB/s, plain stores (STREAM's usual build), for comparison only
  double triad_plain_nt = 0;
  int threads = 1;
};
Machine g_machine;

// Peak of `threads` cores: the per-core figure times the thread count, the ceiling a perfectly
// parallel kernel would reach (the measured all-thread figure is in the context, for comparison).
double peak_flops(int threads) { return g_machine.peak_1t * 1e9 * threads; }
double triad_bytes(int threads) { return (threads <= 1 ? g_machine.triad_1t : g_machine.triad_nt) * 1e9; }

effattn::Executor executor_for(int threads) {
  return threads <= 1 ? effattn::Executor::serial() : effattn::Executor::openmp(threads);
}

effattn::Mask make_mask(bool causal) {
  effattn::Mask mask;
  mask.causal = causal ? effattn::Causal::top_left : effattn::Causal::none;
  return mask;
}

// ---- counters ------------------------------------------------------------------------------------------

// Rate counters divide by the run's time (real time: every row uses UseRealTime()), so "%peak" is
// flops / (peak * threads) per second of the same clock that "FLOP/s" and the time column use.
void flop_counters(benchmark::State& state, double flops, int threads) {
  using benchmark::Counter;
  state.counters["FLOP/s"] = Counter(flops, Counter::kIsIterationInvariantRate, Counter::kIs1000);
  state.counters["%peak"] = Counter(flops / peak_flops(threads) * 100.0, Counter::kIsIterationInvariantRate);
}

void byte_counters(benchmark::State& state, double bytes, int threads) {
  using benchmark::Counter;
  state.counters["B/s"] = Counter(bytes, Counter::kIsIterationInvariantRate, Counter::kIs1000);
  state.counters["%bw"] = Counter(bytes / triad_bytes(threads) * 100.0, Counter::kIsIterationInvariantRate);
}

// max|o32 - o64| / max|o64| over the first n elements.
double relative_error(const float* o32, const double* o64, std::size_t n) {
  double diff = 0;
  double scale = 0;
  for (std::size_t i = 0; i < n; ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(o32[i]) - o64[i]));
    scale = std::max(scale, std::abs(o64[i]));
  }
  return scale > 0 ? diff / scale : diff;
}

// ---- inputs, shared by the rows of one shape -----------------------------------------------------------

// Inputs of one (L, D), kept while consecutive rows use them (rows are registered shape by shape), and
// the double kernel's outputs, computed on first use and reused by every row of that shape.
struct AttentionInputs {
  Index len = -1;
  Index dim = -1;
  Index ref_heads = 0;
  AlignedBuffer<float> q, k, v;     // [B,H,L,D]
  AlignedBuffer<double> qd, kd, vd;  // [1,ref_heads,L,D]: the same values, widened
  AlignedBuffer<double> ref[2];      // [1,ref_heads,L,D], by causal

  [[nodiscard]] std::size_t elements() const { return static_cast<std::size_t>(kBatch * kHeads * len * dim); }
  [[nodiscard]] std::size_t ref_elements() const { return static_cast<std::size_t>(ref_heads * len * dim); }
};

AttentionInputs& attention_inputs(Index len, Index dim) {
  static AttentionInputs in;
  if (in.len != len || in.dim != dim) {
    in = AttentionInputs{};  // release the previous shape first
    in.len = len;
    in.dim = dim;
    const std::size_t n = in.elements();
    in.q = normal_buffer<float>(n, make_seed(1, len, dim, kHeads));
    in.k = normal_buffer<float>(n, make_seed(2, len, dim, kHeads));
    in.v = normal_buffer<float>(n, make_seed(3, len, dim, kHeads));
    in.ref_heads = len <= kAllHeadsErrorMaxLen ? kHeads : 1;
  }
  return in;
}

const double* attention_reference(AttentionInputs& in, bool causal) {
  AlignedBuffer<double>& ref = in.ref[causal ? 1 : 0];
  if (ref.size() == 0) {
    const std::size_t n = in.ref_elements();
    if (in.qd.size() == 0) {
      in.qd = widen(in.q.data(), n);  // head h is the contiguous range [h L D, (h + 1) L D)
      in.kd = widen(in.k.data(), n);
      in.vd = widen(in.v.data(), n);
    }
    ref = AlignedBuffer<double>(n);
    const effattn::ConstTensor4<double> q(in.qd.data(), 1, in.ref_heads, in.len, in.dim);
    const effattn::ConstTensor4<double> k(in.kd.data(), 1, in.ref_heads, in.len, in.dim);
    const effattn::ConstTensor4<double> v(in.vd.data(), 1, in.ref_heads, in.len, in.dim);
    const effattn::Tensor4<double> out(ref.data(), 1, in.ref_heads, in.len, in.dim);
    effattn::Options<double> options;
    options.executor = effattn::Executor::openmp();
    effattn::SoftmaxAttention<double>{}.forward(q, k, v, out, make_mask(causal), options);
  }
  return ref.data();
}

// ---- the timed loop, shared by the kernel rows -------------------------------------------------------

// Runs forward() under the benchmark loop with a caller-owned workspace (a plain vector, as a user
// would pass it: any alignment must do) and records "allocs", heap allocations per steady-state call,
// which should be 0. Returns false (the row skipped with the error) when check() refuses the call.
bool timed_forward(benchmark::State& state, const effattn::SoftmaxAttention<float>& attn,
                   effattn::ConstTensor4<float> q, effattn::ConstTensor4<float> k, effattn::ConstTensor4<float> v,
                   effattn::Tensor4<float> out, const effattn::Mask& mask, int threads) {
  effattn::Options<float> options;
  options.executor = executor_for(threads);
  std::vector<std::byte> workspace(attn.workspace_bytes(effattn::Problem::of<float>(q, k, v), threads));
  options.workspace = workspace;
  if (const effattn::Status s = attn.check(q, k, v, out, mask, options); !s) {
    state.SkipWithError(s.message().c_str());
    return false;
  }
  const std::uint64_t allocs_before = heap::allocations();
  for (auto _ : state) {
    attn.forward(q, k, v, out, mask, options);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  const std::uint64_t allocs = heap::allocations() - allocs_before;
  state.counters["allocs"] =
      static_cast<double>(allocs) / static_cast<double>(std::max<benchmark::IterationCount>(state.iterations(), 1));
  return true;
}

// ---- softmax/... : the kernel --------------------------------------------------------------------------

void bm_softmax(benchmark::State& state, Index len, Index dim, bool causal, int threads) {
  try {
    AttentionInputs& in = attention_inputs(len, dim);
    AlignedBuffer<float> out_buf(in.elements());
    out_buf.fill_zero();
    const effattn::ConstTensor4<float> q(in.q.data(), kBatch, kHeads, len, dim);
    const effattn::ConstTensor4<float> k(in.k.data(), kBatch, kHeads, len, dim);
    const effattn::ConstTensor4<float> v(in.v.data(), kBatch, kHeads, len, dim);
    const effattn::Tensor4<float> out(out_buf.data(), kBatch, kHeads, len, dim);
    const effattn::SoftmaxAttention<float> attn;
    const effattn::Mask mask = make_mask(causal);
    const effattn::Problem problem = effattn::Problem::of<float>(q, k, v);

    if (!timed_forward(state, attn, q, k, v, out, mask, threads)) return;

    flop_counters(state, attn.cost(problem, mask).flops, threads);
    state.counters["rel_err"] = relative_error(out_buf.data(), attention_reference(in, causal), in.ref_elements());
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

// ---- naive/... : materialise S, softmax, multiply ------------------------------------------------------

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// What a first implementation does: per head, S = Q K^T * scale with Eigen's GEMM, a numerically
// stable softmax per row (subtract the row max before exp), O = P V. Causal rows take the softmax over
// their visible prefix and zero the rest; the GEMMs still run over the full L x L.
void naive_attention(const float* q, const float* k, const float* v, float* out, float* scores, Index len, Index dim,
                     bool causal) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(dim));
  Eigen::Map<RowMatrix> s(scores, len, len);  // [L, L]
  for (Index h = 0; h < kBatch * kHeads; ++h) {
    const Index offset = h * len * dim;
    const Eigen::Map<const RowMatrix> qh(q + offset, len, dim);  // [L, D]
    const Eigen::Map<const RowMatrix> kh(k + offset, len, dim);  // [L, D]
    const Eigen::Map<const RowMatrix> vh(v + offset, len, dim);  // [L, D]
    Eigen::Map<RowMatrix> oh(out + offset, len, dim);            // [L, D]
    s.noalias() = qh * kh.transpose() * scale;
    for (Index i = 0; i < len; ++i) {
      const Index visible = causal ? i + 1 : len;
      auto row = s.row(i).head(visible).array();
      const float max = row.maxCoeff();
      row = (row - max).exp();
      row *= 1.0f / row.sum();
      if (visible < len) s.row(i).tail(len - visible).setZero();
    }
    oh.noalias() = s * vh;
  }
}

void bm_naive(benchmark::State& state, Index len, Index dim, bool causal) {
  try {
    AttentionInputs& in = attention_inputs(len, dim);
    AlignedBuffer<float> out(in.elements());
    out.fill_zero();
    AlignedBuffer<float> scores(static_cast<std::size_t>(len * len));
    scores.fill_zero();
    for (auto _ : state) {
      naive_attention(in.q.data(), in.k.data(), in.v.data(), out.data(), scores.data(), len, dim, causal);
      benchmark::DoNotOptimize(out.data());
      benchmark::ClobberMemory();
    }
    // The kernel's FLOP count for the same problem, so both rows count the same useful work.
    const effattn::Problem problem{kBatch, kHeads, kHeads, len, len, dim, dim};
    flop_counters(state, effattn::SoftmaxAttention<float>{}.cost(problem, make_mask(causal)).flops, 1);
    state.counters["rel_err"] = relative_error(out.data(), attention_reference(in, causal), in.ref_elements());
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

// ---- decode/... : one query, a long KV cache -----------------------------------------------------------

constexpr Index kDecodeLen = 65536;
constexpr Index kDecodeDim = 128;
constexpr Index kDecodeHeads = 8;

struct DecodeInputs {
  AlignedBuffer<float> q, k, v;  // q [1,H,1,D]; k, v [1,Hkv,Lk,D]
  AlignedBuffer<double> ref;     // [1,H,1,D]
};

DecodeInputs& decode_inputs() {
  static DecodeInputs in;
  if (in.q.size() == 0) {
    const auto nq = static_cast<std::size_t>(kDecodeHeads * kDecodeDim);
    const auto nkv = static_cast<std::size_t>(kDecodeHeads * kDecodeLen * kDecodeDim);
    in.q = normal_buffer<float>(nq, make_seed(11, kDecodeLen, kDecodeDim));
    in.k = normal_buffer<float>(nkv, make_seed(12, kDecodeLen, kDecodeDim));
    in.v = normal_buffer<float>(nkv, make_seed(13, kDecodeLen, kDecodeDim));
    // The exact answer, once, then the 1 GiB of widened K and V is released.
    const AlignedBuffer<double> qd = widen(in.q.data(), nq);
    const AlignedBuffer<double> kd = widen(in.k.data(), nkv);
    const AlignedBuffer<double> vd = widen(in.v.data(), nkv);
    in.ref = AlignedBuffer<double>(nq);
    effattn::Options<double> options;
    options.executor = effattn::Executor::openmp();
    effattn::SoftmaxAttention<double>{}.forward(
        effattn::ConstTensor4<double>(qd.data(), 1, kDecodeHeads, 1, kDecodeDim),
        effattn::ConstTensor4<double>(kd.data(), 1, kDecodeHeads, kDecodeLen, kDecodeDim),
        effattn::ConstTensor4<double>(vd.data(), 1, kDecodeHeads, kDecodeLen, kDecodeDim),
        effattn::Tensor4<double>(in.ref.data(), 1, kDecodeHeads, 1, kDecodeDim), {}, options);
  }
  return in;
}

void bm_decode(benchmark::State& state, int threads, Index split_kv) {
  try {
    DecodeInputs& in = decode_inputs();
    AlignedBuffer<float> out_buf(in.q.size());
    out_buf.fill_zero();
    const effattn::ConstTensor4<float> q(in.q.data(), 1, kDecodeHeads, 1, kDecodeDim);
    const effattn::ConstTensor4<float> k(in.k.data(), 1, kDecodeHeads, kDecodeLen, kDecodeDim);
    const effattn::ConstTensor4<float> v(in.v.data(), 1, kDecodeHeads, kDecodeLen, kDecodeDim);
    const effattn::Tensor4<float> out(out_buf.data(), 1, kDecodeHeads, 1, kDecodeDim);
    effattn::SoftmaxConfig config;
    config.split_kv = split_kv;
    const effattn::SoftmaxAttention<float> attn(config);
    const effattn::Mask mask{};  // a new token sees the whole cache
    const effattn::Problem problem = effattn::Problem::of<float>(q, k, v);

    if (!timed_forward(state, attn, q, k, v, out, mask, threads)) return;
    const effattn::Cost cost = attn.cost(problem, mask);
    // K and V dominate: 2 x Hkv x Lk x D floats must come from memory once per call.
    const double bytes = cost.bytes > 0 ? cost.bytes : 2.0 * kDecodeHeads * kDecodeLen * kDecodeDim * sizeof(float);
    byte_counters(state, bytes, threads);
    flop_counters(state, cost.flops, threads);
    state.counters["rel_err"] = relative_error(out_buf.data(), in.ref.data(), in.ref.size());
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

// ---- memory/... : heap beyond inputs and outputs at L = 65536 ------------------------------------------

constexpr Index kMemoryLen = 65536;
constexpr Index kMemoryDim = 64;
// rel_err of this row compares the first rows of the output: the double kernel over all 65536 queries
// would take minutes, and without a causal mask every query sees the same keys.
constexpr Index kMemoryErrorRows = 256;

void bm_memory(benchmark::State& state) {
  try {
    const auto n = static_cast<std::size_t>(kMemoryLen * kMemoryDim);
    const AlignedBuffer<float> qb = normal_buffer<float>(n, make_seed(21, kMemoryLen, kMemoryDim));
    const AlignedBuffer<float> kb = normal_buffer<float>(n, make_seed(22, kMemoryLen, kMemoryDim));
    const AlignedBuffer<float> vb = normal_buffer<float>(n, make_seed(23, kMemoryLen, kMemoryDim));
    AlignedBuffer<float> ob(n);
    ob.fill_zero();
    const effattn::ConstTensor4<float> q(qb.data(), 1, 1, kMemoryLen, kMemoryDim);
    const effattn::ConstTensor4<float> k(kb.data(), 1, 1, kMemoryLen, kMemoryDim);
    const effattn::ConstTensor4<float> v(vb.data(), 1, 1, kMemoryLen, kMemoryDim);
    const effattn::Tensor4<float> out(ob.data(), 1, 1, kMemoryLen, kMemoryDim);
    const effattn::SoftmaxAttention<float> attn;
    const effattn::Mask mask{};
    const effattn::Problem problem = effattn::Problem::of<float>(q, k, v);
    // No workspace: the call allocates what it needs, and that is what this row measures.
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
    state.counters["LxL_MiB"] = static_cast<double>(kMemoryLen) * kMemoryLen * sizeof(float) / kMiB;

    const auto rows = static_cast<std::size_t>(kMemoryErrorRows * kMemoryDim);
    const AlignedBuffer<double> qd = widen(qb.data(), rows);
    const AlignedBuffer<double> kd = widen(kb.data(), n);
    const AlignedBuffer<double> vd = widen(vb.data(), n);
    AlignedBuffer<double> ref(rows);
    effattn::Options<double> ref_options;
    ref_options.executor = effattn::Executor::openmp();
    effattn::SoftmaxAttention<double>{}.forward(
        effattn::ConstTensor4<double>(qd.data(), 1, 1, kMemoryErrorRows, kMemoryDim),
        effattn::ConstTensor4<double>(kd.data(), 1, 1, kMemoryLen, kMemoryDim),
        effattn::ConstTensor4<double>(vd.data(), 1, 1, kMemoryLen, kMemoryDim),
        effattn::Tensor4<double>(ref.data(), 1, 1, kMemoryErrorRows, kMemoryDim), mask, ref_options);
    state.counters["rel_err"] = relative_error(ob.data(), ref.data(), rows);
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

// ---- registration --------------------------------------------------------------------------------------

benchmark::internal::Benchmark* add(const std::string& name, RowInfo info, auto&& fn) {
  describe_row(name, std::move(info));
  return benchmark::RegisterBenchmark(name.c_str(), std::forward<decltype(fn)>(fn))
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
}

std::string row_name(std::string_view kind, Index len, Index dim, bool causal, int threads) {
  return std::string(kind) + "/L:" + std::to_string(len) + "/D:" + std::to_string(dim) +
         "/causal:" + (causal ? "1" : "0") + "/threads:" + std::to_string(threads);
}

void register_benchmarks(bool quick) {
  const std::vector<Index> lens = quick ? std::vector<Index>{1024, 4096}
                                        : std::vector<Index>{256, 512, 1024, 2048, 4096, 8192, 16384};
  const std::vector<Index> dims = quick ? std::vector<Index>{64} : std::vector<Index>{64, 128};
  const int thread_counts[] = {1, 2};

  // Shape by shape, so each shape's inputs and double reference are made once.
  for (const Index dim : dims) {
    for (const Index len : lens) {
      for (const bool causal : {false, true}) {
        for (const int threads : thread_counts)
          add(row_name("softmax", len, dim, causal, threads), {"softmax", len, dim, causal, threads, ""},
              [=](benchmark::State& s) { bm_softmax(s, len, dim, causal, threads); });
        if (len <= kNaiveMaxLen)
          add(row_name("naive", len, dim, causal, 1), {"naive", len, dim, causal, 1, "Eigen S=QK^T"},
              [=](benchmark::State& s) { bm_naive(s, len, dim, causal); });
      }
    }
  }

  for (const Index split : {Index{0}, Index{8}}) {
    for (const int threads : thread_counts) {
      const std::string name = "decode/Lk:" + std::to_string(kDecodeLen) + "/D:" + std::to_string(kDecodeDim) +
                               "/split_kv:" + std::to_string(split) + "/threads:" + std::to_string(threads);
      const std::string note = "Lq=1 H=Hkv=8" + (split > 1 ? " split_kv=" + std::to_string(split) : std::string());
      add(name, {split > 1 ? "decode-split" : "decode", kDecodeLen, kDecodeDim, false, threads, note},
          [=](benchmark::State& s) { bm_decode(s, threads, split); });
    }
  }

  // One call is enough: the figure is a peak, and the call takes seconds.
  add(row_name("memory", kMemoryLen, kMemoryDim, false, 1), {"memory", kMemoryLen, kMemoryDim, false, 1, "H=1, no workspace"},
      [](benchmark::State& s) { bm_memory(s); })
      ->Iterations(1);
}

// ---- main ----------------------------------------------------------------------------------------------

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

bool flag_true(std::string_view arg, std::string_view flag) {
  if (arg == flag) return true;
  if (!starts_with(arg, flag) || arg.size() <= flag.size() || arg[flag.size()] != '=') return false;
  const std::string_view value = arg.substr(flag.size() + 1);
  return value == "true" || value == "1" || value == "yes" || value == "on";
}

std::string fixed(double value, int decimals = 1) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, value);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  bool listing = false;
  bool other_format = false;
  bool tabular = false;
#if defined(__unix__) || defined(__APPLE__)
  bool color = isatty(STDOUT_FILENO) != 0;
#else
  bool color = false;
#endif
  // Our default minimum time per row, placed before the user's arguments so that a
  // --benchmark_min_time given on the command line wins.
  static char default_min_time[] = "--benchmark_min_time=0.2";
  std::vector<char*> args{argv[0], default_min_time};
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--quick") {  // ours: taken out before Google Benchmark sees the arguments
      quick = true;
      continue;
    }
    if (flag_true(arg, "--benchmark_list_tests")) listing = true;
    if (starts_with(arg, "--benchmark_format=") && arg != "--benchmark_format=console") other_format = true;
    if (flag_true(arg, "--benchmark_counters_tabular")) tabular = true;
    if (starts_with(arg, "--benchmark_color=")) {
      const std::string_view value = arg.substr(std::strlen("--benchmark_color="));
      if (value == "false" || value == "no" || value == "0" || value == "off") color = false;
      else if (value == "true" || value == "yes" || value == "1" || value == "on") color = true;
    }
    args.push_back(argv[i]);
  }
  int count = static_cast<int>(args.size());
  args.push_back(nullptr);
  benchmark::Initialize(&count, args.data());
  if (benchmark::ReportUnrecognizedArguments(count, args.data())) return 1;

  // The naive baseline is single-threaded; the kernel never starts Eigen's own threads.
  Eigen::setNbThreads(1);

  if (!listing) {
    std::fprintf(stderr, "probing FMA peak and STREAM triad bandwidth...\n");
    g_machine.threads = max_threads();
    g_machine.peak_1t = fma_peak_gflops(1);
    g_machine.peak_nt = g_machine.threads > 1 ? fma_peak_gflops(g_machine.threads) : g_machine.peak_1t;
    g_machine.triad_1t = triad_gbps(1);
    g_machine.triad_nt = g_machine.threads > 1 ? triad_gbps(g_machine.threads) : g_machine.triad_1t;
    g_machine.triad_plain_1t = triad_gbps(1, false);
    g_machine.triad_plain_nt = g_machine.threads > 1 ? triad_gbps(g_machine.threads, false) : g_machine.triad_plain_1t;
  }
  const std::string nt = std::to_string(g_machine.threads) + "t";
  benchmark::AddCustomContext("effattn_version", EFFATTN_VERSION_STRING);
  benchmark::AddCustomContext("isa", isa_string());
  benchmark::AddCustomContext("eigen_simd", Eigen::SimdInstructionSetsInUse());
  benchmark::AddCustomContext("threads_max", std::to_string(g_machine.threads));
  benchmark::AddCustomContext("fma_peak_GFLOPs_1t", fixed(g_machine.peak_1t));
  benchmark::AddCustomContext("fma_peak_GFLOPs_" + nt, fixed(g_machine.peak_nt));
  benchmark::AddCustomContext("triad_GBs_1t", fixed(g_machine.triad_1t, 2));
  benchmark::AddCustomContext("triad_GBs_" + nt, fixed(g_machine.triad_nt, 2));
  benchmark::AddCustomContext("triad_stores", kStreamingStores ? "streaming" : "plain");
  benchmark::AddCustomContext("triad_plain_stores_GBs_1t", fixed(g_machine.triad_plain_1t, 2));
  benchmark::AddCustomContext("triad_plain_stores_GBs_" + nt, fixed(g_machine.triad_plain_nt, 2));
  benchmark::AddCustomContext("heap_tracking", heap::scope());
#if defined(NDEBUG)
  benchmark::AddCustomContext("effattn_asserts", "off");
#else
  benchmark::AddCustomContext("effattn_asserts", "ON (not a Release build: timings are not representative)");
#endif

  register_benchmarks(quick);

  std::string header = "FMA peak " + fixed(g_machine.peak_1t) + " GFLOP/s per core, " + fixed(g_machine.peak_nt) + " with " +
                       nt + "; triad " + fixed(g_machine.triad_1t, 2) + " GB/s 1t, " + fixed(g_machine.triad_nt, 2) +
                       " GB/s " + nt + "; %peak = GFLOP/s / (per-core peak x threads), %bw = GB/s / triad";
  // Other processes on the cores make every figure low, the multi-threaded ones most: say so where the
  // numbers are read.
  if (g_machine.threads > 1 && g_machine.peak_nt < 0.8 * g_machine.peak_1t * g_machine.threads)
    header += "\nWARNING: the " + nt + " FMA probe reached only " + fixed(g_machine.peak_nt / g_machine.peak_1t, 2) +
              "x the 1-thread figure: other processes are using the cores, figures are low";
  int options = 0;
  if (color) options |= benchmark::ConsoleReporter::OO_Color;
  if (tabular) options |= benchmark::ConsoleReporter::OO_Tabular;
  SummaryReporter reporter(static_cast<benchmark::ConsoleReporter::OutputOptions>(options), header);
  // Another --benchmark_format keeps Google Benchmark's own reporter (the table is for people).
  if (other_format) benchmark::RunSpecifiedBenchmarks();
  else benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
