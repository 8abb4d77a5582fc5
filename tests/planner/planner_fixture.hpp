#pragma once

// Shared by the planner tests: shipped configs and a few ready-made plans.

#include "planner/planner.hpp"

#include <gtest/gtest.h>

#include <string>

namespace lockstep::planner::test {

inline cluster_config load(const std::string& name) {
  auto c = load_cluster_config(std::string{LOCKSTEP_SOURCE_DIR} +
                               "/cluster_configs/" + name + ".yaml");
  EXPECT_TRUE(c) << render(c.error());
  return std::move(*c);
}

inline plan_result make(const cluster_config& c, const std::string& model,
                        plan_options o = {}) {
  auto r = make_plan(c, *model::find_preset(model), o);
  EXPECT_TRUE(r) << render(r.error());
  return std::move(*r);
}

} // namespace lockstep::planner::test
