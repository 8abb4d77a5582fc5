#include "threaded_host.hpp"

#include "multi_host.hpp"
#include "transport/payload_frame.hpp"
#include "transport/rendezvous.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <thread>

namespace lockstep::transport::test {

opened_host open_host(const std::vector<std::byte>& table,
                      const transport_options& opts,
                      const std::filesystem::path& dir) {
  auto prog = slot_program::load(table);
  if (!prog)
    return {host_memory{}, prog.error()};
  auto memory = host_memory::allocate(*prog, opts.host);
  file_rendezvous rv{dir};
  auto t = host_transport::create(opts, std::move(*prog), rv, memory.arenas());
  return {std::move(memory), std::move(t)};
}

host_memory host_memory::allocate(const slot_program& program, uint32_t host) {
  host_memory out;
  for (auto c : program.chips_of(host)) {
    const auto* a = program.arena(c);
    uint64_t send = (a->send_bytes + 7) / 8 * 8;
    auto region = detail::mapped_buffer::allocate(send + a->recv_bytes);
    if (!region)
      throw std::runtime_error(render(region.error()));
    auto p = std::make_shared<detail::mapped_buffer>(std::move(*region));
    out.arenas_.push_back(
        {c, {p->data(), a->send_bytes}, {p->data() + send, a->recv_bytes}});
    out.regions_.push_back(std::move(p));
  }
  return out;
}

namespace {

// What the progress thread tells one chip's worker.
struct mailbox {
  std::mutex m;
  std::condition_variable cv;
  std::set<std::pair<uint32_t, uint64_t>> arrived; // (transfer, step)
  std::map<uint32_t, int64_t> done;                // transfer -> last step
  bool stop = false;
};

} // namespace

caf::error run_threaded(host_transport& t, const host_memory& memory,
                        uint64_t steps, const threaded_hooks& hooks) {
  const auto& prog = t.program();
  const auto& transfers = prog.transfers();
  auto chips = prog.chips_of(t.host());
  auto arenas = memory.arenas();
  auto chip_index = [&](chip_ref c) {
    return static_cast<size_t>(std::find(chips.begin(), chips.end(), c) -
                               chips.begin());
  };
  std::vector<std::vector<slot_op>> ops(chips.size());
  for (const auto& op : prog.host_program(t.host())) {
    const auto& l = prog.links()[op.link];
    ops[chip_index(op.send ? l.src : l.dst)].push_back(op);
  }
  // Transfers sharing a send window: the first in program order writes it,
  // once every user's previous write completed.
  std::map<uint32_t, std::vector<uint32_t>> users;
  std::set<uint32_t> writers;
  for (const auto& chip_ops : ops) {
    std::map<uint64_t, uint32_t> first_of_window;
    for (const auto& op : chip_ops)
      if (op.send) {
        auto off = transfers[op.transfer].src_offset;
        if (first_of_window.emplace(off, op.transfer).second)
          writers.insert(op.transfer);
        users[first_of_window[off]].push_back(op.transfer);
      }
  }
  auto pattern = [&](uint32_t tr) {
    return hooks.pattern_of ? hooks.pattern_of(tr)
                            : window_key(prog, transfers[tr]);
  };

  std::vector<std::unique_ptr<mailbox>> boxes;
  for (size_t i = 0; i < chips.size(); ++i)
    boxes.push_back(std::make_unique<mailbox>());
  std::mutex fail_mutex;
  caf::error failure;
  std::atomic<bool> failed{false};
  auto fail = [&](caf::error err) {
    {
      std::lock_guard g{fail_mutex};
      if (!failure)
        failure = std::move(err);
    }
    failed = true;
    for (auto& b : boxes) {
      std::lock_guard g{b->m};
      b->stop = true;
      b->cv.notify_all();
    }
    t.wake();
  };
  auto deadline = std::chrono::steady_clock::now() + hooks.timeout;
  std::atomic<size_t> finished{0};
  std::mutex helpers_mutex;
  std::vector<std::thread> helpers;

  auto worker = [&](size_t ci) {
    auto& box = *boxes[ci];
    const auto& arena = arenas[ci];
    auto wait_for = [&](auto&& ready, const std::string& what) -> bool {
      std::unique_lock lock{box.m};
      if (!box.cv.wait_until(lock, deadline,
                             [&] { return box.stop || ready(); })) {
        lock.unlock();
        fail(caf::make_error(errc::slot_timeout,
                             "test worker of " + to_string(chips[ci]) +
                                 ": timed out waiting for " + what));
        return false;
      }
      return !box.stop;
    };
    for (uint64_t step = 0; step < steps; ++step) {
      for (const auto& op : ops[ci]) {
        const auto& tp = transfers[op.transfer];
        auto tr = op.transfer;
        auto where = prog.links()[tp.link].name + " slot " +
                     std::to_string(tp.start_slot) + " step " +
                     std::to_string(step);
        if (op.send) {
          if (hooks.skip_send && hooks.skip_send(step, tr)) {
            std::lock_guard g{box.m};
            box.done[tr] = static_cast<int64_t>(step);
            continue;
          }
          if (hooks.forward_of && hooks.forward_of(tr) >= 0) {
            auto from = static_cast<uint32_t>(hooks.forward_of(tr));
            if (auto err = t.post_forward(tr, step, from))
              return fail(err);
            continue;
          }
          if (writers.count(tr) != 0) {
            if (step > 0 &&
                !wait_for(
                    [&] {
                      for (auto u : users[tr]) {
                        auto i = box.done.find(u);
                        if (i == box.done.end() ||
                            i->second + 1 < static_cast<int64_t>(step))
                          return false;
                      }
                      return true;
                    },
                    "the previous write of the window of " + where))
              return;
            auto payload =
                write_frame(arena.send.subspan(tp.src_offset, tp.bytes));
            if (!payload)
              return fail(payload.error());
            fill_payload(*payload, window_key(prog, tp), step);
          }
          int64_t delay = hooks.delay_ns ? hooks.delay_ns(step, tr) : 0;
          if (delay > 0) {
            std::lock_guard g{helpers_mutex};
            helpers.emplace_back(
                [&t, &fail, tr, step, delay, slot = tp.start_slot] {
                  auto at = t.slot_start_ns(step, slot) + delay;
                  while (t.now_ns() < at)
                    std::this_thread::sleep_for(std::chrono::microseconds(50));
                  if (auto err = t.post_send(tr, step))
                    fail(err);
                });
            continue;
          }
          if (auto err = t.post_send(tr, step))
            return fail(err);
        } else {
          if (!wait_for(
                  [&] {
                    return box.arrived.count({tr, step}) != 0;
                  },
                  "the arrival of " + where))
            return;
          {
            std::lock_guard g{box.m};
            box.arrived.erase({tr, step});
          }
          auto window = arena.recv.subspan(tp.dst_offset(step), tp.bytes);
          auto payload = read_frame(window);
          if (!payload)
            return fail(payload.error());
          if (!check_payload(*payload, pattern(tr), step))
            return fail(caf::make_error(errc::bad_payload,
                                        "payload mismatch on link " + where));
        }
      }
      if (auto err = t.release(chips[ci], step))
        return fail(err);
    }
    ++finished;
    t.wake();
  };

  std::vector<std::thread> threads;
  for (size_t i = 0; i < chips.size(); ++i)
    threads.emplace_back(worker, i);
  std::vector<transport_event> events;
  while (finished.load() < chips.size() && !failed.load()) {
    if (std::chrono::steady_clock::now() > deadline) {
      fail(caf::make_error(errc::slot_timeout, "test progress thread of host " +
                                                   std::to_string(t.host()) +
                                                   ": run timed out"));
      break;
    }
    events.clear();
    if (auto err = t.wait(events, std::chrono::milliseconds(20))) {
      fail(err);
      break;
    }
    for (const auto& e : events) {
      if (hooks.on_event)
        hooks.on_event(e);
      if (hooks.on_event_with)
        hooks.on_event_with(t, e);
      if (e.link >= prog.links().size()) { // a refused unknown link
        if (!(hooks.expected_error && hooks.expected_error(e)))
          fail(e.err);
        continue;
      }
      const auto& l = prog.links()[e.link];
      switch (e.what) {
      case transport_event::kind::arrival: {
        auto& b = *boxes[chip_index(l.dst)];
        std::lock_guard g{b.m};
        b.arrived.insert({e.transfer, e.step});
        b.cv.notify_all();
        break;
      }
      case transport_event::kind::send_done: {
        auto& b = *boxes[chip_index(l.src)];
        std::lock_guard g{b.m};
        auto& d = b.done[e.transfer];
        d = std::max(d, static_cast<int64_t>(e.step));
        b.cv.notify_all();
        break;
      }
      case transport_event::kind::released:
        break;
      case transport_event::kind::error:
        if (hooks.expected_error && hooks.expected_error(e)) {
          // A send that will never complete must not hold its window.
          if (e.transfer != transport_event::no_transfer &&
              l.src.host == t.host()) {
            auto& b = *boxes[chip_index(l.src)];
            std::lock_guard g{b.m};
            auto& d = b.done[e.transfer];
            d = std::max(d, static_cast<int64_t>(e.step));
            b.cv.notify_all();
          }
          break;
        }
        fail(e.err);
        break;
      }
    }
  }
  for (auto& th : threads)
    th.join();
  {
    std::lock_guard g{helpers_mutex};
    for (auto& th : helpers)
      th.join();
  }
  // Paced sends may still wait for their slot after the workers are done:
  // let them leave, so counters are final when the caller looks.
  std::vector<uint32_t> outbound;
  for (const auto& chip_ops : ops)
    for (const auto& op : chip_ops)
      if (op.send &&
          !(hooks.skip_send && hooks.skip_send(steps - 1, op.transfer)))
        outbound.push_back(op.transfer);
  while (!failed.load() && steps > 0 &&
         std::any_of(outbound.begin(), outbound.end(), [&](uint32_t tr) {
           return t.last_posted_step(tr) < static_cast<int64_t>(steps) - 1;
         })) {
    if (std::chrono::steady_clock::now() > deadline) {
      fail(caf::make_error(errc::slot_timeout,
                           "test progress thread of host " +
                               std::to_string(t.host()) +
                               ": last sends did not leave"));
      break;
    }
    events.clear();
    if (auto err = t.wait(events, std::chrono::milliseconds(20)))
      fail(err);
  }
  return failure;
}

} // namespace lockstep::transport::test
