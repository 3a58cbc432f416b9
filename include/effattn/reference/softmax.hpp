#pragma once
// Naive exact softmax attention in double precision: the semantics of SoftmaxAttention (see
// kinds/softmax.hpp) and of Mask (see core/mask.hpp), written as plainly as possible so that tests and
// users can check a fast kernel against it. It materialises one row of logits at a time, uses no SIMD
// and no Eigen products, and shares no masking code with the kernels (an independent statement of
// the rules is what makes a comparison meaningful). It is slow by design.

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "effattn/core/errors.hpp"
#include "effattn/core/mask.hpp"
#include "effattn/core/tensor.hpp"
#include "effattn/kinds/softmax.hpp"

EFFATTN_BEGIN_NAMESPACE

namespace reference {

namespace detail_ref {

// Element (b, h, l, d) of a rank-4 tensor stored in the given layout.
template <class V>
auto& at(const V& t, Layout layout, Index b, Index h, Index l, Index d) {
  if (layout == Layout::bhld)
    return t.data()[((b * t.dimension(1) + h) * t.dimension(2) + l) * t.dimension(3) + d];
  return t.data()[((b * t.dimension(1) + l) * t.dimension(2) + h) * t.dimension(3) + d];
}

// Element (b, h, i, j) of the bias, broadcast over its extents of size 1.
inline double bias_at(const Bias& bias, Index b, Index h, Index i, Index j) {
  const Index off = bias.row_offset(b, h, i) + j;
  switch (bias.kind()) {
    case Bias::Kind::boolean: return static_cast<const bool*>(bias.data())[off] ? 1.0 : 0.0;
    case Bias::Kind::additive_f32: return static_cast<const float*>(bias.data())[off];
    case Bias::Kind::additive_f64: return static_cast<const double*>(bias.data())[off];
    case Bias::Kind::none: break;
  }
  return 0.0;
}

[[noreturn]] inline void fail(const char* what) { throw shape_error(std::string("reference::softmax_attention: ") + what); }

}  // namespace detail_ref

// out [B,H,Lq,Dv] (or [B,Lq,H,Dv] for Layout::blhd) and, if given, lse [B,H,Lq].
template <class T>
void softmax_attention(ConstTensor4<T> q, ConstTensor4<T> k, ConstTensor4<T> v, Tensor4<double> out,
                       const Mask& mask = {}, const SoftmaxConfig& config = {}, Layout layout = Layout::bhld,
                       std::optional<Tensor3<double>> lse = {}) {
  using detail_ref::at;
  const auto eq = effattn::detail::bhld_extents(q, layout);
  const auto ek = effattn::detail::bhld_extents(k, layout);
  const auto ev = effattn::detail::bhld_extents(v, layout);
  const auto eo = effattn::detail::bhld_extents(out, layout);
  const Index B = eq[0], H = eq[1], Lq = eq[2], Dqk = eq[3];
  const Index Hkv = ek[1], Lk = ek[2], Dv = ev[3];
  if (ek[0] != B || ev[0] != B || ev[1] != Hkv || ev[2] != Lk || ek[3] != Dqk) detail_ref::fail("q, k, v extents disagree");
  if (eo[0] != B || eo[1] != H || eo[2] != Lq || eo[3] != Dv) detail_ref::fail("out has the wrong shape");
  if (H > 0 && (Hkv == 0 || H % Hkv != 0)) detail_ref::fail("H is not a multiple of Hkv");
  if (lse && (lse->dimension(0) != B || lse->dimension(1) != H || lse->dimension(2) != Lq))
    detail_ref::fail("lse has the wrong shape");
  if (!mask.key_lengths.empty() && static_cast<Index>(mask.key_lengths.size()) != B)
    detail_ref::fail("mask.key_lengths needs B entries");
  if (mask.packed() && (B != 1 || mask.cu_seqlens_k.size() != mask.cu_seqlens_q.size()))
    detail_ref::fail("packed sequences need B = 1 and cu_seqlens_q, cu_seqlens_k of equal size");
  if (!config.alibi_slopes.empty() && static_cast<Index>(config.alibi_slopes.size()) != H)
    detail_ref::fail("alibi_slopes needs H entries");
  if (mask.bias.present()) {
    const auto& s = mask.bias.shape();
    if ((s[0] != 1 && s[0] != B) || (s[1] != 1 && s[1] != H) || (s[2] != 1 && s[2] != Lq) || s[3] != Lk)
      detail_ref::fail("mask.bias does not broadcast to [B,H,Lq,Lk]");
  }

  const double scale = config.scale ? *config.scale : 1.0 / std::sqrt(static_cast<double>(std::max<Index>(Dqk, 1)));
  const double neg_inf = -std::numeric_limits<double>::infinity();
  const Index group = Hkv > 0 ? H / Hkv : 1;

  // Sequences as [q0, q1) x [k0, k1) ranges; queries that no sequence owns see no key.
  struct Seq {
    Index q0, q1, k0, k1;
  };
  std::vector<double> logits;  // [Lk] of one query

  for (Index b = 0; b < B; ++b) {
    std::vector<Seq> seqs;
    if (mask.packed()) {
      for (std::size_t s = 0; s + 1 < mask.cu_seqlens_q.size(); ++s)
        seqs.push_back({mask.cu_seqlens_q[s], mask.cu_seqlens_q[s + 1], mask.cu_seqlens_k[s], mask.cu_seqlens_k[s + 1]});
    } else {
      seqs.push_back({0, Lq, 0, mask.key_lengths.empty() ? Lk : mask.key_lengths[static_cast<std::size_t>(b)]});
    }
    for (Index h = 0; h < H; ++h) {
      const Index hk = h / group;
      // Start from "sees no key"; rows of a sequence overwrite it.
      for (Index i = 0; i < Lq; ++i) {
        for (Index d = 0; d < Dv; ++d) at(out, layout, b, h, i, d) = 0.0;
        if (lse) (*lse).data()[(b * H + h) * Lq + i] = neg_inf;
      }
      for (const Seq& seq : seqs) {
        const Index len_q = seq.q1 - seq.q0;
        const Index len_k = seq.k1 - seq.k0;
        // Where query i sits among the keys: bottom-right alignment puts the last query on the last
        // key. Causal top_left puts query i on key i; causal none has no diagonal of its own, and a
        // window or ALiBi then measures from the bottom-right one (FlashAttention's convention).
        const Index shift = mask.causal == Causal::top_left ? 0 : len_k - len_q;
        for (Index i = 0; i < len_q; ++i) {
          const Index gi = seq.q0 + i;  // global query index
          const Index pos = i + shift;  // aligned position of query i
          logits.assign(static_cast<std::size_t>(len_k), neg_inf);
          double row_max = neg_inf;
          for (Index j = 0; j < len_k; ++j) {
            const Index gj = seq.k0 + j;
            if (mask.causal != Causal::none && j > pos) continue;
            if (mask.window.left >= 0 && j < pos - mask.window.left) continue;
            if (mask.window.right >= 0 && j > pos + mask.window.right) continue;
            if (mask.bias.kind() == Bias::Kind::boolean && detail_ref::bias_at(mask.bias, b, h, gi, gj) == 0.0) continue;
            double s = 0;
            for (Index d = 0; d < Dqk; ++d)
              s += static_cast<double>(at(q, layout, b, h, gi, d)) * static_cast<double>(at(k, layout, b, hk, gj, d));
            s *= scale;
            if (config.softcap > 0) s = config.softcap * std::tanh(s / config.softcap);
            if (!config.alibi_slopes.empty())
              s -= config.alibi_slopes[static_cast<std::size_t>(h)] * static_cast<double>(std::abs(pos - j));
            if (mask.bias.present() && mask.bias.kind() != Bias::Kind::boolean)
              s += detail_ref::bias_at(mask.bias, b, h, gi, gj);
            logits[static_cast<std::size_t>(j)] = s;
            row_max = std::max(row_max, s);
          }
          // All keys masked (or an additive bias of -inf on each): the row stays 0 / -inf.
          if (row_max == neg_inf) continue;
          double sum = 0;
          for (double& s : logits) {
            s = s == neg_inf ? 0.0 : std::exp(s - row_max);
            sum += s;
          }
          for (Index d = 0; d < Dv; ++d) {
            double acc = 0;
            for (Index j = 0; j < len_k; ++j)
              if (logits[static_cast<std::size_t>(j)] != 0.0)
                acc += logits[static_cast<std::size_t>(j)] * static_cast<double>(at(v, layout, b, hk, seq.k0 + j, d));
            at(out, layout, b, h, gi, d) = acc / sum;
          }
          if (lse) (*lse).data()[(b * H + h) * Lq + gi] = row_max + std::log(sum);
        }
      }
    }
  }
}

}  // namespace reference

EFFATTN_END_NAMESPACE
