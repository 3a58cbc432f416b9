#pragma once
// Seeded test inputs that are the same on every compiler and standard library: std::normal_distribution
// is implementation-defined, so a failing seed printed by one toolchain would not reproduce on another.

#include <cmath>
#include <cstdint>
#include <numbers>
#include <vector>

#include <Eigen/Core>

namespace effattn_test {

class Rng {
 public:
  explicit Rng(std::uint64_t seed) : state_(seed) {}

  // SplitMix64: tiny, full-period, and good enough for test data.
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  // Uniform integer in [lo, hi].
  long long integer(long long lo, long long hi) {
    return lo + static_cast<long long>(next() % static_cast<std::uint64_t>(hi - lo + 1));
  }
  // Box-Muller, one value per pair of uniforms (no cached second value, so draws never depend on
  // the parity of earlier calls).
  double normal() {
    const double u1 = 1.0 - uniform();  // (0, 1]
    const double u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
  }

 private:
  std::uint64_t state_;
};

// n values of N(0, std_dev^2).
inline std::vector<double> normals(Rng& rng, Eigen::Index n, double std_dev) {
  std::vector<double> x(static_cast<std::size_t>(n));
  for (double& e : x) e = std_dev * rng.normal();
  return x;
}

}  // namespace effattn_test
