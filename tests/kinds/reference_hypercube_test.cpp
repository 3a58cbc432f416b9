// The hypercube graph and the double-precision hypercube reference itself. The graph: the official
// builder (iterated reflection, reference::hypercube_adjacency) against the closed form the kernel
// uses (for_each_hypercube_neighbour, hypercube_neighbours) for every N <= 600, and the facts the
// design states (symmetry, self loops, the path, regularity and XOR automorphisms at powers of two,
// degrees, diameter, the worked examples). The attention: visibility tables read off the reference,
// equivalence with exact softmax through an expanded boolean mask (block and token level, padding,
// GQA, both layouts, lse), the small cases that are full attention, normalisation, locality and the
// refusals. Every hypercube kernel test trusts this file.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <numeric>
#include <queue>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <effattn/kinds/hypercube_config.hpp>
#include <effattn/reference/hypercube.hpp>
#include <effattn/reference/softmax.hpp>

#include "support/compare.hpp"
#include "support/random.hpp"

namespace effattn_test {
namespace {

using effattn::Causal;
using effattn::ConstTensor4;
using effattn::HypercubeConfig;
using effattn::Layout;
using effattn::Mask;
using effattn::Tensor3;
using effattn::Tensor4;
using Visible = std::vector<std::vector<Index>>;  // per query, the keys it sees

constexpr double kNegInf = -std::numeric_limits<double>::infinity();
// Both sides are double loops over the same few terms; the bound only absorbs a different order of
// the same additions (the softmax reference and this one skip masked keys at different places).
constexpr Tolerance kDouble{1e-12, 1e-12};

std::size_t ix(Index i) { return static_cast<std::size_t>(i); }

// ---- the graph ----

// The closed form's neighbour list of p, in the order for_each_hypercube_neighbour visits.
std::vector<Index> closed_form(Index p, Index n) {
  std::vector<Index> out;
  effattn::for_each_hypercube_neighbour(p, n, [&](Index q) { out.push_back(q); });
  return out;
}

std::vector<std::vector<Index>> lists_of(const std::vector<char>& adj, Index n) {
  std::vector<std::vector<Index>> lists(ix(n));
  for (Index p = 0; p < n; ++p)
    for (Index q = 0; q < n; ++q)
      if (adj[ix(p * n + q)]) lists[ix(p)].push_back(q);
  return lists;
}

// Largest BFS distance over all pairs (the graph is connected: it contains the path 0-1-...-(n-1)).
Index diameter(const std::vector<std::vector<Index>>& lists) {
  const Index n = static_cast<Index>(lists.size());
  Index best = 0;
  std::vector<Index> dist(ix(n));
  for (Index s = 0; s < n; ++s) {
    std::fill(dist.begin(), dist.end(), -1);
    std::queue<Index> todo;
    dist[ix(s)] = 0;
    todo.push(s);
    while (!todo.empty()) {
      const Index p = todo.front();
      todo.pop();
      for (Index q : lists[ix(p)])
        if (dist[ix(q)] < 0) {
          dist[ix(q)] = dist[ix(p)] + 1;
          todo.push(q);
        }
    }
    for (Index d : dist) {
      if (d < 0) return -1;  // disconnected
      best = std::max(best, d);
    }
  }
  return best;
}

Index bit_reverse(Index x, int bits) {
  Index r = 0;
  for (int i = 0; i < bits; ++i) r |= ((x >> i) & 1) << (bits - 1 - i);
  return r;
}

// The builder's labels are the bit-reversed reflected Gray code: the identity behind the closed form.
TEST(HypercubeGraph, ReflectedLabelsAreBitReversedGrayCode) {
  EXPECT_EQ(effattn::reference::detail_cube::reflected_labels(1), (std::vector<std::uint64_t>{0}));
  EXPECT_EQ(effattn::reference::detail_cube::reflected_labels(4), (std::vector<std::uint64_t>{0, 2, 3, 1}));
  for (int k = 1; k <= 12; ++k) {
    const Index n = Index{1} << k;
    const auto labels = effattn::reference::detail_cube::reflected_labels(n);
    ASSERT_EQ(static_cast<Index>(labels.size()), n) << "k = " << k;
    for (Index p = 0; p < n; ++p)
      ASSERT_EQ(static_cast<Index>(labels[ix(p)]), bit_reverse(p ^ (p >> 1), k)) << "k = " << k << " p = " << p;
  }
}

// The Fig. 4 mask for N = 4 (labels 00, 10, 11, 01): a 4-cycle plus self loops, with 0 ~ 3 but not
// 0 ~ 2 (the raw-index rule would give the opposite).
TEST(HypercubeGraph, FourNodesByHand) {
  const std::vector<char> want = {1, 1, 0, 1,  //
                                  1, 1, 1, 0,  //
                                  0, 1, 1, 1,  //
                                  1, 0, 1, 1};
  EXPECT_EQ(effattn::reference::hypercube_adjacency(4), want);
  EXPECT_EQ(effattn::reference::hypercube_adjacency(1), std::vector<char>{1});
  EXPECT_EQ(effattn::reference::hypercube_adjacency(2), (std::vector<char>{1, 1, 1, 1}));
  EXPECT_EQ(effattn::reference::hypercube_adjacency(3), (std::vector<char>{1, 1, 0, 1, 1, 1, 0, 1, 1}));
  EXPECT_TRUE(effattn::reference::hypercube_adjacency(0).empty());
}

// The acceptance check of the graph: builder == closed form for every N <= 600, plus the facts that
// hold for every N (self loop, symmetry, the path p ~ p+1, neighbours inside [0, N), no duplicate in
// the closed form, degree k+1 exactly at powers of two and at most k+1 otherwise).
TEST(HypercubeGraph, BuilderEqualsClosedFormUpTo600) {
  for (Index n = 1; n <= 600; ++n) {
    const std::vector<char> adj = effattn::reference::hypercube_adjacency(n);
    ASSERT_EQ(static_cast<Index>(adj.size()), n * n);
    const int k = effattn::hypercube_dim(n);
    ASSERT_EQ(k, static_cast<int>(std::ceil(std::log2(static_cast<double>(n))))) << "n = " << n;
    const bool power = (n & (n - 1)) == 0;
    Index edges = 0;
    for (Index p = 0; p < n; ++p) {
      const std::vector<Index> visit = closed_form(p, n);
      ASSERT_FALSE(visit.empty());
      EXPECT_EQ(visit.front(), p) << "self first; n = " << n;
      std::vector<Index> sorted = visit;
      std::sort(sorted.begin(), sorted.end());
      ASSERT_EQ(std::adjacent_find(sorted.begin(), sorted.end()), sorted.end()) << "duplicate; n = " << n << " p = " << p;
      ASSERT_EQ(effattn::hypercube_neighbours(p, n), sorted) << "n = " << n << " p = " << p;
      for (Index q : sorted) ASSERT_TRUE(q >= 0 && q < n) << "n = " << n << " p = " << p << " q = " << q;
      std::vector<Index> built;
      for (Index q = 0; q < n; ++q)
        if (adj[ix(p * n + q)]) built.push_back(q);
      ASSERT_EQ(built, sorted) << "builder vs closed form; n = " << n << " p = " << p;
      ASSERT_TRUE(adj[ix(p * n + p)]) << "self loop; n = " << n << " p = " << p;
      if (p + 1 < n) {
        ASSERT_TRUE(adj[ix(p * n + p + 1)]) << "path edge; n = " << n << " p = " << p;
      }
      for (Index q = 0; q < n; ++q) ASSERT_EQ(adj[ix(p * n + q)], adj[ix(q * n + p)]) << "n = " << n;
      const auto degree = static_cast<Index>(sorted.size());
      if (power) {
        ASSERT_EQ(degree, k + 1) << "n = " << n << " p = " << p;
      } else {
        ASSERT_LE(degree, k + 1) << "n = " << n << " p = " << p;
      }
      edges += degree;
    }
    if (power) {
      EXPECT_EQ(edges, n * (k + 1)) << "directed edges incl. self loops; n = " << n;
    }
  }
}

// Every token reaches every other in ceil(log2 N) hops, and no fewer suffice, for N in 2..259 and at
// the powers of two up to 1024.
TEST(HypercubeGraph, DiameterIsCeilLog2) {
  std::vector<Index> sizes;
  for (Index n = 1; n <= 259; ++n) sizes.push_back(n);
  for (Index n : {512, 1024}) sizes.push_back(n);
  for (Index n : sizes) {
    const auto lists = lists_of(effattn::reference::hypercube_adjacency(n), n);
    EXPECT_EQ(diameter(lists), effattn::hypercube_dim(n)) << "n = " << n;
  }
}

// At N = 2^k every XOR translation p -> p XOR c is an automorphism (the generators 2^m - 1 span
// GF(2)^k). Any other N is the cube of the next power of two with the nodes >= N dropped: its graph is
// the induced subgraph, so a translation keeps every edge whose ends stay below N.
TEST(HypercubeGraph, XorTranslationsAreAutomorphismsAtPowersOfTwo) {
  for (Index n : {2, 4, 8, 16, 32, 64, 128}) {
    const std::vector<char> adj = effattn::reference::hypercube_adjacency(n);
    for (Index c = 0; c < n; ++c)
      for (Index p = 0; p < n; ++p)
        for (Index q = 0; q < n; ++q)
          ASSERT_EQ(adj[ix(p * n + q)], adj[ix((p ^ c) * n + (q ^ c))]) << "n = " << n << " c = " << c;
  }
  for (Index n : {3, 5, 12, 17, 100}) {
    const Index full = Index{1} << effattn::hypercube_dim(n);
    const std::vector<char> cube = effattn::reference::hypercube_adjacency(full);
    const std::vector<char> adj = effattn::reference::hypercube_adjacency(n);
    for (Index p = 0; p < n; ++p)
      for (Index q = 0; q < n; ++q) ASSERT_EQ(adj[ix(p * n + q)], cube[ix(p * full + q)]) << "n = " << n;
  }
}

// The worked examples of the design and its degree statistics of truncated cubes.
TEST(HypercubeGraph, WorkedExamples) {
  EXPECT_EQ(effattn::hypercube_neighbours(0, 16), (std::vector<Index>{0, 1, 3, 7, 15}));
  EXPECT_EQ(effattn::hypercube_neighbours(5, 16), (std::vector<Index>{2, 4, 5, 6, 10}));
  EXPECT_EQ(effattn::hypercube_neighbours(2, 12), (std::vector<Index>{1, 2, 3, 5}));
  EXPECT_EQ(lists_of(effattn::reference::hypercube_adjacency(16), 16)[0], (std::vector<Index>{0, 1, 3, 7, 15}));
  EXPECT_EQ(lists_of(effattn::reference::hypercube_adjacency(16), 16)[5], (std::vector<Index>{2, 4, 5, 6, 10}));
  EXPECT_EQ(lists_of(effattn::reference::hypercube_adjacency(12), 12)[2], (std::vector<Index>{1, 2, 3, 5}));
  // Tokens 1 and 2 are adjacent (they would not be under "indices one bit apart").
  EXPECT_EQ(effattn::hypercube_neighbours(1, 4), (std::vector<Index>{0, 1, 2}));
  const auto degrees = [](Index n) {
    std::vector<Index> d;
    for (const auto& l : lists_of(effattn::reference::hypercube_adjacency(n), n)) d.push_back(static_cast<Index>(l.size()));
    return d;
  };
  const auto d12 = degrees(12);
  EXPECT_EQ(*std::min_element(d12.begin(), d12.end()), 4);
  EXPECT_EQ(*std::max_element(d12.begin(), d12.end()), 5);
  const auto d100 = degrees(100);
  EXPECT_EQ(*std::min_element(d100.begin(), d100.end()), 5);
  EXPECT_EQ(*std::max_element(d100.begin(), d100.end()), 8);
  EXPECT_EQ(std::accumulate(d100.begin(), d100.end(), Index{0}), 732);  // mean 7.32
  EXPECT_EQ(effattn::hypercube_dim(0), 0);
  EXPECT_EQ(effattn::hypercube_dim(1), 0);
  EXPECT_EQ(effattn::hypercube_dim(2), 1);
  EXPECT_EQ(effattn::hypercube_dim(17), 5);
}

// ---- the attention reference ----

// One problem in bhld layout, inputs in double: q ~ N(0, qk_std^2), k too, v ~ N(0, 1).
struct Prob {
  Index B = 1, H = 1, Hkv = 1, L = 1, D = 8, Dv = 3;
  std::vector<double> q, k, v;
  std::vector<Index> key_lengths;
  HypercubeConfig config{};

  [[nodiscard]] Mask mask() const {
    Mask m;
    m.key_lengths = key_lengths;
    return m;
  }
  [[nodiscard]] std::array<Index, 4> dims(Layout layout, Index heads, Index dim) const {
    return layout == Layout::bhld ? std::array<Index, 4>{B, heads, L, dim} : std::array<Index, 4>{B, L, heads, dim};
  }
  [[nodiscard]] Index out_size() const { return B * H * L * Dv; }

  // Output (bhld whatever the layout used for the call) and lse.
  struct Result {
    std::vector<double> out, lse;
  };
  [[nodiscard]] Result run(Layout layout = Layout::bhld) const {
    const auto in = [&](const std::vector<double>& t, Index heads, Index dim) {
      return layout == Layout::bhld ? t : bhld_to_blhd(t, B, heads, L, dim);
    };
    const auto qi = in(q, H, D), ki = in(k, Hkv, D), vi = in(v, Hkv, Dv);
    Result r{std::vector<double>(ix(out_size()), -7.0), std::vector<double>(ix(B * H * L), -7.0)};
    effattn::reference::hypercube_attention<double>(
        ConstTensor4<double>(qi.data(), dims(layout, H, D)), ConstTensor4<double>(ki.data(), dims(layout, Hkv, D)),
        ConstTensor4<double>(vi.data(), dims(layout, Hkv, Dv)), Tensor4<double>(r.out.data(), dims(layout, H, Dv)),
        mask(), config, layout, Tensor3<double>(r.lse.data(), B, H, L));
    if (layout == Layout::blhd) {
      // Back to bhld: blhd [B, L, H, Dv] is bhld of [B, L, H] swapped, so rewrite with the roles of H and L swapped.
      std::vector<double> o(r.out.size());
      for (Index b = 0; b < B; ++b)
        for (Index h = 0; h < H; ++h)
          for (Index l = 0; l < L; ++l)
            for (Index d = 0; d < Dv; ++d) o[ix(((b * H + h) * L + l) * Dv + d)] = r.out[ix(((b * L + l) * H + h) * Dv + d)];
      r.out = o;
    }
    return r;
  }

  // Exact softmax with the node adjacency expanded to a token-level boolean mask [1, 1, L, L], built
  // from the closed form: the independent statement of the graph the reference is compared with.
  [[nodiscard]] Result softmax_with_closed_form() const {
    const Index N = (L + config.block - 1) / config.block;
    std::unique_ptr<bool[]> keep(new bool[ix(std::max<Index>(L * L, 1))]());
    for (Index t = 0; t < L; ++t)
      for (Index J : effattn::hypercube_neighbours(t / config.block, N))
        for (Index u = J * config.block; u < std::min(L, (J + 1) * config.block); ++u) keep[ix(t * L + u)] = true;
    Mask m = mask();
    m.bias = effattn::Bias::boolean(keep.get(), {1, 1, L, L});
    effattn::SoftmaxConfig sc;
    sc.scale = config.scale;
    Result r{std::vector<double>(ix(out_size()), -7.0), std::vector<double>(ix(B * H * L), -7.0)};
    effattn::reference::softmax_attention<double>(
        ConstTensor4<double>(q.data(), B, H, L, D), ConstTensor4<double>(k.data(), B, Hkv, L, D),
        ConstTensor4<double>(v.data(), B, Hkv, L, Dv), Tensor4<double>(r.out.data(), B, H, L, Dv), m, sc,
        Layout::bhld, Tensor3<double>(r.lse.data(), B, H, L));
    return r;
  }

  // Exact softmax without any graph (full attention with the same key padding).
  [[nodiscard]] Result full_softmax() const {
    effattn::SoftmaxConfig sc;
    sc.scale = config.scale;
    Result r{std::vector<double>(ix(out_size()), -7.0), std::vector<double>(ix(B * H * L), -7.0)};
    effattn::reference::softmax_attention<double>(
        ConstTensor4<double>(q.data(), B, H, L, D), ConstTensor4<double>(k.data(), B, Hkv, L, D),
        ConstTensor4<double>(v.data(), B, Hkv, L, Dv), Tensor4<double>(r.out.data(), B, H, L, Dv), mask(), sc,
        Layout::bhld, Tensor3<double>(r.lse.data(), B, H, L));
    return r;
  }

  double& v_at(Index b, Index h, Index j, Index d) { return v[ix(((b * Hkv + h) * L + j) * Dv + d)]; }
  double& k_at(Index b, Index h, Index j, Index d) { return k[ix(((b * Hkv + h) * L + j) * D + d)]; }

  [[nodiscard]] std::string describe() const {
    std::string s = "B=" + std::to_string(B) + " H=" + std::to_string(H) + " Hkv=" + std::to_string(Hkv) +
                    " L=" + std::to_string(L) + " D=" + std::to_string(D) + " Dv=" + std::to_string(Dv) +
                    " block=" + std::to_string(config.block);
    if (config.scale) s += " scale=" + std::to_string(*config.scale);
    if (!key_lengths.empty()) {
      s += " key_lengths={";
      for (Index len : key_lengths) s += std::to_string(len) + ",";
      s += "}";
    }
    return s;
  }
};

Prob random_prob(Index L, Index block, std::uint64_t seed, Index B = 1, Index H = 1, Index Hkv = 1, Index D = 8,
                 Index Dv = 3, double qk_std = 1.0) {
  Rng rng(seed);
  Prob p;
  p.B = B, p.H = H, p.Hkv = Hkv, p.L = L, p.D = D, p.Dv = Dv;
  p.config.block = block;
  p.q = normals(rng, B * H * L * D, qk_std);
  p.k = normals(rng, B * Hkv * L * D, qk_std);
  p.v = normals(rng, B * Hkv * L * Dv, 1.0);
  return p;
}

::testing::AssertionResult same(const Prob& p, const Prob::Result& got, const Prob::Result& want,
                                const std::string& what) {
  auto r = all_close("out", got.out.data(), want.out.data(), {p.B, p.H, p.L, p.Dv}, "[b,h,i,d]", kDouble,
                     what + "; " + p.describe());
  if (!r) return r;
  return all_close("lse", got.lse.data(), want.lse.data(), {p.B, p.H, p.L}, "[b,h,i]", kDouble,
                   what + "; " + p.describe());
}

// With q = 0 (all logits equal) and v[u] = e_u, out[t] is the uniform distribution over the keys t
// sees, which reads the visibility rule straight off the reference.
Visible visibility(Index L, Index block, std::vector<Index> key_lengths = {}) {
  const Index B = key_lengths.empty() ? 1 : static_cast<Index>(key_lengths.size());
  std::vector<double> q(ix(B * L), 0.0), k(ix(B * L), 0.0), v(ix(B * L * L), 0.0);
  for (Index b = 0; b < B; ++b)
    for (Index u = 0; u < L; ++u) v[ix((b * L + u) * L + u)] = 1.0;
  std::vector<double> out(ix(B * L * L), -1.0), lse(ix(B * L));
  Mask mask;
  mask.key_lengths = key_lengths;
  HypercubeConfig config;
  config.block = block;
  effattn::reference::hypercube_attention<double>(
      ConstTensor4<double>(q.data(), B, 1, L, 1), ConstTensor4<double>(k.data(), B, 1, L, 1),
      ConstTensor4<double>(v.data(), B, 1, L, L), Tensor4<double>(out.data(), B, 1, L, L), mask, config, Layout::bhld,
      Tensor3<double>(lse.data(), B, 1, L));
  const Index b = B - 1;  // the last batch: the one a test pads
  Visible vis(ix(L));
  for (Index t = 0; t < L; ++t) {
    const double* row = &out[ix((b * L + t) * L)];
    for (Index u = 0; u < L; ++u)
      if (row[u] != 0.0) vis[ix(t)].push_back(u);
    const double n = static_cast<double>(vis[ix(t)].size());
    for (Index u : vis[ix(t)]) EXPECT_NEAR(row[u], 1.0 / n, 1e-15) << "query " << t << " key " << u;
    EXPECT_EQ(lse[ix(b * L + t)], n > 0 ? std::log(n) : kNegInf) << "query " << t;
  }
  return vis;
}

// Token level: the tables are the graph itself. Block level: whole blocks, the last one partial.
// Padded queries attend like real ones; a query whose adjacent blocks are all padding sees nothing.
TEST(ReferenceHypercube, VisibilityTables) {
  EXPECT_EQ(visibility(3, 1), (Visible{{0, 1}, {0, 1, 2}, {1, 2}}));
  EXPECT_EQ(visibility(5, 1), (Visible{{0, 1, 3}, {0, 1, 2}, {1, 2, 3}, {0, 2, 3, 4}, {3, 4}}));
  // N = ceil(7 / 2) = 4 blocks {0,1} {2,3} {4,5} {6}; node 0 ~ 0, 1, 3; node 2 ~ 1, 2, 3.
  EXPECT_EQ(visibility(7, 2), (Visible{{0, 1, 2, 3, 6},
                                       {0, 1, 2, 3, 6},
                                       {0, 1, 2, 3, 4, 5},
                                       {0, 1, 2, 3, 4, 5},
                                       {2, 3, 4, 5, 6},
                                       {2, 3, 4, 5, 6},
                                       {0, 1, 4, 5, 6}}));
  // Keys >= 3 padded: node 3 (token 6) still attends, to the real keys of nodes 0 and 2 (0, 1 only).
  EXPECT_EQ(visibility(7, 2, {7, 3}),
            (Visible{{0, 1, 2}, {0, 1, 2}, {0, 1, 2}, {0, 1, 2}, {2}, {2}, {0, 1}}));
  // Token 4 of L = 5 (token level) is adjacent to 3 and itself only: with keys >= 3 padded that query
  // is left with nothing.
  EXPECT_EQ(visibility(5, 1, {5, 3}), (Visible{{0, 1}, {0, 1, 2}, {1, 2}, {0, 2}, {}}));
  EXPECT_EQ(visibility(4, 8), (Visible{{0, 1, 2, 3}, {0, 1, 2, 3}, {0, 1, 2, 3}, {0, 1, 2, 3}}));
  EXPECT_EQ(visibility(4, 8, {0}), (Visible{{}, {}, {}, {}}));
}

// A 3-token hand computation: query 0 sees keys 0, 1 (2 is not adjacent); lse and out by formula.
TEST(ReferenceHypercube, ByHand) {
  Prob p;
  p.L = 3, p.D = 2, p.Dv = 1;
  p.q = {1.0, 0.5, -0.25, 2.0, 0.75, -1.0};
  p.k = {0.5, 1.5, -1.0, 0.25, 2.0, -0.5};
  p.v = {3.0, -2.0, 7.0};
  p.config.block = 1;
  p.config.scale = 0.8;
  const auto r = p.run();
  const auto s = [&](Index t, Index u) { return 0.8 * (p.q[ix(2 * t)] * p.k[ix(2 * u)] + p.q[ix(2 * t + 1)] * p.k[ix(2 * u + 1)]); };
  const std::vector<std::vector<Index>> nbr = {{0, 1}, {0, 1, 2}, {1, 2}};
  for (Index t = 0; t < 3; ++t) {
    double z = 0, acc = 0;
    for (Index u : nbr[ix(t)]) {
      z += std::exp(s(t, u));
      acc += std::exp(s(t, u)) * p.v[ix(u)];
    }
    EXPECT_NEAR(r.out[ix(t)], acc / z, 1e-14) << "query " << t;
    EXPECT_NEAR(r.lse[ix(t)], std::log(z), 1e-14) << "query " << t;
  }
}

// The reference (builder graph, its own masking loop) equals exact softmax under the closed form's
// graph expanded to a token mask, over token and block level, N powers of two or not, L not a
// multiple of the block, key padding (empty, mid-block, full), GQA, Dqk != Dv and a custom scale.
TEST(ReferenceHypercube, EqualsSoftmaxWithTheExpandedGraph) {
  std::uint64_t seed = 100;
  for (Index L : {1, 2, 3, 15, 16, 17, 33, 100, 129})
    for (Index block : {1, 2, 4, 7, 16, 200}) {
      Prob p = random_prob(L, block, seed++, 3, 4, 2, 6, 5);
      p.key_lengths = {L, L / 2 + (L > 4 ? 1 : 0), 0};
      EXPECT_TRUE(same(p, p.run(), p.softmax_with_closed_form(), "expanded graph"));
    }
  Prob p = random_prob(40, 4, seed++, 1, 2, 1, 8, 8);
  p.config.scale = 0.37;
  EXPECT_TRUE(same(p, p.run(), p.softmax_with_closed_form(), "custom scale"));
}

// The blhd layout is a transpose of the same computation.
TEST(ReferenceHypercube, BlhdLayoutIsATranspose) {
  Prob p = random_prob(37, 4, 200, 2, 4, 2, 5, 3);
  p.key_lengths = {37, 13};
  const auto a = p.run(Layout::bhld), b = p.run(Layout::blhd);
  EXPECT_EQ(a.out, b.out);
  EXPECT_EQ(a.lse, b.lse);
}

// Grouped query heads read kv head h / (H / Hkv): the same as MHA with the kv heads repeated.
TEST(ReferenceHypercube, GroupedQueryHeadsShareKvHeads) {
  Prob g = random_prob(23, 2, 300, 2, 6, 2, 4, 3);
  g.key_lengths = {23, 9};
  Prob m = g;
  m.Hkv = 6;
  m.k.clear();
  m.v.clear();
  for (Index b = 0; b < 2; ++b)
    for (Index h = 0; h < 6; ++h) {
      const Index hk = h / 3;
      m.k.insert(m.k.end(), g.k.begin() + (b * 2 + hk) * 23 * 4, g.k.begin() + (b * 2 + hk + 1) * 23 * 4);
      m.v.insert(m.v.end(), g.v.begin() + (b * 2 + hk) * 23 * 3, g.v.begin() + (b * 2 + hk + 1) * 23 * 3);
    }
  EXPECT_TRUE(same(g, g.run(), m.run(), "GQA vs repeated heads"));
}

// The cases where the graph is complete: one node (N = 1: block >= L) or two (N = 2: L <= 2 block),
// so the reference is exact softmax; also L = 2 at token level.
TEST(ReferenceHypercube, OneOrTwoNodesAreFullAttention) {
  std::uint64_t seed = 400;
  for (Index block : {1, 3, 4, 16})
    for (Index L = 1; L <= 2 * block; ++L) {
      Prob p = random_prob(L, block, seed++, 2, 2, 1, 5, 4);
      p.key_lengths = {L, (L + 1) / 2};
      EXPECT_TRUE(same(p, p.run(), p.full_softmax(), "N <= 2"));
    }
  // Three nodes are not complete: node 0 and node 2 are not adjacent, so the result differs.
  Prob p = random_prob(9, 3, seed++);
  const auto got = p.run(), full = p.full_softmax();
  EXPECT_GT(max_abs_diff(got.out, full.out), 1e-3);
}

// L = 1: the single query sees its own key, so out = v and lse = scale q.k.
TEST(ReferenceHypercube, OneTokenCopiesV) {
  for (Index block : {1, 16}) {
    Prob p = random_prob(1, block, 500, 2, 2, 1, 4, 3);
    const auto r = p.run();
    for (Index b = 0; b < 2; ++b)
      for (Index h = 0; h < 2; ++h) {
        double s = 0;
        for (Index d = 0; d < 4; ++d) s += p.q[ix((b * 2 + h) * 4 + d)] * p.k[ix(b * 4 + d)];
        EXPECT_NEAR(r.lse[ix(b * 2 + h)], s / 2.0, 1e-14);
        for (Index d = 0; d < 3; ++d) EXPECT_EQ(r.out[ix((b * 2 + h) * 3 + d)], p.v[ix(b * 3 + d)]);
      }
    p.key_lengths = {0, 1};
    const auto padded = p.run();
    for (Index d = 0; d < 6; ++d) EXPECT_EQ(padded.out[ix(d)], 0.0);
    EXPECT_EQ(padded.lse[0], kNegInf);
    EXPECT_EQ(padded.lse[1], kNegInf);
  }
}

// Attention rows sum to one: V = 1 gives ones, a constant V gives that constant, for rows that see
// any key; rows that see none are 0 with lse -inf.
TEST(ReferenceHypercube, RowsSumToOne) {
  for (Index block : {1, 4}) {
    Prob p = random_prob(45, block, 600, 2, 2, 1, 8, 3, 2.0);
    p.key_lengths = {45, 10};
    for (Index j = 0; j < p.B * p.Hkv * p.L; ++j)
      for (Index d = 0; d < 3; ++d) p.v[ix(j * 3 + d)] = 0.5 + static_cast<double>(d);
    const auto r = p.run();
    const Visible vis = visibility(45, block, {45, 10});
    for (Index b = 0; b < 2; ++b)
      for (Index h = 0; h < 2; ++h)
        for (Index t = 0; t < 45; ++t) {
          const bool sees = b == 0 || !vis[ix(t)].empty();
          for (Index d = 0; d < 3; ++d)
            EXPECT_NEAR(r.out[ix(((b * 2 + h) * 45 + t) * 3 + d)], sees ? 0.5 + static_cast<double>(d) : 0.0, 1e-14)
                << "b " << b << " t " << t;
          if (!sees) {
            EXPECT_EQ(r.lse[ix((b * 2 + h) * 45 + t)], kNegInf);
          }
        }
  }
}

// Token level: a one-hot V at key u reaches exactly the rows Nbr(u) (the graph is symmetric), and
// every other row is exactly 0.
TEST(ReferenceHypercube, OneHotValueReachesExactlyItsNeighbours) {
  for (Index L : {16, 23}) {
    for (Index u : {Index{0}, Index{5}, L - 1}) {
      Prob p = random_prob(L, 1, 700 + static_cast<std::uint64_t>(u), 1, 1, 1, 4, 1);
      std::fill(p.v.begin(), p.v.end(), 0.0);
      p.v[ix(u)] = 1.0;
      const auto r = p.run();
      const auto nbr = effattn::hypercube_neighbours(u, L);
      for (Index t = 0; t < L; ++t) {
        const bool adjacent = std::find(nbr.begin(), nbr.end(), t) != nbr.end();
        if (adjacent) {
          EXPECT_GT(r.out[ix(t)], 0.0) << "L " << L << " u " << u << " t " << t;
        } else {
          EXPECT_EQ(r.out[ix(t)], 0.0) << "L " << L << " u " << u << " t " << t;
        }
      }
    }
  }
}

// Padded keys never reach an output: changing their k and v changes nothing, bit for bit.
TEST(ReferenceHypercube, PaddedKeysAreInvisible) {
  Prob p = random_prob(30, 4, 800, 2, 2, 1, 5, 3);
  p.key_lengths = {30, 11};
  Prob other = p;
  Rng rng(801);
  for (Index j = 11; j < 30; ++j) {
    for (Index d = 0; d < 5; ++d) other.k_at(1, 0, j, d) = 3 * rng.normal();
    for (Index d = 0; d < 3; ++d) other.v_at(1, 0, j, d) = 5 * rng.normal();
  }
  const auto a = p.run(), b = other.run();
  EXPECT_EQ(a.out, b.out);
  EXPECT_EQ(a.lse, b.lse);
}

TEST(ReferenceHypercube, Refusals) {
  std::vector<double> buf(4096, 0.5), out(4096);
  const ConstTensor4<double> q(buf.data(), 1, 2, 8, 4), k(buf.data(), 1, 2, 8, 4), v(buf.data(), 1, 2, 8, 3);
  const Tensor4<double> o(out.data(), 1, 2, 8, 3);
  const auto call = [&](const Mask& m, HypercubeConfig c = {}) {
    effattn::reference::hypercube_attention<double>(q, k, v, o, m, c);
  };
  EXPECT_NO_THROW(call({}));
  Mask causal;
  causal.causal = Causal::top_left;
  EXPECT_THROW(call(causal), effattn::unsupported_error);
  Mask window;
  window.window = {2, 2};
  EXPECT_THROW(call(window), effattn::unsupported_error);
  const std::unique_ptr<bool[]> keep(new bool[64]());
  Mask bias;
  bias.bias = effattn::Bias::boolean(keep.get(), {1, 1, 8, 8});
  EXPECT_THROW(call(bias), effattn::unsupported_error);
  const std::vector<Index> cu{0, 3, 8};
  Mask packed;
  packed.cu_seqlens_q = cu;
  packed.cu_seqlens_k = cu;
  EXPECT_THROW(call(packed), effattn::unsupported_error);
  EXPECT_THROW(call({}, HypercubeConfig{.block = 0}), effattn::config_error);
  EXPECT_THROW(call({}, HypercubeConfig{.block = 4, .scale = std::numeric_limits<double>::infinity()}),
               effattn::config_error);
  // Cross-attention: the graph is over one sequence.
  const ConstTensor4<double> k6(buf.data(), 1, 2, 6, 4), v6(buf.data(), 1, 2, 6, 3);
  EXPECT_THROW(effattn::reference::hypercube_attention<double>(q, k6, v6, o, {}, {}), effattn::unsupported_error);
  // Shapes.
  EXPECT_THROW(effattn::reference::hypercube_attention<double>(q, k, v, Tensor4<double>(out.data(), 1, 2, 8, 4), {}, {}),
               effattn::shape_error);
  EXPECT_THROW(effattn::reference::hypercube_attention<double>(q, ConstTensor4<double>(buf.data(), 1, 2, 8, 5), v, o, {}, {}),
               effattn::shape_error);
  EXPECT_THROW(effattn::reference::hypercube_attention<double>(ConstTensor4<double>(buf.data(), 1, 3, 8, 4), k, v,
                                                               Tensor4<double>(out.data(), 1, 3, 8, 3), {}, {}),
               effattn::shape_error);
  const std::vector<Index> lens{9};
  Mask too_long;
  too_long.key_lengths = lens;
  EXPECT_THROW(call(too_long), effattn::shape_error);
  const std::vector<Index> two{8, 8};
  Mask wrong_b;
  wrong_b.key_lengths = two;
  EXPECT_THROW(call(wrong_b), effattn::shape_error);
  std::vector<double> lse(16);
  EXPECT_THROW(effattn::reference::hypercube_attention<double>(q, k, v, o, {}, {}, Layout::bhld,
                                                               Tensor3<double>(lse.data(), 1, 2, 7)),
               effattn::shape_error);
  EXPECT_THROW((void)effattn::reference::hypercube_adjacency(-1), effattn::shape_error);
}

// Empty extents: nothing to do and nothing thrown (L = 0, B = 0, D = 0 with lse written).
TEST(ReferenceHypercube, EmptyExtents) {
  std::vector<double> buf(64, 0.5), out(64, -7.0), lse(8, -7.0);
  EXPECT_NO_THROW(effattn::reference::hypercube_attention<double>(
      ConstTensor4<double>(buf.data(), 1, 1, 0, 4), ConstTensor4<double>(buf.data(), 1, 1, 0, 4),
      ConstTensor4<double>(buf.data(), 1, 1, 0, 3), Tensor4<double>(out.data(), 1, 1, 0, 3), {}, {}));
  EXPECT_NO_THROW(effattn::reference::hypercube_attention<double>(
      ConstTensor4<double>(buf.data(), 0, 1, 5, 4), ConstTensor4<double>(buf.data(), 0, 1, 5, 4),
      ConstTensor4<double>(buf.data(), 0, 1, 5, 3), Tensor4<double>(out.data(), 0, 1, 5, 3), {}, {}));
  // Dqk = 0: every logit is 0, so out is the mean of the visible values and lse the log of their count.
  std::vector<double> v{1.0, 2.0, 4.0};
  effattn::reference::hypercube_attention<double>(
      ConstTensor4<double>(buf.data(), 1, 1, 3, 0), ConstTensor4<double>(buf.data(), 1, 1, 3, 0),
      ConstTensor4<double>(v.data(), 1, 1, 3, 1), Tensor4<double>(out.data(), 1, 1, 3, 1), {}, {.block = 1},
      Layout::bhld, Tensor3<double>(lse.data(), 1, 1, 3));
  EXPECT_DOUBLE_EQ(out[0], 1.5);
  EXPECT_DOUBLE_EQ(out[1], 7.0 / 3);
  EXPECT_DOUBLE_EQ(out[2], 3.0);
  EXPECT_DOUBLE_EQ(lse[1], std::log(3.0));
}

}  // namespace
}  // namespace effattn_test
