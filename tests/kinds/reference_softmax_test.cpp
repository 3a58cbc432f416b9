// The double-precision reference itself: against PyTorch's golden outputs, against hand-written
// visibility tables for every mask rule, and against equivalent formulations (padding = truncation,
// packed = separate calls, ALiBi = an additive bias, GQA = repeated heads). Every kernel test trusts
// this file.

#include <cmath>
#include <limits>
#include <numbers>
#include <vector>

#include <gtest/gtest.h>

#include <effattn/reference/softmax.hpp>

#include "support/compare.hpp"
#include "support/golden.hpp"
#include "support/softmax_case.hpp"

namespace effattn_test {
namespace {

using effattn::ConstTensor4;
using effattn::Mask;
using effattn::SoftmaxConfig;
using effattn::Tensor3;
using effattn::Tensor4;
using effattn::Window;
using Visible = std::vector<std::vector<Index>>;  // per query, the keys it sees

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// With all logits equal and v[j] = e_j, out[i] is the uniform distribution over the keys query i
// sees, which reads the visibility rule straight off the reference.
Visible visibility(Index Lq, Index Lk, const Mask& mask, const SoftmaxConfig& config = {}, Index B = 1, Index b = 0) {
  std::vector<double> q(static_cast<std::size_t>(B * Lq), 0.0), k(static_cast<std::size_t>(B * Lk), 0.0);
  std::vector<double> v(static_cast<std::size_t>(B * Lk * Lk), 0.0);
  for (Index bb = 0; bb < B; ++bb)
    for (Index j = 0; j < Lk; ++j) v[static_cast<std::size_t>((bb * Lk + j) * Lk + j)] = 1.0;
  std::vector<double> out(static_cast<std::size_t>(B * Lq * Lk), -1.0), lse(static_cast<std::size_t>(B * Lq));
  effattn::reference::softmax_attention<double>(ConstTensor4<double>(q.data(), B, 1, Lq, 1), ConstTensor4<double>(k.data(), B, 1, Lk, 1),
                                                ConstTensor4<double>(v.data(), B, 1, Lk, Lk), Tensor4<double>(out.data(), B, 1, Lq, Lk),
                                                mask, config, effattn::Layout::bhld, Tensor3<double>(lse.data(), B, 1, Lq));
  Visible vis(static_cast<std::size_t>(Lq));
  for (Index i = 0; i < Lq; ++i) {
    const double* row = &out[static_cast<std::size_t>((b * Lq + i) * Lk)];
    for (Index j = 0; j < Lk; ++j)
      if (row[j] != 0.0) vis[static_cast<std::size_t>(i)].push_back(j);
    const double n = static_cast<double>(vis[static_cast<std::size_t>(i)].size());
    for (Index j : vis[static_cast<std::size_t>(i)]) EXPECT_NEAR(row[j], 1.0 / n, 1e-15) << "query " << i << " key " << j;
    // Uniform zero logits: lse = log(count), or -inf when nothing is visible.
    EXPECT_EQ(lse[static_cast<std::size_t>(b * Lq + i)], n > 0 ? std::log(n) : kNegInf) << "query " << i;
  }
  return vis;
}

SoftmaxConfig config(std::optional<double> scale = {}, double softcap = 0, std::vector<double> slopes = {}) {
  SoftmaxConfig c;
  c.scale = scale;
  c.softcap = softcap;
  c.alibi_slopes = std::move(slopes);
  return c;
}

Mask causal_mask(effattn::Causal c, Window w = {}) {
  Mask m;
  m.causal = c;
  m.window = w;
  return m;
}

TEST(ReferenceSoftmax, CausalAlignmentTables) {
  // Lq = 2 < Lk = 4: top-left puts query i on key i, bottom-right on key i + 2.
  EXPECT_EQ(visibility(2, 4, causal_mask(Causal::top_left)), (Visible{{0}, {0, 1}}));
  EXPECT_EQ(visibility(2, 4, causal_mask(Causal::bottom_right)), (Visible{{0, 1, 2}, {0, 1, 2, 3}}));
  // Lq = 4 > Lk = 2: bottom-right leaves the first two queries with nothing.
  EXPECT_EQ(visibility(4, 2, causal_mask(Causal::top_left)), (Visible{{0}, {0, 1}, {0, 1}, {0, 1}}));
  EXPECT_EQ(visibility(4, 2, causal_mask(Causal::bottom_right)), (Visible{{}, {}, {0}, {0, 1}}));
  EXPECT_EQ(visibility(2, 3, causal_mask(Causal::none)), (Visible{{0, 1, 2}, {0, 1, 2}}));
}

TEST(ReferenceSoftmax, WindowTables) {
  // Without causal, the window is centred on the bottom-right diagonal (query i at key i + Lk - Lq).
  EXPECT_EQ(visibility(2, 5, causal_mask(Causal::none, {1, 0})), (Visible{{2, 3}, {3, 4}}));
  EXPECT_EQ(visibility(3, 3, causal_mask(Causal::none, {0, 0})), (Visible{{0}, {1}, {2}}));
  EXPECT_EQ(visibility(3, 4, causal_mask(Causal::none, {-1, 1})), (Visible{{0, 1, 2}, {0, 1, 2, 3}, {0, 1, 2, 3}}));
  EXPECT_EQ(visibility(3, 4, causal_mask(Causal::none, {1, -1})), (Visible{{0, 1, 2, 3}, {1, 2, 3}, {2, 3}}));
  // With causal, the right side is capped by the diagonal; top-left measures from key i.
  EXPECT_EQ(visibility(3, 5, causal_mask(Causal::top_left, {1, 3})), (Visible{{0}, {0, 1}, {1, 2}}));
  EXPECT_EQ(visibility(3, 5, causal_mask(Causal::bottom_right, {1, 3})), (Visible{{1, 2}, {2, 3}, {3, 4}}));
  EXPECT_EQ(visibility(3, 5, causal_mask(Causal::bottom_right, {0, 0})), (Visible{{2}, {3}, {4}}));
  EXPECT_EQ(visibility(4, 2, causal_mask(Causal::none, {0, 0})), (Visible{{}, {}, {0}, {1}}));
}

TEST(ReferenceSoftmax, KeyLengthTables) {
  const std::vector<Index> lens{3, 0, 5};
  Mask m = causal_mask(Causal::bottom_right);
  m.key_lengths = lens;
  // Each batch aligns to its own valid length: Lq = 2 against 3, 0 and 5 keys.
  EXPECT_EQ(visibility(2, 5, m, {}, 3, 0), (Visible{{0, 1}, {0, 1, 2}}));
  EXPECT_EQ(visibility(2, 5, m, {}, 3, 1), (Visible{{}, {}}));
  EXPECT_EQ(visibility(2, 5, m, {}, 3, 2), (Visible{{0, 1, 2, 3}, {0, 1, 2, 3, 4}}));
  m.causal = Causal::top_left;
  EXPECT_EQ(visibility(2, 5, m, {}, 3, 0), (Visible{{0}, {0, 1}}));
}

TEST(ReferenceSoftmax, PackedTables) {
  // Sequences: q [0,2) x k [0,3); q [2,2) x k [3,4) (no queries); q [2,4) x k [4,4) (no keys);
  // q [4,5) x k [4,6). Query 5 belongs to no sequence.
  const std::vector<Index> cu_q{0, 2, 2, 4, 5}, cu_k{0, 3, 4, 4, 6};
  Mask m;
  m.cu_seqlens_q = cu_q;
  m.cu_seqlens_k = cu_k;
  EXPECT_EQ(visibility(6, 7, m), (Visible{{0, 1, 2}, {0, 1, 2}, {}, {}, {4, 5}, {}}));
  m.causal = Causal::bottom_right;
  EXPECT_EQ(visibility(6, 7, m), (Visible{{0, 1}, {0, 1, 2}, {}, {}, {4, 5}, {}}));
  m.causal = Causal::top_left;
  EXPECT_EQ(visibility(6, 7, m), (Visible{{0}, {0, 1}, {}, {}, {4}, {}}));
}

TEST(ReferenceSoftmax, BooleanBiasTable) {
  const bool keep[2][3] = {{true, false, true}, {false, false, false}};
  Mask m;
  m.bias = effattn::Bias::boolean(&keep[0][0], {1, 1, 2, 3});
  EXPECT_EQ(visibility(2, 3, m), (Visible{{0, 2}, {}}));
}

TEST(ReferenceSoftmax, ScoreModifiersByHand) {
  // One query, keys k = [2, 0], v = e_j: out = softmax of the two logits.
  const double q[1] = {1.0}, k[2] = {2.0, 0.0}, v[4] = {1, 0, 0, 1};
  double out[2], lse[1];
  const auto run = [&](const SoftmaxConfig& config, const Mask& mask = {}) {
    effattn::reference::softmax_attention<double>(ConstTensor4<double>(q, 1, 1, 1, 1), ConstTensor4<double>(k, 1, 1, 2, 1),
                                                  ConstTensor4<double>(v, 1, 1, 2, 2), Tensor4<double>(out, 1, 1, 1, 2), mask,
                                                  config, effattn::Layout::bhld, Tensor3<double>(lse, 1, 1, 1));
  };
  const auto expect_logits = [&](double s0, double s1) {
    const double z = std::exp(s0) + std::exp(s1);
    EXPECT_NEAR(out[0], std::exp(s0) / z, 1e-15);
    EXPECT_NEAR(out[1], std::exp(s1) / z, 1e-15);
    EXPECT_NEAR(lse[0], std::log(z), 1e-15);
  };
  run(config());  // default scale 1/sqrt(Dqk) = 1
  expect_logits(2.0, 0.0);
  run(config(0.25));
  expect_logits(0.5, 0.0);
  run(config({}, 1.5));
  expect_logits(1.5 * std::tanh(2.0 / 1.5), 0.0);
  // ALiBi after softcap; causal none measures from the bottom-right diagonal: query 0 sits on key 1.
  run(config({}, 1.5, {0.75}));
  expect_logits(1.5 * std::tanh(2.0 / 1.5) - 0.75, 0.0);
  // top_left puts query 0 on key 0, so key 1 is at distance 1, but causal then hides key 1.
  run(config({}, 0, {0.75}), causal_mask(Causal::top_left, {}));
  EXPECT_NEAR(out[0], 1.0, 1e-15);
  EXPECT_NEAR(lse[0], 2.0, 1e-15);
  // Additive bias comes after scale, softcap and ALiBi.
  const double add[2] = {-1.0, 0.5};
  Mask m;
  m.bias = effattn::Bias::additive(add, {1, 1, 1, 2});
  run(config(0.5, 0, {0.25}), m);
  expect_logits(1.0 - 0.25 - 1.0, 0.5);
}

TEST(ReferenceSoftmax, GroupedQueryHeadsShareKvHeads) {
  // H = 4 over Hkv = 2: query heads 0,1 read kv head 0 (v = 1) and heads 2,3 read kv head 1 (v = 2).
  const std::vector<double> q(4 * 3, 0.5), k(2 * 5, 0.1);
  std::vector<double> v(2 * 5, 1.0);
  std::fill(v.begin() + 5, v.end(), 2.0);
  std::vector<double> out(4 * 3);
  effattn::reference::softmax_attention<double>(ConstTensor4<double>(q.data(), 1, 4, 3, 1), ConstTensor4<double>(k.data(), 1, 2, 5, 1),
                                                ConstTensor4<double>(v.data(), 1, 2, 5, 1), Tensor4<double>(out.data(), 1, 4, 3, 1));
  for (Index h = 0; h < 4; ++h)
    for (Index i = 0; i < 3; ++i) EXPECT_DOUBLE_EQ(out[static_cast<std::size_t>(h * 3 + i)], h < 2 ? 1.0 : 2.0);
}

// Copies rows [l0, l1) of batch b, every head, of a bhld tensor into a packed [1, H, l1-l0, D] one.
std::vector<double> rows_of(const Buffer<double>& t, Index H, Index L, Index D, Index b, Index l0, Index l1) {
  std::vector<double> r;
  for (Index h = 0; h < H; ++h)
    for (Index l = l0; l < l1; ++l)
      for (Index d = 0; d < D; ++d) r.push_back(t[((b * H + h) * L + l) * D + d]);
  return r;
}

TEST(ReferenceSoftmax, PaddingEqualsTruncation) {
  CaseSpec s{.B = 3, .H = 2, .Hkv = 1, .Lq = 5, .Lk = 9, .Dqk = 4, .Dv = 3, .causal = Causal::bottom_right,
             .window = {3, 1}, .key_lengths = {9, 4, 0}, .seed = 11};
  s.config.alibi_slopes = {0.5, 0.125};
  const auto in = make_inputs<double>(s);
  const RefResult full = reference(in);
  for (Index b = 0; b < s.B; ++b) {
    const Index len = s.key_lengths[static_cast<std::size_t>(b)];
    const auto q = rows_of(in.q, s.H, s.Lq, s.Dqk, b, 0, s.Lq);
    const auto k = rows_of(in.k, s.Hkv, s.Lk, s.Dqk, b, 0, len);
    const auto v = rows_of(in.v, s.Hkv, s.Lk, s.Dv, b, 0, len);
    std::vector<double> out(static_cast<std::size_t>(s.H * s.Lq * s.Dv)), lse(static_cast<std::size_t>(s.H * s.Lq));
    Mask m = causal_mask(s.causal, s.window);
    effattn::reference::softmax_attention<double>(
        ConstTensor4<double>(q.data(), 1, s.H, s.Lq, s.Dqk), ConstTensor4<double>(k.data(), 1, s.Hkv, len, s.Dqk),
        ConstTensor4<double>(v.data(), 1, s.Hkv, len, s.Dv), Tensor4<double>(out.data(), 1, s.H, s.Lq, s.Dv), m, s.config,
        effattn::Layout::bhld, Tensor3<double>(lse.data(), 1, s.H, s.Lq));
    EXPECT_TRUE(all_close("out", out.data(), &full.out[static_cast<std::size_t>(b * s.H * s.Lq * s.Dv)], {s.H, s.Lq, s.Dv},
                          "[h,i,d]", {0, 0}, s.describe()));
    EXPECT_TRUE(all_close("lse", lse.data(), &full.lse[static_cast<std::size_t>(b * s.H * s.Lq)], {s.H, s.Lq}, "[h,i]", {0, 0},
                          s.describe()));
  }
}

TEST(ReferenceSoftmax, PackedEqualsSeparateSequences) {
  for (Causal causal : {Causal::none, Causal::top_left, Causal::bottom_right}) {
    CaseSpec s{.B = 1, .H = 2, .Hkv = 2, .Lq = 14, .Lk = 17, .Dqk = 5, .Dv = 2, .causal = causal, .window = {2, 1},
               .cu_q = {0, 3, 3, 10, 13}, .cu_k = {0, 5, 6, 6, 15}, .seed = 12};
    s.config.alibi_slopes = {0.3, 0.7};
    const auto in = make_inputs<double>(s);
    const RefResult full = reference(in);
    for (std::size_t seq = 0; seq + 1 < s.cu_q.size(); ++seq) {
      const Index q0 = s.cu_q[seq], q1 = s.cu_q[seq + 1], k0 = s.cu_k[seq], k1 = s.cu_k[seq + 1];
      const auto q = rows_of(in.q, s.H, s.Lq, s.Dqk, 0, q0, q1);
      const auto k = rows_of(in.k, s.Hkv, s.Lk, s.Dqk, 0, k0, k1);
      const auto v = rows_of(in.v, s.Hkv, s.Lk, s.Dv, 0, k0, k1);
      std::vector<double> out(static_cast<std::size_t>(s.H * (q1 - q0) * s.Dv)), lse(static_cast<std::size_t>(s.H * (q1 - q0)));
      effattn::reference::softmax_attention<double>(
          ConstTensor4<double>(q.data(), 1, s.H, q1 - q0, s.Dqk), ConstTensor4<double>(k.data(), 1, s.Hkv, k1 - k0, s.Dqk),
          ConstTensor4<double>(v.data(), 1, s.Hkv, k1 - k0, s.Dv), Tensor4<double>(out.data(), 1, s.H, q1 - q0, s.Dv),
          causal_mask(causal, s.window), s.config, effattn::Layout::bhld, Tensor3<double>(lse.data(), 1, s.H, q1 - q0));
      for (Index h = 0; h < s.H; ++h)
        for (Index i = q0; i < q1; ++i) {
          EXPECT_EQ(lse[static_cast<std::size_t>(h * (q1 - q0) + i - q0)], full.lse[static_cast<std::size_t>(h * s.Lq + i)])
              << s.describe() << " h=" << h << " i=" << i;
          for (Index d = 0; d < s.Dv; ++d)
            EXPECT_EQ(out[static_cast<std::size_t>((h * (q1 - q0) + i - q0) * s.Dv + d)],
                      full.out[static_cast<std::size_t>((h * s.Lq + i) * s.Dv + d)])
                << s.describe() << " h=" << h << " i=" << i;
        }
    }
    // Query 13 belongs to no sequence.
    for (Index h = 0; h < s.H; ++h) EXPECT_EQ(full.lse[static_cast<std::size_t>(h * s.Lq + 13)], kNegInf);
  }
}

TEST(ReferenceSoftmax, AlibiEqualsAdditiveBias) {
  for (Causal causal : {Causal::none, Causal::top_left, Causal::bottom_right})
    for (auto [lq, lk] : {std::pair<Index, Index>{4, 9}, {9, 4}}) {
      CaseSpec s{.B = 2, .H = 3, .Hkv = 3, .Lq = lq, .Lk = lk, .Dqk = 6, .Dv = 4, .causal = causal, .seed = 13};
      s.config.alibi_slopes = alibi_slopes(s.H);
      auto in = make_inputs<double>(s);
      const RefResult with_alibi = reference(in);
      // The same logits as ALiBi, spelled as the bias -slope[h] * |i + shift - j|.
      const Index shift = causal == Causal::top_left ? 0 : lk - lq;
      in.spec.config.alibi_slopes.clear();
      in.spec.bias = BiasKind::additive_f64;
      in.bias_f64 = Buffer<double>(s.B * s.H * lq * lk);
      for (Index b = 0; b < s.B; ++b)
        for (Index h = 0; h < s.H; ++h)
          for (Index i = 0; i < lq; ++i)
            for (Index j = 0; j < lk; ++j)
              in.bias_f64[((b * s.H + h) * lq + i) * lk + j] =
                  -s.config.alibi_slopes[static_cast<std::size_t>(h)] * static_cast<double>(std::abs(i + shift - j));
      const RefResult with_bias = reference(in);
      EXPECT_TRUE(all_close("out", with_bias.out.data(), with_alibi.out.data(), {s.B, s.H, lq, s.Dv}, "[b,h,i,d]",
                            {1e-15, 1e-14}, s.describe()));
      EXPECT_TRUE(all_close("lse", with_bias.lse.data(), with_alibi.lse.data(), {s.B, s.H, lq}, "[b,h,i]", {1e-15, 1e-14},
                            s.describe()));
    }
}

TEST(ReferenceSoftmax, BlhdLayoutIsATranspose) {
  CaseSpec s{.B = 2, .H = 3, .Hkv = 3, .Lq = 5, .Lk = 7, .Dqk = 4, .Dv = 3, .causal = Causal::bottom_right, .seed = 14};
  const auto in = make_inputs<double>(s);
  const RefResult ref = reference(in);
  // Re-store q, k, v as [B, L, H, D].
  const auto transpose = [](const Buffer<double>& t, Index B, Index H, Index L, Index D) {
    Buffer<double> r(B * H * L * D);
    for (Index b = 0; b < B; ++b)
      for (Index h = 0; h < H; ++h)
        for (Index l = 0; l < L; ++l)
          for (Index d = 0; d < D; ++d) r[((b * L + l) * H + h) * D + d] = t[((b * H + h) * L + l) * D + d];
    return r;
  };
  Inputs<double> t;
  t.spec = s;
  t.spec.layout = Layout::blhd;
  t.q = transpose(in.q, s.B, s.H, s.Lq, s.Dqk);
  t.k = transpose(in.k, s.B, s.Hkv, s.Lk, s.Dqk);
  t.v = transpose(in.v, s.B, s.Hkv, s.Lk, s.Dv);
  const RefResult rt = reference(t);
  for (Index b = 0; b < s.B; ++b)
    for (Index h = 0; h < s.H; ++h)
      for (Index i = 0; i < s.Lq; ++i) {
        EXPECT_EQ(rt.lse[static_cast<std::size_t>((b * s.H + h) * s.Lq + i)], ref.lse[static_cast<std::size_t>((b * s.H + h) * s.Lq + i)]);
        for (Index d = 0; d < s.Dv; ++d)
          EXPECT_EQ(rt.out[static_cast<std::size_t>(((b * s.Lq + i) * s.H + h) * s.Dv + d)],
                    ref.out[static_cast<std::size_t>(((b * s.H + h) * s.Lq + i) * s.Dv + d)]);
      }
}

TEST(ReferenceSoftmax, BroadcastBiasEqualsExpandedBias) {
  for (std::array<Index, 4> shape : {std::array<Index, 4>{1, 1, 4, 6}, {2, 1, 1, 6}, {1, 3, 1, 6}, {2, 3, 4, 6}})
    for (BiasKind kind : {BiasKind::boolean, BiasKind::additive_f32, BiasKind::additive_f64}) {
      CaseSpec s{.B = 2, .H = 3, .Hkv = 3, .Lq = 4, .Lk = 6, .Dqk = 3, .Dv = 2, .bias = kind, .bias_shape = shape, .seed = 15};
      auto in = make_inputs<double>(s);
      const RefResult broadcast = reference(in);
      Inputs<double> full = make_inputs<double>(s);
      full.spec.bias_shape = {};
      const Index n = s.B * s.H * s.Lq * s.Lk;
      full.keep = Buffer<bool>(n);
      full.bias_f32 = Buffer<float>(n);
      full.bias_f64 = Buffer<double>(n);
      const effattn::Bias small = in.mask().bias;
      for (Index b = 0; b < s.B; ++b)
        for (Index h = 0; h < s.H; ++h)
          for (Index i = 0; i < s.Lq; ++i)
            for (Index j = 0; j < s.Lk; ++j) {
              const Index dst = ((b * s.H + h) * s.Lq + i) * s.Lk + j, src = small.row_offset(b, h, i) + j;
              if (kind == BiasKind::boolean) full.keep[dst] = in.keep[src];
              if (kind == BiasKind::additive_f32) full.bias_f32[dst] = in.bias_f32[src];
              if (kind == BiasKind::additive_f64) full.bias_f64[dst] = in.bias_f64[src];
            }
      const RefResult expanded = reference(full);
      EXPECT_TRUE(all_close("out", broadcast.out.data(), expanded.out.data(), {s.B, s.H, s.Lq, s.Dv}, "[b,h,i,d]", {0, 0},
                            s.describe()));
    }
}

TEST(ReferenceSoftmax, EmptyExtents) {
  // Lk = 0: every query sees nothing. Lq = 0: nothing to write.
  std::vector<double> q(2 * 3 * 4, 1.0), out(2 * 3 * 2, 7.0), lse(2 * 3, 7.0);
  effattn::reference::softmax_attention<double>(ConstTensor4<double>(q.data(), 2, 1, 3, 4), ConstTensor4<double>(nullptr, 2, 1, 0, 4),
                                                ConstTensor4<double>(nullptr, 2, 1, 0, 2), Tensor4<double>(out.data(), 2, 1, 3, 2), {},
                                                {}, effattn::Layout::bhld, Tensor3<double>(lse.data(), 2, 1, 3));
  for (double x : out) EXPECT_EQ(x, 0.0);
  for (double x : lse) EXPECT_EQ(x, kNegInf);
  EXPECT_NO_THROW(effattn::reference::softmax_attention<double>(
      ConstTensor4<double>(nullptr, 2, 1, 0, 4), ConstTensor4<double>(q.data(), 2, 1, 3, 4), ConstTensor4<double>(q.data(), 2, 1, 3, 4),
      Tensor4<double>(nullptr, 2, 1, 0, 4), {}, {}, effattn::Layout::bhld, Tensor3<double>(nullptr, 2, 1, 0)));
}

TEST(ReferenceSoftmax, RefusesMismatchedShapes) {
  std::vector<double> buf(1000, 0.0), out(1000);
  const ConstTensor4<double> q(buf.data(), 1, 2, 3, 4);
  EXPECT_THROW(effattn::reference::softmax_attention<double>(q, ConstTensor4<double>(buf.data(), 1, 2, 3, 5), q,
                                                             Tensor4<double>(out.data(), 1, 2, 3, 4)),
               effattn::shape_error);
  EXPECT_THROW(effattn::reference::softmax_attention<double>(q, q, q, Tensor4<double>(out.data(), 1, 2, 4, 4)), effattn::shape_error);
  EXPECT_THROW(effattn::reference::softmax_attention<double>(q, ConstTensor4<double>(buf.data(), 1, 3, 3, 4),
                                                             ConstTensor4<double>(buf.data(), 1, 3, 3, 4),
                                                             Tensor4<double>(out.data(), 1, 2, 3, 4)),
               effattn::shape_error);
}

// ---- golden: PyTorch SDPA in float64 ----

template <class T>
class ReferenceGolden : public ::testing::Test {};
TYPED_TEST_SUITE(ReferenceGolden, Scalars);

// The golden inputs are float32 values stored as float64, so reading them as either T is exact and
// the reference must reproduce PyTorch's float64 result to the manifest's float64 threshold.
TYPED_TEST(ReferenceGolden, MatchesPyTorch) {
  using T = TypeParam;
  for (const GoldenSpec& spec : golden_specs()) {
    const GoldenCase g = load_golden(spec);
    const std::vector<T> q(g.q.data.begin(), g.q.data.end()), k(g.k.data.begin(), g.k.data.end()),
        v(g.v.data.begin(), g.v.data.end());
    const std::vector<float> bias32 = g.bias ? std::vector<float>(g.bias->data.begin(), g.bias->data.end()) : std::vector<float>{};
    const std::vector<Index> lens = g.key_lengths();
    const std::vector<Causal> alignments =
        spec.causal ? std::vector<Causal>{Causal::top_left, Causal::bottom_right} : std::vector<Causal>{Causal::none};
    for (Causal causal : alignments)
      for (int bias_as_f32 = 0; bias_as_f32 <= (g.bias ? 1 : 0); ++bias_as_f32) {
        Mask m;
        m.causal = causal;
        m.key_lengths = lens;
        if (g.bias) {
          const std::array<Index, 4> s{g.bias->dim(0), g.bias->dim(1), g.bias->dim(2), g.bias->dim(3)};
          m.bias = bias_as_f32 ? effattn::Bias::additive(bias32.data(), s) : effattn::Bias::additive(g.bias->data.data(), s);
        }
        std::vector<double> out(g.out.data.size()), lse(g.lse.data.size());
        effattn::reference::softmax_attention<T>(
            ConstTensor4<T>(q.data(), g.B(), g.H(), g.Lq(), g.D()), ConstTensor4<T>(k.data(), g.B(), g.H(), g.Lk(), g.D()),
            ConstTensor4<T>(v.data(), g.B(), g.H(), g.Lk(), g.Dv()), Tensor4<double>(out.data(), g.B(), g.H(), g.Lq(), g.Dv()), m,
            {}, effattn::Layout::bhld, Tensor3<double>(lse.data(), g.B(), g.H(), g.Lq()));
        const std::string context = std::string(spec.name) + (causal == Causal::bottom_right ? " causal=bottom_right" : "") +
                                    (bias_as_f32 ? " bias=f32" : "");
        EXPECT_TRUE(all_close("out", out.data(), g.out.data.data(), g.out.shape, "[b,h,i,d]",
                              {1e-10 * std::max(1.0, g.max_abs(g.out)), 0}, context));
        EXPECT_TRUE(all_close("lse", lse.data(), g.lse.data.data(), g.lse.shape, "[b,h,i]",
                              {1e-10 * std::max(1.0, g.max_abs(g.lse)), 0}, context));
      }
  }
}

}  // namespace
}  // namespace effattn_test
