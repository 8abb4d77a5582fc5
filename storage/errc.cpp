#include "storage/errc.hpp"

namespace lockstep::storage {

const char* to_string(errc code) {
  switch (code) {
  case errc::not_found:
    return "not_found";
  case errc::in_use:
    return "in_use";
  case errc::corrupt:
    return "corrupt";
  case errc::incomplete:
    return "incomplete";
  case errc::version_mismatch:
    return "version_mismatch";
  case errc::mismatch:
    return "mismatch";
  case errc::io_error:
    return "io_error";
  case errc::invalid_argument:
    return "invalid_argument";
  case errc::not_held:
    return "not_held";
  case errc::invalid_file:
    return "invalid_file";
  }
  return "unknown";
}

error_kind kind_of(errc code) {
  switch (code) {
  case errc::not_found:        // wrong --db: fix the request
  case errc::mismatch:         // another model/seed than asked: fix the request
  case errc::invalid_argument: // bad key, shard or option
  case errc::invalid_file:     // a malformed file to import: fix the input
  case errc::not_held: // another host's shard (or a re-plan this store has
                       // not been grown for): read it elsewhere, or grow
                       // the store with init_weight_shards
    return error_kind::invalid_input;
  case errc::in_use: // another process holds the store: retry when it exits
    return error_kind::overloaded;
  case errc::corrupt:
  case errc::incomplete:
  case errc::version_mismatch:
  case errc::io_error:
    return error_kind::failed;
  }
  return error_kind::failed;
}

} // namespace lockstep::storage
