// The block-sparse kinds beside exact softmax: MRA-2 (MraAttention<float>) and hypercube attention
// (HypercubeAttention<float>), on the same inputs as the softmax rows (B = 1, H = 8, D = 64):
//  * mra/bpr:r/...        MRA-2 (full mode, block 32) with r blocks per row (budget r x L/32 tiles per
//                         head) over L from 1024 to 32768: time, GFLOP/s from cost() (the budget's tiles
//                         at token resolution plus the coarse part), the workspace, and rel_err /
//                         frob_err against exact softmax (every head up to L = 4096, the first 256 rows
//                         of head 0 beyond);
//  * mra-s/bpr:8/...      MRA-2-s (sparse: the selected tiles only), where nearly all the work is the
//                         fine tiles, so its %peak is the tile list's efficiency;
//  * hypercube/B:b/...    hypercube attention with blocks of 16 (the official model: 16 x (1 + log2(L/16))
//                         keys per query, 144 at L = 4096) and at token level (B = 1, a gather of
//                         1 + log2 L keys per query), from L = 256 so the crossover with softmax shows;
//  * mra-memory/..., hypercube-memory/...  heap of one call without a workspace (H = 1);
//  * mra-accuracy/...     MRA-2's error against exact softmax over its budget and the attention's
//                         entropy: the note's experiment (AR(1) queries and keys, logits times a
//                         temperature), where the iid rows above only show flat attention.
// The error of hypercube attention against softmax is a diagnostic: it is a different model (trained
// with its own graph), not an approximation of softmax.
// --quick: mra with 8 blocks per row and hypercube (B = 16 and 1) at L in {1024, 4096, 16384}, the
// memory rows at L = 65536 and every accuracy row.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "common.hpp"

#include <effattn/kinds/hypercube.hpp>
#include <effattn/kinds/mra.hpp>
#include <effattn/kinds/softmax.hpp>

namespace effattn_bench {
namespace {

constexpr Index kDim = 64;

effattn::MraConfig mra_config(Index blocks_per_row, effattn::MraMode mode) {
  effattn::MraConfig config;  // the defaults (block 32, no priors), except:
  config.blocks_per_row = blocks_per_row;
  config.mode = mode;
  return config;
}

effattn::HypercubeConfig cube_config(Index block) {
  effattn::HypercubeConfig config;
  config.block = block;
  return config;
}

// Every head while the double reference of all heads is affordable, the first rows of head 0 beyond.
template <effattn::Attention A>
void row(benchmark::State& state, Index len, const A& attn, int threads) {
  try {
    AttentionInputs& in = attention_inputs(len, kDim);
    if (len <= kAllHeadsErrorMaxLen) kernel_row(state, in, attn, false, threads, attention_reference, in.ref_elements());
    else kernel_row(state, in, attn, false, threads, attention_sample_reference, in.sample_elements());
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

// ---- mra-accuracy/... ----------------------------------------------------------------------------------
//
// The note's experiment: per head, queries and keys are AR(1) sequences along the tokens (neighbours
// alike, correlation 0.9, as positions in a text or patches of an image are), values N(0, 1), and the
// logits scale * q.k are multiplied by a temperature: 0.25 gives flat attention (high entropy), 4 peaky
// attention. MRA-2 and MRA-2-s at r = 1 .. 32 blocks per row (32 = every block at L = 1024); the error
// is the relative Frobenius error against exact softmax (double), averaged over the 8 heads.

constexpr Index kAccuracyLen = 1024;
constexpr double kAr = 0.9;
constexpr double kTemperatures[] = {0.25, 1.0, 4.0};
constexpr Index kBudgets[] = {1, 2, 4, 8, 16, 32};

struct MraAccuracyInputs {
  double temperature = -1;
  AlignedBuffer<float> q, k, v;
  AlignedBuffer<double> exact;
  double entropy = 0;  // mean row entropy of the exact attention, nats
  double cube_err = 0; // hypercube B = 16 against the same exact output
};

double scale_of(double temperature) { return temperature / std::sqrt(static_cast<double>(kDim)); }

// Mean over heads of |out_h - exact_h|_F / |exact_h|_F.
double head_error(const float* out, const double* exact) {
  const auto per_head = static_cast<std::size_t>(kAccuracyLen * kDim);
  double sum = 0;
  for (Index h = 0; h < kHeads; ++h) {
    const std::size_t off = static_cast<std::size_t>(h) * per_head;
    sum += frobenius_error(out + off, exact + off, per_head);
  }
  return sum / static_cast<double>(kHeads);
}

MraAccuracyInputs& mra_accuracy_inputs(double temperature) {
  static MraAccuracyInputs in;
  if (in.temperature == temperature) return in;
  in = MraAccuracyInputs{};
  in.temperature = temperature;
  constexpr Index L = kAccuracyLen, D = kDim;
  const auto n = static_cast<std::size_t>(kHeads * L * D);
  // The same tokens at every temperature: only the scale changes.
  const AlignedBuffer<float> eq = normal_buffer<float>(n, make_seed(51, L, D));
  const AlignedBuffer<float> ek = normal_buffer<float>(n, make_seed(52, L, D));
  in.v = normal_buffer<float>(n, make_seed(53, L, D));
  in.q = AlignedBuffer<float>(n);
  in.k = AlignedBuffer<float>(n);
  const float innovation = static_cast<float>(std::sqrt(1 - kAr * kAr));
  float* q = in.q.data();
  float* k = in.k.data();
  const float* nq = eq.data();
  const float* nk = ek.data();
  for (Index h = 0; h < kHeads; ++h)
    for (Index t = 0; t < L; ++t)
      for (Index d = 0; d < D; ++d) {
        const auto i = static_cast<std::size_t>((h * L + t) * D + d);
        q[i] = t == 0 ? nq[i] : static_cast<float>(kAr) * q[i - D] + innovation * nq[i];
        k[i] = t == 0 ? nk[i] : static_cast<float>(kAr) * k[i - D] + innovation * nk[i];
      }
  const AlignedBuffer<double> qd = widen(in.q.data(), n), kd = widen(in.k.data(), n), vd = widen(in.v.data(), n);
  in.exact = AlignedBuffer<double>(n);
  effattn::SoftmaxConfig exact;
  exact.scale = scale_of(temperature);
  effattn::Options<double> options;
  options.executor = effattn::Executor::openmp();
  AlignedBuffer<double> lse(static_cast<std::size_t>(kHeads * L));
  options.lse = effattn::Tensor3<double>(lse.data(), 1, kHeads, L);
  effattn::SoftmaxAttention<double>(exact).forward(effattn::ConstTensor4<double>(qd.data(), 1, kHeads, L, D),
                                                   effattn::ConstTensor4<double>(kd.data(), 1, kHeads, L, D),
                                                   effattn::ConstTensor4<double>(vd.data(), 1, kHeads, L, D),
                                                   effattn::Tensor4<double>(in.exact.data(), 1, kHeads, L, D), {}, options);
  // Entropy of row i: lse - sum_j p_j s_j.
  double entropy = 0;
  for (Index h = 0; h < kHeads; ++h)
    for (Index i = 0; i < L; ++i) {
      const double* qi = qd.data() + (h * L + i) * D;
      const double row_lse = lse.data()[h * L + i];
      double mean_logit = 0;
      for (Index j = 0; j < L; ++j) {
        const double* kj = kd.data() + (h * L + j) * D;
        double s = 0;
        for (Index d = 0; d < D; ++d) s += qi[d] * kj[d];
        s *= scale_of(temperature);
        mean_logit += std::exp(s - row_lse) * s;
      }
      entropy += row_lse - mean_logit;
    }
  in.entropy = entropy / static_cast<double>(kHeads * L);

  AlignedBuffer<float> out(n);
  effattn::HypercubeConfig cube = cube_config(16);
  cube.scale = scale_of(temperature);
  effattn::Options<float> fo;
  fo.executor = effattn::Executor::openmp();
  effattn::HypercubeAttention<float>(cube).forward(effattn::ConstTensor4<float>(in.q.data(), 1, kHeads, L, D),
                                                   effattn::ConstTensor4<float>(in.k.data(), 1, kHeads, L, D),
                                                   effattn::ConstTensor4<float>(in.v.data(), 1, kHeads, L, D),
                                                   effattn::Tensor4<float>(out.data(), 1, kHeads, L, D), {}, fo);
  in.cube_err = head_error(out.data(), in.exact.data());
  return in;
}

void bm_mra_accuracy(benchmark::State& state, double temperature, Index bpr) {
  try {
    MraAccuracyInputs& in = mra_accuracy_inputs(temperature);
    constexpr Index L = kAccuracyLen, D = kDim;
    const effattn::ConstTensor4<float> q(in.q.data(), 1, kHeads, L, D);
    const effattn::ConstTensor4<float> k(in.k.data(), 1, kHeads, L, D);
    const effattn::ConstTensor4<float> v(in.v.data(), 1, kHeads, L, D);
    AlignedBuffer<float> out_buf(static_cast<std::size_t>(kHeads * L * D));
    const effattn::Tensor4<float> out(out_buf.data(), 1, kHeads, L, D);
    effattn::Options<float> options;
    options.executor = effattn::Executor::openmp();
    double err[2] = {};
    for (auto _ : state) {
      for (const auto mode : {effattn::MraMode::full, effattn::MraMode::sparse}) {
        effattn::MraConfig config = mra_config(bpr, mode);
        config.scale = scale_of(temperature);
        effattn::MraAttention<float>(config).forward(q, k, v, out, {}, options);
        err[mode == effattn::MraMode::full ? 0 : 1] = head_error(out_buf.data(), in.exact.data());
      }
    }
    state.counters["bpr"] = static_cast<double>(bpr);
    state.counters["err_full"] = err[0];
    state.counters["err_sparse"] = err[1];
    state.counters["entropy"] = in.entropy;
    state.counters["cube_err"] = in.cube_err;
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

std::string temperature_note(double t) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "AR(1) q, k (rho 0.9), L=%d, temperature %g", static_cast<int>(kAccuracyLen), t);
  return buf;
}

}  // namespace

SummaryReporter::ErrorTable mra_accuracy_table() {
  SummaryReporter::ErrorTable t;
  t.title = "MRA-2 accuracy over the budget: relative Frobenius error against exact softmax (double), mean over 8 heads, "
            "D=64, block 32; bpr = blocks per row (32 = all at L=1024); full = MRA-2, sparse = MRA-2-s";
  t.family = "mra-accuracy";
  t.key = "bpr";
  t.columns = {{"err_full", "full"}, {"err_sparse", "sparse"}};
  t.stats = {{"entropy", "mean entropy (nats; ln L = 6.93)"}, {"cube_err", "hypercube B=16 error (a different model)"}};
  t.below = {{"err_full", "err_sparse"}};
  return t;
}

// ---- registration --------------------------------------------------------------------------------------

void register_block_sparse_rows(bool quick) {
  using effattn::MraMode;
  const std::vector<Index> lens = quick ? std::vector<Index>{1024, 4096, 16384}
                                        : std::vector<Index>{1024, 2048, 4096, 8192, 16384, 32768};
  const std::vector<Index> cube_lens =
      quick ? lens : std::vector<Index>{256, 512, 1024, 2048, 4096, 8192, 16384, 32768};
  const std::vector<Index> budgets = quick ? std::vector<Index>{8} : std::vector<Index>{1, 4, 8, 16};
  const int thread_counts[] = {1, 2};

  // Shape by shape (L ascending), so each shape's inputs and references are made once.
  for (const Index len : cube_lens) {
    const bool mra_len = std::find(lens.begin(), lens.end(), len) != lens.end();
    for (const int threads : thread_counts) {
      if (mra_len) {
        for (const Index r : budgets)
          add(row_name("mra/bpr:" + std::to_string(r), len, kDim, false, threads),
              {"mra bpr=" + std::to_string(r), len, kDim, false, threads, "", "mra-bpr" + std::to_string(r)},
              [=](benchmark::State& s) { row(s, len, effattn::MraAttention<float>(mra_config(r, MraMode::full)), threads); });
        if (!quick)
          add(row_name("mra-s/bpr:8", len, kDim, false, threads), {"mra-s bpr=8", len, kDim, false, threads, "", "mra-s-bpr8"},
              [=](benchmark::State& s) { row(s, len, effattn::MraAttention<float>(mra_config(8, MraMode::sparse)), threads); });
      }
      for (const Index b : {Index{16}, Index{1}})
        add(row_name("hypercube/B:" + std::to_string(b), len, kDim, false, threads),
            {"hypercube B=" + std::to_string(b), len, kDim, false, threads, "", "hypercube-b" + std::to_string(b)},
            [=](benchmark::State& s) { row(s, len, effattn::HypercubeAttention<float>(cube_config(b)), threads); });
    }
  }

  // One call each is enough, as for the other memory rows.
  const std::vector<Index> memory_lens = quick ? std::vector<Index>{kMemoryLen} : std::vector<Index>{4096, 16384, kMemoryLen};
  for (const Index len : memory_lens)
    add(row_name("mra-memory/bpr:8", len, kMemoryDim, false, 1),
        {"mra-memory bpr=8", len, kMemoryDim, false, 1, "H=1, no workspace", "mra-memory"},
        [=](benchmark::State& s) { memory_row(s, effattn::MraAttention<float>(mra_config(8, MraMode::full)), len); })
        ->Iterations(1);
  add(row_name("hypercube-memory/B:16", kMemoryLen, kMemoryDim, false, 1),
      {"hypercube-memory B=16", kMemoryLen, kMemoryDim, false, 1, "H=1, no workspace", "hypercube-memory"},
      [](benchmark::State& s) { memory_row(s, effattn::HypercubeAttention<float>(cube_config(16))); })
      ->Iterations(1);

  for (const double t : kTemperatures)
    for (const Index r : kBudgets) {
      char name[96];
      std::snprintf(name, sizeof name, "mra-accuracy/L:%d/D:%d/temp:%g/bpr:%d", static_cast<int>(kAccuracyLen),
                    static_cast<int>(kDim), t, static_cast<int>(r));
      add(name, {"mra-accuracy", kAccuracyLen, kDim, false, g_machine.threads, temperature_note(t), "mra-accuracy"},
          [=](benchmark::State& s) { bm_mra_accuracy(s, t, r); })
          ->Iterations(1);
    }
}

}  // namespace effattn_bench
