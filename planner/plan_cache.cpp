#include "planner/plan_cache.hpp"

namespace lockstep::planner {

caf::expected<std::optional<plan>>
plan_cache::get(const cluster_config& config, const std::string& hash) const {
  auto bytes = db_->get(storage::column::plans, key(hash));
  if (!bytes)
    return bytes.error();
  if (!*bytes)
    return std::optional<plan>{};
  auto stored = check_encoded_plan(**bytes);
  if (!stored)
    return stored.error();
  if (*stored != hash)
    return caf::make_error(errc::invalid_plan, "plan cache entry " + hash +
                                                   " holds plan " + *stored);
  auto p = decode_plan(config, **bytes);
  if (!p)
    return p.error();
  return std::optional<plan>{std::move(*p)};
}

caf::error plan_cache::put(const cluster_config& config, const plan& p) {
  return db_->put(storage::column::plans, key(plan_hash(config, p)),
                  encode_plan(config, p));
}

} // namespace lockstep::planner
