#pragma once
// The three exception types of the API boundary, and Status, the same error as a value for callers
// that do not use exceptions (every kind's noexcept check()). GCC 12 has no <format>, so messages are
// built with ostringstream.

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

#include "effattn/config.hpp"

EFFATTN_BEGIN_NAMESPACE

// A tensor has the wrong rank, extent or layout for the call.
struct shape_error : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};
// A Config field or option is out of range.
struct config_error : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};
// The kind cannot honour the request (a mask, an option combination) and refuses it instead of
// silently ignoring it.
struct unsupported_error : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

enum class ErrorCode { ok = 0, shape, config, unsupported };

class Status {
 public:
  Status() = default;
  Status(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}

  [[nodiscard]] bool ok() const noexcept { return code_ == ErrorCode::ok; }
  explicit operator bool() const noexcept { return ok(); }
  [[nodiscard]] ErrorCode code() const noexcept { return code_; }
  [[nodiscard]] const std::string& message() const noexcept { return message_; }

  // Throws the exception type that matches code(); no-op when ok().
  void raise() const {
    switch (code_) {
      case ErrorCode::ok: return;
      case ErrorCode::shape: throw shape_error(message_);
      case ErrorCode::config: throw config_error(message_);
      case ErrorCode::unsupported: throw unsupported_error(message_);
    }
  }

 private:
  ErrorCode code_ = ErrorCode::ok;
  std::string message_;
};

namespace detail {

template <class... Parts>
std::string cat(const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  return os.str();
}

template <class... Parts>
Status error(ErrorCode code, const Parts&... parts) {
  return Status(code, cat(parts...));
}

// Runs a validation that returns Status inside a noexcept boundary: an allocation failure while
// composing a message becomes a Status instead of std::terminate.
template <class F>
Status guarded(F&& f) noexcept {
  try {
    return std::forward<F>(f)();
  } catch (const std::exception& e) {
    try {
      return Status(ErrorCode::config, e.what());
    } catch (...) {
      return Status(ErrorCode::config, {});
    }
  }
}

}  // namespace detail

EFFATTN_END_NAMESPACE
