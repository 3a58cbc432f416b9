// Randomized attention (RandomizedAttention<float>, RA) and linear randomized attention
// (LaraAttention<float>, LARA) beside exact softmax and RFA:
//  * lara/C:c/...       forward over L (256 to 65536) at D = 64, non-causal only (LARA has no causal
//                       form), for C = 49 (the default) and 64 landmarks from 1-D segment means, w = mu
//                       (deterministic sampling, the eval mode) and mis_opt weights: time, GFLOP/s from
//                       cost(), the workspace the call is given (ws_MiB), allocations per call, and rel_err
//                       against exact softmax on the first 256 query rows of head 0. On these N(0, 1)
//                       inputs that error is large, for the reason rfa_rows.cpp gives (long q' and k');
//                       the accuracy rows measure the approximation on inputs with structure. L = 256
//                       and 512 are there to place the crossover with softmax if it comes before 1024;
//  * lara-memory/C:c/... one call per L without a workspace (H = 1): heap beyond inputs and outputs, as
//                       the softmax and RFA memory rows measure it at L = 65536;
//  * ra/...             RA with one sample per query (paper noise, key drawn from the exact attention
//                       row) at L up to 4096: quadratic, about S + 2 softmax passes (the log-partition
//                       pass of the key draw, the draw's scan over the row, f of each sample);
//  * accuracy/...       error against exact softmax (double) of RFA, LARA and RA at equal sample count m
//                       on structured inputs (the choice of inputs is explained at accuracy/ below).
// The summary adds "LARA vs softmax", "LARA vs RFA" and "RA vs softmax" blocks and the accuracy table.
// --quick: lara C = 49 at L in {1024, 4096, 16384}, ra at L = 1024, lara-memory at L = 65536, and every
// accuracy row (seconds in all).

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <numbers>
#include <string>
#include <vector>

#include "common.hpp"

#include <effattn/kinds/lara.hpp>
#include <effattn/kinds/rfa.hpp>
#include <effattn/kinds/softmax.hpp>

namespace effattn_bench {
namespace {

constexpr Index kLaraDim = 64;
constexpr std::uint64_t kRaSeed = 7;

effattn::LaraConfig lara_config(Index landmarks) {
  effattn::LaraConfig config;  // the defaults (deterministic, mis_opt, lambda = 1), except:
  config.num_landmarks = landmarks;
  return config;
}

effattn::RaConfig ra_config(Index samples) {
  effattn::RaConfig config;  // the defaults (paper noise, sampled key), except:
  config.samples = samples;
  config.seed = kRaSeed;
  return config;
}

std::string landmarks_tag(Index landmarks) { return "C:" + std::to_string(landmarks); }

// ---- lara/..., ra/... : the kernels over L -------------------------------------------------------------

void bm_lara(benchmark::State& state, Index len, Index landmarks, int threads) {
  try {
    AttentionInputs& in = attention_inputs(len, kLaraDim);
    kernel_row(state, in, effattn::LaraAttention<float>(lara_config(landmarks)), false, threads,
               attention_sample_reference, in.sample_elements());
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

void bm_ra(benchmark::State& state, Index len, int threads) {
  try {
    AttentionInputs& in = attention_inputs(len, kLaraDim);
    kernel_row(state, in, effattn::RandomizedAttention<float>(ra_config(1)), false, threads, attention_sample_reference,
               in.sample_elements());
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

void bm_lara_memory(benchmark::State& state, Index len, Index landmarks) {
  memory_row(state, effattn::LaraAttention<float>(lara_config(landmarks)), len);
}

// ---- accuracy/... : error against exact softmax at equal sample count ----------------------------------
//
// The error of all three estimators depends on the inputs more than on anything else. Each one
// replaces exp(q'.k') by samples w, and its variance grows with |q'|^2 and |k'|^2: on i.i.d. N(0, 1) q
// and k at D = 64 (|q'|^2 about 8) it is of the order of the output itself for every method, and the
// landmarks of i.i.d. tokens are means of noise, near 0. The inputs here are closer to what a vision
// transformer's attention sees: tokens on a 14 x 14 grid (a 224-pixel image in 16-pixel patches,
// L = 196, the paper's DeiT setting) or a sequence of 1024, whose features are a smooth field (kModes
// low-frequency cosine modes, each along a random direction of feature space: neighbouring patches
// look alike) plus per-token detail of kDetail times the field's size, with q, k and v linear maps of
// those same features (a random D x D matrix each, per head). q and k are then scaled so that the
// logits q.k/sqrt(D) of each head have a given standard deviation over all (query, key) pairs: 1.5,
// attention that clearly prefers some tokens (its effective number of keys, exp of the row's entropy,
// is about half of L), and 0.5, shorter q and k with flatter attention (about 90% of L), where
// sampling estimators do best. v is scaled to unit RMS, so the error is the mean squared error (MSE)
// over all outputs of the 8 heads in units of v's variance, the measure of the paper's figure; the
// RMS of the exact output is printed beside it (relative Frobenius error = sqrt(MSE) / RMS exact).
//
// At each m: RFA with m orthogonal positive features (the rfa rows' map), LARA with C = m landmarks
// (a 2-D grid pools to sqrt(m) x sqrt(m) cells, every m being a perfect square; a sequence takes m
// segment means), and RA with one sample per query (independent of m) and with S = m samples.

constexpr Index kAccuracyDim = 64;
constexpr int kModes = 8;
constexpr double kDetail = 0.2;
constexpr Index kSampleCounts[] = {4, 16, 25, 36, 49, 64, 100, 144, 196};
// RA with S = m costs m quadratic passes: at L = 1024 the nine counts would add a minute or more.
constexpr Index kRaSameCountMaxLen = 256;

struct AccuracySet {
  Index rows = 1, cols = 0;  // rows = 1: a sequence of cols tokens, pooled to segment means
  double logit_std = 1;
  [[nodiscard]] Index len() const { return rows * cols; }
  [[nodiscard]] bool grid() const { return rows > 1; }
};

constexpr AccuracySet kAccuracySets[] = {{14, 14, 1.5}, {14, 14, 0.5}, {1, 1024, 1.5}, {1, 1024, 0.5}};

std::string fixed1(double x) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%.1f", x);
  return buf;
}

std::string set_note(const AccuracySet& s) {
  return (s.grid() ? "grid " + std::to_string(s.rows) + "x" + std::to_string(s.cols) + " (2-D pooling)"
                   : "sequence (segment means)") +
         ", L=" + std::to_string(s.len()) + ", logit std " + fixed1(s.logit_std);
}

// One set's inputs [1, H, L, D], its exact output and the m-independent figures, kept while its rows run
// (rows are registered set by set).
struct AccuracyInputs {
  Index rows = -1, cols = -1;
  double logit_std = -1;
  AlignedBuffer<float> q, k, v;
  AlignedBuffer<double> exact;
  double eff_keys = 0;  // mean over queries of exp(entropy of the attention row)
  double q_norm2 = 0;   // mean |q'|^2 = |q|^2 / sqrt(D), the size that sets the estimators' variance
  double exact_rms = 0;
  double mse_ra1 = 0;      // RA with one sample per query
  double mse_ra_eval = 0;  // RA's official eval mode with the expected key: w = q' + sum_m pi_m k'_m
};

double mse(const float* out, const double* exact, std::size_t n) {
  double sum = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(out[i]) - exact[i];
    sum += d * d;
  }
  return sum / static_cast<double>(n);
}

using Matrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using FloatMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

Matrix normal_matrix(Index rows, Index cols, std::uint64_t seed) {
  const AlignedBuffer<double> b = normal_buffer<double>(static_cast<std::size_t>(rows * cols), seed);
  return Eigen::Map<const Matrix>(b.data(), rows, cols);
}

// Uniform in [0, 1) from the bench's counter-based stream.
double uniform(std::uint64_t seed, std::uint64_t n) {
  return static_cast<double>(splitmix64_at(seed, n) >> 11) * 0x1.0p-53;
}

// Token features [L, D] of one head: the smooth field plus detail.
Matrix token_features(const AccuracySet& set, std::uint64_t tag, Index h) {
  constexpr Index D = kAccuracyDim;
  Matrix x = kDetail * normal_matrix(set.len(), D, make_seed(41, tag, h));
  const std::uint64_t mode_seed = make_seed(42, tag, h);
  for (int j = 0; j < kModes; ++j) {
    // Up to 2 cycles per side of the grid (patches of one object share features), 1 to 16 over the
    // sequence (64 tokens or more per cycle); never constant.
    const auto u = [&](int i) { return uniform(mode_seed, static_cast<std::uint64_t>(4 * j + i)); };
    double fy = 0, fx = 0;
    if (set.grid()) {
      fy = std::floor(3 * u(0));
      fx = std::floor(3 * u(1));
      if (fy == 0 && fx == 0) fx = 1;
    } else {
      fx = 1 + std::floor(16 * u(1));
    }
    const double phase = 2 * std::numbers::pi * u(2);
    const Matrix dir = normal_matrix(1, D, make_seed(43, tag, h, static_cast<std::uint64_t>(j)));
    for (Index r = 0; r < set.rows; ++r)
      for (Index c = 0; c < set.cols; ++c) {
        const double phi =
            std::sqrt(2.0 / kModes) * std::cos(2 * std::numbers::pi * (fy * r / set.rows + fx * c / set.cols) + phase);
        x.row(r * set.cols + c) += phi * dir;
      }
  }
  return x;
}

AccuracyInputs& accuracy_inputs(const AccuracySet& set) {
  static AccuracyInputs in;
  if (in.rows == set.rows && in.cols == set.cols && in.logit_std == set.logit_std) return in;
  in = AccuracyInputs{};  // release the previous set first
  in.rows = set.rows;
  in.cols = set.cols;
  in.logit_std = set.logit_std;
  constexpr Index D = kAccuracyDim;
  const Index L = set.len();
  const auto n = static_cast<std::size_t>(kHeads * L * D);
  const double scale = 1 / std::sqrt(static_cast<double>(D));
  in.q = AlignedBuffer<float>(n);
  in.k = AlignedBuffer<float>(n);
  in.v = AlignedBuffer<float>(n);
  // The features do not depend on the logit scale: both scales of a layout see the same tokens.
  const auto tag = static_cast<std::uint64_t>(set.rows * 100000 + set.cols);
  double eff = 0, q2 = 0;
  for (Index h = 0; h < kHeads; ++h) {
    const Matrix x = token_features(set, tag, h);
    // q, k, v = x W with W ~ N(0, 1/D): one matrix each, per head.
    const auto project = [&](std::uint64_t which) -> Matrix {
      return x * normal_matrix(D, D, make_seed(44, tag, static_cast<std::uint64_t>(h), which)) * scale;
    };
    Matrix q = project(0), k = project(1), v = project(2);
    const Matrix logits = q * k.transpose() * scale;
    const double mean = logits.mean();
    const double spread = std::sqrt((logits.array() - mean).square().mean());
    q *= std::sqrt(set.logit_std / spread);
    k *= std::sqrt(set.logit_std / spread);
    v /= std::sqrt(v.squaredNorm() / static_cast<double>(L * D));
    const auto off = static_cast<std::ptrdiff_t>(h * L * D);
    Eigen::Map<FloatMatrix>(in.q.data() + off, L, D) = q.cast<float>();
    Eigen::Map<FloatMatrix>(in.k.data() + off, L, D) = k.cast<float>();
    Eigen::Map<FloatMatrix>(in.v.data() + off, L, D) = v.cast<float>();

    // How peaked the attention is (exp of each row's entropy) and how long q' is.
    const Matrix scaled = logits * (set.logit_std / spread);
    for (Index i = 0; i < L; ++i) {
      const auto l = scaled.row(i).array() - scaled.row(i).maxCoeff();
      const double z = l.exp().sum();
      eff += std::exp(std::log(z) - (l.exp() * l).sum() / z);
    }
    q2 += q.squaredNorm() * scale;
  }
  in.eff_keys = eff / static_cast<double>(kHeads * L);
  in.q_norm2 = q2 / static_cast<double>(kHeads * L);

  // The exact output, on the float values the estimators see.
  const AlignedBuffer<double> qd = widen(in.q.data(), n), kd = widen(in.k.data(), n), vd = widen(in.v.data(), n);
  in.exact = AlignedBuffer<double>(n);
  effattn::Options<double> options;
  options.executor = effattn::Executor::openmp();
  effattn::SoftmaxAttention<double>{}.forward(effattn::ConstTensor4<double>(qd.data(), 1, kHeads, L, D),
                                              effattn::ConstTensor4<double>(kd.data(), 1, kHeads, L, D),
                                              effattn::ConstTensor4<double>(vd.data(), 1, kHeads, L, D),
                                              effattn::Tensor4<double>(in.exact.data(), 1, kHeads, L, D), {}, options);
  in.exact_rms = std::sqrt(Eigen::Map<const Eigen::ArrayXd>(in.exact.data(), static_cast<Index>(n)).square().mean());

  AlignedBuffer<float> out(n);
  effattn::Options<float> fo;
  fo.executor = effattn::Executor::openmp();
  effattn::RandomizedAttention<float>(ra_config(1))
      .forward(effattn::ConstTensor4<float>(in.q.data(), 1, kHeads, L, D),
               effattn::ConstTensor4<float>(in.k.data(), 1, kHeads, L, D),
               effattn::ConstTensor4<float>(in.v.data(), 1, kHeads, L, D),
               effattn::Tensor4<float>(out.data(), 1, kHeads, L, D), {}, fo);
  in.mse_ra1 = mse(out.data(), in.exact.data(), n);
  effattn::RaConfig eval = ra_config(1);
  eval.mean = effattn::RaMean::expected_key;
  eval.noise = effattn::Noise::none;
  effattn::RandomizedAttention<float>(eval).forward(effattn::ConstTensor4<float>(in.q.data(), 1, kHeads, L, D),
                                                    effattn::ConstTensor4<float>(in.k.data(), 1, kHeads, L, D),
                                                    effattn::ConstTensor4<float>(in.v.data(), 1, kHeads, L, D),
                                                    effattn::Tensor4<float>(out.data(), 1, kHeads, L, D), {}, fo);
  in.mse_ra_eval = mse(out.data(), in.exact.data(), n);
  return in;
}

void bm_accuracy(benchmark::State& state, AccuracySet set, Index m) {
  try {
    AccuracyInputs& in = accuracy_inputs(set);
    constexpr Index D = kAccuracyDim;
    const Index L = set.len();
    const auto n = static_cast<std::size_t>(kHeads * L * D);
    const effattn::ConstTensor4<float> q(in.q.data(), 1, kHeads, L, D);
    const effattn::ConstTensor4<float> k(in.k.data(), 1, kHeads, L, D);
    const effattn::ConstTensor4<float> v(in.v.data(), 1, kHeads, L, D);
    AlignedBuffer<float> out_buf(n);
    const effattn::Tensor4<float> out(out_buf.data(), 1, kHeads, L, D);
    effattn::Options<float> options;
    options.executor = effattn::Executor::openmp();

    effattn::LaraConfig lara = lara_config(m);
    if (set.grid()) lara.grid = {set.rows, set.cols};
    // LARA is consistent in the samples per proposal, not in the number of proposals: 4 landmarks
    // with about m/4 stochastic samples each (paper noise) show that side.
    effattn::LaraConfig sampled = lara_config(4);
    if (set.grid()) sampled.grid = {set.rows, set.cols};
    sampled.sampling = effattn::Sampling::stochastic;
    sampled.samples_per_proposal = std::max<Index>(1, m / 4);
    const effattn::RfaAttention<float> rfa(rfa_config(m), kHeads, D);
    double mse_rfa = 0, mse_lara = 0, mse_laras = 0, mse_ram = -1;
    for (auto _ : state) {
      rfa.forward(q, k, v, out, {}, options);
      mse_rfa = mse(out_buf.data(), in.exact.data(), n);
      effattn::LaraAttention<float>(lara).forward(q, k, v, out, {}, options);
      mse_lara = mse(out_buf.data(), in.exact.data(), n);
      effattn::LaraAttention<float>(sampled).forward(q, k, v, out, {}, options);
      mse_laras = mse(out_buf.data(), in.exact.data(), n);
      if (L <= kRaSameCountMaxLen) {
        effattn::RandomizedAttention<float>(ra_config(m)).forward(q, k, v, out, {}, options);
        mse_ram = mse(out_buf.data(), in.exact.data(), n);
      }
    }
    state.counters["m"] = static_cast<double>(m);
    state.counters["mse_rfa"] = mse_rfa;
    state.counters["mse_lara"] = mse_lara;
    state.counters["mse_lara_s"] = mse_laras;
    state.counters["mse_ra1"] = in.mse_ra1;
    state.counters["mse_ra_eval"] = in.mse_ra_eval;
    if (mse_ram >= 0) state.counters["mse_ram"] = mse_ram;
    state.counters["eff_keys"] = in.eff_keys;
    state.counters["q_norm2"] = in.q_norm2;
    state.counters["exact_rms"] = in.exact_rms;
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

}  // namespace

SummaryReporter::ErrorTable lara_accuracy_table() {
  SummaryReporter::ErrorTable t;
  t.title =
      "Accuracy at equal sample count m: MSE against exact softmax (double), v of unit RMS, 8 heads, D=64; rfa: m "
      "orthogonal positive features; lara: C=m landmarks, w=mu, mis_opt; lara C=4: stochastic, paper noise, "
      "m/4 samples per landmark; ra: S samples per query (paper noise); ra eval: expected key, no noise";
  t.family = "accuracy";
  t.key = "m";
  t.columns = {{"mse_rfa", "rfa"},       {"mse_lara", "lara"},       {"mse_lara_s", "lara C=4"},
               {"mse_ra1", "ra S=1"},    {"mse_ram", "ra S=m"},      {"mse_ra_eval", "ra eval"}};
  t.stats = {{"eff_keys", "effective keys per query"}, {"q_norm2", "mean |q'|^2"}, {"exact_rms", "RMS exact"}};
  t.below = {{"mse_lara", "mse_rfa"}, {"mse_lara_s", "mse_rfa"}, {"mse_ram", "mse_lara"}};
  return t;
}

// ---- registration --------------------------------------------------------------------------------------

void register_lara_rows(bool quick) {
  const std::vector<Index> lens = quick ? std::vector<Index>{1024, 4096, 16384}
                                        : std::vector<Index>{256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536};
  const std::vector<Index> landmarks = quick ? std::vector<Index>{49} : std::vector<Index>{49, 64};
  const int thread_counts[] = {1, 2};

  // Shape by shape, so each shape's inputs and sampled references are made once.
  for (const Index len : lens)
    for (const Index c : landmarks)
      for (const int threads : thread_counts)
        add(row_name("lara/" + landmarks_tag(c), len, kLaraDim, false, threads),
            {"lara C=" + std::to_string(c), len, kLaraDim, false, threads, "", "lara-c" + std::to_string(c)},
            [=](benchmark::State& s) { bm_lara(s, len, c, threads); });

  const std::vector<Index> ra_lens = quick ? std::vector<Index>{1024} : std::vector<Index>{1024, 2048, 4096};
  for (const Index len : ra_lens)
    for (const int threads : thread_counts)
      add(row_name("ra", len, kLaraDim, false, threads), {"ra S=1", len, kLaraDim, false, threads, "", "ra"},
          [=](benchmark::State& s) { bm_ra(s, len, threads); });

  // One call each is enough, as for the other memory rows.
  const std::vector<Index> memory_lens = quick ? std::vector<Index>{kMemoryLen} : lens;
  for (const Index c : landmarks)
    for (const Index len : memory_lens)
      add(row_name("lara-memory/" + landmarks_tag(c), len, kMemoryDim, false, 1),
          {"lara-memory C=" + std::to_string(c), len, kMemoryDim, false, 1, "H=1, no workspace", "lara-memory"},
          [=](benchmark::State& s) { bm_lara_memory(s, len, c); })
          ->Iterations(1);

  // Set by set, so each set's inputs and exact output are made once; one pass of the estimators each.
  for (const AccuracySet& set : kAccuracySets)
    for (const Index m : kSampleCounts) {
      const std::string name = "accuracy/L:" + std::to_string(set.len()) + "/D:" + std::to_string(kAccuracyDim) +
                               (set.grid() ? "/grid" : "/seq") + "/logit_std:" + fixed1(set.logit_std) +
                               "/m:" + std::to_string(m);
      add(name, {"accuracy", set.len(), kAccuracyDim, false, g_machine.threads, set_note(set), "accuracy"},
          [=](benchmark::State& s) { bm_accuracy(s, set, m); })
          ->Iterations(1);
    }
}

}  // namespace effattn_bench
