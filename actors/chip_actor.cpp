#include "actors/chip_actor.hpp"

#include "actors/detail/local_routes.hpp"
#include "transport/host_transport.hpp"

#include <ctime>

namespace lockstep::actors {

namespace {

uint64_t thread_cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return uint64_t(ts.tv_sec) * 1'000'000'000 + uint64_t(ts.tv_nsec);
}

} // namespace

chip_actor::chip_actor(caf::actor_config& cfg, chip_actor_args args)
    : caf::event_based_actor(cfg)
    , args_(std::move(args))
    , sample_state_(0) {
  uint32_t node = 0;
  for (size_t k = 0; k < args_.programs.size(); ++k) {
    const auto& exec = args_.programs[k].executor;
    if (!exec)
      continue;
    node = exec->node();
    progress_[k].sends = exec->sends_by_op();
  }
  sample_state_ = 0x9E3779B97F4A7C15ull * (node + 1);
}

void chip_actor::on_exit() {
  args_.host = nullptr;
  for (auto& p : args_.programs)
    p.lane.routes.reset();
}

caf::behavior chip_actor::make_behavior() {
  return {
      [this](const arrived& a) {
        auto k = static_cast<size_t>(a.kind);
        if (k >= args_.programs.size() || !args_.programs[k].executor)
          return fail(caf::make_error(
              errc::bad_program,
              "an arrival of the " + std::string{planner::to_string(a.kind)} +
                  " program, which this chip does not run"));
        // A sampled handler times its ops too, so that handler - kernel
        // comes from the same calls.
        timing_ = sample_cpu();
        uint64_t t0 = timing_ ? thread_cpu_ns() : 0;
        args_.programs[k].executor->note_arrival(a.transfer, a.step);
        advance(k);
        if (timing_)
          args_.figures->handler_ns.fetch_add(
              (thread_cpu_ns() - t0) * cpu_sample_every,
              std::memory_order_relaxed);
      },
  };
}

bool chip_actor::sample_cpu() {
  sample_state_ ^= sample_state_ << 13;
  sample_state_ ^= sample_state_ >> 7;
  sample_state_ ^= sample_state_ << 17;
  return sample_state_ % cpu_sample_every == 0;
}

void chip_actor::fail(const caf::error& err) {
  if (failed_)
    return;
  failed_ = true;
  anon_send(args_.host, failed{render(err)});
}

void chip_actor::advance(size_t k) {
  auto& exec = *args_.programs[k].executor;
  auto& lane = args_.programs[k].lane;
  auto& pr = progress_[k];
  const auto& ops = exec.ops();
  if (ops.empty())
    return; // REQUIRES of the host: executors only for chips with ops
  while (!failed_) {
    if (pr.next == ops.size()) {
      // The step is done here: its receive windows may be rewritten.
      if (auto err = lane.transport->release(
              exec.config().ref(exec.node()), pr.step))
        return fail(err);
      ++pr.step;
      pr.next = 0;
      args_.figures->steps_run.fetch_add(1, std::memory_order_relaxed);
      continue; // arrivals of the next step may be here already
    }
    uint32_t id = ops[pr.next];
    if (!exec.ready(id, pr.step))
      return; // an arrival will call again
    uint64_t t0 = timing_ ? thread_cpu_ns() : 0;
    auto err = exec.run(id, pr.step);
    if (timing_)
      args_.figures->kernel_ns.fetch_add(
          (thread_cpu_ns() - t0) * cpu_sample_every,
          std::memory_order_relaxed);
    if (err)
      return fail(err);
    for (auto t : pr.sends[pr.next])
      if (auto err = detail::send_transfer(this, *lane.transport,
                                           *lane.routes, t, pr.step))
        return fail(err);
    args_.figures->ops_run.fetch_add(1, std::memory_order_relaxed);
    ++pr.next;
  }
}

} // namespace lockstep::actors
