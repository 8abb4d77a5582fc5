#pragma once

// The store's exclusive owner lock: `LOCK.owner` in the store directory,
// locked with flock(LOCK_EX | LOCK_NB) and holding the owner's PID in
// decimal. RocksDB has its own LOCK file, but its error ("lock hold by current
// process" / "Resource temporarily unavailable") does not say *who* holds
// the store; this lock is taken first and does.
//
// flock locks belong to the open file description, so the lock is released
// when the descriptor closes — also when the process dies — and a stale PID
// left in the file is harmless: it is only read when flock fails.

#include <caf/expected.hpp>

#include <filesystem>

namespace lockstep::storage::detail {

inline constexpr const char* owner_lock_file = "LOCK.owner";

class owner_lock {
public:
  /// Takes the lock on `dir` (which must exist) and records our PID:
  /// exclusive for a writer, shared for a reader (read-only opens: several
  /// processes may read one store at once — the hosts of a local cluster
  /// loading their shards of an imported model — but not while it is
  /// written). Errors: in_use ("store DIR in use by PID n": a holder's
  /// PID), io_error.
  static caf::expected<owner_lock> acquire(const std::filesystem::path& dir,
                                           bool shared = false);

  owner_lock() = default;
  owner_lock(owner_lock&& other) noexcept;
  owner_lock& operator=(owner_lock&& other) noexcept;
  owner_lock(const owner_lock&) = delete;
  owner_lock& operator=(const owner_lock&) = delete;
  ~owner_lock();

  bool held() const noexcept { return fd_ >= 0; }

private:
  explicit owner_lock(int fd)
      : fd_(fd) {}
  int fd_ = -1;
};

} // namespace lockstep::storage::detail
