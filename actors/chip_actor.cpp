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
    , sample_state_(0x9E3779B97F4A7C15ull * (args_.executor->node() + 1)) {
  // Which transfers leave when each op of this chip has run: the first
  // hops (and relay hops) whose producer it is.
  const auto& prog = args_.executor->program();
  const auto& ops = args_.executor->ops();
  std::vector<size_t> position(prog.ops.size(), ops.size());
  for (size_t i = 0; i < ops.size(); ++i)
    position[ops[i]] = i;
  sends_.resize(ops.size());
  for (const auto& t : prog.transfers)
    if (position[t.after_op] < ops.size())
      sends_[position[t.after_op]].push_back(t.id);
}

void chip_actor::on_exit() {
  args_.host = nullptr;
  args_.routes.reset();
}

caf::behavior chip_actor::make_behavior() {
  return {
      [this](const arrived& a) {
        // A sampled handler times its ops too, so that handler - kernel
        // comes from the same calls.
        timing_ = sample_cpu();
        uint64_t t0 = timing_ ? thread_cpu_ns() : 0;
        args_.executor->note_arrival(a.transfer, a.step);
        advance();
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

void chip_actor::advance() {
  const auto& ops = args_.executor->ops();
  while (!failed_) {
    if (next_ == ops.size()) {
      // The step is done here: its receive windows may be rewritten.
      if (auto err = args_.transport->release(
              args_.executor->config().ref(args_.executor->node()), step_)) {
        failed_ = true;
        anon_send(args_.host, failed{render(err)});
        return;
      }
      ++step_;
      next_ = 0;
      args_.figures->steps_run.fetch_add(1, std::memory_order_relaxed);
      continue; // arrivals of the next step may be here already
    }
    uint32_t id = ops[next_];
    if (!args_.executor->ready(id, step_))
      return; // an arrival will call again
    uint64_t t0 = timing_ ? thread_cpu_ns() : 0;
    auto err = args_.executor->run(id, step_);
    if (timing_)
      args_.figures->kernel_ns.fetch_add(
          (thread_cpu_ns() - t0) * cpu_sample_every,
          std::memory_order_relaxed);
    if (err) {
      failed_ = true;
      anon_send(args_.host, failed{render(err)});
      return;
    }
    for (auto t : sends_[next_])
      if (auto err = detail::send_transfer(this, *args_.transport,
                                           *args_.routes, t, step_)) {
        failed_ = true;
        anon_send(args_.host, failed{render(err)});
        return;
      }
    args_.figures->ops_run.fetch_add(1, std::memory_order_relaxed);
    ++next_;
  }
}

} // namespace lockstep::actors
