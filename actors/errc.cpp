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
  case errc::disconnected:
    return "disconnected";
  case errc::bad_message:
    return "bad_message";
  case errc::refused:
    return "refused";
  case errc::cluster_failed:
    return "cluster_failed";
  case errc::timed_out:
    return "timed_out";
  case errc::overloaded:
    return "overloaded";
  }
  return "unknown";
}

error_kind kind_of(errc code) {
  switch (code) {
  case errc::too_large:
  case errc::bad_request:
  case errc::refused:
    return error_kind::invalid_input;
  case errc::disconnected:
  case errc::timed_out:
    return error_kind::disconnected;
  case errc::overloaded:
    return error_kind::overloaded;
  default:
    return error_kind::failed;
  }
}

} // namespace lockstep::actors
