// Definitions of common.hpp: the machine's limits and the counters built on them, the shared inputs
// and their exact double references.

#include "common.hpp"

#include <cmath>

#include <effattn/kinds/softmax.hpp>

namespace effattn_bench {

Machine g_machine;

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

double relative_error(const float* o32, const double* o64, std::size_t n) {
  double diff = 0;
  double scale = 0;
  for (std::size_t i = 0; i < n; ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(o32[i]) - o64[i]));
    scale = std::max(scale, std::abs(o64[i]));
  }
  return scale > 0 ? diff / scale : diff;
}

double frobenius_error(const float* o32, const double* o64, std::size_t n) {
  double diff = 0;
  double norm = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(o32[i]) - o64[i];
    diff += d * d;
    norm += o64[i] * o64[i];
  }
  return norm > 0 ? std::sqrt(diff / norm) : std::sqrt(diff);
}

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

AlignedBuffer<double> sample_reference(const float* q, const float* k, const float* v, Index rows, Index len,
                                       Index dim, bool causal) {
  // Top-left causal: row i sees keys [0, i], so the first `rows` rows need only the first `rows` keys.
  const Index keys = causal ? std::min(rows, len) : len;
  const AlignedBuffer<double> qd = widen(q, static_cast<std::size_t>(rows * dim));
  const AlignedBuffer<double> kd = widen(k, static_cast<std::size_t>(keys * dim));
  const AlignedBuffer<double> vd = widen(v, static_cast<std::size_t>(keys * dim));
  AlignedBuffer<double> ref(static_cast<std::size_t>(rows * dim));
  effattn::Options<double> options;
  options.executor = effattn::Executor::openmp();
  effattn::SoftmaxAttention<double>{}.forward(effattn::ConstTensor4<double>(qd.data(), 1, 1, rows, dim),
                                              effattn::ConstTensor4<double>(kd.data(), 1, 1, keys, dim),
                                              effattn::ConstTensor4<double>(vd.data(), 1, 1, keys, dim),
                                              effattn::Tensor4<double>(ref.data(), 1, 1, rows, dim), make_mask(causal),
                                              options);
  return ref;
}

const double* attention_sample_reference(AttentionInputs& in, bool causal) {
  AlignedBuffer<double>& ref = in.sample[causal ? 1 : 0];
  if (ref.size() == 0)  // head 0 is the first L D elements of q, k and v
    ref = sample_reference(in.q.data(), in.k.data(), in.v.data(), std::min(kSampleRows, in.len), in.len, in.dim, causal);
  return ref.data();
}

std::string row_name(std::string_view kind, Index len, Index dim, bool causal, int threads) {
  return std::string(kind) + "/L:" + std::to_string(len) + "/D:" + std::to_string(dim) +
         "/causal:" + (causal ? "1" : "0") + "/threads:" + std::to_string(threads);
}

}  // namespace effattn_bench
