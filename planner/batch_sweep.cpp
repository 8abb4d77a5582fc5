#include "planner/batch_sweep.hpp"

#include "planner/detail/placement.hpp"
#include "planner/detail/plan_placement.hpp"
#include "planner/errc.hpp"

#include <optional>

namespace lockstep::planner {

caf::expected<batch_sweep> sweep_batch(const cluster_config& config,
                                       const model::model_spec& spec,
                                       plan_options options, uint32_t from,
                                       bool keep_points) {
  options.verify = keep_points;
  batch_sweep out;
  // The plan at batch b, or none if it does not fit.
  auto plan_at = [&](uint32_t b) -> caf::expected<std::optional<plan_result>> {
    options.batch = b;
    auto r = make_plan(config, spec, options);
    if (r)
      return std::optional<plan_result>{std::move(*r)};
    if (r.error() == errc::infeasible)
      return std::optional<plan_result>{};
    return r.error();
  };
  auto keep = [&](uint32_t b, plan_result&& r) {
    if (keep_points)
      out.points.push_back({b, std::move(r)});
  };
  uint32_t fits = 0, fails = 0;
  for (uint64_t b = from; b <= max_plan_batch; b *= 2) {
    auto p = plan_at(static_cast<uint32_t>(b));
    if (!p)
      return p.error();
    if (!*p) {
      fails = static_cast<uint32_t>(b);
      break;
    }
    fits = static_cast<uint32_t>(b);
    keep(fits, std::move(**p));
  }
  if (fits == 0)
    return out;
  if (fails == 0 && fits < max_plan_batch)
    fails = max_plan_batch + 1; // doubling overshot the limit: bisect to it
  // Bisect (fits, fails): the largest batch that fits.
  std::optional<batch_point> best;
  while (fails != 0 && fails - fits > 1) {
    uint32_t mid = fits + (fails - fits) / 2;
    auto p = plan_at(mid);
    if (!p)
      return p.error();
    if (*p) {
      fits = mid;
      best = batch_point{mid, std::move(**p)};
    } else {
      fails = mid;
    }
  }
  if (best)
    keep(best->batch, std::move(best->result));
  out.max_batch = fits;
  out.at_limit = fits == max_plan_batch;
  return out;
}

uint32_t estimated_max_batch(const cluster_config& config,
                             const model::model_spec& spec,
                             const plan_options& options) {
  uint32_t context = options.context == 0 ? spec.max_context : options.context;
  auto available = detail::available_chips(config, options.failed_chips);
  if (!available)
    return 0; // make_plan reports the unknown chip
  topology topo{config};
  auto fits = [&](uint32_t b) {
    return bool(
        detail::place_candidates(spec, config, topo, b, context, *available));
  };
  if (!fits(1))
    return 0;
  // SRAM use grows with the batch: bisect [fits, fails).
  uint32_t lo = 1, hi = max_plan_batch + 1;
  while (hi - lo > 1) {
    uint32_t mid = lo + (hi - lo) / 2;
    (fits(mid) ? lo : hi) = mid;
  }
  return lo;
}

} // namespace lockstep::planner
