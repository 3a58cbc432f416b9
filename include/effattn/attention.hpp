#pragma once
// The public vocabulary every kind shares: Problem, Cost, Options, the Attention concept, and the
// validation of q/k/v/out/mask/options that every kind runs before any work.

#include <concepts>
#include <cstddef>
#include <optional>
#include <span>
#include <string_view>
#include <tuple>
#include <utility>

#include "effattn/core/errors.hpp"
#include "effattn/core/executor.hpp"
#include "effattn/core/mask.hpp"
#include "effattn/core/tensor.hpp"
#include "effattn/core/workspace.hpp"

EFFATTN_BEGIN_NAMESPACE

enum class Complexity { quadratic, linear, n_log_n, block_sparse };

// The extents of one call, in [B, H, L, D] terms whatever the layout.
struct Problem {
  Index batch = 1;
  Index heads = 1;
  Index kv_heads = 1;
  Index len_q = 0;
  Index len_k = 0;
  Index dim_qk = 0;
  Index dim_v = 0;

  template <class T>
  static Problem of(ConstTensor4<T> q, ConstTensor4<T> k, ConstTensor4<T> v, Layout layout = Layout::bhld) {
    const auto eq = detail::bhld_extents(q, layout);
    const auto ek = detail::bhld_extents(k, layout);
    const auto ev = detail::bhld_extents(v, layout);
    return {eq[0], eq[1], ek[1], eq[2], ek[2], eq[3], ev[3]};
  }
};

// Work of one forward call: floating-point operations (an FMA counts 2) and bytes of q/k/v/out moved
// at least once. Benchmarks read their counters from it.
struct Cost {
  double flops = 0;
  double bytes = 0;
};

template <class T>
struct Options {
  Layout layout = Layout::bhld;
  Executor executor{};
  // Scratch of at least workspace_bytes(problem, executor.num_threads()); empty: allocate per call.
  std::span<std::byte> workspace{};
  // Optional log-sum-exp output [B, H, Lq] (natural log of the sum of exp of the final logits).
  std::optional<Tensor3<T>> lse{};
};

// Every kind: a Scalar, an aggregate Config with validate(), a name, a complexity, supports(mask),
// cost(problem, mask), workspace_bytes(problem, threads), a noexcept check() that reports what
// forward() would refuse, and a const forward() on views.
template <class A>
concept Attention =
    std::floating_point<typename A::Scalar> &&
    requires(const A& a, const typename A::Config& config, const Problem& p, const Mask& m,
             ConstTensor4<typename A::Scalar> in, Tensor4<typename A::Scalar> out,
             const Options<typename A::Scalar>& o) {
      { config.validate() } -> std::same_as<Status>;
      { A::name } -> std::convertible_to<std::string_view>;
      { A::complexity } -> std::convertible_to<Complexity>;
      { a.config() } -> std::convertible_to<const typename A::Config&>;
      { a.supports(m) } -> std::same_as<bool>;
      { a.cost(p, m) } -> std::same_as<Cost>;
      { a.workspace_bytes(p, int{}) } -> std::convertible_to<std::size_t>;
      { a.check(in, in, in, out, m, o) } noexcept -> std::same_as<Status>;
      a.forward(in, in, in, out, m, o);
    };

namespace detail {

inline const char* layout_text(Layout layout) noexcept {
  return layout == Layout::bhld ? "q [B,H,Lq,Dqk], k [B,Hkv,Lk,Dqk], v [B,Hkv,Lk,Dv], out [B,H,Lq,Dv]"
                                : "q [B,Lq,H,Dqk], k [B,Lk,Hkv,Dqk], v [B,Lk,Hkv,Dv], out [B,Lq,H,Dv]";
}

// The checks every kind shares: extents agree, GQA divides, out does not alias an input, the mask's
// tensors fit. Kind-specific checks (supported masks, config) come on top.
template <class T>
Status validate_call(std::string_view kind, ConstTensor4<T> q, ConstTensor4<T> k, ConstTensor4<T> v, Tensor4<T> out,
                     const Mask& mask, const Options<T>& options) {
  const Layout layout = options.layout;
  const char* expect = layout_text(layout);
  const int ax_h = layout == Layout::bhld ? 1 : 2;
  const int ax_l = layout == Layout::bhld ? 2 : 1;
  const auto shape = [&](const char* what, auto... parts) {
    return error(ErrorCode::shape, kind, "::forward: ", what, parts..., "; expected ", expect);
  };
  for (auto [name, t] : {std::pair{"q", q}, std::pair{"k", k}, std::pair{"v", v}}) {
    for (int a = 0; a < 4; ++a)
      if (t.dimension(a) < 0) return shape(name, ".dimension(", a, ") is negative (", t.dimension(a), ")");
    if (t.size() > 0 && t.data() == nullptr) return shape(name, " has a null data pointer");
  }
  if (out.size() > 0 && out.data() == nullptr) return shape("out has a null data pointer");
  const Problem p = Problem::of<T>(q, k, v, layout);
  if (k.dimension(0) != p.batch)
    return shape("k.dimension(0) (B) is ", k.dimension(0), " but q.dimension(0) is ", p.batch);
  if (v.dimension(0) != p.batch)
    return shape("v.dimension(0) (B) is ", v.dimension(0), " but q.dimension(0) is ", p.batch);
  if (v.dimension(ax_h) != p.kv_heads)
    return shape("v.dimension(", ax_h, ") (Hkv) is ", v.dimension(ax_h), " but k.dimension(", ax_h, ") is ", p.kv_heads);
  if (v.dimension(ax_l) != p.len_k)
    return shape("v.dimension(", ax_l, ") (Lk) is ", v.dimension(ax_l), " but k.dimension(", ax_l, ") is ", p.len_k);
  if (k.dimension(3) != p.dim_qk)
    return shape("k.dimension(3) (Dqk) is ", k.dimension(3), " but q.dimension(3) is ", p.dim_qk);
  if (p.kv_heads == 0 && p.heads != 0)
    return shape("k.dimension(", ax_h, ") (Hkv) is 0 but q has ", p.heads, " heads");
  if (p.kv_heads > 0 && p.heads % p.kv_heads != 0)
    return shape("q.dimension(", ax_h, ") (H) is ", p.heads, ", not a multiple of k.dimension(", ax_h, ") (Hkv) ",
                 p.kv_heads);
  const std::array<Index, 4> want_out = layout == Layout::bhld ? std::array{p.batch, p.heads, p.len_q, p.dim_v}
                                                               : std::array{p.batch, p.len_q, p.heads, p.dim_v};
  for (int a = 0; a < 4; ++a)
    if (out.dimension(a) != want_out[static_cast<std::size_t>(a)])
      return shape("out.dimension(", a, ") is ", out.dimension(a), " but must be ", want_out[static_cast<std::size_t>(a)]);
  if (overlaps(out, q) || overlaps(out, k) || overlaps(out, v))
    return error(ErrorCode::shape, kind, "::forward: out aliases ", overlaps(out, q) ? "q" : overlaps(out, k) ? "k" : "v",
                 "; the output must not overlap an input");
  if (options.lse) {
    const auto& lse = *options.lse;
    const std::array<Index, 3> want{p.batch, p.heads, p.len_q};
    for (int a = 0; a < 3; ++a)
      if (lse.dimension(a) != want[static_cast<std::size_t>(a)])
        return error(ErrorCode::shape, kind, "::forward: lse.dimension(", a, ") is ", lse.dimension(a), " but must be ",
                     want[static_cast<std::size_t>(a)], "; expected lse [B,H,Lq]");
    if (lse.size() > 0 && lse.data() == nullptr) return error(ErrorCode::shape, kind, "::forward: lse has a null data pointer");
    if (overlaps(lse, q) || overlaps(lse, k) || overlaps(lse, v) || overlaps(lse, out))
      return error(ErrorCode::shape, kind, "::forward: lse overlaps q, k, v or out");
  }

  // Mask tensors.
  if (!mask.key_lengths.empty()) {
    if (static_cast<Index>(mask.key_lengths.size()) != p.batch)
      return error(ErrorCode::shape, kind, "::forward: mask.key_lengths has ", mask.key_lengths.size(),
                   " entries but B is ", p.batch);
    for (std::size_t b = 0; b < mask.key_lengths.size(); ++b)
      if (mask.key_lengths[b] < 0 || mask.key_lengths[b] > p.len_k)
        return error(ErrorCode::shape, kind, "::forward: mask.key_lengths[", b, "] is ", mask.key_lengths[b],
                     " but must lie in [0, Lk] = [0, ", p.len_k, "]");
  }
  if (mask.packed() || !mask.cu_seqlens_k.empty()) {
    const auto& cq = mask.cu_seqlens_q;
    const auto& ck = mask.cu_seqlens_k;
    if (cq.size() != ck.size() || cq.size() < 2)
      return error(ErrorCode::shape, kind, "::forward: mask.cu_seqlens_q has ", cq.size(), " entries and cu_seqlens_k ",
                   ck.size(), "; both must hold S+1 >= 2 cumulative offsets");
    if (p.batch != 1)
      return error(ErrorCode::shape, kind, "::forward: packed sequences need B = 1 (all sequences along L) but q.dimension(0) is ",
                   p.batch);
    if (!mask.key_lengths.empty())
      return error(ErrorCode::unsupported, kind, "::forward: mask.key_lengths and packed sequences cannot be combined; "
                                                 "give each sequence's true length in cu_seqlens_k");
    for (auto [name, cu, total] : {std::tuple{"cu_seqlens_q", cq, p.len_q}, std::tuple{"cu_seqlens_k", ck, p.len_k}}) {
      if (cu.front() != 0) return error(ErrorCode::shape, kind, "::forward: mask.", name, "[0] is ", cu.front(), " but must be 0");
      for (std::size_t s = 1; s < cu.size(); ++s)
        if (cu[s] < cu[s - 1])
          return error(ErrorCode::shape, kind, "::forward: mask.", name, " decreases at entry ", s, " (", cu[s - 1], " -> ",
                       cu[s], ")");
      if (cu.back() > total)
        return error(ErrorCode::shape, kind, "::forward: mask.", name, " ends at ", cu.back(), " beyond the tensor length ", total);
    }
  }
  if (mask.bias.present()) {
    const auto& s = mask.bias.shape();
    if (mask.bias.data() == nullptr && s[0] * s[1] * s[2] * s[3] > 0)
      return error(ErrorCode::shape, kind, "::forward: mask.bias has a null data pointer");
    if ((s[0] != 1 && s[0] != p.batch) || (s[1] != 1 && s[1] != p.heads) || (s[2] != 1 && s[2] != p.len_q) ||
        s[3] != p.len_k)
      return error(ErrorCode::shape, kind, "::forward: mask.bias has shape [", s[0], ",", s[1], ",", s[2], ",", s[3],
                   "] but must broadcast to [B,H,Lq,Lk] = [", p.batch, ",", p.heads, ",", p.len_q, ",", p.len_k,
                   "] (each of the first three extents 1 or full; Lk in full)");
    if (mask.packed())
      return error(ErrorCode::unsupported, kind, "::forward: mask.bias cannot be combined with packed sequences");
  }
  if (mask.window.left < -1 || mask.window.right < -1)
    return error(ErrorCode::config, kind, "::forward: mask.window is (", mask.window.left, ", ", mask.window.right,
                 "); each side must be >= 0, or -1 for unbounded");
  return {};
}

}  // namespace detail

EFFATTN_END_NAMESPACE
