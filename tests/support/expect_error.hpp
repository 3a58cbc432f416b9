#pragma once
// check() and forward() must agree: the exception forward() throws is the one that matches check()'s
// Status code, with the same message.

#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <effattn/core/errors.hpp>

namespace effattn_test {

template <class Call>
void expect_throws_status(const effattn::Status& status, Call&& call) {
  using ::testing::StrEq;
  using ::testing::ThrowsMessage;
  switch (status.code()) {
    case effattn::ErrorCode::shape: EXPECT_THAT(call, ThrowsMessage<effattn::shape_error>(StrEq(status.message()))); break;
    case effattn::ErrorCode::config: EXPECT_THAT(call, ThrowsMessage<effattn::config_error>(StrEq(status.message()))); break;
    case effattn::ErrorCode::unsupported:
      EXPECT_THAT(call, ThrowsMessage<effattn::unsupported_error>(StrEq(status.message())));
      break;
    case effattn::ErrorCode::ok: break;
  }
}

}  // namespace effattn_test
