// RandomizedAttention and LaraAttention at the API boundary: both are Attentions; bad configs are
// refused by validate() and the constructors; every refused call has the right exception type and a
// message that names the problem; check() reports the same Status without throwing; supports()
// agrees with forward(); injected draws (noise, key indices, landmarks) of the wrong shape or for the
// wrong mode are refused by the draws overloads.

#include <array>
#include <cmath>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <effattn/kinds/lara.hpp>

#include "support/expect_error.hpp"

namespace effattn_test {
namespace {

using effattn::Causal;
using effattn::ErrorCode;
using effattn::Index;
using effattn::LaraAttention;
using effattn::LaraConfig;
using effattn::LaraDraws;
using effattn::Noise;
using effattn::Padding;
using effattn::RaConfig;
using effattn::RaDraws;
using effattn::RaMean;
using effattn::RandomizedAttention;
using effattn::Sampling;
using effattn::Weighting;
using ::testing::HasSubstr;

static_assert(effattn::Attention<RandomizedAttention<float>>);
static_assert(effattn::Attention<RandomizedAttention<double>>);
static_assert(effattn::Attention<LaraAttention<float>>);
static_assert(effattn::Attention<LaraAttention<double>>);

// One call's arguments over a shared pool of memory, so each test changes just the piece it refuses.
// B=2, H=4, Hkv=2, Lq=5, Lk=8, Dqk=6, Dv=3 in [B,H,L,D]; self() makes Lk = Lq.
template <class T>
struct Call {
  std::vector<T> q_mem = std::vector<T>(4096, T(0.5)), k_mem = std::vector<T>(4096, T(0.25)),
                 v_mem = std::vector<T>(4096, T(0.5)), out_mem = std::vector<T>(4096), lse_mem = std::vector<T>(512);
  std::array<Index, 4> qd{2, 4, 5, 6}, kd{2, 2, 8, 6}, vd{2, 2, 8, 3}, od{2, 4, 5, 3};
  effattn::Mask mask{};
  effattn::Options<T> options{};

  effattn::ConstTensor4<T> q() const { return {q_mem.data(), qd}; }
  effattn::ConstTensor4<T> k() const { return {k_mem.data(), kd}; }
  effattn::ConstTensor4<T> v() const { return {v_mem.data(), vd}; }
  effattn::Tensor4<T> out() { return {out_mem.data(), od}; }
  // Lq = Lk = n.
  Call& length(Index n) {
    qd[2] = od[2] = kd[2] = vd[2] = n;
    return *this;
  }
};

LaraConfig lara_config(Index landmarks = 4) {
  LaraConfig c;
  c.num_landmarks = landmarks;
  return c;
}
LaraConfig stochastic(Index landmarks = 4, Index samples = 2, bool antithetic = false) {
  LaraConfig c = lara_config(landmarks);
  c.sampling = Sampling::stochastic;
  c.samples_per_proposal = samples;
  c.antithetic = antithetic;
  return c;
}

template <class T>
class LaraErrors : public ::testing::Test {
 protected:
  // check() and forward() agree: same code, same message, the matching exception type; the message
  // names the kind and contains every part.
  template <class A>
  void expect_refused(Call<T>& c, ErrorCode code, const std::vector<std::string>& parts, const A& attn) {
    const effattn::Status s = attn.check(c.q(), c.k(), c.v(), c.out(), c.mask, c.options);
    ASSERT_FALSE(s.ok()) << "check() accepted the call";
    EXPECT_EQ(s.code(), code) << s.message();
    EXPECT_THAT(s.message(), HasSubstr(std::string(A::name)));
    for (const std::string& p : parts) EXPECT_THAT(s.message(), HasSubstr(p));
    expect_throws_status(s, [&] { attn.forward(c.q(), c.k(), c.v(), c.out(), c.mask, c.options); });
  }

  template <class A>
  void expect_accepted(Call<T>& c, const A& attn, const std::string& what = {}) {
    const effattn::Status s = attn.check(c.q(), c.k(), c.v(), c.out(), c.mask, c.options);
    EXPECT_TRUE(s.ok()) << what << ": " << s.message();
    EXPECT_NO_THROW(attn.forward(c.q(), c.k(), c.v(), c.out(), c.mask, c.options)) << what;
  }

  // The draws overloads: check() with the draws and forward() with them agree in the same way.
  template <class A, class Draws>
  void expect_draws_refused(Call<T>& c, const A& attn, const Draws& draws, ErrorCode code,
                            const std::vector<std::string>& parts) {
    const effattn::Status s = attn.check(c.q(), c.k(), c.v(), c.out(), c.mask, c.options, draws);
    ASSERT_FALSE(s.ok()) << "check() accepted the draws";
    EXPECT_EQ(s.code(), code) << s.message();
    EXPECT_THAT(s.message(), HasSubstr(std::string(A::name)));
    for (const std::string& p : parts) EXPECT_THAT(s.message(), HasSubstr(p));
    expect_throws_status(s, [&] { attn.forward(c.q(), c.k(), c.v(), c.out(), c.mask, c.options, draws); });
  }

  template <class A, class Draws>
  void expect_draws_accepted(Call<T>& c, const A& attn, const Draws& draws, const std::string& what = {}) {
    const effattn::Status s = attn.check(c.q(), c.k(), c.v(), c.out(), c.mask, c.options, draws);
    EXPECT_TRUE(s.ok()) << what << ": " << s.message();
    EXPECT_NO_THROW(attn.forward(c.q(), c.k(), c.v(), c.out(), c.mask, c.options, draws)) << what;
  }
};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(LaraErrors, Scalars);

TYPED_TEST(LaraErrors, ValidCallsAreAccepted) {
  using T = TypeParam;
  Call<T> c;
  const RandomizedAttention<T> ra;
  const LaraAttention<T> lara(lara_config());
  const auto q = c.q(), k = c.k(), v = c.v();
  const auto out = c.out();
  static_assert(noexcept(ra.check(q, k, v, out, c.mask, c.options)));
  static_assert(noexcept(lara.check(q, k, v, out, c.mask, c.options)));
  this->expect_accepted(c, ra, "RA");
  this->expect_accepted(c, lara, "LARA");
  const std::vector<Index> lens{8, 0};
  c.mask.key_lengths = lens;
  this->expect_accepted(c, lara, "LARA key_lengths");
  for (Causal causal : {Causal::none, Causal::top_left, Causal::bottom_right}) {
    c.mask.causal = causal;
    this->expect_accepted(c, ra, "RA key_lengths causal " + std::to_string(static_cast<int>(causal)));
    c.mask.window = {2, 1};
    this->expect_accepted(c, ra, "RA window");
    c.mask.window = {};
  }
  c.mask = {};
  // Every configuration option on a valid call, and zero_compat on self-attention.
  for (LaraConfig cfg : {stochastic(4, 3, true), stochastic(1, 1), lara_config(16)}) {
    cfg.noise = Noise::code_compat;
    cfg.weighting = Weighting::mis_biased;
    cfg.mixed = true;
    this->expect_accepted(c, LaraAttention<T>(cfg), "LARA options");
  }
  {
    Call<T> self;
    self.length(5);
    const std::vector<Index> lens5{5, 2};
    self.mask.key_lengths = lens5;
    LaraConfig zc = lara_config();
    zc.padding = Padding::zero_compat;
    this->expect_accepted(self, LaraAttention<T>(zc), "zero_compat self");
  }
  // The shared checks of every kind run too.
  c.kd[3] = c.vd[3] = 7;
  this->expect_refused(c, ErrorCode::shape, {"k.dimension(3) (Dqk) is 7 but q.dimension(3) is 6"}, ra);
  this->expect_refused(c, ErrorCode::shape, {"k.dimension(3) (Dqk) is 7 but q.dimension(3) is 6"}, lara);
}

TYPED_TEST(LaraErrors, BadConfigIsRefusedByTheConstructors) {
  using T = TypeParam;
  const auto refused = [](auto config, const std::string& part) {
    using A = std::conditional_t<std::is_same_v<decltype(config), RaConfig>, RandomizedAttention<T>, LaraAttention<T>>;
    const effattn::Status s = config.validate();
    EXPECT_FALSE(s.ok()) << part;
    EXPECT_EQ(s.code(), ErrorCode::config) << part;
    EXPECT_THAT(s.message(), HasSubstr(std::string(A::name) + "::Config"));
    EXPECT_THAT(s.message(), HasSubstr(part));
    EXPECT_THAT([&] { A attn(config); }, ::testing::ThrowsMessage<effattn::config_error>(HasSubstr(part)));
  };
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  // RA.
  refused(RaConfig{.samples = 0}, "samples is 0");
  refused(RaConfig{.samples = -2}, "samples is -2");
  refused(RaConfig{.scale = 0.0}, "scale is 0");
  refused(RaConfig{.scale = -1.0}, "scale is -1");
  refused(RaConfig{.scale = inf}, "scale is inf");
  refused(RaConfig{.scale = nan}, "scale is nan");
  // LARA.
  LaraConfig c = lara_config(0);
  refused(c, "num_landmarks is 0");
  c.num_landmarks = -3;
  refused(c, "num_landmarks is -3");
  c = lara_config(8);
  c.grid = {3, 3};
  refused(c, "perfect square");
  c = lara_config(9);
  c.grid = {0, 5};
  refused(c, "both sides must be >= 1");
  c.grid = {4, -1};
  refused(c, "both sides must be >= 1");
  c = lara_config();
  c.alpha_coeff = nan;
  refused(c, "alpha_coeff is nan");
  c.alpha_coeff = -inf;
  refused(c, "alpha_coeff is -inf");
  c = stochastic(4, 0);
  refused(c, "samples_per_proposal is 0");
  c = lara_config();
  c.samples_per_proposal = 2;
  refused(c, "need sampling = stochastic");
  c = lara_config();
  c.antithetic = true;
  refused(c, "need sampling = stochastic");
  c = stochastic();
  c.noise = Noise::none;
  refused(c, "noise = none");
  c = lara_config();
  c.scale = 0.0;
  refused(c, "scale is 0");
  c.scale = nan;
  refused(c, "scale is nan");
  // Accepted: the edges of each rule.
  EXPECT_NO_THROW(RandomizedAttention<T>(RaConfig{.samples = 1, .noise = Noise::none, .mean = RaMean::mean_key}));
  c = lara_config(1);
  c.grid = {3, 5};
  EXPECT_NO_THROW(LaraAttention<T>{c});
  c = lara_config(49);
  c.grid = {14, 14};
  EXPECT_NO_THROW(LaraAttention<T>{c});
  c = lara_config();
  c.noise = Noise::none;  // deterministic sampling draws nothing, so the noise setting is moot
  c.alpha_coeff = -2;
  EXPECT_NO_THROW(LaraAttention<T>{c});
  EXPECT_NO_THROW(LaraAttention<T>{stochastic(4, 1, true)});
}

// A causal LARA would need landmarks of past tokens only; the segment means of the whole sequence
// let every query read future tokens, so it is refused rather than silently leaking.
TYPED_TEST(LaraErrors, LaraIsNonCausal) {
  using T = TypeParam;
  for (const LaraConfig& cfg : {lara_config(), stochastic()})
    for (Causal causal : {Causal::top_left, Causal::bottom_right}) {
      Call<T> c;
      c.mask.causal = causal;
      const LaraAttention<T> attn(cfg);
      EXPECT_FALSE(attn.supports(c.mask));
      this->expect_refused(c, ErrorCode::unsupported, {"causal", "future"}, attn);
    }
}

TYPED_TEST(LaraErrors, PerPairMasksAreUnsupported) {
  using T = TypeParam;
  const std::vector<double> add(1000, 0.0);
  const std::unique_ptr<bool[]> keep(new bool[1000]());
  const LaraAttention<T> lara(lara_config());
  const RandomizedAttention<T> ra;
  {
    Call<T> c;
    c.mask.bias = effattn::Bias::additive(add.data(), {1, 1, 5, 8});
    EXPECT_FALSE(lara.supports(c.mask));
    EXPECT_FALSE(ra.supports(c.mask));
    this->expect_refused(c, ErrorCode::unsupported, {"mask.bias"}, lara);
    this->expect_refused(c, ErrorCode::unsupported, {"mask.bias"}, ra);
  }
  {
    Call<T> c;
    c.mask.bias = effattn::Bias::boolean(keep.get(), {2, 4, 5, 8});
    EXPECT_FALSE(lara.supports(c.mask));
    EXPECT_FALSE(ra.supports(c.mask));
    this->expect_refused(c, ErrorCode::unsupported, {"mask.bias"}, lara);
    this->expect_refused(c, ErrorCode::unsupported, {"mask.bias"}, ra);
  }
  {
    Call<T> c;
    c.mask.window = {2, 2};
    EXPECT_FALSE(lara.supports(c.mask));
    this->expect_refused(c, ErrorCode::unsupported, {"mask.window"}, lara);
    EXPECT_TRUE(ra.supports(c.mask));  // RA keeps the exact band
  }
  {
    Call<T> c;
    c.qd[0] = c.kd[0] = c.vd[0] = c.od[0] = 1;
    const std::vector<Index> cq{0, 2, 5}, ck{0, 3, 8};
    c.mask.cu_seqlens_q = cq;
    c.mask.cu_seqlens_k = ck;
    EXPECT_FALSE(lara.supports(c.mask));
    EXPECT_FALSE(ra.supports(c.mask));
    this->expect_refused(c, ErrorCode::unsupported, {"packed"}, lara);
    this->expect_refused(c, ErrorCode::unsupported, {"packed"}, ra);
  }
}

TYPED_TEST(LaraErrors, LseIsUnsupported) {
  using T = TypeParam;
  Call<T> c;
  c.options.lse = effattn::Tensor3<T>(c.lse_mem.data(), 2, 4, 5);
  this->expect_refused(c, ErrorCode::unsupported, {"Options::lse"}, LaraAttention<T>(lara_config()));
  this->expect_refused(c, ErrorCode::unsupported, {"Options::lse"}, RandomizedAttention<T>());
}

TYPED_TEST(LaraErrors, OutMustNotAliasAnInput) {
  using T = TypeParam;
  Call<T> c;
  c.od = c.qd;
  c.od[3] = 3;
  const auto alias = [&](const auto& attn) {
    const effattn::Tensor4<T> out(c.q_mem.data() + 7, c.od);
    const effattn::Status s = attn.check(c.q(), c.k(), c.v(), out, c.mask, c.options);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.code(), ErrorCode::shape);
    EXPECT_THAT(s.message(), HasSubstr("out aliases q"));
    expect_throws_status(s, [&] { attn.forward(c.q(), c.k(), c.v(), out, c.mask, c.options); });
  };
  alias(LaraAttention<T>(lara_config()));
  alias(RandomizedAttention<T>());
}

// HKUNLP's zero_compat padding zeroes q, k, v of the same token positions, which has a meaning only
// when queries and keys are the same tokens. Without key padding it zeroes nothing (it is exclude),
// so cross-attention is refused only when padded.
TYPED_TEST(LaraErrors, ZeroCompatPaddingNeedsSelfAttention) {
  using T = TypeParam;
  LaraConfig cfg = lara_config();
  cfg.padding = Padding::zero_compat;
  const LaraAttention<T> attn(cfg);
  Call<T> c;  // Lq = 5, Lk = 8
  const std::vector<Index> lens{8, 3};
  c.mask.key_lengths = lens;
  this->expect_refused(c, ErrorCode::unsupported, {"zero_compat", "Lq = 5", "Lk = 8"}, attn);
  c.mask.key_lengths = {};
  this->expect_accepted(c, attn, "zero_compat cross-attention without padding");
  Call<T> self;
  self.length(8);
  self.mask.key_lengths = lens;
  this->expect_accepted(self, attn, "zero_compat, Lq = Lk");
}

// A grid config describes one image: Lq = Lk = rows * cols, and no key padding (pooling windows over
// a partly padded grid have no defined meaning).
TYPED_TEST(LaraErrors, GridNeedsItsTokenCountAndNoPadding) {
  using T = TypeParam;
  LaraConfig cfg = lara_config(4);
  cfg.grid = {2, 3};
  const LaraAttention<T> attn(cfg);
  {
    Call<T> c;
    c.length(6);
    this->expect_accepted(c, attn, "grid 2x3 on 6 tokens");
  }
  {
    Call<T> c;
    c.length(5);
    this->expect_refused(c, ErrorCode::shape, {"Config::grid is 2 x 3", "Lq = 5"}, attn);
  }
  {
    Call<T> c;  // Lq = 6, Lk = 8
    c.length(6);
    c.kd[2] = c.vd[2] = 8;
    this->expect_refused(c, ErrorCode::shape, {"Config::grid is 2 x 3", "Lk = 8"}, attn);
  }
  {
    Call<T> c;
    c.length(6);
    const std::vector<Index> lens{6, 4};
    c.mask.key_lengths = lens;
    EXPECT_FALSE(attn.supports(c.mask)) << "supports() must see that a grid config refuses key padding";
    this->expect_refused(c, ErrorCode::unsupported, {"key padding", "grid"}, attn);
  }
}

// LARA noise [B, H, C_eff S, Dqk]: C_eff = min(C, Lq, Lk) for 1-D segments; antithetic rows give both
// signs, so their count is not doubled. Only stochastic sampling draws anything.
TYPED_TEST(LaraErrors, LaraNoiseOfTheWrongShapeOrModeIsRefused) {
  using T = TypeParam;
  const std::vector<T> pool(8192, T(0.1));
  const auto noise = [&](Index b, Index h, Index r, Index d) {
    LaraDraws<T> draws;
    draws.noise = effattn::ConstTensor4<T>(pool.data(), b, h, r, d);
    return draws;
  };
  for (bool antithetic : {false, true}) {
    const LaraAttention<T> attn(stochastic(4, 2, antithetic));
    Call<T> c;  // Lq = 5, Lk = 8: C_eff = 4, 8 rows
    this->expect_draws_accepted(c, attn, noise(2, 4, 8, 6), "noise [2,4,8,6]");
    for (const auto& bad :
         {noise(1, 4, 8, 6), noise(2, 2, 8, 6), noise(2, 4, 16, 6), noise(2, 4, 7, 6), noise(2, 4, 8, 5)})
      this->expect_draws_refused(c, attn, bad, ErrorCode::shape, {"draws.noise", "C_eff*S"});
    // n < C: C_eff = 3 proposals, 6 rows.
    Call<T> small;
    small.length(3);
    this->expect_draws_accepted(small, attn, noise(2, 4, 6, 6), "noise [2,4,6,6] for C_eff = 3");
    this->expect_draws_refused(small, attn, noise(2, 4, 8, 6), ErrorCode::shape, {"draws.noise", "C_eff = 3"});
  }
  {
    const LaraAttention<T> attn(lara_config(4));
    Call<T> c;
    this->expect_draws_refused(c, attn, noise(2, 4, 4, 6), ErrorCode::config, {"noise", "deterministic"});
  }
  {
    const LaraAttention<T> attn(stochastic(4, 2));
    Call<T> c;
    LaraDraws<T> inside;
    inside.noise = effattn::ConstTensor4<T>(c.out_mem.data() + 5, 2, 4, 8, 6);
    this->expect_draws_refused(c, attn, inside, ErrorCode::shape, {"out overlaps draws.noise"});
  }
}

TYPED_TEST(LaraErrors, LandmarksOfTheWrongShapeOrAloneAreRefused) {
  using T = TypeParam;
  const std::vector<T> pool(8192, T(0.1));
  const auto landmarks = [&](std::array<Index, 4> qd, std::array<Index, 4> kd) {
    LaraDraws<T> draws;
    draws.query_landmarks = effattn::ConstTensor4<T>(pool.data(), qd);
    draws.key_landmarks = effattn::ConstTensor4<T>(pool.data() + 4096, kd);
    return draws;
  };
  const LaraAttention<T> attn(lara_config(3));
  Call<T> c;
  const std::array<Index, 4> good{2, 4, 3, 6};
  this->expect_draws_accepted(c, attn, landmarks(good, good), "landmarks [2,4,3,6]");
  for (int axis = 0; axis < 4; ++axis)
    for (bool query_side : {true, false}) {
      std::array<Index, 4> bad = good;
      bad[static_cast<std::size_t>(axis)] += 1;
      SCOPED_TRACE("axis " + std::to_string(axis) + (query_side ? " of the query landmarks" : " of the key landmarks"));
      this->expect_draws_refused(c, attn, query_side ? landmarks(bad, good) : landmarks(good, bad), ErrorCode::shape,
                                 {"landmarks"});
    }
  LaraDraws<T> only_q = landmarks(good, good), only_k = landmarks(good, good);
  only_q.key_landmarks.reset();
  only_k.query_landmarks.reset();
  this->expect_draws_refused(c, attn, only_q, ErrorCode::shape, {"both", "landmarks"});
  this->expect_draws_refused(c, attn, only_k, ErrorCode::shape, {"both", "landmarks"});
}

// RA noise [S, B, H, Lq, Dqk], key indices [S, B, H, Lq], each index visible to its query (the same
// band as softmax attention: causal alignment, window, key padding).
TYPED_TEST(LaraErrors, RaDrawsOfTheWrongShapeOrOutsideTheBandAreRefused) {
  using T = TypeParam;
  const std::vector<T> pool(8192, T(0.1));
  const RandomizedAttention<T> attn(RaConfig{.samples = 2, .noise = Noise::paper, .mean = RaMean::sampled_key});
  const std::array<Index, 5> nd{2, 2, 4, 5, 6};
  const std::array<Index, 4> kd{2, 2, 4, 5};
  std::vector<Index> keys(static_cast<std::size_t>(2 * 2 * 4 * 5), 0);
  const auto draws = [&](std::array<Index, 5> n, std::optional<std::array<Index, 4>> k) {
    RaDraws<T> d;
    d.noise = effattn::View<const T, 5>(pool.data(), n);
    if (k) d.key_index = effattn::View<const Index, 4>(keys.data(), *k);
    return d;
  };
  Call<T> c;  // Lq = 5, Lk = 8
  this->expect_draws_accepted(c, attn, draws(nd, kd), "noise and key_index");
  this->expect_draws_accepted(c, attn, draws(nd, std::nullopt), "noise alone");
  for (int axis = 0; axis < 5; ++axis) {
    std::array<Index, 5> bad = nd;
    bad[static_cast<std::size_t>(axis)] += 1;
    SCOPED_TRACE("noise axis " + std::to_string(axis));
    this->expect_draws_refused(c, attn, draws(bad, kd), ErrorCode::shape, {"draws.noise", "[S,B,H,Lq,Dqk]"});
  }
  for (int axis = 0; axis < 4; ++axis) {
    std::array<Index, 4> bad = kd;
    bad[static_cast<std::size_t>(axis)] += 1;
    SCOPED_TRACE("key_index axis " + std::to_string(axis));
    this->expect_draws_refused(c, attn, draws(nd, bad), ErrorCode::shape, {"draws.key_index", "[S,B,H,Lq]"});
  }
  // Draws for a mode that takes none: noise without noise, key indices without sampled keys.
  {
    Call<T> c2;
    std::fill(keys.begin(), keys.end(), 0);
    const RandomizedAttention<T> quiet(RaConfig{.samples = 2, .noise = Noise::none, .mean = RaMean::sampled_key});
    this->expect_draws_refused(c2, quiet, draws(nd, std::nullopt), ErrorCode::config, {"noise", "none"});
    const RandomizedAttention<T> expected(RaConfig{.samples = 2, .noise = Noise::paper, .mean = RaMean::expected_key});
    this->expect_draws_refused(c2, expected, draws(nd, kd), ErrorCode::config, {"key indices", "expected_key"});
    // Noise inside out.
    RaDraws<T> inside;
    inside.noise = effattn::View<const T, 5>(c2.out_mem.data() + 3, nd);
    this->expect_draws_refused(c2, attn, inside, ErrorCode::shape, {"out overlaps draws.noise"});
  }
  // Out of the band: index 8 = Lk, -1, a padded key, a future key under a causal mask, a key outside
  // the window. Every other entry holds a key its query sees, so the one bad entry is what is refused.
  const auto expect_outside = [&](Call<T>& call, Index flat, Index key, Index valid_shift = 0) {
    for (std::size_t i = 0; i < keys.size(); ++i) keys[i] = valid_shift ? static_cast<Index>(i % 5) + valid_shift : 0;
    this->expect_draws_accepted(call, attn, draws(nd, kd), "valid indices");
    keys[static_cast<std::size_t>(flat)] = key;
    SCOPED_TRACE("key_index " + std::to_string(key) + " at flat " + std::to_string(flat));
    this->expect_draws_refused(call, attn, draws(nd, kd), ErrorCode::shape, {"key_index", "is " + std::to_string(key)});
  };
  {
    Call<T> plain;
    expect_outside(plain, 3, 8);
    expect_outside(plain, 3, -1);
  }
  {
    Call<T> padded;
    const std::vector<Index> lens{8, 3};
    padded.mask.key_lengths = lens;
    expect_outside(padded, 20 + 2, 3);      // sample 0, batch 1, head 0, query 2: keys [0, 3) visible
    expect_outside(padded, 2 * 40 - 1, 5);  // sample 1, batch 1, head 3, query 4
  }
  {
    Call<T> causal;
    causal.mask.causal = Causal::top_left;
    expect_outside(causal, 1, 2);  // query 1 sees keys 0 and 1
    causal.mask.causal = Causal::bottom_right;
    expect_outside(causal, 1, 5);  // query 1 sees keys <= 1 + 8 - 5 = 4
    causal.mask.causal = Causal::none;
    causal.mask.window = {1, 0};  // centred on the bottom-right diagonal: query n sees keys n + 2, n + 3
    expect_outside(causal, 4, 5, 3);
  }
}

// supports(mask) is exactly "forward would not refuse this mask" for otherwise valid calls, for each
// kind and config (self-attention on a 2 x 3 grid's token count so grid configs are valid calls).
TYPED_TEST(LaraErrors, SupportsAgreesWithForward) {
  using T = TypeParam;
  const std::vector<double> add(1000, 0.0);
  const std::vector<Index> lens{6, 3}, cq{0, 2, 6}, ck{0, 3, 6};
  struct Named {
    std::string name;
    effattn::Mask mask;
    bool packed = false;
  };
  std::vector<Named> masks;
  for (Causal causal : {Causal::none, Causal::top_left, Causal::bottom_right}) {
    const std::string tag = " causal " + std::to_string(static_cast<int>(causal));
    effattn::Mask m;
    m.causal = causal;
    masks.push_back({"plain" + tag, m});
    m.key_lengths = lens;
    masks.push_back({"key_lengths" + tag, m});
    m.key_lengths = {};
    m.window = {3, -1};
    masks.push_back({"window" + tag, m});
    m.window = {};
    m.bias = effattn::Bias::additive(add.data(), {1, 1, 6, 6});
    masks.push_back({"bias" + tag, m});
    m.bias = {};
    m.cu_seqlens_q = cq;
    m.cu_seqlens_k = ck;
    masks.push_back({"packed" + tag, m, true});
  }
  LaraConfig zero_compat = lara_config(), grid = lara_config(4);
  zero_compat.padding = Padding::zero_compat;
  grid.grid = {2, 3};
  const auto agree = [&](const auto& attn, const std::string& kind) {
    for (const Named& nm : masks) {
      Call<T> c;
      c.length(6);
      if (nm.packed) c.qd[0] = c.kd[0] = c.vd[0] = c.od[0] = 1;
      c.mask = nm.mask;
      const effattn::Status s = attn.check(c.q(), c.k(), c.v(), c.out(), c.mask, c.options);
      EXPECT_EQ(attn.supports(c.mask), s.ok()) << kind << ", " << nm.name << ": " << s.message();
      if (!attn.supports(c.mask)) {
        EXPECT_EQ(s.code(), ErrorCode::unsupported) << kind << ", " << nm.name;
        EXPECT_THROW(attn.forward(c.q(), c.k(), c.v(), c.out(), c.mask, c.options), effattn::unsupported_error)
            << kind << ", " << nm.name;
      } else {
        EXPECT_NO_THROW(attn.forward(c.q(), c.k(), c.v(), c.out(), c.mask, c.options)) << kind << ", " << nm.name;
      }
    }
  };
  agree(LaraAttention<T>(lara_config()), "LARA");
  agree(LaraAttention<T>(stochastic()), "LARA stochastic");
  agree(LaraAttention<T>(zero_compat), "LARA zero_compat");
  agree(LaraAttention<T>(grid), "LARA grid 2x3");
  agree(RandomizedAttention<T>(), "RA");
  agree(RandomizedAttention<T>(RaConfig{.samples = 2, .noise = Noise::none, .mean = RaMean::expected_key}),
        "RA expected_key");
}

}  // namespace
}  // namespace effattn_test
