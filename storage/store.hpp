#pragma once

// A host's RocksDB database: one per host process, one column family per kind
// of data. The weight store (weight_store.hpp), the planner's plan cache and
// (later) cluster state are typed views on top of this.
//
// Opening takes an exclusive lock on the directory (a `LOCK.owner` file that
// records the PID), so a second process gets "in use by PID n" instead of a
// RocksDB lock error.
//
// Thread-safety: a store may be used from several threads at once (RocksDB
// is thread-safe); opening and closing are not concurrent with use.

#include "storage/errc.hpp"

#include <caf/expected.hpp>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lockstep::storage {

/// Format of the whole store; bumped on any incompatible layout change.
inline constexpr uint32_t store_format_version = 1;

enum class column : uint8_t {
  meta = 0,    // format version, init state, manifests
  weights = 1, // weight tiles (weight_store.hpp)
  plans = 2,   // compiled plans keyed by plan hash (planner/)
  cluster = 3, // cluster state (membership, later)
};

const char* to_string(column cf);

struct open_options {
  bool create_if_missing = false;
  bool read_only = false; // no writes; still takes the owner lock
};

class store {
public:
  /// Opens (or creates) the store in `dir`.
  /// Errors: not_found (no store and !create_if_missing), in_use (another
  /// process holds it; names the PID), version_mismatch, io_error.
  static caf::expected<std::unique_ptr<store>>
  open(const std::filesystem::path& dir, const open_options& options);

  ~store();
  store(const store&) = delete;
  store& operator=(const store&) = delete;

  /// nullopt when absent; io_error on failure.
  caf::expected<std::optional<std::string>> get(column cf,
                                                std::string_view key) const;
  caf::error put(column cf, std::string_view key, std::string_view value);
  caf::error erase(column cf, std::string_view key);

  /// An atomic group of writes, possibly across column families.
  class batch {
  public:
    batch();
    ~batch();
    batch(batch&&) noexcept;
    batch& operator=(batch&&) noexcept;
    void put(column cf, std::string_view key, std::string_view value);
    void erase(column cf, std::string_view key);
    size_t size_bytes() const;

  private:
    friend class store;
    struct impl;
    std::unique_ptr<impl> impl_;
  };
  caf::error write(batch& b, bool sync = false);

  /// Writes `b` without the write-ahead log: for bulk loads (weights init),
  /// where the WAL would double the bytes written. Such writes survive a
  /// crash only once `flush()` has returned; column families are flushed
  /// atomically, so what survives a crash is always a prefix of the write
  /// sequence (a marker written after its data never outlives the data).
  caf::error write_unlogged(batch& b);

  /// Flushes every column family's memtable to disk (atomically) and syncs
  /// the write-ahead log: every write made before the call is durable.
  caf::error flush();

  /// Calls `fn(key, value)` for every key with `prefix` in `cf`, in key order;
  /// stops early when fn returns false.
  template <class F>
  caf::error scan(column cf, std::string_view prefix, F&& fn) const {
    return scan_impl(cf, prefix, [&](std::string_view k, std::string_view v) {
      return fn(k, v);
    });
  }

  const std::filesystem::path& dir() const noexcept { return dir_; }
  bool read_only() const noexcept { return read_only_; }

private:
  struct impl;
  store(std::filesystem::path dir, bool read_only, std::unique_ptr<impl> p);
  caf::error write_impl(batch& b, bool sync, bool unlogged);
  caf::error scan_impl(
      column cf, std::string_view prefix,
      const std::function<bool(std::string_view, std::string_view)>& fn) const;

  std::filesystem::path dir_;
  bool read_only_;
  std::unique_ptr<impl> impl_;
};

} // namespace lockstep::storage
