#include "actors/errc.hpp"

namespace lockstep::actors {

const char* to_string(errc code) {
  switch (code) {
  case errc::bad_program:
    return "bad_program";
  case errc::missing_input:
    return "missing_input";
  case errc::compute_failed:
    return "compute_failed";
  case errc::too_large:
    return "too_large";
  case errc::bad_request:
    return "bad_request";
  }
  return "unknown";
}

error_kind kind_of(errc code) {
  switch (code) {
  case errc::too_large:
  case errc::bad_request:
    return error_kind::invalid_input;
  default:
    return error_kind::failed;
  }
}

} // namespace lockstep::actors
