// RfaAttention at the API boundary: it is an Attention; every refusal has the right exception type
// and a message that names the problem; check() reports the same Status without throwing; supports()
// agrees with forward(); the gate and extend() overloads and bad configs are refused likewise.

#include <array>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <effattn/kinds/rfa.hpp>

#include "support/expect_error.hpp"

namespace effattn_test {
namespace {

using ::testing::HasSubstr;
using effattn::Causal;
using effattn::Compat;
using effattn::ErrorCode;
using effattn::Feature;
using effattn::Index;
using effattn::Layout;
using effattn::Projection;
using effattn::RfaAttention;
using effattn::RfaConfig;

static_assert(effattn::Attention<RfaAttention<float>>);
static_assert(effattn::Attention<RfaAttention<double>>);

// One call's arguments over a shared pool of memory, so each test changes just the piece it refuses.
// B=2, H=4, Hkv=2, Lq=5, Lk=8, Dqk=6, Dv=3 in [B,H,L,D].
template <class T>
struct Call {
  std::vector<T> q_mem = std::vector<T>(4096, T(0.5)), k_mem = std::vector<T>(4096, T(0.25)),
                 v_mem = std::vector<T>(4096, T(0.5)), out_mem = std::vector<T>(4096), lse_mem = std::vector<T>(512),
                 gate_mem = std::vector<T>(512, T(0.5));
  std::array<Index, 4> qd{2, 4, 5, 6}, kd{2, 2, 8, 6}, vd{2, 2, 8, 3}, od{2, 4, 5, 3};
  std::array<Index, 3> gd{2, 2, 8};
  effattn::Mask mask{};
  effattn::Options<T> options{};

  effattn::ConstTensor4<T> q() const { return {q_mem.data(), qd}; }
  effattn::ConstTensor4<T> k() const { return {k_mem.data(), kd}; }
  effattn::ConstTensor4<T> v() const { return {v_mem.data(), vd}; }
  effattn::Tensor4<T> out() { return {out_mem.data(), od}; }
  effattn::ConstTensor3<T> gate() const { return {gate_mem.data(), gd}; }
};

RfaConfig config_with(Feature f, Compat c = Compat::none) {
  RfaConfig config;
  config.feature = f;
  config.compat = c;
  config.num_features = 16;
  return config;
}

template <class T>
class RfaErrors : public ::testing::Test {
 protected:
  static RfaAttention<T> attention(RfaConfig config = config_with(Feature::positive)) { return {config, 2, 6}; }

  // check() and forward() agree: same code, same message, the matching exception type; the message
  // names the kind and contains every part.
  void expect_refused(Call<T>& c, ErrorCode code, const std::vector<std::string>& parts, const RfaAttention<T>& attn) {
    const effattn::Status s = attn.check(c.q(), c.k(), c.v(), c.out(), c.mask, c.options);
    ASSERT_FALSE(s.ok()) << "check() accepted the call";
    EXPECT_EQ(s.code(), code) << s.message();
    EXPECT_THAT(s.message(), HasSubstr("RfaAttention"));
    for (const std::string& p : parts) EXPECT_THAT(s.message(), HasSubstr(p));
    expect_throws_status(s, [&] { attn.forward(c.q(), c.k(), c.v(), c.out(), c.mask, c.options); });
  }
};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(RfaErrors, Scalars);

TYPED_TEST(RfaErrors, ValidCallsAreAccepted) {
  using T = TypeParam;
  Call<T> c;
  const auto attn = this->attention();
  const auto q = c.q(), k = c.k(), v = c.v();
  const auto out = c.out();
  static_assert(noexcept(attn.check(q, k, v, out, c.mask, c.options)));
  EXPECT_TRUE(attn.check(q, k, v, out, c.mask, c.options).ok());
  EXPECT_NO_THROW(attn.forward(q, k, v, out, c.mask, c.options));
  const std::vector<Index> lens{8, 0};
  c.mask.key_lengths = lens;
  for (Causal causal : {Causal::none, Causal::top_left, Causal::bottom_right}) {
    c.mask.causal = causal;
    EXPECT_TRUE(attn.check(q, k, v, out, c.mask, c.options).ok());
    EXPECT_NO_THROW(attn.forward(q, k, v, out, c.mask, c.options));
  }
  c.mask.key_lengths = {};
  EXPECT_NO_THROW(attn.forward(q, k, v, c.gate(), out, c.mask, c.options));  // causal: the gate is accepted
  // The shared checks of every kind run too.
  c.kd[3] = c.vd[3] = 7;
  this->expect_refused(c, ErrorCode::shape, {"k.dimension(3) (Dqk) is 7 but q.dimension(3) is 6"}, attn);
}

TYPED_TEST(RfaErrors, PerPairMasksAreUnsupported) {
  using T = TypeParam;
  const auto attn = this->attention();
  const std::vector<double> add(1000, 0.0);
  const std::unique_ptr<bool[]> keep(new bool[1000]());
  {
    Call<T> c;
    c.mask.bias = effattn::Bias::additive(add.data(), {1, 1, 5, 8});
    EXPECT_FALSE(attn.supports(c.mask));
    this->expect_refused(c, ErrorCode::unsupported, {"mask.bias", "cannot be honoured", "factorisation"}, attn);
  }
  {
    Call<T> c;
    c.mask.bias = effattn::Bias::boolean(keep.get(), {2, 4, 5, 8});
    EXPECT_FALSE(attn.supports(c.mask));
    this->expect_refused(c, ErrorCode::unsupported, {"mask.bias"}, attn);
  }
  {
    Call<T> c;
    c.mask.window = {2, 2};
    EXPECT_FALSE(attn.supports(c.mask));
    this->expect_refused(c, ErrorCode::unsupported, {"mask.window", "cannot be honoured"}, attn);
  }
  {
    Call<T> c;
    c.qd[0] = c.kd[0] = c.vd[0] = c.od[0] = 1;
    const std::vector<Index> cq{0, 2, 5}, ck{0, 3, 8};
    c.mask.cu_seqlens_q = cq;
    c.mask.cu_seqlens_k = ck;
    EXPECT_FALSE(attn.supports(c.mask));
    this->expect_refused(c, ErrorCode::unsupported, {"packed sequences", "cannot be honoured"}, attn);
  }
}

TYPED_TEST(RfaErrors, LseIsUnsupported) {
  using T = TypeParam;
  Call<T> c;
  c.options.lse = effattn::Tensor3<T>(c.lse_mem.data(), 2, 4, 5);
  this->expect_refused(c, ErrorCode::unsupported, {"log-sum-exp", "Options::lse"}, this->attention());
}

TYPED_TEST(RfaErrors, HkunlpIsNonCausalOnly) {
  using T = TypeParam;
  for (Feature f : {Feature::positive, Feature::hkunlp_fourier}) {
    const auto attn = this->attention(config_with(f, Compat::hkunlp));
    for (Causal causal : {Causal::top_left, Causal::bottom_right}) {
      Call<T> c;
      c.mask.causal = causal;
      EXPECT_FALSE(attn.supports(c.mask));
      this->expect_refused(c, ErrorCode::unsupported, {"compat = hkunlp", "no causal form"}, attn);
    }
    Call<T> c;
    EXPECT_TRUE(attn.supports(c.mask));
    EXPECT_TRUE(attn.check(c.q(), c.k(), c.v(), c.out(), c.mask, c.options).ok());
  }
}

TYPED_TEST(RfaErrors, ProjectionShapeMustMatchTheCall) {
  using T = TypeParam;
  {
    Call<T> c;
    const RfaAttention<T> attn(config_with(Feature::positive), 2, 7);
    this->expect_refused(c, ErrorCode::shape, {"q has Dqk = 6", "projection was made for Dqk = 7"}, attn);
  }
  {
    Call<T> c;
    const RfaAttention<T> attn(config_with(Feature::relu), Projection(std::vector<double>(2 * 4 * 5, 0.1), 2, 4, 5));
    this->expect_refused(c, ErrorCode::shape, {"projection was made for Dqk = 5"}, attn);
  }
  {
    // relu without a projection: the identity map of the head dimension it was made for.
    Call<T> c;
    const RfaAttention<T> attn(config_with(Feature::relu), 2, 4);
    this->expect_refused(c, ErrorCode::shape, {"made for Dqk = 4"}, attn);
  }
  {
    Call<T> c;
    const RfaAttention<T> attn(config_with(Feature::positive), 3, 6);
    this->expect_refused(c, ErrorCode::shape, {"k has Hkv = 2 heads but the projection has 3", "one per KV head"}, attn);
  }
  {
    Call<T> c;
    const RfaAttention<T> attn(config_with(Feature::hyperbolic), Projection(std::vector<double>(4 * 3 * 6, 0.1), 4, 3, 6));
    this->expect_refused(c, ErrorCode::shape, {"projection has 4"}, attn);
  }
  {
    // One shared matrix serves any number of KV heads.
    Call<T> c;
    RfaConfig shared = config_with(Feature::positive);
    shared.share_across_heads = true;
    const RfaAttention<T> attn(shared, 3, 6);
    EXPECT_TRUE(attn.check(c.q(), c.k(), c.v(), c.out(), c.mask, c.options).ok());
    const RfaAttention<T> given(config_with(Feature::positive), Projection(std::vector<double>(9 * 6, 0.1), 1, 9, 6));
    EXPECT_TRUE(given.check(c.q(), c.k(), c.v(), c.out(), c.mask, c.options).ok());
    EXPECT_EQ(given.config().num_features, 9);  // taken from the projection
  }
}

TYPED_TEST(RfaErrors, BadGate) {
  using T = TypeParam;
  const auto attn = this->attention();
  const auto expect_throw = [&](Call<T>& c, auto exception, const std::vector<std::string>& parts) {
    using E = decltype(exception);
    try {
      attn.forward(c.q(), c.k(), c.v(), c.gate(), c.out(), c.mask, c.options);
      ADD_FAILURE() << "forward accepted the gate";
    } catch (const E& e) {
      EXPECT_THAT(std::string(e.what()), HasSubstr("RfaAttention"));
      for (const std::string& p : parts) EXPECT_THAT(std::string(e.what()), HasSubstr(p));
    } catch (const std::exception& e) {
      ADD_FAILURE() << "wrong exception type: " << e.what();
    }
  };
  for (T bad : {T(1.5), T(-0.1), std::numeric_limits<T>::quiet_NaN(), std::numeric_limits<T>::infinity()}) {
    Call<T> c;
    c.mask.causal = Causal::top_left;
    c.gate_mem[13] = bad;
    SCOPED_TRACE(bad);
    expect_throw(c, effattn::config_error(""), {"gate value", "at flat index 13", "outside [0, 1]"});
  }
  for (int axis = 0; axis < 3; ++axis) {
    Call<T> c;
    c.mask.causal = Causal::top_left;
    c.gd[static_cast<std::size_t>(axis)] += 1;
    expect_throw(c, effattn::shape_error(""), {"gate.dimension(" + std::to_string(axis) + ")", "expected gate [B,Hkv,Lk]"});
  }
  {
    Call<T> c;  // non-causal
    expect_throw(c, effattn::unsupported_error(""), {"recency gate is causal only"});
  }
  {
    Call<T> c;
    c.mask.causal = Causal::top_left;
    const RfaAttention<T> lucid(config_with(Feature::positive, Compat::lucidrains), 2, 6);
    try {
      lucid.forward(c.q(), c.k(), c.v(), c.gate(), c.out(), c.mask, c.options);
      ADD_FAILURE() << "compat = lucidrains accepted a gate";
    } catch (const effattn::unsupported_error& e) {
      EXPECT_THAT(std::string(e.what()), HasSubstr("compat = lucidrains"));
    }
  }
  {
    // The gate must not overlap out.
    Call<T> c;
    c.mask.causal = Causal::top_left;
    std::fill(c.out_mem.begin(), c.out_mem.end(), T(0.5));
    try {
      attn.forward(c.q(), c.k(), c.v(), effattn::ConstTensor3<T>(c.out_mem.data() + 4, c.gd), c.out(), c.mask, c.options);
      ADD_FAILURE() << "a gate overlapping out was accepted";
    } catch (const effattn::shape_error& e) {
      EXPECT_THAT(std::string(e.what()), HasSubstr("out overlaps gate"));
    }
  }
}

TYPED_TEST(RfaErrors, BadExtend) {
  using T = TypeParam;
  const auto attn = this->attention();
  {
    Call<T> c;  // Lq = 5, Lk = 8
    auto state = attn.make_state(2, 2, 3);
    EXPECT_THAT([&] { attn.extend(state, c.q(), c.k(), c.v(), c.out()); },
                ::testing::ThrowsMessage<effattn::shape_error>(
                    HasSubstr("q has Lq = 5 tokens and k Lk = 8; each new token brings one query and one key")));
  }
  Call<T> c;
  c.kd[2] = c.vd[2] = 5;  // Lq = Lk = 5
  {
    auto state = attn.make_state(2, 2, 3);
    EXPECT_NO_THROW(attn.extend(state, c.q(), c.k(), c.v(), c.out()));
    EXPECT_EQ(state.length(0), 5);
    for (auto bad : {attn.make_state(1, 2, 3), attn.make_state(2, 1, 3), attn.make_state(2, 2, 4)})
      EXPECT_THAT([&] { attn.extend(bad, c.q(), c.k(), c.v(), c.out()); },
                  ::testing::ThrowsMessage<effattn::shape_error>(HasSubstr("make it with make_state")));
    // A state of another map (different feature count).
    auto other = RfaAttention<T>(config_with(Feature::hyperbolic), 2, 6).make_state(2, 2, 3);
    EXPECT_THAT([&] { attn.extend(other, c.q(), c.k(), c.v(), c.out()); },
                ::testing::ThrowsMessage<effattn::shape_error>(HasSubstr("make it with make_state")));
  }
  {
    const RfaAttention<T> lucid(config_with(Feature::positive, Compat::lucidrains), 2, 6);
    auto state = lucid.make_state(2, 2, 3);
    EXPECT_THAT([&] { lucid.extend(state, c.q(), c.k(), c.v(), c.out()); },
                ::testing::ThrowsMessage<effattn::unsupported_error>(HasSubstr("compat = lucidrains")));
    const RfaAttention<T> hk(config_with(Feature::positive, Compat::hkunlp), 2, 6);
    auto hstate = hk.make_state(2, 2, 3);
    EXPECT_THAT([&] { hk.extend(hstate, c.q(), c.k(), c.v(), c.out()); },
                ::testing::ThrowsMessage<effattn::unsupported_error>(HasSubstr("compat = hkunlp")));
  }
  {
    // A refused extend leaves the state untouched.
    auto state = attn.make_state(2, 2, 3);
    Call<T> bad = c;
    bad.options.lse = effattn::Tensor3<T>(bad.lse_mem.data(), 2, 4, 5);
    EXPECT_THROW(attn.extend(state, bad.q(), bad.k(), bad.v(), bad.out(), bad.options), effattn::unsupported_error);
    EXPECT_EQ(state.length(0), 0);
  }
}

TYPED_TEST(RfaErrors, BadConfigIsRefusedByTheConstructors) {
  using T = TypeParam;
  const auto refused = [](RfaConfig config, const std::string& part) {
    EXPECT_FALSE(config.validate().ok()) << part;
    EXPECT_EQ(config.validate().code(), ErrorCode::config) << part;
    EXPECT_THAT(config.validate().message(), HasSubstr(part));
    EXPECT_THAT([&] { RfaAttention<T> attn(config, 2, 6); }, ::testing::ThrowsMessage<effattn::config_error>(HasSubstr(part)));
  };
  RfaConfig c;
  c.num_features = 0;
  refused(c, "num_features is 0");
  c.feature = Feature::trigonometric;
  refused(c, "num_features is 0");
  c = {};
  c.num_features = -3;
  c.feature = Feature::relu;
  refused(c, "num_features is -3");
  c = {};
  c.temperature = -1;
  refused(c, "temperature is -1");
  c.temperature = 0;
  refused(c, "temperature is 0");
  c.temperature = std::numeric_limits<double>::quiet_NaN();
  refused(c, "temperature is nan");
  c = {};
  c.scale = 0.0;
  refused(c, "scale is 0");
  c.scale = std::numeric_limits<double>::infinity();
  refused(c, "scale is inf");
  c = {};
  c.feature = Feature::trigonometric;
  c.clamp = -0.5;
  refused(c, "clamp is -0.5");
  c = {};
  c.chunk = -1;
  refused(c, "chunk is -1");
  for (Feature f : {Feature::hyperbolic, Feature::trigonometric, Feature::hkunlp_fourier, Feature::relu, Feature::elu_plus_one}) {
    c = config_with(f, Compat::lucidrains);
    refused(c, "compat = lucidrains");
  }
  for (Feature f : {Feature::hyperbolic, Feature::trigonometric, Feature::relu, Feature::elu_plus_one}) {
    c = config_with(f, Compat::hkunlp);
    refused(c, "compat = hkunlp");
  }
  // A floor on a denominator that is only known up to a cancelling factor (exponential maps, compat
  // none) has no meaning.
  for (Feature f : {Feature::positive, Feature::hyperbolic, Feature::hkunlp_fourier}) {
    c = config_with(f);
    c.clamp = 0.1;
    refused(c, "clamp is 0.1");
  }
  // The caller's-projection constructor validates too (num_features then comes from the projection).
  RfaConfig lucid_hyp = config_with(Feature::hyperbolic, Compat::lucidrains);
  EXPECT_THROW(RfaAttention<T>(lucid_hyp, Projection(std::vector<double>(12, 0.1), 1, 2, 6)), effattn::config_error);
  // An empty caller's projection (the identity maps take the other constructor).
  EXPECT_THAT([] { RfaAttention<T> attn(config_with(Feature::relu), Projection()); },
              ::testing::ThrowsMessage<effattn::config_error>(HasSubstr("the projection is empty")));
  // Extents.
  EXPECT_THROW(RfaAttention<T>(RfaConfig{}, 0, 6), effattn::config_error);
  EXPECT_THROW(RfaAttention<T>(RfaConfig{}, 2, 0), effattn::config_error);
  EXPECT_THROW(Projection(std::vector<double>(11, 0.1), 1, 2, 6), effattn::config_error);
  // Accepted: relu / elu without features, a clamp where it has a meaning, the presets' own pairs.
  c = config_with(Feature::relu);
  c.num_features = 0;
  EXPECT_NO_THROW(RfaAttention<T>(c, 2, 6));
  for (Feature f : {Feature::trigonometric, Feature::relu, Feature::elu_plus_one}) {
    c = config_with(f);
    c.clamp = 0.1;
    EXPECT_NO_THROW(RfaAttention<T>(c, 2, 6)) << effattn::to_string(f);
  }
  EXPECT_NO_THROW(RfaAttention<T>(config_with(Feature::hkunlp_fourier, Compat::hkunlp), 2, 6));
  c = config_with(Feature::positive, Compat::hkunlp);
  c.clamp = 0.5;
  EXPECT_NO_THROW(RfaAttention<T>(c, 2, 6));
}

TYPED_TEST(RfaErrors, ResampleNeedsADrawnProjection) {
  using T = TypeParam;
  RfaAttention<T> given(config_with(Feature::positive), Projection(std::vector<double>(2 * 4 * 6, 0.1), 2, 4, 6));
  EXPECT_THAT([&] { given.resample(); }, ::testing::ThrowsMessage<effattn::config_error>(HasSubstr("given by the caller")));
  RfaAttention<T> drawn(config_with(Feature::positive), 2, 6);
  EXPECT_NO_THROW(drawn.resample());
}

// supports(mask) is exactly "forward would not refuse this mask" for otherwise valid calls.
TYPED_TEST(RfaErrors, SupportsAgreesWithForward) {
  using T = TypeParam;
  const std::vector<double> add(1000, 0.0);
  const std::vector<Index> lens{8, 3}, cq{0, 2, 5}, ck{0, 3, 8};
  struct Named {
    std::string name;
    effattn::Mask mask;
    bool packed = false;
  };
  std::vector<Named> masks;
  for (Causal causal : {Causal::none, Causal::top_left, Causal::bottom_right}) {
    effattn::Mask m;
    m.causal = causal;
    masks.push_back({"causal " + std::to_string(static_cast<int>(causal)), m});
    m.key_lengths = lens;
    masks.push_back({"key_lengths, causal " + std::to_string(static_cast<int>(causal)), m});
    m.key_lengths = {};
    m.window = {3, -1};
    masks.push_back({"window", m});
    m.window = {};
    m.bias = effattn::Bias::additive(add.data(), {1, 1, 5, 8});
    masks.push_back({"bias", m});
    m.bias = {};
    m.cu_seqlens_q = cq;
    m.cu_seqlens_k = ck;
    masks.push_back({"packed", m, true});
  }
  for (const RfaConfig& config : {config_with(Feature::positive), config_with(Feature::positive, Compat::lucidrains),
                                  config_with(Feature::positive, Compat::hkunlp), config_with(Feature::relu)})
    for (const Named& nm : masks) {
      const auto attn = this->attention(config);
      Call<T> c;
      if (nm.packed) c.qd[0] = c.kd[0] = c.vd[0] = c.od[0] = 1;
      c.mask = nm.mask;
      const effattn::Status s = attn.check(c.q(), c.k(), c.v(), c.out(), c.mask, c.options);
      EXPECT_EQ(attn.supports(c.mask), s.ok()) << nm.name << " compat " << effattn::to_string(config.compat) << ": "
                                               << s.message();
      if (!attn.supports(c.mask)) {
        EXPECT_EQ(s.code(), ErrorCode::unsupported) << nm.name;
        EXPECT_THROW(attn.forward(c.q(), c.k(), c.v(), c.out(), c.mask, c.options), effattn::unsupported_error) << nm.name;
      } else {
        EXPECT_NO_THROW(attn.forward(c.q(), c.k(), c.v(), c.out(), c.mask, c.options)) << nm.name;
      }
    }
}

TYPED_TEST(RfaErrors, LinearStateShapes) {
  using T = TypeParam;
  const auto attn = this->attention();
  auto a = attn.make_state(2, 2, 3);
  EXPECT_EQ(a.slices(), 4);
  EXPECT_EQ(a.features(), 16);
  EXPECT_EQ(a.dim_v(), 3);
  EXPECT_THAT([&] { a.merge(attn.make_state(2, 2, 4)); }, ::testing::ThrowsMessage<effattn::shape_error>(HasSubstr("shapes differ")));
  EXPECT_THAT([&] { a.merge(attn.make_state(1, 2, 3)); }, ::testing::ThrowsMessage<effattn::shape_error>(HasSubstr("shapes differ")));
  EXPECT_THROW(effattn::LinearState<T>(2, 0, 3), effattn::config_error);
  EXPECT_THROW(effattn::LinearState<T>(-1, 4, 3), effattn::config_error);
}

}  // namespace
}  // namespace effattn_test
