#pragma once
// Naive MRA-2 in double precision: the semantics of MraAttention (MraConfig and MraSelection in
// kinds/mra_config.hpp), written as plainly as possible so that tests and users can check the kernel
// against it. Nothing is shared with the kernel except the public config and selection types: block
// means are plain loops over tokens, the selection is a full sort of every block pair, and the output
// is one dense softmax per query row over the modified logits
//   S^_tu = scale q_t.k_u  if (I(t), I(u)) is selected,
//           C_I(t)I(u)     otherwise (full mode), -inf (sparse mode),
//           -inf           for a padded key u.
// It is slow by design: O(Lq * Lk * D) per head, the same as exact attention.
//
// Three entry points:
//  * mra_coarse: the block means' logits C_IJ = scale qbar_I . kbar_J and the real-token counts;
//  * mra_selection: the budget's highest-ranked pairs by (tier, P_IJ = C_IJ - max_J' C_IJ', -flat);
//  * mra_attention: the closed form from any selection (the kernel's report, or mra_selection's).
// Padding: keys u >= key_lengths[b] are padding; when Lq == Lk the same length pads the queries, whose
// output rows are 0 (LSE -inf) and which are left out of the query block means. When Lq != Lk every
// query is real.

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "effattn/core/errors.hpp"
#include "effattn/core/mask.hpp"
#include "effattn/core/tensor.hpp"
#include "effattn/kinds/mra_config.hpp"

EFFATTN_BEGIN_NAMESPACE

namespace reference {

namespace detail_mra {

inline constexpr double kNegInf = -std::numeric_limits<double>::infinity();

inline std::size_t ix(Index i) { return static_cast<std::size_t>(i); }

// Element (b, h, l, d) of a rank-4 tensor stored in the given layout.
template <class V>
auto& at(const V& t, Layout layout, Index b, Index h, Index l, Index d) {
  if (layout == Layout::bhld) return t.data()[((b * t.dimension(1) + h) * t.dimension(2) + l) * t.dimension(3) + d];
  return t.data()[((b * t.dimension(1) + l) * t.dimension(2) + h) * t.dimension(3) + d];
}

[[noreturn]] inline void shape_fail(const char* who, const std::string& what) {
  throw shape_error(std::string("reference::") + who + ": " + what);
}
[[noreturn]] inline void unsupported(const char* who, const std::string& what) {
  throw unsupported_error(std::string("reference::") + who + ": " + what);
}

inline Index blocks_of(Index len, Index block) { return (len + block - 1) / block; }

// {B, H, Hkv, Lq, Lk, Dqk}: q and k agree, GQA divides, the mask is one MRA defines (key padding
// only), the config is valid and its diagonal prior has a meaning (Lq == Lk).
struct Extents {
  Index B, H, Hkv, Lq, Lk, Dqk;
};

template <class T>
Extents check_qk(const char* who, ConstTensor4<T> q, ConstTensor4<T> k, const Mask& mask, const MraConfig& config,
                 Layout layout) {
  using effattn::detail::cat;
  config.validate().raise();
  const auto eq = effattn::detail::bhld_extents(q, layout);
  const auto ek = effattn::detail::bhld_extents(k, layout);
  const Extents e{eq[0], eq[1], ek[1], eq[2], ek[2], eq[3]};
  if (ek[0] != e.B) shape_fail(who, cat("q and k disagree on B (", e.B, ", ", ek[0], ")"));
  if (ek[3] != e.Dqk) shape_fail(who, cat("k has Dqk = ", ek[3], " but q has ", e.Dqk));
  if (e.H > 0 && (e.Hkv == 0 || e.H % e.Hkv != 0))
    shape_fail(who, cat("H = ", e.H, " is not a multiple of Hkv = ", e.Hkv));
  if (mask.causal != Causal::none) unsupported(who, "MRA is defined without a causal mask");
  if (mask.bias.present()) unsupported(who, "a bias or boolean mask cannot be applied");
  if (mask.window.active()) unsupported(who, "a window cannot be applied");
  if (mask.packed() || !mask.cu_seqlens_k.empty()) unsupported(who, "packed sequences (cu_seqlens) are not taken");
  if (!mask.key_lengths.empty()) {
    if (static_cast<Index>(mask.key_lengths.size()) != e.B)
      shape_fail(who, cat("mask.key_lengths has ", mask.key_lengths.size(), " entries; it needs B = ", e.B));
    for (Index len : mask.key_lengths)
      if (len < 0 || len > e.Lk) shape_fail(who, cat("mask.key_lengths holds ", len, ", outside [0, Lk = ", e.Lk, "]"));
  }
  if (config.prior_diag > 0 && e.Lq != e.Lk)
    unsupported(who, cat("prior_diag = ", config.prior_diag, " needs self-attention, but Lq = ", e.Lq, " and Lk = ", e.Lk));
  return e;
}

inline double default_scale(const std::optional<double>& scale, Index dqk) {
  return scale ? *scale : 1.0 / std::sqrt(static_cast<double>(std::max<Index>(dqk, 1)));
}

// Real keys of batch b, and real queries (the key length too when Lq == Lk).
inline Index real_keys(const Mask& mask, Index b, Index Lk) {
  return mask.key_lengths.empty() ? Lk : mask.key_lengths[ix(b)];
}
inline Index real_queries(const Mask& mask, Index b, Index Lq, Index Lk) {
  return mask.key_lengths.empty() || Lq != Lk ? Lq : mask.key_lengths[ix(b)];
}

}  // namespace detail_mra

// The coarse level of every (batch, head): C_IJ = scale * qbar_I . kbar_J with the means over the real
// tokens of each block (an empty block's mean is 0, so its logits are 0), and the real-token counts.
struct MraCoarse {
  Index batch = 0, heads = 0, query_blocks = 0, key_blocks = 0;
  std::vector<double> logits;        // [B, H, nq, nk]
  std::vector<Index> query_counts;   // [B, nq]: real queries in block I (the same for every head)
  std::vector<Index> key_counts;     // [B, nk]: real keys in block J

  [[nodiscard]] double logit(Index b, Index h, Index I, Index J) const {
    return logits[static_cast<std::size_t>(((b * heads + h) * query_blocks + I) * key_blocks + J)];
  }
  [[nodiscard]] Index query_count(Index b, Index I) const { return query_counts[static_cast<std::size_t>(b * query_blocks + I)]; }
  [[nodiscard]] Index key_count(Index b, Index J) const { return key_counts[static_cast<std::size_t>(b * key_blocks + J)]; }
};

template <class T>
MraCoarse mra_coarse(ConstTensor4<T> q, ConstTensor4<T> k, const Mask& mask, const MraConfig& config,
                     Layout layout = Layout::bhld) {
  using namespace detail_mra;
  const Extents e = check_qk<T>("mra_coarse", q, k, mask, config, layout);
  const Index bs = config.block;
  MraCoarse c;
  c.batch = e.B, c.heads = e.H;
  c.query_blocks = blocks_of(e.Lq, bs), c.key_blocks = blocks_of(e.Lk, bs);
  const Index nq = c.query_blocks, nk = c.key_blocks;
  c.logits.assign(ix(e.B * e.H * nq * nk), 0.0);
  c.query_counts.assign(ix(e.B * nq), 0);
  c.key_counts.assign(ix(e.B * nk), 0);
  const double scale = default_scale(config.scale, e.Dqk);
  const Index group = e.Hkv > 0 ? e.H / e.Hkv : 1;
  for (Index b = 0; b < e.B; ++b) {
    const Index nkr = real_keys(mask, b, e.Lk), nqr = real_queries(mask, b, e.Lq, e.Lk);
    for (Index t = 0; t < nqr; ++t) ++c.query_counts[ix(b * nq + t / bs)];
    for (Index u = 0; u < nkr; ++u) ++c.key_counts[ix(b * nk + u / bs)];
    for (Index h = 0; h < e.H; ++h) {
      const Index hk = h / group;
      // Block sums, then means (a block without a real token keeps its zero mean).
      std::vector<std::vector<double>> qbar(ix(nq), std::vector<double>(ix(e.Dqk), 0.0));
      std::vector<std::vector<double>> kbar(ix(nk), std::vector<double>(ix(e.Dqk), 0.0));
      for (Index t = 0; t < nqr; ++t)
        for (Index d = 0; d < e.Dqk; ++d) qbar[ix(t / bs)][ix(d)] += static_cast<double>(at(q, layout, b, h, t, d));
      for (Index u = 0; u < nkr; ++u)
        for (Index d = 0; d < e.Dqk; ++d) kbar[ix(u / bs)][ix(d)] += static_cast<double>(at(k, layout, b, hk, u, d));
      for (Index I = 0; I < nq; ++I)
        if (const Index n = c.query_count(b, I); n > 0)
          for (double& x : qbar[ix(I)]) x /= static_cast<double>(n);
      for (Index J = 0; J < nk; ++J)
        if (const Index n = c.key_count(b, J); n > 0)
          for (double& x : kbar[ix(J)]) x /= static_cast<double>(n);
      for (Index I = 0; I < nq; ++I)
        for (Index J = 0; J < nk; ++J) {
          double s = 0;
          for (Index d = 0; d < e.Dqk; ++d) s += qbar[ix(I)][ix(d)] * kbar[ix(J)][ix(d)];
          c.logits[ix(((b * e.H + h) * nq + I) * nk + J)] = scale * s;
        }
    }
  }
  return c;
}

// The tier of block pair (I, J): one per prior it earns, minus 2 without a real query or real key.
inline int mra_tier(const MraConfig& config, Index I, Index J, bool empty) {
  int tier = 0;
  if (config.prior_diag > 0 && std::abs(I - J) <= config.prior_diag / 2) ++tier;
  if (I < config.prior_first) ++tier;
  if (J < config.prior_first) ++tier;
  return empty ? tier - 2 : tier;
}

// The selection rule in double: every pair of every (b, h) ranked by (tier desc, P desc, flat asc) by
// a full sort, the first config.budget(nq, nk) kept, grouped by query block with increasing key blocks.
template <class T>
MraSelection mra_selection(ConstTensor4<T> q, ConstTensor4<T> k, const Mask& mask, const MraConfig& config,
                           Layout layout = Layout::bhld) {
  const MraCoarse c = mra_coarse<T>(q, k, mask, config, layout);
  const Index nq = c.query_blocks, nk = c.key_blocks;
  MraSelection s;
  s.batch = c.batch, s.heads = c.heads, s.query_blocks = nq, s.key_blocks = nk, s.block = config.block;
  const Index budget = config.budget(nq, nk);
  struct Ranked {
    int tier;
    double p;
    Index flat;
  };
  for (Index b = 0; b < c.batch; ++b)
    for (Index h = 0; h < c.heads; ++h) {
      std::vector<Ranked> pairs;
      for (Index I = 0; I < nq; ++I) {
        double rho = detail_mra::kNegInf;
        for (Index J = 0; J < nk; ++J) rho = std::max(rho, c.logit(b, h, I, J));
        for (Index J = 0; J < nk; ++J) {
          const bool empty = c.query_count(b, I) == 0 || c.key_count(b, J) == 0;
          pairs.push_back({mra_tier(config, I, J, empty), c.logit(b, h, I, J) - rho, I * nk + J});
        }
      }
      std::sort(pairs.begin(), pairs.end(), [](const Ranked& x, const Ranked& y) {
        if (x.tier != y.tier) return x.tier > y.tier;
        if (x.p != y.p) return x.p > y.p;
        return x.flat < y.flat;
      });
      std::vector<std::vector<Index>> rows(detail_mra::ix(nq));
      for (Index i = 0; i < budget; ++i) {
        const Index flat = pairs[detail_mra::ix(i)].flat;
        rows[detail_mra::ix(flat / nk)].push_back(flat % nk);
      }
      for (Index I = 0; I < nq; ++I) {
        auto& row = rows[detail_mra::ix(I)];
        std::sort(row.begin(), row.end());
        s.offsets.push_back(static_cast<Index>(s.cols.size()));
        s.cols.insert(s.cols.end(), row.begin(), row.end());
      }
      s.offsets.push_back(static_cast<Index>(s.cols.size()));
    }
  return s;
}

// out [B,H,Lq,Dv] (or [B,Lq,H,Dv] for Layout::blhd) and, if given, lse [B,H,Lq]: the closed form over
// `selection`, which must describe this call's blocks (any set of tiles, not only a ranked one).
template <class T>
void mra_attention(ConstTensor4<T> q, ConstTensor4<T> k, ConstTensor4<T> v, Tensor4<double> out, const Mask& mask,
                   const MraConfig& config, const MraSelection& selection, Layout layout = Layout::bhld,
                   std::optional<Tensor3<double>> lse = {}) {
  using namespace detail_mra;
  using effattn::detail::cat;
  const char* who = "mra_attention";
  const Extents e = check_qk<T>(who, q, k, mask, config, layout);
  const auto ev = effattn::detail::bhld_extents(v, layout);
  const auto eo = effattn::detail::bhld_extents(out, layout);
  const Index Dv = ev[3];
  if (ev[0] != e.B || ev[1] != e.Hkv || ev[2] != e.Lk)
    shape_fail(who, cat("v must be [B, Hkv, Lk, Dv] with B = ", e.B, ", Hkv = ", e.Hkv, ", Lk = ", e.Lk));
  if (eo[0] != e.B || eo[1] != e.H || eo[2] != e.Lq || eo[3] != Dv)
    shape_fail(who, cat("out must be [B, H, Lq, Dv] = [", e.B, ", ", e.H, ", ", e.Lq, ", ", Dv, "] in the given layout"));
  if (lse && (lse->dimension(0) != e.B || lse->dimension(1) != e.H || lse->dimension(2) != e.Lq))
    shape_fail(who, cat("lse must be [B, H, Lq] = [", e.B, ", ", e.H, ", ", e.Lq, "]"));

  const MraCoarse c = mra_coarse<T>(q, k, mask, config, layout);
  const Index nq = c.query_blocks, nk = c.key_blocks, bs = config.block;
  if (selection.batch != e.B || selection.heads != e.H || selection.query_blocks != nq || selection.key_blocks != nk ||
      selection.block != bs)
    shape_fail(who, cat("the selection describes B = ", selection.batch, ", H = ", selection.heads, ", ",
                        selection.query_blocks, " x ", selection.key_blocks, " blocks of ", selection.block,
                        " but the call has B = ", e.B, ", H = ", e.H, ", ", nq, " x ", nk, " blocks of ", bs));
  if (selection.offsets.size() != ix(e.B * e.H * (nq + 1)))
    shape_fail(who, cat("selection.offsets has ", selection.offsets.size(), " entries; it needs B H (nq + 1) = ",
                        e.B * e.H * (nq + 1)));

  const double scale = default_scale(config.scale, e.Dqk);
  const Index group = e.Hkv > 0 ? e.H / e.Hkv : 1;
  const bool full = config.mode == MraMode::full;
  std::vector<double> logits(ix(e.Lk));
  for (Index b = 0; b < e.B; ++b) {
    const Index nkr = real_keys(mask, b, e.Lk), nqr = real_queries(mask, b, e.Lq, e.Lk);
    for (Index h = 0; h < e.H; ++h) {
      const Index hk = h / group;
      // The selection as a dense nq x nk table, read through the offsets without trusting their order.
      std::vector<char> selected(ix(nq * nk), 0);
      const Index o = (b * e.H + h) * (nq + 1);
      for (Index I = 0; I < nq; ++I) {
        const Index first = selection.offsets[ix(o + I)], last = selection.offsets[ix(o + I + 1)];
        if (first < 0 || last < first || last > static_cast<Index>(selection.cols.size()))
          shape_fail(who, cat("selection.offsets of (", b, ", ", h, ", ", I, ") are [", first, ", ", last, ")"));
        for (Index p = first; p < last; ++p) {
          const Index J = selection.cols[ix(p)];
          if (J < 0 || J >= nk) shape_fail(who, cat("selection holds key block ", J, " outside [0, ", nk, ")"));
          selected[ix(I * nk + J)] = 1;
        }
      }
      for (Index t = 0; t < e.Lq; ++t) {
        const Index I = t / bs;
        double row_max = kNegInf;
        for (Index u = 0; u < e.Lk; ++u) {
          double s = kNegInf;
          const Index J = u / bs;
          if (t < nqr && u < nkr) {
            if (selected[ix(I * nk + J)]) {
              s = 0;
              for (Index d = 0; d < e.Dqk; ++d)
                s += static_cast<double>(at(q, layout, b, h, t, d)) * static_cast<double>(at(k, layout, b, hk, u, d));
              s *= scale;
            } else if (full) {
              s = c.logit(b, h, I, J);
            }
          }
          logits[ix(u)] = s;
          row_max = std::max(row_max, s);
        }
        for (Index d = 0; d < Dv; ++d) at(out, layout, b, h, t, d) = 0.0;
        if (lse) (*lse).data()[(b * e.H + h) * e.Lq + t] = kNegInf;
        // A padded query, or (sparse) a row whose block has no selected tile with a real key.
        if (row_max == kNegInf) continue;
        double sum = 0;
        for (double& s : logits) {
          s = s == kNegInf ? 0.0 : std::exp(s - row_max);
          sum += s;
        }
        for (Index d = 0; d < Dv; ++d) {
          double acc = 0;
          for (Index u = 0; u < e.Lk; ++u)
            if (logits[ix(u)] != 0.0) acc += logits[ix(u)] * static_cast<double>(at(v, layout, b, hk, u, d));
          at(out, layout, b, h, t, d) = acc / sum;
        }
        if (lse) (*lse).data()[(b * e.H + h) * e.Lq + t] = row_max + std::log(sum);
      }
    }
  }
}

}  // namespace reference

EFFATTN_END_NAMESPACE
