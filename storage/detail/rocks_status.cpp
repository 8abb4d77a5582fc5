#include "storage/detail/rocks_status.hpp"

namespace lockstep::storage::detail {

caf::error from_status(const rocksdb::Status& s, std::string_view what) {
  if (s.ok())
    return {};
  errc code = errc::io_error;
  if (s.IsNotFound())
    code = errc::not_found;
  else if (s.IsCorruption())
    code = errc::corrupt;
  else if (s.IsInvalidArgument() || s.IsNotSupported())
    code = errc::invalid_argument;
  return caf::make_error(code, std::string{what} + ": " + s.ToString());
}

} // namespace lockstep::storage::detail
