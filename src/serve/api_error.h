// ApiError: an OpenAI-style error response (HTTP status + {"error": {message, type, param, code}}).
// FromStatus maps moerun's status codes: InvalidArgument / OutOfRange -> 400
// invalid_request_error, NotFound -> 404 not_found_error, ResourceExhausted -> 429
// (the queue is full; retry), Unimplemented -> 501, anything else -> 500 internal_error.
// Thread safety: value type.
#pragma once

#include <string>

#include "core/status.h"

namespace moerun {

struct ApiError {
  int http_status = 400;                       // e.g. 400, 404, 429, 503
  std::string type = "invalid_request_error";  // OpenAI's error type
  std::string message;                         // names the field and the bound, e.g. "max_tokens ..."
  std::string param;                           // the request field at fault, or empty

  static ApiError FromStatus(const Status& s, std::string param = "");
  static ApiError Unavailable(std::string message);  // 503: loading, draining or a rank failed
  std::string ToJson() const;
};

}  // namespace moerun
