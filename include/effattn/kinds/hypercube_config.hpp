#pragma once
// HypercubeConfig and the hypercube graph: the configuration of HypercubeAttention
// (kinds/hypercube.hpp), in its own header so the reference (reference/hypercube.hpp) shares the
// semantics without the kernel.
//
// Hypercube attention (Wang et al., ICML 2022) is exact softmax attention restricted to a graph over
// N nodes: node p is joined to itself and to p XOR (2^m - 1) for m = 1 .. ceil(log2 N) when that is
// < N, the mirror image of p inside its aligned dyadic segment of length 2^m. This is the official
// embedding (iterated reflection, label(p) = bitrev(gray(p)), labels one bit apart), not "indices
// one bit apart". Nodes are blocks of `block` tokens (16 in the official model; the last block may
// be partial) or single tokens (block = 1): query t sees every key of every block adjacent to its own.

#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

#include "effattn/core/errors.hpp"
#include "effattn/core/tensor.hpp"

EFFATTN_BEGIN_NAMESPACE

struct HypercubeConfig {
  Index block = 16;               // tokens per node; 1 = token level
  std::optional<double> scale{};  // default 1 / sqrt(Dqk)

  [[nodiscard]] Status validate() const {
    if (block < 1) return detail::error(ErrorCode::config, "HypercubeAttention::Config: block is ", block, "; it must be >= 1");
    if (scale && !std::isfinite(*scale))
      return detail::error(ErrorCode::config, "HypercubeAttention::Config: scale is ", *scale, "; it must be finite");
    return {};
  }
};

// ceil(log2 n): the dimension of the cube over n nodes (0 for n <= 1).
constexpr int hypercube_dim(Index n) noexcept {
  int k = 0;
  while ((Index{1} << k) < n) ++k;
  return k;
}

// Calls f(q) for each neighbour q of node p among n: p first, then p XOR (2^m - 1) for m = 1 ..
// hypercube_dim(n) when < n. Never the same node twice (the masks 2^m - 1 are distinct and nonzero).
template <class F>
constexpr void for_each_hypercube_neighbour(Index p, Index n, F&& f) {
  f(p);
  const int k = hypercube_dim(n);
  for (int m = 1; m <= k; ++m) {
    const Index q = p ^ ((Index{1} << m) - 1);
    if (q < n) f(q);
  }
}

// The neighbours of p among n, in increasing order.
inline std::vector<Index> hypercube_neighbours(Index p, Index n) {
  std::vector<Index> out;
  for_each_hypercube_neighbour(p, n, [&](Index q) { out.push_back(q); });
  std::sort(out.begin(), out.end());
  return out;
}

EFFATTN_END_NAMESPACE
