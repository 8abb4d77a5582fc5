// host_transport end to end, driven as the actors will drive it: a progress
// thread plus one worker thread per chip, in real forked processes over
// real libfabric (shm; tcp;ofi_rxm over loopback).

#include "host_cluster.hpp"

#include "transport/detail/cq_data.hpp"
#include "transport/detail/fabric.hpp"
#include "transport/payload_frame.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <thread>

using namespace lockstep;
using namespace lockstep::transport;
using namespace lockstep::transport::test;
using namespace std::chrono_literals;

namespace {

// One link h0.c0 -> h1.c0 in slot `slot` of `slots` per step, `buffers`
// receive windows. Host 0 receives nothing, host 1 sends nothing: both
// have an empty arena.
std::vector<std::byte> one_link_table(uint64_t payload = 4096,
                                      uint32_t slots = 2, uint32_t slot = 0) {
  table_spec s;
  s.slots_per_step = slots;
  uint64_t bytes = framed_bytes(payload);
  s.arenas = {{{0, 0}, 0, bytes}, {{1, 0}, 2 * bytes, 0}};
  link_spec l{{0, 0}, {1, 0}, {}};
  l.transfers.push_back({1, slot, 1, bytes, 0, {0, bytes}});
  s.links.push_back(l);
  return build_slot_table(s);
}

} // namespace

TEST(host_transport, eight_hosts_with_a_progress_thread_and_chip_workers) {
  run_config cfg;
  cfg.table = build_slot_table(ring_pattern(8, 2, 4, 1, 4096));
  cfg.settings = settings("shm", slot_mode::logical, 50, 10000);
  cfg.steps = 20;
  cfg.check = [&](uint32_t host, host_transport& t, const host_memory&,
                  const caf::error& err) {
    return expect_all_received(host, t, err, cfg.steps);
  };
  run_cluster(8, cfg);
}

TEST(host_transport, tcp_progress_thread_blocks_on_the_cq_descriptor) {
  for (auto mode : {slot_mode::logical, slot_mode::paced}) {
    run_config cfg;
    cfg.table = build_slot_table(ring_pattern(2, 2, 3, 2, 16384));
    cfg.settings = settings("tcp;ofi_rxm", mode, 1000, 5000);
    cfg.steps = 10;
    cfg.check = [&](uint32_t host, host_transport& t, const host_memory&,
                    const caf::error& err) {
      CHILD_CHECK(t.blocking_waits(), 30, "tcp;ofi_rxm without FI_WAIT_FD");
      return expect_all_received(host, t, err, cfg.steps);
    };
    run_cluster(2, cfg);
  }
}

TEST(host_transport, provider_wait_objects_are_as_documented) {
  // The probe behind docs/transport.md, kept as a test so a libfabric
  // upgrade that changes it is noticed: shm 1.17 refuses FI_WAIT_FD (so
  // hosts ring doorbells), tcp;ofi_rxm gives the CQ a descriptor.
  auto shm = detail::fabric_context::open("shm", 1024);
  ASSERT_TRUE(shm) << render(shm.error());
  EXPECT_LT((*shm)->wait_fd(), 0) << "shm now offers FI_WAIT_FD: the "
                                     "doorbell may be unnecessary";
  auto tcp = detail::fabric_context::open("tcp;ofi_rxm", 1024);
  ASSERT_TRUE(tcp) << render(tcp.error());
  EXPECT_GE((*tcp)->wait_fd(), 0);
  EXPECT_TRUE((*tcp)->ready_to_block()); // nothing pending on a fresh CQ
}

TEST(host_transport, refuses_unscheduled_duplicate_stale_and_early_arrivals) {
  // Host 0 sends step 0 of the one scheduled transfer, then writes raw RMA
  // with crafted slot ids into host 1's receive arena: a slot without a
  // transfer, the same step again, a step two windows ahead, a link that
  // does not exist, and — once host 1 released step 0 — step 0 once more.
  // Host 1 must refuse each, count it on the link and report it by name.
  temp_dir dir;
  auto table = one_link_table(4096, 2, 0);
  std::vector<int> pids;
  auto codes = run_hosts(
      2,
      [&](uint32_t host) -> int {
        transport_options opts;
        opts.host = host;
        opts.settings = settings("shm", slot_mode::logical, 50, 5000);
        auto opened = open_host(table, opts, dir.path());
        auto& memory = opened.memory;
        auto& t = opened.transport;
        if (!t)
          return fail("create", t.error());
        auto& tr = **t;
        std::vector<transport_event> events;
        auto pump = [&] {
          events.clear();
          return tr.wait(events, 20ms);
        };
        auto deadline = std::chrono::steady_clock::now() + 30s;
        if (host == 0) {
          auto arena = memory.arenas()[0].send;
          const auto& tp = tr.program().transfers()[0];
          auto send_step = [&](uint64_t step) -> int {
            auto payload = write_frame(arena.subspan(0, tp.bytes));
            fill_payload(*payload, 7, step);
            if (auto err = tr.post_send(0, step))
              return fail("post_send", err);
            for (bool done = false; !done;) {
              if (auto err = pump())
                return fail("wait", err);
              for (auto& e : events)
                done |= e.what == transport_event::kind::send_done;
              CHILD_CHECK(std::chrono::steady_clock::now() < deadline, 31,
                          "send of step %llu", (unsigned long long)step);
            }
            return 0;
          };
          if (int rc = send_step(0))
            return rc;
          auto target = tr.raw_target_of({1, 0});
          auto raw = [&](uint64_t data) -> int {
            // 8 bytes into host 1's window of odd steps (step 1 rewrites it
            // later); the slot id is the crafted part. The local completion
            // has a null context (raw).
            auto before = tr.raw_local_completions();
            ssize_t ret;
            while (
                (ret = fi_writedata(tr.raw_fabric().ep(), arena.data(), 8,
                                    tr.raw_send_desc({0, 0}), data, target.addr,
                                    target.remote_base + tp.dst_offsets[1],
                                    target.key, nullptr)) == -FI_EAGAIN)
              static_cast<void>(pump());
            CHILD_CHECK(ret == 0, 32, "raw write: %zd", ret);
            while (tr.raw_local_completions() == before) {
              if (auto err = pump())
                return fail("wait", err);
              CHILD_CHECK(std::chrono::steady_clock::now() < deadline, 33,
                          "raw completion");
            }
            return 0;
          };
          namespace cq = detail::cq_data;
          if (int rc = raw(cq::make_data(0, 0 * 2 + 1))) // slot 1: nothing
            return rc;
          if (int rc = raw(cq::make_data(0, 0 * 2 + 0))) // step 0 again
            return rc;
          if (int rc = raw(cq::make_data(0, 5 * 2 + 0))) // step 5: ahead
            return rc;
          if (int rc = raw(cq::make_data(7, 0))) // no link 7
            return rc;
          while (tr.released_through(0) < 0) {
            if (auto err = pump())
              return fail("wait", err);
            CHILD_CHECK(std::chrono::steady_clock::now() < deadline, 34,
                        "release of step 0");
          }
          if (int rc = raw(cq::make_data(0, 0))) // step 0, released: stale
            return rc;
          if (int rc = send_step(1)) // the program goes on
            return rc;
        } else {
          std::vector<transport_event> errors;
          uint32_t arrivals = 0;
          bool released = false;
          while (arrivals < 2 || errors.size() < 5) {
            // Step 0 is released once the first four refusals were seen,
            // so the fifth (step 0 again) is stale, not a duplicate.
            if (arrivals == 1 && errors.size() == 4 && !released) {
              if (auto err = tr.release({1, 0}, 0))
                return fail("release", err);
              released = true;
            }
            if (auto err = pump())
              return fail("wait", err);
            for (auto& e : events) {
              if (e.what == transport_event::kind::error)
                errors.push_back(e);
              if (e.what == transport_event::kind::arrival) {
                auto window = memory.arenas()[0].recv.subspan(
                    tr.program().transfers()[0].dst_offset(e.step),
                    tr.program().transfers()[0].bytes);
                auto payload = read_frame(window);
                CHILD_CHECK(payload && check_payload(*payload, 7, e.step), 35,
                            "payload of step %llu", (unsigned long long)e.step);
                ++arrivals;
              }
            }
            CHILD_CHECK(std::chrono::steady_clock::now() < deadline, 36,
                        "%u arrivals, %zu refusals", arrivals, errors.size());
          }
          auto c = tr.counters(0);
          CHILD_CHECK(c.transfers_received == 2 && c.refused_unscheduled == 1 &&
                          c.refused_duplicate == 1 && c.refused_ahead == 1 &&
                          c.refused_stale == 1,
                      37,
                      "received %llu, unscheduled %llu, duplicate %llu, "
                      "ahead %llu, stale %llu",
                      (unsigned long long)c.transfers_received,
                      (unsigned long long)c.refused_unscheduled,
                      (unsigned long long)c.refused_duplicate,
                      (unsigned long long)c.refused_ahead,
                      (unsigned long long)c.refused_stale);
          CHILD_CHECK(tr.counters().refused_unknown_link == 1, 38,
                      "unknown link refusals %llu",
                      (unsigned long long)tr.counters().refused_unknown_link);
          const char* texts[] = {
              "transport.refused_arrival: link h0.c0->h1.c0 slot 1 step 0: "
              "arrival refused: no transfer starts in this slot",
              "transport.refused_arrival: link h0.c0->h1.c0 slot 0 step 0: "
              "arrival refused: a second arrival of this step",
              "transport.refused_arrival: link h0.c0->h1.c0 slot 0 step 5: "
              "arrival refused: h1.c0 released through step -1, so its 2 "
              "windows hold steps up to 1",
              "transport.refused_arrival: arrival on link 7 slot 0 step 0 "
              "refused: no such link ends on host 1",
              "transport.refused_arrival: link h0.c0->h1.c0 slot 0 step 0: "
              "arrival refused: h1.c0 released through step 0"};
          for (size_t i = 0; i < 5; ++i)
            CHILD_CHECK(contains(errors[i].err, texts[i]), 39, "refusal %zu",
                        i);
        }
        if (auto err = tr.close())
          return fail("close", err, 5);
        return 0;
      },
      60s, &pids);
  EXPECT_EQ(codes[0], 0);
  EXPECT_EQ(codes[1], 0);
  for (const auto& name : shm_segments_of(pids))
    std::filesystem::remove(std::filesystem::path{"/dev/shm"} / name);
}

TEST(host_transport, hello_refuses_another_slot_mode_or_slot_length) {
  struct variant {
    transport_settings a, b;
    const char* text0; // what host 0 says about host 1
    const char* text1;
  };
  std::vector<variant> variants = {
      {settings("shm", slot_mode::paced, 1000, 2000),
       settings("shm", slot_mode::logical, 1000, 2000),
       "hello of host 1: host 1 runs logical mode, this host paced",
       "hello of host 0: host 0 runs paced mode, this host logical"},
      {settings("shm", slot_mode::paced, 1000, 2000),
       settings("shm", slot_mode::paced, 2000, 2000),
       "hello of host 1: host 1 runs 2000000 ns slots, this host 1000000",
       "hello of host 0: host 0 runs 1000000 ns slots, this host 2000000"},
  };
  for (const auto& v : variants) {
    temp_dir dir;
    auto table = one_link_table();
    auto codes = run_hosts(
        2,
        [&](uint32_t host) -> int {
          transport_options opts;
          opts.host = host;
          opts.settings = host == 0 ? v.a : v.b;
          auto opened = open_host(table, opts, dir.path());
          auto& t = opened.transport;
          CHILD_CHECK(!t, 40, "started against a mismatched peer");
          CHILD_CHECK(contains(t.error(),
                               std::string{"transport.bad_control_message: "} +
                                   (host == 0 ? v.text0 : v.text1)),
                      41, "wrong refusal");
          CHILD_CHECK(detail::memory_region::live_count() == 0, 42, "leak");
          return 0;
        },
        60s);
    EXPECT_EQ(codes[0], 0);
    EXPECT_EQ(codes[1], 0);
  }
}

TEST(host_transport, checks_the_arenas_it_is_given) {
  table_spec s;
  s.slots_per_step = 1;
  s.arenas = {{{0, 0}, 0, 1024}, {{0, 1}, 2048, 0}};
  s.links.push_back({{0, 0}, {0, 1}, {{1, 0, 1, 1024, 0, {0, 1024}}}});
  auto table = build_slot_table(s);
  alignas(8) static std::byte memory[8192];
  auto attempt = [&](std::vector<arena_memory> arenas) {
    temp_dir dir;
    file_rendezvous rv{dir.path()};
    transport_options opts;
    auto t = host_transport::create(opts, *slot_program::load(table), rv,
                                    std::move(arenas));
    EXPECT_FALSE(t);
    return t ? std::string{} : render(t.error());
  };
  std::span<std::byte> none;
  EXPECT_EQ(
      attempt({{{0, 0}, {memory, 1024}, none}}),
      "transport.invalid_config: 0 arenas given for h0.c1 (expected one)");
  EXPECT_EQ(attempt({{{0, 0}, {memory, 1024}, none},
                     {{0, 1}, none, {memory + 1024, 8}}}),
            "transport.invalid_config: receive arena of h0.c1 has 8 bytes; the "
            "table needs 2048");
  EXPECT_EQ(attempt({{{0, 0}, {memory + 4, 1024}, none},
                     {{0, 1}, none, {memory + 2048, 2048}}}),
            "transport.invalid_config: send arena of h0.c0 is not 8-byte "
            "aligned");
  EXPECT_EQ(attempt({{{0, 0}, {memory, 1024}, none},
                     {{0, 1}, none, {memory + 2048, 2048}},
                     {{1, 0}, none, none}}),
            "transport.invalid_config: arena given for h1.c0, which is not a "
            "chip of host 0 in the slot table");
  EXPECT_EQ(detail::memory_region::live_count(), 0);
}

TEST(host_transport, waits_time_out_and_wake_returns_early) {
  // One host, two chips, nothing posted: wait() sleeps out its timeout (no
  // events), and wake() from another thread ends a long wait at once.
  table_spec s;
  s.slots_per_step = 1;
  s.arenas = {{{0, 0}, 0, 1024}, {{0, 1}, 2048, 0}};
  s.links.push_back({{0, 0}, {0, 1}, {{1, 0, 1, 1024, 0, {0, 1024}}}});
  auto table = build_slot_table(s);
  temp_dir dir;
  auto codes = run_hosts(
      1,
      [&](uint32_t host) -> int {
        transport_options opts;
        auto opened = open_host(table, opts, dir.path());
        auto& t = opened.transport;
        if (!t)
          return fail("create", t.error());
        std::vector<transport_event> events;
        auto t0 = std::chrono::steady_clock::now();
        if (auto err = (*t)->wait(events, 200ms))
          return fail("wait", err);
        auto slept = std::chrono::steady_clock::now() - t0;
        CHILD_CHECK(events.empty() && slept >= 195ms && slept < 2s, 50,
                    "%zu events after %lld ms", events.size(),
                    (long long)(slept / 1ms));
        std::thread waker{[&] {
          std::this_thread::sleep_for(50ms);
          (*t)->wake();
        }};
        t0 = std::chrono::steady_clock::now();
        auto err = (*t)->wait(events, 10s);
        slept = std::chrono::steady_clock::now() - t0;
        waker.join();
        if (err)
          return fail("wait", err);
        CHILD_CHECK(slept < 2s, 51, "wake took %lld ms",
                    (long long)(slept / 1ms));
        return (*t)->close() ? 5 : 0;
      },
      60s);
  EXPECT_EQ(codes[0], 0);
}

TEST(host_transport, missing_delivery_is_a_slot_timeout_event) {
  run_config cfg;
  cfg.table = build_slot_table(ring_pattern(2, 1, 1, 1, 4096));
  cfg.settings = settings("shm", slot_mode::logical, 50, 300);
  cfg.steps = 6;
  // Host 0 skips its send of step 3 (link 0, h0.c0 -> h1.c0, slot 1).
  cfg.hooks = [](uint32_t host, const slot_program&) {
    threaded_hooks h;
    h.skip_send = [host](uint64_t step, uint32_t) {
      return host == 0 && step == 3;
    };
    h.timeout = 20s;
    return h;
  };
  cfg.check = [](uint32_t host, host_transport&, const host_memory&,
                 const caf::error& err) {
    if (host == 1) {
      CHILD_CHECK(contains(err, "transport.slot_timeout: link h0.c0->h1.c0 "
                                "slot 1 step 3: no delivery ") &&
                      contains(err, "after this host began the step (hard "
                                    "timeout 300000 us)"),
                  60, "host 1");
    } else {
      // Host 1 stopped at step 3, so host 0 misses step 4 from it.
      CHILD_CHECK(contains(err, "transport.slot_timeout: link h1.c0->h0.c0 "
                                "slot 1 step 4"),
                  61, "host 0");
    }
    return 0;
  };
  run_cluster(2, cfg);
}

TEST(host_transport, unreleased_window_is_a_back_pressure_event) {
  // Host 1 never releases: host 0's step 2 would overwrite step 0's window.
  temp_dir dir;
  auto table = one_link_table();
  auto codes = run_hosts(
      2,
      [&](uint32_t host) -> int {
        transport_options opts;
        opts.host = host;
        opts.settings = settings("shm", slot_mode::logical, 50, 200);
        auto opened = open_host(table, opts, dir.path());
        auto& memory = opened.memory;
        auto& t = opened.transport;
        if (!t)
          return fail("create", t.error());
        auto& tr = **t;
        std::vector<transport_event> events;
        auto until = std::chrono::steady_clock::now() + 1500ms;
        caf::error back_pressure;
        if (host == 0) {
          const auto& tp = tr.program().transfers()[0];
          for (uint64_t step = 0; step < 3; ++step) {
            auto payload =
                write_frame(memory.arenas()[0].send.subspan(0, tp.bytes));
            fill_payload(*payload, 1, step);
            if (auto err = tr.post_send(0, step))
              return fail("post", err);
            // Send windows are rewritten only after send_done.
            for (bool done = false; !done && !back_pressure;) {
              events.clear();
              if (auto err = tr.wait(events, 20ms))
                return fail("wait", err);
              for (auto& e : events) {
                done |= e.what == transport_event::kind::send_done;
                if (e.what == transport_event::kind::error)
                  back_pressure = e.err;
              }
              CHILD_CHECK(std::chrono::steady_clock::now() < until, 70,
                          "step %llu neither sent nor refused",
                          (unsigned long long)step);
            }
          }
          CHILD_CHECK(contains(back_pressure,
                               "transport.back_pressure: link h0.c0->h1.c0 "
                               "slot 0 step 2: receiver has not released step "
                               "0 within 200000 us"),
                      71, "error event");
          CHILD_CHECK(
              tr.last_posted_step(0) == 1 && tr.counters(0).transfers_sent == 2,
              72, "posted through %lld", (long long)tr.last_posted_step(0));
        } else {
          while (std::chrono::steady_clock::now() < until) {
            events.clear();
            if (auto err = tr.wait(events, 20ms))
              return fail("wait", err);
          }
          CHILD_CHECK(tr.counters(0).transfers_received == 2, 73, "received");
        }
        return tr.close(2s) ? 5 : 0;
      },
      60s);
  EXPECT_EQ(codes[0], 0);
  EXPECT_EQ(codes[1], 0);
}

TEST(host_transport, relay_forwards_out_of_its_receive_window_without_a_copy) {
  // h0.c0 -> h1.c0 -> h2.c0: host 1 forwards what it receives straight
  // from its receive window (post_forward); its send arena stays untouched.
  for (uint64_t payload : {uint64_t{4096 - 24}, uint64_t{65536}}) {
    table_spec s;
    s.slots_per_step = 2;
    uint64_t bytes = framed_bytes(payload);
    s.arenas = {
        {{0, 0}, 0, bytes}, {{1, 0}, 2 * bytes, bytes}, {{2, 0}, 2 * bytes, 0}};
    s.links.push_back({{0, 0}, {1, 0}, {{1, 0, 1, bytes, 0, {0, bytes}}}});
    s.links.push_back({{1, 0}, {2, 0}, {{2, 1, 1, bytes, 0, {0, bytes}}}});
    run_config cfg;
    cfg.table = build_slot_table(s);
    cfg.settings = settings("shm", slot_mode::logical, 50, 5000);
    cfg.steps = 30;
    cfg.hooks = [](uint32_t, const slot_program& prog) {
      threaded_hooks h;
      h.forward_of = [](uint32_t transfer) -> int64_t {
        return transfer == 1 ? 0 : -1;
      };
      h.pattern_of = [&prog](uint32_t transfer) {
        return window_key(prog, prog.transfers()[transfer == 1 ? 0 : transfer]);
      };
      return h;
    };
    cfg.check = [&](uint32_t host, host_transport& t, const host_memory& m,
                    const caf::error& err) {
      if (int rc = expect_all_received(host, t, err, cfg.steps))
        return rc;
      if (host == 1) {
        auto send = m.arenas()[0].send;
        CHILD_CHECK(std::all_of(send.begin(), send.end(),
                                [](std::byte b) { return b == std::byte{0}; }),
                    80, "the relay wrote into its send arena");
      }
      return 0;
    };
    run_cluster(3, cfg);
  }
}
