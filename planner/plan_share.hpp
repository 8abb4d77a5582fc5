#pragma once

// A host's share of a plan. Every host checks the whole plan it is sent
// (verify_plan) and builds the whole slot table from it (the hosts compare
// its digest); after that it runs only its own nodes' programs. This frees
// what the programs hold for everyone else.

#include "planner/plan.hpp"

#include <vector>

namespace lockstep::planner {

/// Frees, in both programs of `p`, the operand, dependency, weight and
/// reduction lists of every op whose node `mine` does not mark, and the
/// receive offsets of every transfer between two such nodes. Ids, slots,
/// nodes and every other scalar stay, so an index into a program keeps its
/// meaning; what the marked nodes' executors read (their ops, and the
/// transfers into and out of them) is untouched.
/// REQUIRES: mine.size() == the config's node count.
void keep_programs_of(plan& p, const std::vector<bool>& mine);

} // namespace lockstep::planner
