// The Attention concept accepts the real kind and rejects types that miss a piece of the contract,
// so a kind that drifts from the contract fails to compile instead of failing at a call site.

#include <cstddef>
#include <string_view>

#include <gtest/gtest.h>

#include <effattn/kinds/softmax.hpp>

namespace effattn_test {
namespace {

using effattn::Attention;

static_assert(Attention<effattn::SoftmaxAttention<float>>);
static_assert(Attention<effattn::SoftmaxAttention<double>>);

// A stand-in kind whose pieces can be broken one at a time. Declarations suffice: the concept only
// inspects the interface.
struct Conforming {
  using Scalar = float;
  using Config = effattn::SoftmaxConfig;
  static constexpr std::string_view name = "Conforming";
  static constexpr effattn::Complexity complexity = effattn::Complexity::quadratic;
  const Config& config() const;
  bool supports(const effattn::Mask&) const noexcept;
  effattn::Cost cost(const effattn::Problem&, const effattn::Mask&) const;
  std::size_t workspace_bytes(const effattn::Problem&, int) const;
  effattn::Status check(effattn::ConstTensor4<float>, effattn::ConstTensor4<float>, effattn::ConstTensor4<float>,
                        effattn::Tensor4<float>, const effattn::Mask&, const effattn::Options<float>&) const noexcept;
  void forward(effattn::ConstTensor4<float>, effattn::ConstTensor4<float>, effattn::ConstTensor4<float>,
               effattn::Tensor4<float>, const effattn::Mask&, const effattn::Options<float>&) const;
};
static_assert(Attention<Conforming>, "the stand-in must conform, or the negative checks below prove nothing");

struct MissingForward : Conforming {
  void forward() = delete;  // hides the inherited forward
};
static_assert(!Attention<MissingForward>);

struct NonConstForward : Conforming {
  void forward(effattn::ConstTensor4<float>, effattn::ConstTensor4<float>, effattn::ConstTensor4<float>,
               effattn::Tensor4<float>, const effattn::Mask&, const effattn::Options<float>&);
};
static_assert(!Attention<NonConstForward>);

struct ThrowingCheck : Conforming {
  effattn::Status check(effattn::ConstTensor4<float>, effattn::ConstTensor4<float>, effattn::ConstTensor4<float>,
                        effattn::Tensor4<float>, const effattn::Mask&, const effattn::Options<float>&) const;
};
static_assert(!Attention<ThrowingCheck>);

struct IntegerScalar : Conforming {
  using Scalar = int;
};
static_assert(!Attention<IntegerScalar>);

struct NoName {
  using Scalar = float;
  using Config = effattn::SoftmaxConfig;
  [[maybe_unused]] static constexpr effattn::Complexity complexity = effattn::Complexity::quadratic;
  const Config& config() const;
  bool supports(const effattn::Mask&) const noexcept;
  effattn::Cost cost(const effattn::Problem&, const effattn::Mask&) const;
  std::size_t workspace_bytes(const effattn::Problem&, int) const;
  effattn::Status check(effattn::ConstTensor4<float>, effattn::ConstTensor4<float>, effattn::ConstTensor4<float>,
                        effattn::Tensor4<float>, const effattn::Mask&, const effattn::Options<float>&) const noexcept;
  void forward(effattn::ConstTensor4<float>, effattn::ConstTensor4<float>, effattn::ConstTensor4<float>,
               effattn::Tensor4<float>, const effattn::Mask&, const effattn::Options<float>&) const;
};
static_assert(!Attention<NoName>);

struct ConfigWithoutValidate {
  int x = 0;
};
struct BadConfig : Conforming {
  using Config = ConfigWithoutValidate;
  const Config& config() const;
};
static_assert(!Attention<BadConfig>);

TEST(AttentionConcept, SoftmaxAttentionConforms) {
  // The static_asserts above are the test; this records the kind's declared traits too.
  EXPECT_EQ(effattn::SoftmaxAttention<float>::name, "SoftmaxAttention");
  EXPECT_EQ(effattn::SoftmaxAttention<double>::complexity, effattn::Complexity::quadratic);
  EXPECT_TRUE(effattn::SoftmaxAttention<float>{}.supports(effattn::Mask{}));
}

}  // namespace
}  // namespace effattn_test
