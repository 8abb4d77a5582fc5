#pragma once

// The one place where RocksDB statuses become storage errors. Every RocksDB
// call in storage/ goes through `from_status`, so callers see storage::errc
// values whose detail names what was being done.

#include "storage/errc.hpp"

#include <rocksdb/status.h>

#include <string>
#include <string_view>

namespace lockstep::storage::detail {

/// Maps `s` to a storage error; a default (empty) error when `s` is OK.
/// `what` says what was being done ("open store /x", "write batch").
caf::error from_status(const rocksdb::Status& s, std::string_view what);

} // namespace lockstep::storage::detail
