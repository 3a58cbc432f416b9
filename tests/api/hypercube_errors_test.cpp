// HypercubeAttention at the API boundary: it is an Attention; a bad config is refused by validate()
// and the constructor; every refused call (causal, bias, window, packed, cross-attention, the shared
// shape checks, out aliasing an input) has the right exception type and a message that names the
// kind and the problem; check() reports the same Status without throwing; supports() agrees with
// forward() on every mask; key padding, GQA, both layouts, lse and empty extents are accepted.

#include <array>
#include <cmath>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <effattn/kinds/hypercube.hpp>

#include "support/expect_error.hpp"

namespace effattn_test {
namespace {

using effattn::Causal;
using effattn::ErrorCode;
using effattn::HypercubeAttention;
using effattn::HypercubeConfig;
using effattn::Index;
using effattn::Layout;
using ::testing::HasSubstr;

static_assert(effattn::Attention<HypercubeAttention<float>>);
static_assert(effattn::Attention<HypercubeAttention<double>>);

// One call's arguments over a shared pool of memory, so each test changes just the piece it refuses.
// B=2, H=4, Hkv=2, Lq=Lk=8, Dqk=6, Dv=3 in [B,H,L,D]; cross() makes Lk = 5.
template <class T>
struct Call {
  std::vector<T> q_mem = std::vector<T>(4096, T(0.5)), k_mem = std::vector<T>(4096, T(0.25)),
                 v_mem = std::vector<T>(4096, T(0.5)), out_mem = std::vector<T>(4096), lse_mem = std::vector<T>(512);
  std::array<Index, 4> qd{2, 4, 8, 6}, kd{2, 2, 8, 6}, vd{2, 2, 8, 3}, od{2, 4, 8, 3};
  effattn::Mask mask{};
  effattn::Options<T> options{};

  effattn::ConstTensor4<T> q() const { return {q_mem.data(), qd}; }
  effattn::ConstTensor4<T> k() const { return {k_mem.data(), kd}; }
  effattn::ConstTensor4<T> v() const { return {v_mem.data(), vd}; }
  effattn::Tensor4<T> out() { return {out_mem.data(), od}; }
  Call& length(Index n) {
    qd[2] = od[2] = kd[2] = vd[2] = n;
    return *this;
  }
};

HypercubeConfig cube(Index block, std::optional<double> scale = {}) { return HypercubeConfig{.block = block, .scale = scale}; }

template <class T>
class HypercubeErrors : public ::testing::Test {
 protected:
  // check() and forward() agree: same code, same message, the matching exception type; the message
  // names the kind and contains every part.
  void expect_refused(Call<T>& c, ErrorCode code, const std::vector<std::string>& parts,
                      const HypercubeAttention<T>& attn) {
    const effattn::Status s = attn.check(c.q(), c.k(), c.v(), c.out(), c.mask, c.options);
    ASSERT_FALSE(s.ok()) << "check() accepted the call";
    EXPECT_EQ(s.code(), code) << s.message();
    EXPECT_THAT(s.message(), HasSubstr("HypercubeAttention"));
    for (const std::string& p : parts) EXPECT_THAT(s.message(), HasSubstr(p));
    expect_throws_status(s, [&] { attn.forward(c.q(), c.k(), c.v(), c.out(), c.mask, c.options); });
  }

  void expect_accepted(Call<T>& c, const HypercubeAttention<T>& attn, const std::string& what = {}) {
    const effattn::Status s = attn.check(c.q(), c.k(), c.v(), c.out(), c.mask, c.options);
    EXPECT_TRUE(s.ok()) << what << ": " << s.message();
    EXPECT_NO_THROW(attn.forward(c.q(), c.k(), c.v(), c.out(), c.mask, c.options)) << what;
  }
};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(HypercubeErrors, Scalars);

TYPED_TEST(HypercubeErrors, ValidCallsAreAccepted) {
  using T = TypeParam;
  for (Index block : {1, 2, 16}) {
    const HypercubeAttention<T> attn(cube(block));
    Call<T> c;
    const auto q = c.q(), k = c.k(), v = c.v();
    const auto out = c.out();
    static_assert(noexcept(attn.check(q, k, v, out, c.mask, c.options)));
    this->expect_accepted(c, attn, "plain");
    const std::vector<Index> lens{8, 0};
    c.mask.key_lengths = lens;
    EXPECT_TRUE(attn.supports(c.mask));
    this->expect_accepted(c, attn, "key_lengths");
    c.options.lse = effattn::Tensor3<T>(c.lse_mem.data(), 2, 4, 8);
    this->expect_accepted(c, attn, "lse");
    // blhd: q [B, L, H, D].
    Call<T> blhd;
    blhd.qd = {2, 8, 4, 6}, blhd.kd = {2, 8, 2, 6}, blhd.vd = {2, 8, 2, 3}, blhd.od = {2, 8, 4, 3};
    blhd.options.layout = Layout::blhd;
    this->expect_accepted(blhd, attn, "blhd");
    // Empty extents: L = 0, and B = 0.
    Call<T> empty;
    empty.length(0);
    this->expect_accepted(empty, attn, "L = 0");
    Call<T> no_batch;
    no_batch.qd[0] = no_batch.kd[0] = no_batch.vd[0] = no_batch.od[0] = 0;
    this->expect_accepted(no_batch, attn, "B = 0");
  }
  // Any finite scale, including 0 and negative, and a block longer than the sequence.
  Call<T> c;
  this->expect_accepted(c, HypercubeAttention<T>(cube(4, 0.0)), "scale 0");
  this->expect_accepted(c, HypercubeAttention<T>(cube(4, -2.5)), "scale -2.5");
  this->expect_accepted(c, HypercubeAttention<T>(cube(1000)), "block 1000");
  // The default config is the official model's block of 16, at the default scale.
  EXPECT_EQ(HypercubeAttention<T>().config().block, 16);
  EXPECT_FALSE(HypercubeAttention<T>().config().scale.has_value());
}

TYPED_TEST(HypercubeErrors, BadConfigIsRefusedByTheConstructor) {
  using T = TypeParam;
  const auto refused = [](const HypercubeConfig& config, const std::string& part) {
    const effattn::Status s = config.validate();
    EXPECT_FALSE(s.ok()) << part;
    EXPECT_EQ(s.code(), ErrorCode::config) << part;
    EXPECT_THAT(s.message(), HasSubstr("HypercubeAttention::Config"));
    EXPECT_THAT(s.message(), HasSubstr(part));
    EXPECT_THAT([&] { HypercubeAttention<T> attn(config); }, ::testing::ThrowsMessage<effattn::config_error>(HasSubstr(part)));
  };
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  refused(cube(0), "block is 0");
  refused(cube(-3), "block is -3");
  refused(cube(16, inf), "scale is inf");
  refused(cube(16, -inf), "scale is -inf");
  refused(cube(16, nan), "scale is nan");
  EXPECT_TRUE(cube(1).validate().ok());
  EXPECT_TRUE(cube(16, 1e-300).validate().ok());
}

// The graph joins each node to nodes on both sides, and the paper defines no causal variant: a
// causal mask is refused rather than silently ignored.
TYPED_TEST(HypercubeErrors, CausalIsUnsupported) {
  using T = TypeParam;
  for (Index block : {1, 16})
    for (Causal causal : {Causal::top_left, Causal::bottom_right}) {
      Call<T> c;
      c.mask.causal = causal;
      const HypercubeAttention<T> attn(cube(block));
      EXPECT_FALSE(attn.supports(c.mask));
      this->expect_refused(c, ErrorCode::unsupported, {"causal"}, attn);
    }
}

// The graph is the attention pattern: a bias, a window or packed sequences would change it.
TYPED_TEST(HypercubeErrors, PerPairMasksAreUnsupported) {
  using T = TypeParam;
  const std::vector<double> add(1000, 0.0);
  const std::vector<float> add_f(1000, 0.0f);
  const std::unique_ptr<bool[]> keep(new bool[1000]());
  for (Index block : {1, 16}) {
    const HypercubeAttention<T> attn(cube(block));
    {
      Call<T> c;
      c.mask.bias = effattn::Bias::additive(add.data(), {1, 1, 8, 8});
      EXPECT_FALSE(attn.supports(c.mask));
      this->expect_refused(c, ErrorCode::unsupported, {"mask.bias"}, attn);
      c.mask.bias = effattn::Bias::additive(add_f.data(), {2, 4, 8, 8});
      this->expect_refused(c, ErrorCode::unsupported, {"mask.bias"}, attn);
    }
    {
      Call<T> c;
      c.mask.bias = effattn::Bias::boolean(keep.get(), {2, 1, 8, 8});
      EXPECT_FALSE(attn.supports(c.mask));
      this->expect_refused(c, ErrorCode::unsupported, {"mask.bias"}, attn);
    }
    for (effattn::Window w : {effattn::Window{2, 2}, effattn::Window{-1, 0}, effattn::Window{3, -1}}) {
      Call<T> c;
      c.mask.window = w;
      EXPECT_FALSE(attn.supports(c.mask));
      this->expect_refused(c, ErrorCode::unsupported, {"mask.window"}, attn);
    }
    {
      Call<T> c;
      c.qd[0] = c.kd[0] = c.vd[0] = c.od[0] = 1;
      const std::vector<Index> cu{0, 3, 8};
      c.mask.cu_seqlens_q = cu;
      c.mask.cu_seqlens_k = cu;
      EXPECT_FALSE(attn.supports(c.mask));
      this->expect_refused(c, ErrorCode::unsupported, {"packed"}, attn);
    }
  }
}

// The graph is over the positions of one sequence: Lq != Lk is refused, both ways, with the lengths.
TYPED_TEST(HypercubeErrors, CrossAttentionIsUnsupported) {
  using T = TypeParam;
  const HypercubeAttention<T> attn(cube(4));
  {
    Call<T> c;
    c.kd[2] = c.vd[2] = 5;
    EXPECT_TRUE(attn.supports(c.mask));  // a property of the shapes, not of the mask
    this->expect_refused(c, ErrorCode::unsupported, {"Lq = 8", "Lk = 5"}, attn);
  }
  {
    Call<T> c;
    c.qd[2] = c.od[2] = 3;
    this->expect_refused(c, ErrorCode::unsupported, {"Lq = 3", "Lk = 8"}, attn);
  }
}

// The shared checks of every kind run too, with their messages.
TYPED_TEST(HypercubeErrors, ShapeErrors) {
  using T = TypeParam;
  const HypercubeAttention<T> attn(cube(2));
  {
    Call<T> c;
    c.kd[3] = 7;
    this->expect_refused(c, ErrorCode::shape, {"k.dimension(3) (Dqk) is 7 but q.dimension(3) is 6"}, attn);
  }
  {
    Call<T> c;
    c.qd[1] = c.od[1] = 3;
    this->expect_refused(c, ErrorCode::shape, {"(H) is 3, not a multiple of", "(Hkv) 2"}, attn);
  }
  {
    Call<T> c;
    c.od[3] = 4;
    this->expect_refused(c, ErrorCode::shape, {"out.dimension(3) is 4 but must be 3"}, attn);
  }
  {
    Call<T> c;
    c.vd[2] = 7;
    this->expect_refused(c, ErrorCode::shape, {"v.dimension(2) (Lk) is 7 but k.dimension(2) is 8"}, attn);
  }
  {
    Call<T> c;
    c.kd[0] = 1;
    this->expect_refused(c, ErrorCode::shape, {"k.dimension(0) (B) is 1"}, attn);
  }
  {
    Call<T> c;
    const std::vector<Index> lens{8, 9};
    c.mask.key_lengths = lens;
    this->expect_refused(c, ErrorCode::shape, {"mask.key_lengths[1] is 9"}, attn);
    const std::vector<Index> negative{-1, 3};
    c.mask.key_lengths = negative;
    this->expect_refused(c, ErrorCode::shape, {"mask.key_lengths[0] is -1"}, attn);
    const std::vector<Index> three{8, 8, 8};
    c.mask.key_lengths = three;
    this->expect_refused(c, ErrorCode::shape, {"mask.key_lengths has 3 entries but B is 2"}, attn);
  }
  {
    Call<T> c;
    c.options.lse = effattn::Tensor3<T>(c.lse_mem.data(), 2, 4, 7);
    this->expect_refused(c, ErrorCode::shape, {"lse.dimension(2) is 7 but must be 8"}, attn);
  }
  {
    // The message spells the expected shapes in the call's layout.
    Call<T> c;
    c.qd = {2, 8, 4, 6}, c.kd = {2, 8, 2, 7}, c.vd = {2, 8, 2, 3}, c.od = {2, 8, 4, 3};
    c.options.layout = Layout::blhd;
    this->expect_refused(c, ErrorCode::shape, {"(Dqk) is 7", "q [B,Lq,H,Dqk]"}, attn);
  }
}

TYPED_TEST(HypercubeErrors, OutMustNotAliasAnInput) {
  using T = TypeParam;
  const HypercubeAttention<T> attn(cube(4));
  Call<T> c;
  const auto alias = [&](const T* base, const char* name) {
    const effattn::Tensor4<T> out(const_cast<T*>(base) + 7, c.od);
    const effattn::Status s = attn.check(c.q(), c.k(), c.v(), out, c.mask, c.options);
    ASSERT_FALSE(s.ok()) << name;
    EXPECT_EQ(s.code(), ErrorCode::shape);
    EXPECT_THAT(s.message(), HasSubstr(std::string("out aliases ") + name));
    expect_throws_status(s, [&] { attn.forward(c.q(), c.k(), c.v(), out, c.mask, c.options); });
  };
  alias(c.q_mem.data(), "q");
  alias(c.k_mem.data(), "k");
  alias(c.v_mem.data(), "v");
}

// supports(mask) is true exactly when forward() accepts the mask on an otherwise valid
// self-attention call.
TYPED_TEST(HypercubeErrors, SupportsAgreesWithForward) {
  using T = TypeParam;
  const std::vector<double> add(1000, 0.0);
  const std::vector<Index> lens{8, 3}, cu{0, 3, 8};
  std::vector<effattn::Mask> masks(8);
  masks[1].key_lengths = lens;
  masks[2].causal = Causal::top_left;
  masks[3].causal = Causal::bottom_right;
  masks[3].key_lengths = lens;
  masks[4].bias = effattn::Bias::additive(add.data(), {1, 1, 8, 8});
  masks[5].window = {1, 1};
  masks[6].cu_seqlens_q = cu;
  masks[6].cu_seqlens_k = cu;
  masks[7].window = {0, -1};
  masks[7].key_lengths = lens;
  for (Index block : {1, 4, 16}) {
    const HypercubeAttention<T> attn(cube(block));
    for (std::size_t i = 0; i < masks.size(); ++i) {
      Call<T> c;
      if (masks[i].packed()) c.qd[0] = c.kd[0] = c.vd[0] = c.od[0] = 1;
      c.mask = masks[i];
      const effattn::Status s = attn.check(c.q(), c.k(), c.v(), c.out(), c.mask, c.options);
      EXPECT_EQ(attn.supports(c.mask), s.ok()) << "mask " << i << ", block " << block << ": " << s.message();
      if (s.ok()) {
        EXPECT_NO_THROW(attn.forward(c.q(), c.k(), c.v(), c.out(), c.mask, c.options)) << "mask " << i;
      } else {
        expect_throws_status(s, [&] { attn.forward(c.q(), c.k(), c.v(), c.out(), c.mask, c.options); });
      }
    }
  }
}

}  // namespace
}  // namespace effattn_test
