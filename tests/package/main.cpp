// Shared by both package consumers: compiles against the public umbrella header and runs a small
// causal attention. The numbers checked follow from the definition alone, so this test does not
// depend on the reference implementation.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <vector>

#include <effattn/effattn.hpp>

namespace {

int failures = 0;

void expect(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "FAILED: %s\n", what);
    ++failures;
  }
}

std::vector<float> filled(std::size_t n, unsigned seed) {
  std::vector<float> x(n);
  for (std::size_t i = 0; i < n; ++i) x[i] = std::sin(0.37f * static_cast<float>(i + 1) + static_cast<float>(seed));
  return x;
}

}  // namespace

int main() {
  constexpr std::size_t B = 2, H = 3, L = 5, D = 4;
  const std::size_t n = B * H * L * D;
  std::vector<float> q = filled(n, 1), k = filled(n, 2), v = filled(n, 3), o(n, -1.0f);
  effattn::SoftmaxAttention<float> attn;
  effattn::Mask causal;
  causal.causal = effattn::Causal::bottom_right;

  attn.forward(effattn::ConstTensor4<float>(q.data(), B, H, L, D), effattn::ConstTensor4<float>(k.data(), B, H, L, D),
               effattn::ConstTensor4<float>(v.data(), B, H, L, D), effattn::Tensor4<float>(o.data(), B, H, L, D),
               causal);
  expect(std::all_of(o.begin(), o.end(), [](float x) { return std::isfinite(x); }), "outputs are finite");
  // Softmax weights are positive and sum to one: query i sees keys 0..i, so its output lies within
  // the range of those value rows, and query 0 returns value row 0 itself.
  for (std::size_t head = 0; head < B * H; ++head)
    for (std::size_t i = 0; i < L; ++i)
      for (std::size_t d = 0; d < D; ++d) {
        float lo = std::numeric_limits<float>::infinity(), hi = -lo;
        for (std::size_t j = 0; j <= i; ++j) {
          lo = std::min(lo, v[(head * L + j) * D + d]);
          hi = std::max(hi, v[(head * L + j) * D + d]);
        }
        const float x = o[(head * L + i) * D + d];
        expect(x >= lo - 1e-5f && x <= hi + 1e-5f, "output is a convex combination of the visible values");
      }

  // One key, three queries, bottom-right alignment: only the last query sees the key, and it
  // returns that value row; queries that see no key return zeros.
  std::vector<float> q3 = filled(B * H * 3 * D, 4), k1 = filled(B * H * D, 5), v1 = filled(B * H * D, 6);
  std::vector<float> o3(q3.size(), -1.0f);
  attn.forward(effattn::ConstTensor4<float>(q3.data(), B, H, 3, D), effattn::ConstTensor4<float>(k1.data(), B, H, 1, D),
               effattn::ConstTensor4<float>(v1.data(), B, H, 1, D), effattn::Tensor4<float>(o3.data(), B, H, 3, D),
               causal);
  for (std::size_t head = 0; head < B * H; ++head)
    for (std::size_t d = 0; d < D; ++d) {
      expect(o3[(head * 3 + 0) * D + d] == 0.0f && o3[(head * 3 + 1) * D + d] == 0.0f, "unseen queries give zero");
      expect(std::abs(o3[(head * 3 + 2) * D + d] - v1[head * D + d]) <= 1e-6f, "a single key returns its value");
    }

  // Bad shapes are refused with the documented exception type.
  bool threw = false;
  try {
    attn.forward(effattn::ConstTensor4<float>(q.data(), B, H, L, D),
                 effattn::ConstTensor4<float>(k.data(), B, H, L, D - 1),
                 effattn::ConstTensor4<float>(v.data(), B, H, L, D), effattn::Tensor4<float>(o.data(), B, H, L, D));
  } catch (const effattn::shape_error&) {
    threw = true;
  }
  expect(threw, "mismatched head dims throw effattn::shape_error");

  if (failures == 0) std::printf("effattn %s consumer: ok\n", EFFATTN_VERSION_STRING);
  return failures == 0 ? 0 : 1;
}
