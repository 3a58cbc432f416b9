// Random-feature attention (RfaAttention<float>: positive features, orthogonal projections, F = 256,
// a fixed seed) beside exact softmax, on the same inputs, to show what linear time buys and costs:
//  * rfa/...         forward over L (256 to 65536, past where softmax stops), causal and thread count:
//                    GFLOP/s from the kernel's own cost() and % of the measured FMA peak, heap
//                    allocations per steady-state call, and rel_err against EXACT softmax attention
//                    (double) on the first 256 query rows of head 0. That error is the approximation's,
//                    not rounding, and it is the price paid for the speed. With these inputs (q, k drawn
//                    N(0, 1), D = 64, so |x'|^2 = |x|^2 / sqrt(D) is about 8) it is large, of order 1 to
//                    10: the positive-feature estimate of exp(q'.k') has a relative variance of about
//                    exp(|q' + k'|^2) / m, which is enormous here and small only for short q and k (a
//                    trained model's, or inputs scaled down). The summary's "RFA vs softmax" block puts
//                    these rows next to the softmax rows of the same (L, D, causal, threads);
//  * rfa-decode/...  one token per call on a state prefilled with 4096 tokens: tokens/s and GFLOP/s;
//  * rfa-memory/...  one L = 65536 call without a workspace: heap beyond inputs and outputs, as the
//                    softmax memory row measures it.
// --quick: rfa at L in {1024, 4096, 16384}, plus decode and memory.

#include <exception>
#include <string>
#include <vector>

#include "common.hpp"

#include <effattn/kinds/rfa.hpp>
#include <effattn/kinds/softmax.hpp>

namespace effattn_bench {

effattn::RfaConfig rfa_config(Index num_features) {
  effattn::RfaConfig config;  // the defaults, except:
  config.feature = effattn::Feature::positive;
  config.num_features = num_features;
  config.orthogonal = true;
  config.seed = 42;
  return config;
}

namespace {

constexpr Index kRfaDim = 64;
constexpr Index kRfaFeatures = 256;

// One projection per KV head, drawn from (seed, head): the same matrices for every row with the same
// kv_heads, and head 0's matrix for any kv_heads.
effattn::RfaAttention<float> make_rfa(Index kv_heads, Index dim) {
  return effattn::RfaAttention<float>(rfa_config(kRfaFeatures), kv_heads, dim);
}

// ---- rfa/... : the kernel over L -----------------------------------------------------------------------

void bm_rfa(benchmark::State& state, Index len, Index dim, bool causal, int threads) {
  try {
    AttentionInputs& in = attention_inputs(len, dim);
    // Head 0's first rows are the first sample_elements() of the output.
    kernel_row(state, in, make_rfa(kHeads, dim), causal, threads, attention_sample_reference, in.sample_elements());
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

// ---- rfa-decode/... : one token per call on a prefilled state ------------------------------------------

constexpr Index kDecodePrefix = 4096;
constexpr Index kDecodeHeads = 8;  // H = Hkv

// FLOPs of one token: per head, the features of its query and its key (2 rows x 2 m D: the projection
// u = W x, m rows of D multiply-adds; the exp and the stabiliser are not counted), the state's update
// S += phi(k) v^T and its read phi(q)^T S (2 x 2 F Dv). m = F for positive features. The normaliser
// z (2 x 2 F) is left out, so the figure is a slight undercount. cost() is not used here: its causal
// count includes the intra-chunk pairs of a chunked prefill, which a single token does not have.
double decode_token_flops(Index features, Index projections, Index dim_qk, Index dim_v) {
  const auto m = static_cast<double>(projections), f = static_cast<double>(features);
  return static_cast<double>(kDecodeHeads) *
         (2.0 * m * static_cast<double>(dim_qk) * 2.0 + 2.0 * f * static_cast<double>(dim_v) * 2.0);
}

void bm_rfa_decode(benchmark::State& state) {
  try {
    constexpr Index D = kRfaDim;
    const effattn::RfaAttention<float> attn = make_rfa(kDecodeHeads, D);
    const auto n_prefix = static_cast<std::size_t>(kDecodeHeads * kDecodePrefix * D);
    const auto n_token = static_cast<std::size_t>(kDecodeHeads * D);
    const AlignedBuffer<float> qp = normal_buffer<float>(n_prefix, make_seed(31, kDecodePrefix, D));
    const AlignedBuffer<float> kp = normal_buffer<float>(n_prefix, make_seed(32, kDecodePrefix, D));
    const AlignedBuffer<float> vp = normal_buffer<float>(n_prefix, make_seed(33, kDecodePrefix, D));
    const AlignedBuffer<float> qt = normal_buffer<float>(n_token, make_seed(34, kDecodePrefix, D));
    const AlignedBuffer<float> kt = normal_buffer<float>(n_token, make_seed(35, kDecodePrefix, D));
    const AlignedBuffer<float> vt = normal_buffer<float>(n_token, make_seed(36, kDecodePrefix, D));
    AlignedBuffer<float> out_prefix(n_prefix);
    AlignedBuffer<float> out_token(n_token);
    out_token.fill_zero();
    const effattn::ConstTensor4<float> q(qt.data(), 1, kDecodeHeads, 1, D);
    const effattn::ConstTensor4<float> k(kt.data(), 1, kDecodeHeads, 1, D);
    const effattn::ConstTensor4<float> v(vt.data(), 1, kDecodeHeads, 1, D);
    const effattn::Tensor4<float> out(out_token.data(), 1, kDecodeHeads, 1, D);

    effattn::Options<float> options;
    options.executor = effattn::Executor::serial();
    std::vector<std::byte> workspace(attn.workspace_bytes(effattn::Problem::of<float>(q, k, v), 1));
    options.workspace = workspace;

    // The prefill, once, outside the timed loop (its own workspace is allocated by the call).
    effattn::LinearState<float> prefilled = attn.make_state(1, kDecodeHeads, D);
    effattn::Options<float> prefill_options;
    prefill_options.executor = effattn::Executor::serial();
    attn.extend(prefilled, effattn::ConstTensor4<float>(qp.data(), 1, kDecodeHeads, kDecodePrefix, D),
                effattn::ConstTensor4<float>(kp.data(), 1, kDecodeHeads, kDecodePrefix, D),
                effattn::ConstTensor4<float>(vp.data(), 1, kDecodeHeads, kDecodePrefix, D),
                effattn::Tensor4<float>(out_prefix.data(), 1, kDecodeHeads, kDecodePrefix, D), prefill_options);

    // rel_err: token 4097 on a copy of the prefilled state, against exact softmax of its query over all
    // 4097 keys (every head; cheap for one query).
    {
      effattn::LinearState<float> first = prefilled;
      attn.extend(first, q, k, v, out, options);
      constexpr Index keys = kDecodePrefix + 1;
      AlignedBuffer<double> kd(static_cast<std::size_t>(kDecodeHeads * keys * D));
      AlignedBuffer<double> vd(kd.size());
      for (Index h = 0; h < kDecodeHeads; ++h) {
        for (Index i = 0; i < keys * D; ++i) {
          const bool token = i >= kDecodePrefix * D;
          const Index src = token ? h * D + (i - kDecodePrefix * D) : (h * kDecodePrefix * D + i);
          kd.data()[h * keys * D + i] = static_cast<double>(token ? kt.data()[src] : kp.data()[src]);
          vd.data()[h * keys * D + i] = static_cast<double>(token ? vt.data()[src] : vp.data()[src]);
        }
      }
      const AlignedBuffer<double> qd = widen(qt.data(), n_token);
      AlignedBuffer<double> ref(n_token);
      effattn::SoftmaxAttention<double>{}.forward(effattn::ConstTensor4<double>(qd.data(), 1, kDecodeHeads, 1, D),
                                                  effattn::ConstTensor4<double>(kd.data(), 1, kDecodeHeads, keys, D),
                                                  effattn::ConstTensor4<double>(vd.data(), 1, kDecodeHeads, keys, D),
                                                  effattn::Tensor4<double>(ref.data(), 1, kDecodeHeads, 1, D));
      state.counters["rel_err"] = relative_error(out_token.data(), ref.data(), n_token);
    }

    // The timed loop keeps extending one state with the same token: a token's cost does not depend on
    // its position (the state is F x (Dv + 1) per head whatever it has absorbed), and copying the
    // state (half a MiB) each iteration would cost about as much as the token and allocate.
    effattn::LinearState<float> live = prefilled;
    timed_calls(state, [&] {
      attn.extend(live, q, k, v, out, options);
      benchmark::DoNotOptimize(out_token.data());
    });

    using benchmark::Counter;
    state.counters["tok/s"] = Counter(1.0, Counter::kIsIterationInvariantRate);
    const Index features = attn.feature_map().features();
    flop_counters(state, decode_token_flops(features, kRfaFeatures, D, D), 1);
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

// ---- rfa-memory/... : heap beyond inputs and outputs at L = 65536 --------------------------------------

void bm_rfa_memory(benchmark::State& state) { memory_row(state, make_rfa(1, kMemoryDim)); }

}  // namespace

// ---- registration --------------------------------------------------------------------------------------

void register_rfa_rows(bool quick) {
  const std::vector<Index> lens = quick ? std::vector<Index>{1024, 4096, 16384}
                                        : std::vector<Index>{256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536};
  const int thread_counts[] = {1, 2};
  // The summary's kind: the map's feature count, which the feature kind decides from num_features.
  const std::string features = std::to_string(make_rfa(1, kRfaDim).feature_map().features());
  const std::string kind = "rfa F=" + features;

  // Shape by shape, so each shape's inputs and sampled references are made once.
  for (const Index len : lens) {
    for (const bool causal : {false, true}) {
      for (const int threads : thread_counts)
        add(row_name("rfa", len, kRfaDim, causal, threads), {kind, len, kRfaDim, causal, threads, "", "rfa"},
            [=](benchmark::State& s) { bm_rfa(s, len, kRfaDim, causal, threads); });
    }
  }

  add(row_name("rfa-decode", kDecodePrefix, kRfaDim, true, 1),
      {"rfa-decode F=" + features, kDecodePrefix, kRfaDim, true, 1, "prefix 4096, 1 token/call, H=Hkv=8", "rfa-decode"},
      [](benchmark::State& s) { bm_rfa_decode(s); });

  // One call is enough, as for the softmax memory row.
  add(row_name("rfa-memory", kMemoryLen, kMemoryDim, false, 1),
      {"rfa-memory F=" + features, kMemoryLen, kMemoryDim, false, 1, "H=1, no workspace", "rfa-memory"},
      [](benchmark::State& s) { bm_rfa_memory(s); })
      ->Iterations(1);
}

}  // namespace effattn_bench
