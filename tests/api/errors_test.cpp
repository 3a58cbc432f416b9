// Every refusal at the API boundary: the exception type, a message that names the kind, the tensor,
// the axis and the expected layout, and check() reporting the same Status without throwing.

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <effattn/kinds/softmax.hpp>

#include "support/expect_error.hpp"

namespace effattn_test {
namespace {

using ::testing::HasSubstr;
using effattn::ErrorCode;
using effattn::Index;
using effattn::Layout;

// One call's arguments over a shared pool of memory, so each test changes just the piece it refuses.
template <class T>
struct Call {
  std::vector<T> q_mem = std::vector<T>(4096, T(0.5)), k_mem = std::vector<T>(4096, T(0.5)),
                 v_mem = std::vector<T>(4096, T(0.5)), out_mem = std::vector<T>(4096), lse_mem = std::vector<T>(512);
  // B=2, H=4, Hkv=2, Lq=5, Lk=8, Dqk=6, Dv=3 in [B,H,L,D].
  std::array<Index, 4> qd{2, 4, 5, 6}, kd{2, 2, 8, 6}, vd{2, 2, 8, 3}, od{2, 4, 5, 3};
  std::array<Index, 3> ld{2, 4, 5};
  bool with_lse = true;
  effattn::Mask mask{};
  effattn::Options<T> options{};
  const T* q_ptr = nullptr;  // overrides for aliasing tests
  T* out_ptr = nullptr;

  effattn::ConstTensor4<T> q() const { return {q_ptr ? q_ptr : q_mem.data(), qd}; }
  effattn::ConstTensor4<T> k() const { return {k_mem.data(), kd}; }
  effattn::ConstTensor4<T> v() const { return {v_mem.data(), vd}; }
  effattn::Tensor4<T> out() { return {out_ptr ? out_ptr : out_mem.data(), od}; }
  effattn::Options<T>& opts() {
    if (with_lse && !options.lse) options.lse = effattn::Tensor3<T>(lse_mem.data(), ld);
    return options;
  }
  // Switches the four tensors to [B, L, H, D].
  void blhd() {
    options.layout = Layout::blhd;
    std::swap(qd[1], qd[2]);
    std::swap(kd[1], kd[2]);
    std::swap(vd[1], vd[2]);
    std::swap(od[1], od[2]);
  }
};

template <class T>
class Errors : public ::testing::Test {
 protected:
  // check() and forward() agree: same code, same message, the matching exception type.
  void expect_refused(Call<T>& c, ErrorCode code, const std::vector<std::string>& parts,
                      const effattn::SoftmaxAttention<T>& attn = {}) {
    const effattn::Status s = attn.check(c.q(), c.k(), c.v(), c.out(), c.mask, c.opts());
    ASSERT_FALSE(s.ok()) << "check() accepted the call";
    EXPECT_EQ(s.code(), code) << s.message();
    EXPECT_THAT(s.message(), HasSubstr("SoftmaxAttention"));
    for (const std::string& p : parts) EXPECT_THAT(s.message(), HasSubstr(p));
    expect_throws_status(s, [&] { attn.forward(c.q(), c.k(), c.v(), c.out(), c.mask, c.opts()); });
  }
  static constexpr const char* kBhld = "expected q [B,H,Lq,Dqk], k [B,Hkv,Lk,Dqk], v [B,Hkv,Lk,Dv], out [B,H,Lq,Dv]";
  static constexpr const char* kBlhd = "expected q [B,Lq,H,Dqk], k [B,Lk,Hkv,Dqk], v [B,Lk,Hkv,Dv], out [B,Lq,H,Dv]";
};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(Errors, Scalars);

TYPED_TEST(Errors, ValidCallIsAccepted) {
  Call<TypeParam> c;
  const effattn::SoftmaxAttention<TypeParam> attn;
  EXPECT_TRUE(attn.check(c.q(), c.k(), c.v(), c.out(), c.mask, c.opts()).ok());
  EXPECT_NO_THROW(attn.forward(c.q(), c.k(), c.v(), c.out(), c.mask, c.opts()));
  const auto q = c.q(), k = c.k(), v = c.v();
  const auto out = c.out();
  const auto& options = c.opts();
  static_assert(noexcept(attn.check(q, k, v, out, c.mask, options)));
}

TYPED_TEST(Errors, MismatchedExtents) {
  using T = TypeParam;
  const char* bhld = this->kBhld;
  {
    Call<T> c;
    c.kd[0] = 3;
    c.vd[0] = 3;
    this->expect_refused(c, ErrorCode::shape, {"k.dimension(0) (B) is 3 but q.dimension(0) is 2", bhld});
  }
  {
    Call<T> c;
    c.vd[0] = 1;
    this->expect_refused(c, ErrorCode::shape, {"v.dimension(0) (B) is 1 but q.dimension(0) is 2"});
  }
  {
    Call<T> c;
    c.vd[1] = 1;
    this->expect_refused(c, ErrorCode::shape, {"v.dimension(1) (Hkv) is 1 but k.dimension(1) is 2"});
  }
  {
    Call<T> c;
    c.vd[2] = 7;
    this->expect_refused(c, ErrorCode::shape, {"v.dimension(2) (Lk) is 7 but k.dimension(2) is 8"});
  }
  {
    Call<T> c;
    c.kd[3] = 7;
    this->expect_refused(c, ErrorCode::shape, {"SoftmaxAttention::forward: k.dimension(3) (Dqk) is 7 but q.dimension(3) is 6", bhld});
  }
  {
    Call<T> c;
    c.kd[1] = c.vd[1] = 3;
    this->expect_refused(c, ErrorCode::shape, {"q.dimension(1) (H) is 4, not a multiple of k.dimension(1) (Hkv) 3"});
  }
  {
    Call<T> c;
    c.qd[2] = -1;
    this->expect_refused(c, ErrorCode::shape, {"q.dimension(2) is negative"});
  }
}

TYPED_TEST(Errors, WrongOutShape) {
  using T = TypeParam;
  const std::array<Index, 4> good{2, 4, 5, 3};
  for (int axis = 0; axis < 4; ++axis) {
    Call<T> c;
    c.od[static_cast<std::size_t>(axis)] += 1;
    this->expect_refused(c, ErrorCode::shape,
                         {"out.dimension(" + std::to_string(axis) + ") is " + std::to_string(good[static_cast<std::size_t>(axis)] + 1) +
                              " but must be " + std::to_string(good[static_cast<std::size_t>(axis)]),
                          this->kBhld});
  }
}

TYPED_TEST(Errors, WrongLseShape) {
  for (int axis = 0; axis < 3; ++axis) {
    Call<TypeParam> c;
    c.ld[static_cast<std::size_t>(axis)] += 2;
    this->expect_refused(c, ErrorCode::shape, {"lse.dimension(" + std::to_string(axis) + ")", "expected lse [B,H,Lq]"});
  }
}

TYPED_TEST(Errors, BlhdMessagesNameTheBlhdAxes) {
  Call<TypeParam> c;
  c.blhd();
  c.vd[2] = 1;  // Hkv in [B, L, H, D]
  this->expect_refused(c, ErrorCode::shape, {"v.dimension(2) (Hkv) is 1 but k.dimension(2) is 2", this->kBlhd});
  Call<TypeParam> d;
  d.blhd();
  d.kd[2] = d.vd[2] = 3;
  this->expect_refused(d, ErrorCode::shape, {"q.dimension(2) (H) is 4, not a multiple of k.dimension(2) (Hkv) 3", this->kBlhd});
}

TYPED_TEST(Errors, OutAliasingAnInput) {
  using T = TypeParam;
  {
    Call<T> c;
    c.out_ptr = c.q_mem.data() + 10;
    SCOPED_TRACE("out aliases q");
    this->expect_refused(c, ErrorCode::shape, {"out aliases q"});
  }
  {
    Call<T> c;
    c.out_ptr = c.k_mem.data();
    SCOPED_TRACE("out aliases k");
    this->expect_refused(c, ErrorCode::shape, {"out aliases k"});
  }
  {
    Call<T> c;
    c.out_ptr = c.v_mem.data() + 50;  // v spans 96 elements
    SCOPED_TRACE("out aliases v");
    this->expect_refused(c, ErrorCode::shape, {"out aliases v"});
  }
  {
    Call<T> c;
    c.options.lse = effattn::Tensor3<T>(c.out_mem.data() + 3, c.ld);
    SCOPED_TRACE("lse overlaps");
    this->expect_refused(c, ErrorCode::shape, {"lse overlaps"});
  }
}

TYPED_TEST(Errors, BadKeyLengths) {
  using T = TypeParam;
  {
    Call<T> c;
    const std::vector<Index> lens{8};
    c.mask.key_lengths = lens;
    this->expect_refused(c, ErrorCode::shape, {"mask.key_lengths has 1 entries but B is 2"});
  }
  {
    Call<T> c;
    const std::vector<Index> lens{8, 9};
    c.mask.key_lengths = lens;
    this->expect_refused(c, ErrorCode::shape, {"mask.key_lengths[1] is 9 but must lie in [0, Lk] = [0, 8]"});
  }
  {
    Call<T> c;
    const std::vector<Index> lens{-1, 3};
    c.mask.key_lengths = lens;
    this->expect_refused(c, ErrorCode::shape, {"mask.key_lengths[0] is -1"});
  }
}

TYPED_TEST(Errors, BadCuSeqlens) {
  using T = TypeParam;
  const auto packed = [](Call<T>& c) {
    c.qd[0] = c.kd[0] = c.vd[0] = c.od[0] = c.ld[0] = 1;
  };
  struct Bad {
    std::vector<Index> cq, ck;
    std::string message;
  };
  const std::vector<Bad> bad = {
      {{0, 2, 5}, {0, 8}, "mask.cu_seqlens_q has 3 entries and cu_seqlens_k 2"},
      {{0}, {0}, "both must hold S+1 >= 2 cumulative offsets"},
      {{1, 5}, {0, 8}, "mask.cu_seqlens_q[0] is 1 but must be 0"},
      {{0, 5}, {2, 8}, "mask.cu_seqlens_k[0] is 2 but must be 0"},
      {{0, 3, 2}, {0, 4, 8}, "mask.cu_seqlens_q decreases at entry 2 (3 -> 2)"},
      {{0, 2, 5}, {0, 4, 9}, "mask.cu_seqlens_k ends at 9 beyond the tensor length 8"},
      {{0, 6}, {0, 8}, "mask.cu_seqlens_q ends at 6 beyond the tensor length 5"},
  };
  for (const Bad& b : bad) {
    Call<T> c;
    packed(c);
    c.mask.cu_seqlens_q = b.cq;
    c.mask.cu_seqlens_k = b.ck;
    this->expect_refused(c, ErrorCode::shape, {b.message});
  }
  {
    // B = 2 with packed sequences.
    Call<T> c;
    const std::vector<Index> cq{0, 5}, ck{0, 8};
    c.mask.cu_seqlens_q = cq;
    c.mask.cu_seqlens_k = ck;
    this->expect_refused(c, ErrorCode::shape, {"packed sequences need B = 1", "q.dimension(0) is 2"});
  }
  {
    Call<T> c;
    packed(c);
    const std::vector<Index> cq{0, 5}, ck{0, 8}, lens{8};
    c.mask.cu_seqlens_q = cq;
    c.mask.cu_seqlens_k = ck;
    c.mask.key_lengths = lens;
    this->expect_refused(c, ErrorCode::unsupported, {"mask.key_lengths and packed sequences cannot be combined"});
  }
}

TYPED_TEST(Errors, BadBias) {
  using T = TypeParam;
  const std::vector<double> add(1000, 0.0);
  for (std::array<Index, 4> shape : {std::array<Index, 4>{3, 1, 5, 8}, {2, 2, 5, 8}, {1, 1, 4, 8}, {1, 1, 5, 7}, {1, 1, 5, 1}}) {
    Call<T> c;
    c.mask.bias = effattn::Bias::additive(add.data(), shape);
    this->expect_refused(c, ErrorCode::shape,
                         {"mask.bias has shape [" + std::to_string(shape[0]) + "," + std::to_string(shape[1]) + "," +
                              std::to_string(shape[2]) + "," + std::to_string(shape[3]) + "]",
                          "must broadcast to [B,H,Lq,Lk] = [2,4,5,8]"});
  }
  {
    Call<T> c;
    c.qd[0] = c.kd[0] = c.vd[0] = c.od[0] = c.ld[0] = 1;
    const std::vector<Index> cq{0, 5}, ck{0, 8};
    c.mask.cu_seqlens_q = cq;
    c.mask.cu_seqlens_k = ck;
    c.mask.bias = effattn::Bias::additive(add.data(), {1, 1, 5, 8});
    this->expect_refused(c, ErrorCode::unsupported, {"mask.bias cannot be combined with packed sequences"});
  }
}

TYPED_TEST(Errors, BadWindow) {
  Call<TypeParam> c;
  c.mask.window = {-2, 3};
  this->expect_refused(c, ErrorCode::config, {"mask.window is (-2, 3)"});
}

TYPED_TEST(Errors, AlibiSlopesPerHead) {
  Call<TypeParam> c;
  effattn::SoftmaxConfig config;
  config.alibi_slopes = {0.5, 0.25, 0.125};
  this->expect_refused(c, ErrorCode::config, {"alibi_slopes has 3 slopes but q has H = 4 heads"},
                       effattn::SoftmaxAttention<TypeParam>(config));
}

TYPED_TEST(Errors, BadConfigIsRefusedByTheConstructor) {
  using T = TypeParam;
  const auto refused = [](effattn::SoftmaxConfig config, const std::string& part) {
    EXPECT_FALSE(config.validate().ok()) << part;
    EXPECT_THAT(config.validate().message(), HasSubstr(part));
    EXPECT_THAT([&] { effattn::SoftmaxAttention<T> attn(config); }, ::testing::ThrowsMessage<effattn::config_error>(HasSubstr(part)));
  };
  effattn::SoftmaxConfig c;
  c.softcap = -1;
  refused(c, "softcap is -1");
  c = {};
  c.softcap = std::numeric_limits<double>::infinity();
  refused(c, "softcap is inf");
  c = {};
  c.scale = std::numeric_limits<double>::quiet_NaN();
  refused(c, "scale is nan");
  c = {};
  c.scale = std::numeric_limits<double>::infinity();
  refused(c, "scale is inf");
  c = {};
  c.split_kv = -2;
  refused(c, "split_kv is -2");
  c = {};
  c.alibi_slopes = {0.5, std::numeric_limits<double>::quiet_NaN()};
  refused(c, "alibi_slopes[1] is nan");
  c = {};
  c.scale = 0.0;
  c.softcap = 0;
  c.split_kv = 5;
  EXPECT_NO_THROW(effattn::SoftmaxAttention<T>{c});
}

TYPED_TEST(Errors, NullDataPointer) {
  using T = TypeParam;
  Call<T> c;
  const effattn::SoftmaxAttention<T> attn;
  const effattn::Status s = attn.check(effattn::ConstTensor4<T>(nullptr, c.qd), c.k(), c.v(), c.out(), c.mask, c.opts());
  EXPECT_EQ(s.code(), ErrorCode::shape);
  EXPECT_THAT(s.message(), HasSubstr("q has a null data pointer"));
}

}  // namespace
}  // namespace effattn_test
