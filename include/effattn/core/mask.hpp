#pragma once
// Mask: everything that decides which keys a query sees, shared by every kind and by reference::.
//
// Semantics (library-wide):
//  * causal alignment: top_left = PyTorch is_causal (query i sees key j iff j <= i);
//    bottom_right = FlashAttention 2.1+ (j <= i + Lk - Lq). With key_lengths or packed sequences, Lk and
//    Lq are the lengths of that sequence, as FlashAttention's variable-length kernels do.
//  * key_lengths[b]: keys j >= key_lengths[b] of batch b are padding.
//  * packed sequences (cu_seqlens_q / cu_seqlens_k, FlashAttention's varlen): B must be 1 and sequence s
//    owns queries [cu_q[s], cu_q[s+1]) and keys [cu_k[s], cu_k[s+1]); no query sees another sequence.
//  * bias: boolean (true = attend, PyTorch's convention) or additive, shape [Bb, Hb, Rq, Lk] with
//    Bb in {1, B}, Hb in {1, H}, Rq in {1, Lq}: broadcast like PyTorch's attn_mask.
//  * window {left, right}: query i sees keys j with i' - left <= j <= i' + right, where i' is i moved by
//    the causal alignment offset (bottom_right: i + Lk - Lq), as FlashAttention's window_size. A
//    negative side is unbounded.
// A key is visible iff every present constraint allows it. A query that sees no key gives 0 and LSE -inf.

#include <array>
#include <span>

#include "effattn/core/tensor.hpp"

EFFATTN_BEGIN_NAMESPACE

enum class Causal { none, top_left, bottom_right };

struct Window {
  Index left = -1;   // -1: unbounded
  Index right = -1;  // -1: unbounded
  [[nodiscard]] bool active() const noexcept { return left >= 0 || right >= 0; }
};

// A bias or boolean mask over [Bb, Hb, Rq, Lk], row-major, borrowed (not owned). The element type is
// recorded so one Mask type serves float and double kinds; additive values are converted to the
// kind's scalar as they are read.
class Bias {
 public:
  enum class Kind { none, boolean, additive_f32, additive_f64 };

  Bias() = default;
  static Bias boolean(const bool* keep, std::array<Index, 4> shape) { return {keep, Kind::boolean, shape}; }
  static Bias additive(const float* add, std::array<Index, 4> shape) { return {add, Kind::additive_f32, shape}; }
  static Bias additive(const double* add, std::array<Index, 4> shape) { return {add, Kind::additive_f64, shape}; }
  static Bias boolean(View<const bool, 4> keep) { return boolean(keep.data(), keep.dimensions()); }
  static Bias additive(View<const float, 4> add) { return additive(add.data(), add.dimensions()); }
  static Bias additive(View<const double, 4> add) { return additive(add.data(), add.dimensions()); }

  [[nodiscard]] Kind kind() const noexcept { return kind_; }
  [[nodiscard]] bool present() const noexcept { return kind_ != Kind::none; }
  [[nodiscard]] const std::array<Index, 4>& shape() const noexcept { return shape_; }
  [[nodiscard]] const void* data() const noexcept { return data_; }

  // Row (b, h, i) of the broadcast bias: pointer offset in elements to its first key.
  [[nodiscard]] Index row_offset(Index b, Index h, Index i) const noexcept {
    const Index bb = shape_[0] == 1 ? 0 : b;
    const Index hh = shape_[1] == 1 ? 0 : h;
    const Index ii = shape_[2] == 1 ? 0 : i;
    return ((bb * shape_[1] + hh) * shape_[2] + ii) * shape_[3];
  }

 private:
  Bias(const void* data, Kind kind, std::array<Index, 4> shape) : data_(data), kind_(kind), shape_(shape) {}
  const void* data_ = nullptr;
  Kind kind_ = Kind::none;
  std::array<Index, 4> shape_{};
};

struct Mask {
  Causal causal = Causal::none;
  std::span<const Index> key_lengths;   // [B]; empty: no padding
  std::span<const Index> cu_seqlens_q;  // [S+1]; empty: not packed
  std::span<const Index> cu_seqlens_k;  // [S+1]
  Bias bias;
  Window window;

  [[nodiscard]] bool packed() const noexcept { return !cu_seqlens_q.empty(); }
};

namespace detail {

// The visibility rule of one (sequence, head): key j is visible to query i iff lo(i) <= j < hi(i)
// (causal, window, key length) and the bias, if boolean, keeps it. Offsets are relative to the
// sequence's own first query and key.
struct Band {
  Index len_q = 0;
  Index len_k = 0;      // visible key length (after padding)
  Index shift = 0;      // alignment shift: query i sits at key position i + shift
  bool causal = false;  // j <= i + shift
  Index left = -1;      // j >= i + shift - left when left >= 0
  Index right = -1;     // j <= i + shift + right when right >= 0

  // First visible key of query i (may exceed len_k when none is visible).
  [[nodiscard]] Index lo(Index i) const noexcept {
    const Index l = left >= 0 ? i + shift - left : 0;
    return l < 0 ? 0 : l;
  }
  // One past the last visible key of query i (may be <= lo when none is visible).
  [[nodiscard]] Index hi(Index i) const noexcept {
    Index h = len_k;
    if (causal && i + shift + 1 < h) h = i + shift + 1;
    if (right >= 0 && i + shift + right + 1 < h) h = i + shift + right + 1;
    return h < 0 ? 0 : h;
  }
  [[nodiscard]] bool visible(Index i, Index j) const noexcept { return j >= lo(i) && j < hi(i); }
};

// Builds the band of a sequence with len_q queries against len_k_total keys of which len_k_valid are
// not padding.
inline Band make_band(const Mask& m, Index len_q, Index len_k_valid) noexcept {
  Band band;
  band.len_q = len_q;
  band.len_k = len_k_valid;
  band.causal = m.causal != Causal::none;
  band.shift = m.causal == Causal::bottom_right ? len_k_valid - len_q : 0;
  // Without causal alignment, a window is centred on the diagonal of the bottom-right alignment, as
  // FlashAttention does for local attention.
  if (m.causal == Causal::none && m.window.active()) band.shift = len_k_valid - len_q;
  band.left = m.window.left;
  band.right = m.window.right;
  return band;
}

}  // namespace detail

EFFATTN_END_NAMESPACE
