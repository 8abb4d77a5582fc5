#include "planner/plan_share.hpp"

#include <cassert>

namespace lockstep::planner {

namespace {

template <class T>
void release(std::vector<T>& v) {
  std::vector<T>{}.swap(v); // clear() keeps the capacity
}

void keep(step_program& prog, const std::vector<bool>& mine) {
  for (auto& o : prog.ops) {
    assert(o.chip < mine.size());
    if (mine[o.chip])
      continue;
    release(o.after_ops);
    release(o.after_transfers);
    release(o.inputs);
    release(o.outputs);
    release(o.weights);
    release(o.vocab_bounds);
    release(o.parts);
    release(o.nodes);
  }
  for (auto& t : prog.transfers) {
    assert(t.src < mine.size() && t.dst < mine.size());
    if (!mine[t.src] && !mine[t.dst])
      release(t.dst_offsets);
  }
}

} // namespace

void keep_programs_of(plan& p, const std::vector<bool>& mine) {
  keep(p.decode, mine);
  keep(p.prefill, mine);
}

} // namespace lockstep::planner
