#pragma once
// CounterRng: a counter-based random stream, Philox4x32-10 (J. K. Salmon, M. A. Moraes, R. O. Dror,
// D. E. Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC 2011).
//
// Why counter-based: value i of a stream is a pure function of (key, i), computed without generating
// values 0..i-1. Projections drawn per head therefore do not depend on how many heads are drawn, in
// which order, or by how many threads, and a stream needs no state beyond its key.
//
// Why not <random>: the engines are portable but the distributions are implementation-defined, so
// std::normal_distribution gives different matrices with libstdc++, libc++ and MSVC.
//
// Reproducibility: the 32-bit words, and uniform(), are bit-identical on every platform (integer
// arithmetic and an exact conversion). normal() goes through std::log, std::cos and std::sin, which
// mainstream C libraries compute to within an ulp but do not all round identically; within one C
// library it is bit-identical too.

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numbers>
#include <utility>

#include "effattn/config.hpp"

EFFATTN_BEGIN_NAMESPACE

namespace detail {

using PhiloxCounter = std::array<std::uint32_t, 4>;
using PhiloxKey = std::array<std::uint32_t, 2>;

// The published constants: the two round multipliers, and the Weyl increments of the key schedule
// (the fractional parts of the golden ratio and of sqrt(3), times 2^32).
inline constexpr std::uint32_t kPhiloxM0 = 0xD2511F53u;
inline constexpr std::uint32_t kPhiloxM1 = 0xCD9E8D57u;
inline constexpr std::uint32_t kPhiloxW0 = 0x9E3779B9u;
inline constexpr std::uint32_t kPhiloxW1 = 0xBB67AE85u;

// The bijection of 128-bit counters selected by a 64-bit key. Each round multiplies words 0 and 2 by
// the constants; the high product halves are mixed with the other two words and the round key, and
// the words are permuted so that every word feeds a multiplication every other round. Ten rounds is
// the authors' recommended count, a safety margin over the fewest rounds that pass TestU01 BigCrush.
constexpr PhiloxCounter philox4x32_10(PhiloxCounter c, PhiloxKey k) noexcept {
  for (int round = 0; round < 10; ++round) {
    const std::uint64_t p0 = std::uint64_t{kPhiloxM0} * c[0];
    const std::uint64_t p1 = std::uint64_t{kPhiloxM1} * c[2];
    c = {static_cast<std::uint32_t>(p1 >> 32) ^ c[1] ^ k[0], static_cast<std::uint32_t>(p1),
         static_cast<std::uint32_t>(p0 >> 32) ^ c[3] ^ k[1], static_cast<std::uint32_t>(p0)};
    k[0] += kPhiloxW0;
    k[1] += kPhiloxW1;
  }
  return c;
}

// A stream keyed by (seed, stream, sub), e.g. (user seed, head, redraw count). Positions are any
// uint64. uniform(i) and normal(i) are separate sequences (distinct counter ranges), so using both
// kinds at the same positions is fine.
class CounterRng {
 public:
  // Philox has a 64-bit key and a 128-bit counter, too small to hold 192 key bits plus a position.
  // So (stream, sub) is first encrypted under the seed: the 128-bit result gives this stream's key
  // and the top half of its counters. For one seed, that map is a bijection, so two different
  // (stream, sub) can never share both key and counter prefix: their blocks never coincide.
  constexpr CounterRng(std::uint64_t seed, std::uint64_t stream, std::uint64_t sub) noexcept
      : CounterRng(philox4x32_10({lo(stream), hi(stream), lo(sub), hi(sub)}, {lo(seed), hi(seed)})) {}

  // Block b of the stream: 128 random bits. Blocks below 2^63 feed uniform(), the rest normal().
  [[nodiscard]] constexpr PhiloxCounter block(std::uint64_t b) const noexcept {
    return philox4x32_10({lo(b), hi(b), prefix_[0], prefix_[1]}, key_);
  }

  // Uniform in the open interval (0, 1) on the 2^-53 grid; two positions per block.
  [[nodiscard]] constexpr double uniform(std::uint64_t i) const noexcept {
    const PhiloxCounter w = block(i >> 1);
    return (i & 1) != 0 ? to_unit(join(w[2], w[3])) : to_unit(join(w[0], w[1]));
  }

  // Standard normal. Box-Muller turns block j's two uniforms into positions 2j (cosine) and 2j + 1
  // (sine); nothing is cached, so a value never depends on which positions were asked for before.
  [[nodiscard]] double normal(std::uint64_t i) const noexcept {
    const auto [c, s] = normal_pair(i >> 1);
    return (i & 1) != 0 ? s : c;
  }

  // out[k] = normal(first + k) for k < n, using both values of each Box-Muller pair.
  void normals(std::uint64_t first, std::size_t n, double* out) const noexcept {
    std::size_t k = 0;
    if (n > 0 && (first & 1) != 0) out[k++] = normal(first);
    for (; k + 2 <= n; k += 2) {
      const auto [c, s] = normal_pair((first + k) >> 1);
      out[k] = c;
      out[k + 1] = s;
    }
    if (k < n) out[k] = normal(first + k);
  }

 private:
  static constexpr std::uint64_t kNormalBlocks = std::uint64_t{1} << 63;

  explicit constexpr CounterRng(const PhiloxCounter& derived) noexcept
      : key_{derived[0], derived[1]}, prefix_{derived[2], derived[3]} {}

  static constexpr std::uint32_t lo(std::uint64_t x) noexcept { return static_cast<std::uint32_t>(x); }
  static constexpr std::uint32_t hi(std::uint64_t x) noexcept { return static_cast<std::uint32_t>(x >> 32); }
  static constexpr std::uint64_t join(std::uint32_t l, std::uint32_t h) noexcept {
    return std::uint64_t{l} | (std::uint64_t{h} << 32);
  }
  // The top 53 bits as k * 2^-53 (exact). k = 0 would make Box-Muller take log(0), so that one
  // outcome (probability 2^-53) is moved to 2^-54, the middle of its cell: the result is in (0, 1),
  // never 0 or 1, and every other value keeps the exact uniform grid.
  static constexpr double to_unit(std::uint64_t x) noexcept {
    const std::uint64_t k = x >> 11;
    return k != 0 ? static_cast<double>(k) * 0x1p-53 : 0x1p-54;
  }

  std::pair<double, double> normal_pair(std::uint64_t j) const noexcept {
    const PhiloxCounter w = block(j | kNormalBlocks);
    const double r = std::sqrt(-2.0 * std::log(to_unit(join(w[0], w[1]))));
    const double t = 2.0 * std::numbers::pi * to_unit(join(w[2], w[3]));
    return {r * std::cos(t), r * std::sin(t)};
  }

  PhiloxKey key_;
  std::array<std::uint32_t, 2> prefix_;
};

}  // namespace detail

EFFATTN_END_NAMESPACE
