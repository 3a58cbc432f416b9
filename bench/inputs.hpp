#pragma once
// Seeded benchmark inputs and aligned buffers.
//
// Why our own generator: std::normal_distribution is implementation-defined, so the same seed would
// give other inputs (and other rel_err figures) under another standard library. SplitMix64 is
// counter-based here: value n of a stream is mix(seed + n * gamma), exactly the n-th output of the
// sequential generator, so large tensors are filled in parallel and still reproduce bit for bit for
// any thread count.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <new>
#include <numbers>
#include <span>
#include <utility>

namespace effattn_bench {

inline constexpr std::uint64_t kGolden = 0x9E3779B97F4A7C15ull;

inline std::uint64_t splitmix64_mix(std::uint64_t z) noexcept {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Output n (0-based) of the SplitMix64 stream seeded with `seed`.
inline std::uint64_t splitmix64_at(std::uint64_t seed, std::uint64_t n) noexcept {
  return splitmix64_mix(seed + (n + 1) * kGolden);
}

// A seed per named tensor and shape, so q, k and v differ and a shape's inputs do not depend on which
// other benchmarks ran first.
inline std::uint64_t make_seed(std::uint64_t tag, std::uint64_t a = 0, std::uint64_t b = 0, std::uint64_t c = 0) noexcept {
  std::uint64_t s = splitmix64_mix(tag + kGolden);
  s = splitmix64_mix(s ^ (a + kGolden));
  s = splitmix64_mix(s ^ (b + kGolden));
  return splitmix64_mix(s ^ (c + kGolden));
}

// Fills dst[0, n) with N(0, 1) draws by Box-Muller: pair p uses uniforms 2p and 2p + 1 of the stream
// and gives elements 2p (cos branch) and 2p + 1 (sin branch).
template <class T>
void fill_normal(T* dst, std::size_t n, std::uint64_t seed) {
  const auto pairs = static_cast<std::ptrdiff_t>((n + 1) / 2);
#if defined(_OPENMP)
#pragma omp parallel for schedule(static)
#endif
  for (std::ptrdiff_t p = 0; p < pairs; ++p) {
    const auto i = static_cast<std::uint64_t>(p);
    const double u1 = static_cast<double>((splitmix64_at(seed, 2 * i) >> 11) + 1) * 0x1.0p-53;  // (0, 1]
    const double u2 = static_cast<double>(splitmix64_at(seed, 2 * i + 1) >> 11) * 0x1.0p-53;    // [0, 1)
    const double r = std::sqrt(-2.0 * std::log(u1));
    const double angle = 2.0 * std::numbers::pi * u2;
    const std::size_t e = 2 * static_cast<std::size_t>(p);
    dst[e] = static_cast<T>(r * std::cos(angle));
    if (e + 1 < n) dst[e + 1] = static_cast<T>(r * std::sin(angle));
  }
}

// An owned, 64-byte aligned array (a cache line and the widest packet), so no benchmark row is
// helped or hurt by where the allocator happened to place its inputs. Elements start uninitialised:
// callers fill them, and the first touch then happens on the filling threads.
template <class T>
class AlignedBuffer {
 public:
  static constexpr std::size_t kAlign = 64;

  AlignedBuffer() = default;
  explicit AlignedBuffer(std::size_t n) : size_(n) {
    if (n > 0) data_ = static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{kAlign}));
  }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  AlignedBuffer(AlignedBuffer&& o) noexcept : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept {
    if (this != &o) {
      release();
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  ~AlignedBuffer() { release(); }

  [[nodiscard]] T* data() noexcept { return data_; }
  [[nodiscard]] const T* data() const noexcept { return data_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] std::span<T> span() noexcept { return {data_, size_}; }

  void fill_zero() {
    const auto len = static_cast<std::ptrdiff_t>(size_);
#if defined(_OPENMP)
#pragma omp parallel for schedule(static)
#endif
    for (std::ptrdiff_t i = 0; i < len; ++i) data_[i] = T(0);
  }

 private:
  void release() noexcept {
    if (data_ != nullptr) ::operator delete(data_, std::align_val_t{kAlign});
    data_ = nullptr;
    size_ = 0;
  }
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

template <class T>
AlignedBuffer<T> normal_buffer(std::size_t n, std::uint64_t seed) {
  AlignedBuffer<T> b(n);
  fill_normal(b.data(), n, seed);
  return b;
}

// Double copy of a float buffer's first n elements (the exact kernel runs on the very values the float
// kernel saw, so rel_err measures the kernel's float arithmetic and nothing else).
inline AlignedBuffer<double> widen(const float* src, std::size_t n) {
  AlignedBuffer<double> d(n);
  const auto len = static_cast<std::ptrdiff_t>(n);
#if defined(_OPENMP)
#pragma omp parallel for schedule(static)
#endif
  for (std::ptrdiff_t i = 0; i < len; ++i) d.data()[i] = static_cast<double>(src[i]);
  return d;
}

}  // namespace effattn_bench
