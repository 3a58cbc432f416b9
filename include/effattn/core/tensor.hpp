#pragma once
// Zero-copy, row-major tensor views.
//
// Why our own small view instead of passing Eigen::TensorMap directly: TensorMap<Tensor<float,4>> and
// TensorMap<const Tensor<float,4>> do not convert into each other, so an API written on one of them
// forces callers to rebuild maps by hand. View converts implicitly from an Eigen::Tensor, a TensorMap
// of either constness or a raw pointer with extents, and turns back into a TensorMap with map().
// Column-major Eigen tensors are refused at compile time: a silent transpose would be a wrong answer.

#include <array>
#include <cstddef>
#include <functional>
#include <type_traits>

#include <unsupported/Eigen/CXX11/Tensor>

#include "effattn/config.hpp"

EFFATTN_BEGIN_NAMESPACE

using Index = Eigen::Index;

// Memory order of q, k, v and out. bhld: [B, H, L, D] (what attention kernels usually take);
// blhd: [B, L, H, D] (what a fused projection produces). A head slice is then a matrix with row
// stride H*D, so neither layout costs a copy.
enum class Layout { bhld, blhd };

template <class T, int Rank>
class View {
 public:
  using Scalar = std::remove_const_t<T>;
  static constexpr int rank = Rank;

  View() = default;
  View(T* data, const std::array<Index, Rank>& dims) : data_(data), dims_(dims) {}
  template <class... I>
    requires(sizeof...(I) == Rank && (std::is_integral_v<I> && ...))
  View(T* data, I... dims) : data_(data), dims_{static_cast<Index>(dims)...} {}

  // From an Eigen::TensorMap of the same rank (any constness compatible with T).
  template <class E, int Opt, template <class> class MP>
    requires(std::is_convertible_v<typename Eigen::TensorMap<E, Opt, MP>::PointerType, T*> &&
             E::NumIndices == Rank)
  View(const Eigen::TensorMap<E, Opt, MP>& m) : data_(m.data()) {  // NOLINT: implicit by design
    static_assert((static_cast<int>(E::Layout) & static_cast<int>(Eigen::RowMajor)) != 0, "effattn views are row-major: use Eigen::RowMajor tensors");
    for (int i = 0; i < Rank; ++i) dims_[i] = static_cast<Index>(m.dimension(i));
  }
  // From an Eigen::Tensor (const tensors give const views only).
  template <class U, int Opt, class IndexT>
    requires std::is_convertible_v<U*, T*>
  View(Eigen::Tensor<U, Rank, Opt, IndexT>& t) : data_(t.data()) {  // NOLINT
    static_assert((Opt & Eigen::RowMajor) != 0, "effattn views are row-major: use Eigen::RowMajor tensors");
    for (int i = 0; i < Rank; ++i) dims_[i] = static_cast<Index>(t.dimension(i));
  }
  template <class U, int Opt, class IndexT>
    requires(std::is_const_v<T> && std::is_same_v<std::remove_const_t<U>, Scalar>)
  View(const Eigen::Tensor<U, Rank, Opt, IndexT>& t) : data_(t.data()) {  // NOLINT
    static_assert((Opt & Eigen::RowMajor) != 0, "effattn views are row-major: use Eigen::RowMajor tensors");
    for (int i = 0; i < Rank; ++i) dims_[i] = static_cast<Index>(t.dimension(i));
  }
  // A mutable view is also a const view.
  template <class U>
    requires(std::is_const_v<T> && std::is_same_v<U, Scalar>)
  View(const View<U, Rank>& v) : data_(v.data()), dims_(v.dimensions()) {}  // NOLINT

  [[nodiscard]] T* data() const noexcept { return data_; }
  [[nodiscard]] Index dimension(int i) const noexcept { return dims_[static_cast<std::size_t>(i)]; }
  [[nodiscard]] const std::array<Index, Rank>& dimensions() const noexcept { return dims_; }
  [[nodiscard]] Index size() const noexcept {
    Index n = 1;
    for (Index d : dims_) n *= d;
    return n;
  }
  [[nodiscard]] auto map() const {
    using Tensor = std::conditional_t<std::is_const_v<T>, const Eigen::Tensor<Scalar, Rank, Eigen::RowMajor, Index>,
                                      Eigen::Tensor<Scalar, Rank, Eigen::RowMajor, Index>>;
    return Eigen::TensorMap<Tensor>(data_, dims_);
  }

 private:
  T* data_ = nullptr;
  std::array<Index, Rank> dims_{};
};

template <class T>
using Tensor4 = View<T, 4>;  // out: [B,H,L,D] or [B,L,H,D]
template <class T>
using ConstTensor4 = View<const T, 4>;  // q, k, v
template <class T>
using Tensor3 = View<T, 3>;  // lse: [B,H,Lq]
template <class T>
using ConstTensor3 = View<const T, 3>;

namespace detail {

// One head of a q/k/v/out tensor as a row-major matrix: row r starts at data + r * row_stride.
template <class T>
struct HeadRows {
  T* data = nullptr;
  Index rows = 0;
  Index cols = 0;
  Index row_stride = 0;
  [[nodiscard]] T* row(Index r) const noexcept { return data + r * row_stride; }
};

// Extents of a rank-4 tensor read in the given layout: {B, H, L, D}.
template <class V>
std::array<Index, 4> bhld_extents(const V& t, Layout layout) noexcept {
  if (layout == Layout::bhld) return t.dimensions();
  return {t.dimension(0), t.dimension(2), t.dimension(1), t.dimension(3)};
}

template <class T>
HeadRows<T> head_rows(const View<T, 4>& t, Layout layout, Index b, Index h) noexcept {
  const auto e = bhld_extents(t, layout);
  const Index n_heads = e[1], len = e[2], dim = e[3];
  if (layout == Layout::bhld) return {t.data() + (b * n_heads + h) * len * dim, len, dim, dim};
  return {t.data() + (b * len * n_heads + h) * dim, len, dim, n_heads * dim};
}

// True when the byte ranges spanned by two views intersect (used to refuse out aliasing an input).
template <class A, class B>
bool overlaps(const A& a, const B& b) noexcept {
  if (a.size() == 0 || b.size() == 0) return false;
  const auto* a0 = reinterpret_cast<const std::byte*>(a.data());
  const auto* b0 = reinterpret_cast<const std::byte*>(b.data());
  const auto* a1 = a0 + a.size() * sizeof(*a.data());
  const auto* b1 = b0 + b.size() * sizeof(*b.data());
  return std::less<>{}(a0, b1) && std::less<>{}(b0, a1);
}

}  // namespace detail

EFFATTN_END_NAMESPACE
