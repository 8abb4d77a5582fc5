#pragma once

// Compiled plans in the host's RocksDB store (column family `plans`), keyed by
// the plan hash: every input that changes a plan (planner/plan_codec.hpp).
// A cached plan is re-verified by its user, never trusted blindly.

#include "planner/plan_codec.hpp"
#include "storage/store.hpp"

#include <caf/expected.hpp>

#include <optional>
#include <string>

namespace lockstep::planner {

class plan_cache {
public:
  /// REQUIRES: `db` outlives the cache.
  explicit plan_cache(storage::store& db)
      : db_(&db) {}

  /// The plan cached under `hash`, if any. Errors: invalid_plan (a corrupt
  /// entry, or one whose hash does not match its key), storage errors.
  caf::expected<std::optional<plan>> get(const cluster_config& config,
                                         const std::string& hash) const;

  /// Stores `p` under plan_hash(config, p).
  caf::error put(const cluster_config& config, const plan& p);

private:
  static std::string key(const std::string& hash) { return "plan/" + hash; }
  storage::store* db_;
};

} // namespace lockstep::planner
