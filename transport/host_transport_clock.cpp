// host_transport's slot clock (paced mode): the start-up alignment with
// host 0, the periodic re-sync with a drift estimate, and the goodbye
// barrier at teardown.

#include "transport/detail/host_state.hpp"

#include <algorithm>
#include <climits>

namespace lockstep::transport {

using namespace detail;

namespace {

void publish_clock(host_transport::impl& s) {
  std::lock_guard guard{s.stats_mutex};
  s.shared_clock = s.clock;
  s.clock_rounds = s.rounds;
}

} // namespace

// Start-up: every host h > 0 runs NTP-style rounds with host 0 over the
// fabric (t1 local send, ts host 0's clock when it answered, t4 local
// receive; offset = ts - (t1 + t4) / 2 within (t4 - t1) / 2) and keeps the
// round with the smallest round trip. Host 0 then announces an epoch on
// its own clock; each host maps it through its clock model.
// shm opens a connection on the first write to a peer: the write is
// refused (FI_EAGAIN) until the peer's progress has answered. Paid here,
// once, and not by the first step's transfers (a paced first step would
// miss its slots). Also a barrier: every host is up and progressing.
caf::error host_transport::impl::connect() {
  // This host too: chips of one host write to each other through it.
  for (uint32_t h = 0; h < program.hosts(); ++h)
    control_queue.push_back(
        {h, cq_data::make_control(cq_data::control::hello, host, 0)});
  auto deadline = now_ns() + static_cast<int64_t>(settings.hard_timeout_ns);
  return progress_until(
      [this] {
        return hellos >= program.hosts() && control_queue.empty() &&
               outstanding == 0;
      },
      deadline, [this] {
        return caf::make_error(errc::slot_timeout,
                               "start-up: " + std::to_string(hellos) + " of " +
                                   std::to_string(program.hosts()) +
                                   " hosts said hello in time");
      });
}

caf::error host_transport::impl::sync_clocks() {
  auto deadline = now_ns() + static_cast<int64_t>(settings.hard_timeout_ns) +
                  static_cast<int64_t>(program.hosts()) * 1'000'000'000;
  auto timeout = [this](const char* what) {
    return [this, what]() -> caf::error {
      return caf::make_error(errc::slot_timeout,
                             std::string{"clock alignment: "} + what +
                                 " timed out on host " + std::to_string(host));
    };
  };
  // Start-up margin: every host must learn the epoch before it arrives.
  const int64_t margin_ns =
      std::max<int64_t>(20'000'000, 4 * static_cast<int64_t>(settings.slot_ns));
  if (host == 0) {
    if (auto err =
            progress_until([this] { return sync_done + 1 == program.hosts(); },
                           deadline, timeout("waiting for the other hosts")))
      return err;
    auto epoch = now_ns() + margin_ns;
    for (uint32_t h = 1; h < program.hosts(); ++h)
      control_queue.push_back(
          {h, cq_data::make_control(cq_data::control::epoch, host,
                                    static_cast<uint64_t>(epoch))});
    if (auto err = flush_control())
      return err;
    epoch_ref_ns = epoch; // host 0's model is the identity
    publish_clock(*this);
    return caf::none;
  }
  clock_sample best{0, 0, INT64_MAX};
  for (uint32_t r = 0; r < startup_rounds; ++r) {
    pong_seen = false;
    auto t1 = now_ns();
    control_queue.push_back(
        {0, cq_data::make_control(cq_data::control::ping, host, 0)});
    if (auto err = progress_until([this] { return pong_seen; }, deadline,
                                  timeout("ping of host 0")))
      return err;
    auto t4 = now_ns();
    // Host 0's clock is within 2^47 ns of ours.
    auto ts = cq_data::widen(pong_value, (t1 + t4) / 2);
    if (t4 - t1 < best.rtt_ns)
      best = {(t1 + t4) / 2, ts - (t1 + t4) / 2, t4 - t1};
  }
  clock.add(best);
  rounds = startup_rounds;
  control_queue.push_back(
      {0, cq_data::make_control(cq_data::control::sync_done, host, 0)});
  if (auto err = progress_until([this] { return epoch_seen; }, deadline,
                                timeout("waiting for the epoch")))
    return err;
  epoch_ref_ns = cq_data::widen(epoch_value, clock.to_reference(now_ns()));
  publish_clock(*this);
  resync_gap_ns = std::min(first_resync_gap_ns, resync_interval_ns);
  next_resync_ns =
      resync_interval_ns == INT64_MAX ? INT64_MAX : now_ns() + resync_gap_ns;
  synced = true; // re-syncs from here on
  return caf::none;
}

// Periodic re-sync (hosts > 0, inside wait()): a burst of a few pings; the
// fastest round is one sample of the clock model, whose least-squares rate
// keeps slot starts aligned between bursts. Bursts come after 50, 100, 200
// ... ms, then every resync_interval, so a rate exists within ~0.5 s.
void host_transport::impl::resync_step(int64_t now) {
  if (ping_out) {
    if (now - ping_t1 > ping_timeout_ns) {
      ping_out = false; // host 0 did not answer: try again later
      burst_left = 0;
      next_resync_ns = now + resync_gap_ns;
    }
    return;
  }
  if (burst_left == 0) {
    if (now < next_resync_ns)
      return;
    burst_left = burst_rounds;
    burst_best = {0, 0, INT64_MAX};
  }
  ++ping_seq;
  ping_t1 = now;
  ping_out = true;
  control_queue.push_back(
      {0,
       cq_data::make_control(cq_data::control::resync_ping, host, ping_seq)});
}

void host_transport::impl::on_pong(uint64_t value, bool, int64_t now) {
  if (!ping_out || (value & 0xffu) != (ping_seq & 0xffu))
    return; // a straggler of a given-up ping
  ping_out = false;
  auto t1 = ping_t1;
  auto t4 = now;
  auto mid = (t1 + t4) / 2;
  auto ts = cq_data::widen(value >> 8, clock.to_reference(mid),
                           cq_data::resync_clock_bits);
  if (t4 - t1 < burst_best.rtt_ns)
    burst_best = {mid, ts - mid, t4 - t1};
  ++rounds;
  if (--burst_left > 0)
    return;
  clock.add(burst_best);
  publish_clock(*this);
  bump(resyncs);
  resync_gap_ns = std::min(2 * resync_gap_ns, resync_interval_ns);
  next_resync_ns = now + resync_gap_ns;
}

// --- teardown ----------------------------------------------------------------

caf::error host_transport::close(std::chrono::nanoseconds timeout) {
  auto& s = *impl_;
  if (s.closed || !s.fabric)
    return caf::none;
  s.closing = true;
  s.accepting.store(false, std::memory_order_release);
  auto deadline = s.now_ns() + timeout.count();
  auto quiet = [&s] {
    s.events.clear(); // nobody reads them any more
    std::lock_guard guard{s.inbox_mutex};
    return s.send_inbox.empty() && s.release_inbox.empty() &&
           s.pending.empty() && s.deferred_releases.empty() &&
           s.outstanding == 0 && s.control_queue.empty();
  };
  auto err = s.fatal ? s.fatal : s.progress_until(quiet, deadline, [&s] {
    return caf::make_error(
        errc::fabric_failure,
        "teardown of host " + std::to_string(s.host) + ": " +
            std::to_string(s.outstanding) + " writes outstanding, " +
            std::to_string(s.pending.size()) + " sends never left");
  });
  // Say goodbye even after a failed drain: peers wait for it.
  if (!s.fatal) {
    for (uint32_t h = 0; h < s.program.hosts(); ++h)
      if (h != s.host)
        s.control_queue.push_back(
            {h, cq_data::make_control(cq_data::control::bye, s.host, 0)});
    auto bye_err = s.progress_until(
        [&s] {
          s.events.clear();
          return s.byes + 1 >= s.program.hosts() && s.outstanding == 0 &&
                 s.control_queue.empty();
        },
        deadline,
        [&s] {
          return caf::make_error(errc::peer_unreachable,
                                 "teardown: " + std::to_string(s.byes) +
                                     " of " +
                                     std::to_string(s.program.hosts() - 1) +
                                     " peers said goodbye in time");
        });
    if (!err)
      err = bye_err;
  }
  s.closed = true;
  return err;
}

} // namespace lockstep::transport
