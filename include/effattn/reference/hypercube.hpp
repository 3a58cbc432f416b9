#pragma once
// Naive hypercube attention in double precision: the semantics of HypercubeAttention (HypercubeConfig
// in kinds/hypercube_config.hpp), written as plainly as possible so that tests and users can check a
// fast kernel against it.
//
// The graph comes from the official builder (iterated reflection of bit labels), not from the closed
// form p XOR (2^m - 1) the kernel uses: two independent statements of the same graph are what make a
// comparison meaningful, and a test checks that they agree. The attention is dense masked softmax:
// every query row scans every key and keeps those whose node is adjacent to its own, so nothing of
// the kernel's gather or tile schedule is shared. It is O(L^2 D) per head, slow by design.
//
// Semantics: self-attention only (Lq = Lk = L). N = ceil(L / block) nodes; token t lies in node
// t / block (the last node may be partial). Query t sees key u iff node(u) is adjacent to node(t)
// (self loops included) and u < key_lengths[b]. Padded queries are not zeroed: they attend like any
// other query, as exact softmax with key_lengths does. A row with no visible key gives 0 and lse -inf.

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "effattn/core/errors.hpp"
#include "effattn/core/mask.hpp"
#include "effattn/core/tensor.hpp"
#include "effattn/kinds/hypercube_config.hpp"

EFFATTN_BEGIN_NAMESPACE

namespace reference {

namespace detail_cube {

inline std::size_t ix(Index i) { return static_cast<std::size_t>(i); }

// Element (b, h, l, d) of a rank-4 tensor stored in the given layout.
template <class V>
auto& at(const V& t, Layout layout, Index b, Index h, Index l, Index d) {
  if (layout == Layout::bhld) return t.data()[((b * t.dimension(1) + h) * t.dimension(2) + l) * t.dimension(3) + d];
  return t.data()[((b * t.dimension(1) + l) * t.dimension(2) + h) * t.dimension(3) + d];
}

[[noreturn]] inline void shape_fail(const std::string& what) {
  throw shape_error("reference::hypercube_attention: " + what);
}
[[noreturn]] inline void unsupported(const std::string& what) {
  throw unsupported_error("reference::hypercube_attention: " + what);
}

// The labels of positions 0 .. 2^k - 1 by the builder's iterated reflection. The list for one more
// dimension is the list followed by its reverse, every label shifted left one bit, and the low bit
// set on the second (reversed) half. One node has the single label 0.
inline std::vector<std::uint64_t> reflected_labels(Index n) {
  if (n <= 1) return {0};
  std::vector<std::uint64_t> labels{0, 1};
  while (static_cast<Index>(labels.size()) < n) {
    const std::size_t half = labels.size();
    std::vector<std::uint64_t> next(labels);
    next.insert(next.end(), labels.rbegin(), labels.rend());
    for (std::size_t i = 0; i < next.size(); ++i) next[i] = (next[i] << 1) | (i >= half ? 1u : 0u);
    labels = std::move(next);
  }
  return labels;
}

}  // namespace detail_cube

// The official builder: labels by iterated reflection (start [0,1]; append the reversed list, shift
// every label left one bit and set the low bit on the second half, until 2^k labels); p ~ q iff labels
// differ in exactly one bit, plus self loops; positions >= n dropped. Row-major n x n, 1 = edge.
inline std::vector<char> hypercube_adjacency(Index n) {
  if (n < 0) throw shape_error("reference::hypercube_adjacency: n is " + std::to_string(n) + "; it must be >= 0");
  const std::vector<std::uint64_t> labels = detail_cube::reflected_labels(n);
  std::vector<char> adj(detail_cube::ix(n * n), 0);
  for (Index p = 0; p < n; ++p)
    for (Index q = 0; q < n; ++q) {
      const auto diff = labels[detail_cube::ix(p)] ^ labels[detail_cube::ix(q)];
      adj[detail_cube::ix(p * n + q)] = (p == q || std::popcount(diff) == 1) ? 1 : 0;
    }
  return adj;
}

// out [B,H,L,Dv] (or [B,L,H,Dv] for Layout::blhd) and, if given, lse [B,H,L]. Dense masked softmax
// with the node adjacency from hypercube_adjacency(ceil(L / block)), not from the closed form, so the
// two are independent statements. Refuses (like the kernel) what hypercube attention does not define:
// Lq != Lk, causal, bias, window, packed sequences (unsupported_error); a bad config (config_error).
template <class T>
void hypercube_attention(ConstTensor4<T> q, ConstTensor4<T> k, ConstTensor4<T> v, Tensor4<double> out,
                         const Mask& mask, const HypercubeConfig& config, Layout layout = Layout::bhld,
                         std::optional<Tensor3<double>> lse = {}) {
  using detail_cube::at;
  using detail_cube::ix;
  using effattn::detail::cat;
  const auto eq = effattn::detail::bhld_extents(q, layout);
  const auto ek = effattn::detail::bhld_extents(k, layout);
  const auto ev = effattn::detail::bhld_extents(v, layout);
  const auto eo = effattn::detail::bhld_extents(out, layout);
  const Index B = eq[0], H = eq[1], Lq = eq[2], Dqk = eq[3];
  const Index Hkv = ek[1], Lk = ek[2], Dv = ev[3];
  if (ek[0] != B || ev[0] != B || ev[1] != Hkv || ev[2] != Lk || ek[3] != Dqk)
    detail_cube::shape_fail("q, k, v extents disagree");
  if (eo[0] != B || eo[1] != H || eo[2] != Lq || eo[3] != Dv) detail_cube::shape_fail("out has the wrong shape");
  if (H > 0 && (Hkv == 0 || H % Hkv != 0)) detail_cube::shape_fail("H is not a multiple of Hkv");
  if (lse && (lse->dimension(0) != B || lse->dimension(1) != H || lse->dimension(2) != Lq))
    detail_cube::shape_fail("lse has the wrong shape");
  if (!mask.key_lengths.empty()) {
    if (static_cast<Index>(mask.key_lengths.size()) != B) detail_cube::shape_fail("mask.key_lengths needs B entries");
    for (Index len : mask.key_lengths)
      if (len < 0 || len > Lk) detail_cube::shape_fail(cat("a key length of ", len, " is outside [0, ", Lk, "]"));
  }
  config.validate().raise();
  // The graph is over the positions of one sequence: queries and keys must be the same tokens.
  if (Lq != Lk) detail_cube::unsupported(cat("self-attention only (Lq = ", Lq, ", Lk = ", Lk, ")"));
  if (mask.causal != Causal::none) detail_cube::unsupported("no causal form");
  if (mask.bias.present()) detail_cube::unsupported("no mask.bias");
  if (mask.window.active()) detail_cube::unsupported("no mask.window");
  if (mask.packed() || !mask.cu_seqlens_k.empty()) detail_cube::unsupported("no packed sequences");

  const Index L = Lq;
  const Index block = config.block;
  const Index N = (L + block - 1) / block;
  const std::vector<char> adj = hypercube_adjacency(N);
  const double scale = config.scale ? *config.scale : 1.0 / std::sqrt(static_cast<double>(std::max<Index>(Dqk, 1)));
  const double neg_inf = -std::numeric_limits<double>::infinity();
  const Index group = Hkv > 0 ? H / Hkv : 1;
  std::vector<double> logits(ix(L));

  for (Index b = 0; b < B; ++b) {
    const Index len = mask.key_lengths.empty() ? L : mask.key_lengths[ix(b)];
    for (Index h = 0; h < H; ++h) {
      const Index hk = h / group;
      for (Index t = 0; t < L; ++t) {
        const Index node = t / block;
        double row_max = neg_inf;
        for (Index u = 0; u < L; ++u) {
          logits[ix(u)] = neg_inf;
          if (u >= len || !adj[ix(node * N + u / block)]) continue;
          double s = 0;
          for (Index d = 0; d < Dqk; ++d)
            s += static_cast<double>(at(q, layout, b, h, t, d)) * static_cast<double>(at(k, layout, b, hk, u, d));
          logits[ix(u)] = s * scale;
          row_max = std::max(row_max, logits[ix(u)]);
        }
        if (row_max == neg_inf) {
          for (Index d = 0; d < Dv; ++d) at(out, layout, b, h, t, d) = 0.0;
          if (lse) (*lse).data()[(b * H + h) * L + t] = neg_inf;
          continue;
        }
        double sum = 0;
        for (double& s : logits) {
          s = s == neg_inf ? 0.0 : std::exp(s - row_max);
          sum += s;
        }
        for (Index d = 0; d < Dv; ++d) {
          double acc = 0;
          for (Index u = 0; u < L; ++u)
            if (logits[ix(u)] != 0.0) acc += logits[ix(u)] * static_cast<double>(at(v, layout, b, hk, u, d));
          at(out, layout, b, h, t, d) = acc / sum;
        }
        if (lse) (*lse).data()[(b * H + h) * L + t] = row_max + std::log(sum);
      }
    }
  }
}

}  // namespace reference

EFFATTN_END_NAMESPACE
