#pragma once
// Hypercube attention (Wang et al., ICML 2022): exact softmax over the hypercube graph of
// kinds/hypercube_config.hpp. Two paths over the same graph:
//   block level (block > 1): query block I visits the key blocks of its neighbours through the
//     quadratic core's tile-list schedule (ListedKeys), dense block x block tiles on the core's
//     micro-kernels;
//   token level (block = 1): a gather of the 1 + ceil(log2 n) neighbour keys of each query, listing
//     only neighbours that exist and are not padding, never a repeated self (the official index table
//     repeats it; a gather would then count it twice). For a fixed m, p -> p XOR (2^m - 1) reverses
//     each aligned segment of 2^m positions, so a run of queries reads the m-th neighbours' K and V
//     rows as one contiguous (descending) stream: the kernel takes the neighbours slot by slot over a
//     run of kGatherRows queries instead of query by query, which turned 2 (1 + log2 n) interleaved
//     streams of rows, mostly missing L2 beyond n ~ 2000, into one at a time.
// A node's neighbours are computed from the closed form when its work item starts: O(log n) on the
// stack, which costs less than looking up a cached list and needs no shared state between calls.
// Padded keys are -inf; padded queries attend like any other (as exact softmax with key_lengths).

#include <algorithm>
#include <cmath>
#include <limits>
#include <string_view>

#include "effattn/attention.hpp"
#include "effattn/core/quadratic_core.hpp"
#include "effattn/kinds/hypercube_config.hpp"

EFFATTN_BEGIN_NAMESPACE
namespace detail {

// 1 + ceil(log2 n) never exceeds this for an n that fits an Index.
inline constexpr Index kMaxHypercubeDegree = 64;
// Query rows per token-level work item: enough to amortise the item, few enough to balance threads.
inline constexpr Index kGatherRows = 64;

// The neighbours of node p among n, in increasing order (keys are then read front to back).
inline Index sorted_neighbours(Index p, Index n, Index* out) noexcept {
  Index count = 0;
  for_each_hypercube_neighbour(p, n, [&](Index q) { out[count++] = q; });
  std::sort(out, out + count);
  return count;
}

// Per-thread scratch of the token-level gather.
template <class T>
struct GatherScratch {
  T* w = nullptr;  // [kMaxHypercubeDegree, kGatherRows] scores, then weights, slot by slot

  template <class Visit>
  void fields(const Problem&, Visit&& visit) {
    visit(w, kMaxHypercubeDegree * kGatherRows);
  }
};

template <class T>
std::size_t hypercube_scratch(const Problem& p, Index block) noexcept {
  return block == 1 ? plan_of<GatherScratch<T>>(p).bytes() : plan_of<TileScratch<T>>(p).bytes();
}

// Token level, queries [p0, p1) of one head: slot 0 is the query itself, slot m its mirror
// p XOR (2^m - 1); a slot that does not exist or is padding has weight exactly 0.
template <class T>
void gather_rows(const HeadCtx<T>& x, Index n, Index p0, Index p1, Index dim_qk, Index dim_v, T scale,
                 const GatherScratch<T>& g) noexcept {
  const Index rows = p1 - p0;
  const int slots = 1 + hypercube_dim(n);
  const auto mirror = [](Index p, int m) { return m == 0 ? p : p ^ ((Index{1} << m) - 1); };
  constexpr T ninf = -std::numeric_limits<T>::infinity();
  for (int m = 0; m < slots; ++m) {
    T* s = g.w + m * kGatherRows;
    for (Index r = 0; r < rows; ++r) {
      const Index p = p0 + r, j = mirror(p, m);
      s[r] = j < n && x.band.visible(p, j) ? scale * dot(x.q.row(p), x.k.row(j), dim_qk) : ninf;
    }
  }
  for (Index r = 0; r < rows; ++r) {
    T mx = ninf;
    for (int m = 0; m < slots; ++m) mx = std::max(mx, g.w[m * kGatherRows + r]);
    T sum = 0;
    for (int m = 0; m < slots; ++m) {
      T& w = g.w[m * kGatherRows + r];
      w = w == ninf ? T(0) : std::exp(w - mx);
      sum += w;
    }
    const T inv = sum > 0 ? T(1) / sum : T(0);
    for (int m = 0; m < slots; ++m) g.w[m * kGatherRows + r] *= inv;
    T* o = x.out.row(p0 + r);
    std::fill(o, o + dim_v, T(0));
    if (x.lse) x.lse[p0 + r] = sum > 0 ? mx + std::log(sum) : ninf;
  }
  for (int m = 0; m < slots; ++m) {
    const T* w = g.w + m * kGatherRows;
    for (Index r = 0; r < rows; ++r)
      if (w[r] != T(0)) axpy(w[r], x.v.row(mirror(p0 + r, m)), x.out.row(p0 + r), dim_v);
  }
}

template <class T>
void run_hypercube(const QuadraticCall<T>& c, Index block, const Executor& exec, std::span<std::byte> workspace) {
  const Problem& p = c.problem;
  if (p.batch == 0 || p.heads == 0 || p.len_q == 0) return;
  const int threads = std::max(exec.num_threads(), 1);
  const std::size_t per = hypercube_scratch<T>(p, block);
  Arena arena(workspace, per * static_cast<std::size_t>(threads));
  std::byte* scratch = arena.take<std::byte>(static_cast<Index>(per) * threads);
  const auto worker_arena = [&](int w) {
    return Arena(std::span<std::byte>(scratch + per * static_cast<std::size_t>(w), per), per);
  };
  const Index n = p.len_q;
  const Index dq = p.dim_qk, dv = p.dim_v;

  if (block == 1) {
    const Index parts = (n + kGatherRows - 1) / kGatherRows;
    exec.run(p.batch * p.heads * parts, threads, [&](int wk, Index item) {
      Arena a = worker_arena(wk);
      const auto g = take_from<GatherScratch<T>>(a, p);
      const Index bh = item / parts, b = bh / p.heads, h = bh % p.heads;
      const Index p0 = (item % parts) * kGatherRows;
      gather_rows(head_ctx(c, segment(*c.mask, p, b), h), n, p0, std::min(n, p0 + kGatherRows), dq, dv, c.scale, g);
    });
    return;
  }

  const Index nodes = (n + block - 1) / block;
  exec.run(p.batch * p.heads * nodes, threads, [&](int wk, Index item) {
    Arena a = worker_arena(wk);
    const auto ts = take_from<TileScratch<T>>(a, p);
    const Index bh = item / nodes, b = bh / p.heads, h = bh % p.heads, I = item % nodes;
    const HeadCtx<T> x = head_ctx(c, segment(*c.mask, p, b), h);
    Index nb[kMaxHypercubeDegree];
    const Index count = sorted_neighbours(I, nodes, nb);
    attend_softmax(x, I * block, std::min(block, n - I * block), dq, dv, c.scale, ts, NoScoreTerm{},
                   ListedKeys{nb, count, block});
  });
}

}  // namespace detail

template <class T>
class HypercubeAttention {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "HypercubeAttention<T>: T is float or double");

 public:
  using Scalar = T;
  using Config = HypercubeConfig;
  static constexpr std::string_view name = "HypercubeAttention";
  static constexpr Complexity complexity = Complexity::n_log_n;

  HypercubeAttention() = default;
  explicit HypercubeAttention(Config config) : config_(std::move(config)) { config_.validate().raise(); }

  [[nodiscard]] const Config& config() const noexcept { return config_; }

  // Key padding only: the graph is over one whole sequence, in both directions.
  [[nodiscard]] bool supports(const Mask& mask) const noexcept {
    return mask.causal == Causal::none && !mask.bias.present() && !mask.window.active() && !mask.packed();
  }

  // Exactly the visible (query, key) pairs of the graph.
  [[nodiscard]] Cost cost(const Problem& p, const Mask& mask = {}) const noexcept {
    const Index block = config_.block, n = p.len_q;
    const Index nodes = (n + block - 1) / block;
    double pairs = 0;
    for (Index b = 0; b < p.batch; ++b) {
      const Index valid = mask.key_lengths.size() == static_cast<std::size_t>(p.batch)
                              ? std::min(p.len_k, mask.key_lengths[static_cast<std::size_t>(b)])
                              : p.len_k;
      for (Index I = 0; I < nodes; ++I) {
        Index keys = 0;
        for_each_hypercube_neighbour(I, nodes, [&](Index J) { keys += std::clamp(valid - J * block, Index{0}, block); });
        pairs += static_cast<double>(std::min(block, n - I * block)) * static_cast<double>(keys);
      }
    }
    const double dq = static_cast<double>(p.dim_qk), dv = static_cast<double>(p.dim_v);
    const double elems = static_cast<double>(p.batch) * (static_cast<double>(p.heads * p.len_q) * (dq + dv) +
                                                         static_cast<double>(p.kv_heads * p.len_k) * (dq + dv));
    return {pairs * static_cast<double>(p.heads) * 2.0 * (dq + dv), elems * sizeof(T)};
  }

  [[nodiscard]] std::size_t workspace_bytes(const Problem& p, int threads) const noexcept {
    return detail::ArenaPlan{}
        .add(static_cast<Index>(detail::hypercube_scratch<T>(p, config_.block)) * std::max(threads, 1), 1)
        .span_bytes();
  }

  [[nodiscard]] Status check(ConstTensor4<T> q, ConstTensor4<T> k, ConstTensor4<T> v, Tensor4<T> out,
                             const Mask& mask = {}, const Options<T>& options = {}) const noexcept {
    return detail::guarded([&]() -> Status { return check_call(q, k, v, out, mask, options); });
  }

  void forward(ConstTensor4<T> q, ConstTensor4<T> k, ConstTensor4<T> v, Tensor4<T> out, const Mask& mask = {},
               const Options<T>& options = {}) const {
    check_call(q, k, v, out, mask, options).raise();
    detail::QuadraticCall<T> c;
    c.problem = Problem::of<T>(q, k, v, options.layout);
    c.q = q;
    c.k = k;
    c.v = v;
    c.out = out;
    c.lse = options.lse;
    c.layout = options.layout;
    c.mask = &mask;
    c.scale = static_cast<T>(detail::attention_scale(config_.scale, c.problem.dim_qk));
    detail::run_hypercube(c, config_.block, options.executor, options.workspace);
  }

 private:
  Status check_call(ConstTensor4<T> q, ConstTensor4<T> k, ConstTensor4<T> v, Tensor4<T> out, const Mask& mask,
                    const Options<T>& options) const {
    using detail::error;
    if (Status s = config_.validate(); !s) return s;
    if (Status s = detail::validate_call<T>(name, q, k, v, out, mask, options); !s) return s;
    if (mask.causal != Causal::none)
      return error(ErrorCode::unsupported, name,
                   "::forward: causal hypercube attention is not supported: the graph joins each node to nodes on "
                   "both sides, and the paper defines no causal variant. Use SoftmaxAttention with a causal mask");
    if (mask.bias.present() || mask.window.active() || mask.packed())
      return error(ErrorCode::unsupported, name, "::forward: ",
                   mask.bias.present() ? "mask.bias" : mask.window.active() ? "mask.window" : "packed sequences",
                   " cannot be honoured: the hypercube graph is the attention pattern; key_lengths is the supported mask");
    const Problem p = Problem::of<T>(q, k, v, options.layout);
    if (p.len_q != p.len_k)
      return error(ErrorCode::unsupported, name, "::forward: Lq = ", p.len_q, " differs from Lk = ", p.len_k,
                   ": hypercube attention is self-attention over one sequence (its graph joins positions of that "
                   "sequence); use SoftmaxAttention for cross-attention");
    return {};
  }

  Config config_{};
};

EFFATTN_END_NAMESPACE
