#pragma once
// Scratch memory. A kind asks for workspace_bytes(problem, threads) and carves its buffers from the
// caller's span; with no span it allocates once per call. Every buffer starts on a 64-byte boundary
// (a cache line, and the widest packet) so kernels may use aligned loads.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <span>

#include "effattn/core/tensor.hpp"

EFFATTN_BEGIN_NAMESPACE

inline constexpr std::size_t kWorkspaceAlign = 64;

namespace detail {

inline constexpr std::size_t align_up(std::size_t n, std::size_t a = kWorkspaceAlign) noexcept {
  return (n + a - 1) / a * a;
}

// Sums buffer sizes the way Arena hands them out, so workspace_bytes() and the carving agree.
class ArenaPlan {
 public:
  // Reserves one buffer of count elements of elem_size bytes.
  ArenaPlan& add(Index count, std::size_t elem_size) noexcept {
    bytes_ += align_up(static_cast<std::size_t>(count) * elem_size);
    return *this;
  }
  [[nodiscard]] std::size_t bytes() const noexcept { return bytes_; }
  // What a caller's span must hold: the buffers plus room to reach the first 64-byte boundary, so a
  // span of any alignment (a std::vector<std::byte> is typically 16-byte aligned) is enough.
  [[nodiscard]] std::size_t span_bytes() const noexcept { return bytes_ == 0 ? 0 : bytes_ + kWorkspaceAlign - 1; }

 private:
  std::size_t bytes_ = 0;
};

// Bump allocator over a caller's span, or over one owned block when the span is too small.
class Arena {
 public:
  Arena(std::span<std::byte> given, std::size_t needed) {
    if (needed == 0) return;
    std::byte* base = given.data();
    std::size_t size = given.size();
    if (base != nullptr) {
      const auto misalign = reinterpret_cast<std::uintptr_t>(base) % kWorkspaceAlign;
      const std::size_t skip = misalign ? kWorkspaceAlign - misalign : 0;
      if (size >= skip + needed) {
        cursor_ = base + skip;
        end_ = cursor_ + needed;
        return;
      }
    }
    owned_.reset(static_cast<std::byte*>(::operator new(needed, std::align_val_t{kWorkspaceAlign})));
    cursor_ = owned_.get();
    end_ = cursor_ + needed;
  }

  template <class T>
  T* take(Index count) noexcept {
    T* p = reinterpret_cast<T*>(cursor_);
    cursor_ += align_up(static_cast<std::size_t>(count) * sizeof(T));
    EFFATTN_DASSERT(cursor_ <= end_);
    return p;
  }

  [[nodiscard]] bool owns_memory() const noexcept { return owned_ != nullptr; }

 private:
  struct Free {
    void operator()(std::byte* p) const noexcept { ::operator delete(p, std::align_val_t{kWorkspaceAlign}); }
  };
  std::unique_ptr<std::byte, Free> owned_;
  std::byte* cursor_ = nullptr;
  std::byte* end_ = nullptr;
};

// A scratch struct lists its buffers once, in fields(shape, visit), calling visit(pointer, count)
// for each; the byte count and the carving both follow that one list, so they cannot disagree.
template <class Scratch, class Shape>
ArenaPlan plan_of(const Shape& shape) noexcept {
  Scratch s{};
  ArenaPlan plan;
  s.fields(shape, [&]<class U>(U*&, Index count) { plan.add(count, sizeof(U)); });
  return plan;
}

template <class Scratch, class Shape>
Scratch take_from(Arena& arena, const Shape& shape) noexcept {
  Scratch s{};
  s.fields(shape, [&]<class U>(U*& ptr, Index count) { ptr = arena.take<U>(count); });
  return s;
}

}  // namespace detail

EFFATTN_END_NAMESPACE
