#pragma once

// Shared by the planner tests: shipped configs, a few ready-made plans, and
// small helpers to find ops of a program and read an encoded plan.

#include "planner/plan.capnp.h"
#include "planner/planner.hpp"

#include <capnp/serialize.h>
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace lockstep::planner::test {

inline cluster_config load_file(const std::string& path) {
  auto c = load_cluster_config(path);
  if (!c)
    throw std::runtime_error(render(c.error()));
  return std::move(*c);
}

/// A config as shipped in cluster_configs/.
inline cluster_config load_shipped(const std::string& name) {
  return load_file(std::string{LOCKSTEP_SOURCE_DIR} + "/cluster_configs/" +
                   name + ".yaml");
}

/// A config for tests of plan structure: the pinned copy in
/// tests/planner/configs/ where there is one (local-8, local-64: their
/// shipped figures are this machine's, re-measured by
/// scripts/calibrate-local.sh, and move the planner's choices), else the
/// shipped one.
inline cluster_config load(const std::string& name) {
  std::string pinned = std::string{LOCKSTEP_SOURCE_DIR} +
                       "/tests/planner/configs/" + name + ".yaml";
  if (std::ifstream{pinned})
    return load_file(pinned);
  return load_shipped(name);
}

inline plan_result make(const cluster_config& c, const std::string& model,
                        plan_options o = {}) {
  auto r = make_plan(c, *model::find_preset(model), o);
  if (!r) // gtest reports the exception as the test's failure
    throw std::runtime_error(model + " on " + c.name + ": " +
                             render(r.error()));
  return std::move(*r);
}

inline constexpr program_kind both_programs[] = {program_kind::decode,
                                                 program_kind::prefill};

/// The first op of `prog` for which `pred` holds; throws if there is none
/// (a fixture that lacks what a test needs).
template <class Pred>
op& find_op(step_program& prog, Pred pred) {
  for (auto& o : prog.ops)
    if (pred(o))
      return o;
  throw std::runtime_error("no such op");
}
template <class Pred>
const op& find_op(const step_program& prog, Pred pred) {
  return find_op(const_cast<step_program&>(prog), pred);
}

inline uint32_t end_slot(const op& o) {
  return o.start_slot + o.duration_slots;
}
inline uint32_t end_slot(const transfer& t) {
  return t.start_slot + t.duration_slots;
}

/// Calls `fn(schema::Plan::Reader)` on an encoded plan, with traversal
/// limits sized to it (plans of big clusters exceed capnp's default).
template <class F>
void with_root(const std::string& bytes, F&& fn) {
  std::vector<::capnp::word> words(bytes.size() / 8);
  std::memcpy(words.data(), bytes.data(), words.size() * 8);
  ::capnp::ReaderOptions opts;
  opts.traversalLimitInWords = words.size() * 2 + 1024;
  ::capnp::FlatArrayMessageReader reader{
      kj::arrayPtr(words.data(), words.size()), opts};
  fn(reader.getRoot<schema::Plan>());
}

} // namespace lockstep::planner::test
