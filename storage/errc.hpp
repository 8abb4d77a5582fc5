#pragma once

// Errors of the storage layer. RocksDB statuses are wrapped once, in
// storage/detail/rocks_status.hpp, into one of these.

#include "common/error.hpp"

#include <caf/atom.hpp>

#include <cstdint>

namespace lockstep::storage {

enum class errc : uint8_t {
  not_found = 1,    // no store (or no key) where one was expected
  in_use,           // locked by another process (context names the PID)
  corrupt,          // checksum mismatch or undecodable value (names it)
  incomplete,       // an interrupted `weights init`; resume it
  version_mismatch, // store format newer/older than this build understands
  mismatch,         // the store holds another model/seed/dtype than asked
  io_error,         // RocksDB or the file system failed
  invalid_argument, // bad key, shard or option
  not_held,         // a partial store holds no tile of a range asked for
  invalid_file,     // a file to import is malformed (names file, key/tensor)
};

const char* to_string(errc code);
error_kind kind_of(errc code);

inline const bool errc_registered =
  register_errc<errc>(caf::atom("storage"));

} // namespace lockstep::storage

CAF_ERROR_CODE_ENUM(lockstep::storage::errc, "storage")
