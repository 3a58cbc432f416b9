// Exact softmax attention (SoftmaxAttention<float>) measured against this machine's own limits:
//  * softmax/...  forward over L, D, causal and thread count: GFLOP/s and % of the measured FMA peak,
//                 plus rel_err against the double kernel and heap allocations per steady-state call;
//  * naive/...    the textbook baseline that materialises S = Q K^T with Eigen (single thread), to show
//                 what the tiled kernel buys; it stops at L = 4096 (its L x L matrix is 64 MiB there);
//  * decode/...   one query against a 64K-token KV cache: memory bound, so GB/s and % of STREAM triad;
//  * memory/...   one L = 65536 call: heap the kernel needs beyond its inputs and outputs.
// --quick: L in {1024, 4096}, D = 64, plus decode and memory; the full sweep adds L from 256 to 16384
// and D = 128.

#include <cmath>
#include <exception>
#include <string>
#include <vector>

#include "common.hpp"

#include <effattn/kinds/softmax.hpp>

namespace effattn_bench {
namespace {

// The naive baseline holds an L x L float matrix per head it works on.
constexpr Index kNaiveMaxLen = 4096;

// ---- softmax/... : the kernel --------------------------------------------------------------------------

void bm_softmax(benchmark::State& state, Index len, Index dim, bool causal, int threads) {
  try {
    AttentionInputs& in = attention_inputs(len, dim);
    kernel_row(state, in, effattn::SoftmaxAttention<float>{}, causal, threads, attention_reference, in.ref_elements());
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

void bm_memory(benchmark::State& state) { memory_row(state, effattn::SoftmaxAttention<float>{}); }

}  // namespace

// ---- registration --------------------------------------------------------------------------------------

void register_softmax_rows(bool quick) {
  const std::vector<Index> lens = quick ? std::vector<Index>{1024, 4096}
                                        : std::vector<Index>{256, 512, 1024, 2048, 4096, 8192, 16384};
  const std::vector<Index> dims = quick ? std::vector<Index>{64} : std::vector<Index>{64, 128};
  const int thread_counts[] = {1, 2};

  // Shape by shape, so each shape's inputs and double reference are made once.
  for (const Index dim : dims) {
    for (const Index len : lens) {
      for (const bool causal : {false, true}) {
        for (const int threads : thread_counts)
          add(row_name("softmax", len, dim, causal, threads), {"softmax", len, dim, causal, threads, "", "softmax"},
              [=](benchmark::State& s) { bm_softmax(s, len, dim, causal, threads); });
        if (len <= kNaiveMaxLen)
          add(row_name("naive", len, dim, causal, 1), {"naive", len, dim, causal, 1, "Eigen S=QK^T", "naive"},
              [=](benchmark::State& s) { bm_naive(s, len, dim, causal); });
      }
    }
  }

  for (const Index split : {Index{0}, Index{8}}) {
    for (const int threads : thread_counts) {
      const std::string name = "decode/Lk:" + std::to_string(kDecodeLen) + "/D:" + std::to_string(kDecodeDim) +
                               "/split_kv:" + std::to_string(split) + "/threads:" + std::to_string(threads);
      const std::string note = "Lq=1 H=Hkv=8" + (split > 1 ? " split_kv=" + std::to_string(split) : std::string());
      const std::string kind = split > 1 ? "decode-split" : "decode";
      add(name, {kind, kDecodeLen, kDecodeDim, false, threads, note, kind},
          [=](benchmark::State& s) { bm_decode(s, threads, split); });
    }
  }

  // One call is enough: the figure is a peak, and the call takes seconds.
  add(row_name("memory", kMemoryLen, kMemoryDim, false, 1),
      {"memory", kMemoryLen, kMemoryDim, false, 1, "H=1, no workspace", "memory"},
      [](benchmark::State& s) { bm_memory(s); })
      ->Iterations(1);
}

}  // namespace effattn_bench
