// The slotted transport end to end: real forked processes, real libfabric
// (shm between processes on this machine; tcp;ofi_rxm over loopback).

#include "multi_host.hpp"

#include "transport/detail/fabric.hpp"

#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <thread>

using namespace lockstep;
using namespace lockstep::transport;
using namespace lockstep::transport::test;
using namespace std::chrono_literals;

namespace {

struct run_config {
  std::vector<std::byte> table;
  transport_settings settings;
  uint64_t steps = 10;
  std::vector<int64_t> clock_offsets_ns; // per host, optional
  drive_hooks hooks;
  // Checks after the run; the transport is still open. Return 0 if fine.
  std::function<int(uint32_t, slotted_transport&, const caf::error&)> check;
};

// One host's life: load the table, open, drive, check, close, verify that
// nothing stays registered.
int host_main(uint32_t host, const run_config& cfg,
              const std::filesystem::path& dir) {
  auto prog = slot_program::load(cfg.table);
  if (!prog)
    return fail("host " + std::to_string(host) + ": load", prog.error());
  file_rendezvous rv{dir};
  transport_options opts;
  opts.host = host;
  opts.settings = cfg.settings;
  if (host < cfg.clock_offsets_ns.size())
    opts.clock_offset_ns = cfg.clock_offsets_ns[host];
  opts.startup_timeout = 60s;
  {
    auto t = slotted_transport::create(opts, std::move(*prog), rv);
    if (!t)
      return fail("host " + std::to_string(host) + ": create", t.error());
    auto err = drive(**t, cfg.steps, cfg.hooks);
    if (cfg.check) {
      if (int rc = cfg.check(host, **t, err); rc != 0)
        return rc;
    } else if (err) {
      return fail("host " + std::to_string(host) + ": drive", err);
    }
    if (auto cerr = (*t)->close())
      return fail("host " + std::to_string(host) + ": close", cerr, 5);
  }
  CHILD_CHECK(detail::memory_region::live_count() == 0, 6,
              "%lld registrations leaked",
              static_cast<long long>(detail::memory_region::live_count()));
  return 0;
}

// Runs every host in its own process; asserts all exit 0 and that /dev/shm
// holds no new segment afterwards.
void run_cluster(uint32_t hosts, const run_config& cfg,
                 std::chrono::seconds timeout = 90s) {
  temp_dir dir;
  std::vector<int> pids;
  auto codes = run_hosts(
      hosts, [&](uint32_t h) { return host_main(h, cfg, dir.path()); }, timeout,
      &pids);
  for (uint32_t h = 0; h < hosts; ++h)
    EXPECT_EQ(codes[h], 0) << "host " << h;
  for (const auto& name : shm_segments_of(pids)) {
    ADD_FAILURE() << "leaked /dev/shm segment " << name;
    std::filesystem::remove(std::filesystem::path{"/dev/shm"} / name);
  }
}

// The sum of received transfers on links into `host`.
uint64_t received(const slotted_transport& t) {
  uint64_t n = 0;
  for (uint32_t l = 0; l < t.program().links().size(); ++l)
    n += t.counters(l).transfers_received;
  return n;
}

int expect_all_received(uint32_t host, slotted_transport& t,
                        const caf::error& err, uint64_t steps) {
  if (err)
    return fail("host " + std::to_string(host) + ": drive", err);
  auto expected = steps * t.program().receive_program(host).size();
  CHILD_CHECK(received(t) == expected, 7, "received %llu of %llu transfers",
              static_cast<unsigned long long>(received(t)),
              static_cast<unsigned long long>(expected));
  return 0;
}

// One link h0.c0 -> h1.c0, one double-buffered transfer in slot 0.
std::vector<std::byte> one_link_table() {
  table_spec s;
  s.slots_per_step = 2;
  uint64_t bytes = framed_bytes(4096);
  s.arenas = {{{0, 0}, 0, bytes}, {{1, 0}, 2 * bytes, 0}};
  link_spec l{{0, 0}, {1, 0}, {}};
  l.transfers.push_back({1, 0, 1, bytes, 0, {0, bytes}});
  s.links.push_back(l);
  return build_slot_table(s);
}

} // namespace

TEST(slotted_transport, refuses_unscheduled_and_mis_sized_sends) {
  // One host, two chips: the loopback link crosses the fabric too.
  table_spec s;
  s.slots_per_step = 4;
  s.arenas = {{{0, 0}, 0, 4096}, {{0, 1}, 8192, 0}};
  link_spec l{{0, 0}, {0, 1}, {}};
  l.transfers.push_back({1, 1, 1, framed_bytes(1000), 0, {0, 2048}});
  s.links.push_back(l);
  run_config cfg;
  cfg.table = build_slot_table(s);
  cfg.settings = settings("shm", slot_mode::logical, 50, 2000);
  cfg.steps = 3;
  cfg.check = [](uint32_t host, slotted_transport& t, const caf::error& err) {
    if (int rc = expect_all_received(host, t, err, 3))
      return rc;
    auto expect = [&](const caf::error& e, const char* what) {
      auto text = render(e);
      if (text.find(what) != std::string::npos)
        return 0;
      std::fprintf(stderr, "expected '%s', got '%s'\n", what, text.c_str());
      return 8;
    };
    // Not in the table for this slot.
    if (int rc = expect(t.send(0, 2, 3, 1000),
                        "transport.unscheduled_send: link h0.c0->h0.c1 slot "
                        "2: no transfer starts in this slot"))
      return rc;
    // Unknown link.
    if (int rc = expect(t.send(9, 1, 3, 1000), "link 9 is not in the slot "
                                               "table"))
      return rc;
    // Wrong size.
    if (int rc = expect(t.send(0, 1, 3, 999),
                        "transport.wrong_size: link h0.c0->h0.c1 slot 1: send "
                        "of 999 payload bytes refused; the table schedules "
                        "1024 bytes"))
      return rc;
    // Twice in one step.
    if (int rc = expect(t.send(0, 1, 2, 1000), "already sent in step 2"))
      return rc;
    // Non-blocking receive: nothing for step 3 until it is sent.
    auto none = t.try_receive(0, 1, 3);
    CHILD_CHECK(none && !*none, 18, "try_receive before the send");
    auto buf = t.send_buffer(0, 1);
    CHILD_CHECK(static_cast<bool>(buf), 18, "send_buffer");
    fill_payload(*buf, 1, 3);
    if (auto e = t.send(0, 1, 3, 1000))
      return fail("send", e);
    for (int i = 0; i < 100000; ++i) {
      auto got = t.try_receive(0, 1, 3);
      CHILD_CHECK(static_cast<bool>(got), 19, "%s",
                  render(got.error()).c_str());
      if (*got) {
        CHILD_CHECK(check_payload(**got, 1, 3), 19, "payload");
        break;
      }
      CHILD_CHECK(i + 1 < 100000, 19, "step 3 never arrived");
    }
    // Receiving on a link whose receiver is elsewhere is refused too.
    auto r = t.receive(0, 2, 0);
    CHILD_CHECK(!r, 9, "receive of an unscheduled slot succeeded");
    return 0;
  };
  run_cluster(1, cfg);
}

TEST(slotted_transport,
     leak_check_sees_segments_of_a_host_that_skips_teardown) {
  // Control for the teardown checks above: a host that dies without closing
  // its transport leaves its shm segment behind, and the check finds it.
  temp_dir dir;
  auto table = one_link_table();
  std::vector<int> pids;
  auto codes = run_hosts(
      2,
      [&](uint32_t host) {
        auto prog = slot_program::load(table);
        file_rendezvous rv{dir.path()};
        transport_options opts;
        opts.host = host;
        auto t = slotted_transport::create(opts, std::move(*prog), rv);
        if (!t)
          return fail("create", t.error());
        if (host == 1)
          _exit(0); // no teardown at all
        // The peer vanished: the goodbye barrier times out, teardown goes on.
        static_cast<void>((*t)->close(500ms));
        return 0;
      },
      60s, &pids);
  EXPECT_EQ(codes[0], 0);
  EXPECT_EQ(codes[1], 0);
  auto leaked = shm_segments_of({pids[1]});
  EXPECT_FALSE(leaked.empty());
  auto kept = shm_segments_of({pids[0]});
  EXPECT_TRUE(kept.empty());
  for (const auto& name : shm_segments_of(pids))
    std::filesystem::remove(std::filesystem::path{"/dev/shm"} / name);
}

TEST(slotted_transport, two_hosts_logical_56_links_with_a_slow_reader) {
  run_config cfg;
  // 8 chips on 2 hosts, each feeding all 7 others: 56 links, 16 of them
  // between chips of one host.
  cfg.table = build_slot_table(ring_pattern(2, 4, 7, 2, 4000));
  cfg.settings = settings("shm", slot_mode::logical, 50, 5000);
  cfg.steps = 20;
  // Host 1 reads slowly: without back-pressure host 0 would overwrite a
  // double-buffered window before it is read and the check would fail.
  cfg.hooks.after_receive = [](slotted_transport&, uint64_t step,
                               const slot_op& op) {
    if (getpid() % 2 == 0 && (op.transfer + step) % 13 == 0)
      std::this_thread::sleep_for(300us);
  };
  cfg.check = [&](uint32_t host, slotted_transport& t, const caf::error& err) {
    if (int rc = expect_all_received(host, t, err, cfg.steps))
      return rc;
    for (uint32_t l = 0; l < t.program().links().size(); ++l) {
      const auto& c = t.counters(l);
      const auto& link = t.program().links()[l];
      if (link.src.host == host)
        CHILD_CHECK(c.transfers_sent == 2 * cfg.steps, 10, "link %u", l);
      if (link.dst.host == host)
        CHILD_CHECK(c.bytes_received == 2 * cfg.steps * framed_bytes(4000) &&
                        c.slot_misses == 0,
                    11, "link %u", l);
    }
    return 0;
  };
  run_cluster(2, cfg);
}

TEST(slotted_transport, fast_sender_never_overwrites_a_slow_readers_buffer) {
  // One-way link: host 0 only sends, so only back-pressure holds it back.
  // Host 1 "computes" (polling) after each receive before the payload is
  // checked; a write of step k+2 into the same window would show.
  for (uint64_t payload : {uint64_t{4096 - 24}, uint64_t{32768}}) {
    table_spec s;
    s.slots_per_step = 4;
    uint64_t bytes = framed_bytes(payload);
    s.arenas = {{{0, 0}, 0, 4 * bytes}, {{1, 0}, 8 * bytes, 0}};
    link_spec l{{0, 0}, {1, 0}, {}};
    for (uint32_t j = 0; j < 4; ++j)
      l.transfers.push_back(
          {j, j, 1, bytes, j * bytes, {2 * j * bytes, (2 * j + 1) * bytes}});
    s.links.push_back(l);
    run_config cfg;
    cfg.table = build_slot_table(s);
    cfg.settings = settings("shm", slot_mode::logical, 50, 5000);
    cfg.steps = 30;
    cfg.hooks.after_receive = [](slotted_transport& t, uint64_t,
                                 const slot_op&) {
      auto until = std::chrono::steady_clock::now() + 150us;
      while (std::chrono::steady_clock::now() < until)
        static_cast<void>(t.progress());
    };
    cfg.check = [&](uint32_t host, slotted_transport& t,
                    const caf::error& err) {
      return expect_all_received(host, t, err, cfg.steps);
    };
    run_cluster(2, cfg);
  }
}

TEST(slotted_transport, eight_hosts_logical_64_links) {
  run_config cfg;
  cfg.table = build_slot_table(ring_pattern(8, 2, 4, 1, 4096));
  ASSERT_EQ(slot_program::load(cfg.table)->links().size(), 64u);
  cfg.settings = settings("shm", slot_mode::logical, 50, 10000);
  cfg.steps = 10;
  cfg.check = [&](uint32_t host, slotted_transport& t, const caf::error& err) {
    return expect_all_received(host, t, err, cfg.steps);
  };
  run_cluster(8, cfg);
}

TEST(slotted_transport, two_hosts_paced_with_offset_clocks) {
  run_config cfg;
  cfg.table = build_slot_table(ring_pattern(2, 2, 3, 1, 4096));
  cfg.settings = settings("shm", slot_mode::paced, 500, 5000);
  cfg.steps = 20;
  // Host 0's clock runs 3 ms behind, host 1's 7 ms ahead of the real one.
  cfg.clock_offsets_ns = {-3'000'000, 7'000'000};
  cfg.check = [&](uint32_t host, slotted_transport& t, const caf::error& err) {
    if (int rc = expect_all_received(host, t, err, cfg.steps))
      return rc;
    const auto& c = t.clock();
    std::fprintf(stderr, "host %u: offset %lld ns, error %llu ns\n", host,
                 static_cast<long long>(c.offset_ns),
                 static_cast<unsigned long long>(c.error_ns));
    if (host == 1) {
      auto miss = c.offset_ns - (-10'000'000);
      CHILD_CHECK(std::llabs(miss) <=
                      static_cast<long long>(c.error_ns) + 200'000,
                  12, "offset %lld ns, expected -10 ms +- %llu ns",
                  static_cast<long long>(c.offset_ns),
                  static_cast<unsigned long long>(c.error_ns));
    }
    // The epoch is one instant: on host 1's clock it is host 0's epoch
    // shifted by the offset, so real-time slot starts agree.
    return 0;
  };
  run_cluster(2, cfg);
}

TEST(slotted_transport, eight_hosts_paced_64_links) {
  run_config cfg;
  cfg.table = build_slot_table(ring_pattern(8, 2, 4, 1, 4096));
  // 8 processes on 2 shared cores: a slot long enough to be sustainable.
  cfg.settings = settings("shm", slot_mode::paced, 2000, 10000);
  cfg.steps = 6;
  cfg.check = [&](uint32_t host, slotted_transport& t, const caf::error& err) {
    return expect_all_received(host, t, err, cfg.steps);
  };
  run_cluster(8, cfg);
}

TEST(slotted_transport, delayed_sender_is_counted_as_slot_miss) {
  table_spec s = ring_pattern(2, 1, 1, 1, 4096); // one link h0.c0->h1.c0
  run_config cfg;
  cfg.table = build_slot_table(s);
  cfg.settings = settings("shm", slot_mode::paced, 1000, 3000);
  cfg.steps = 8;
  cfg.hooks.before_send = [](uint64_t step, const slot_op&) {
    if (step == 4)
      std::this_thread::sleep_for(6ms); // six slots late
  };
  cfg.check = [&](uint32_t host, slotted_transport& t, const caf::error& err) {
    if (int rc = expect_all_received(host, t, err, cfg.steps))
      return rc;
    if (host == 1) {
      const auto& c = t.counters(1); // link h1.c0->h0.c0 is index 1
      const auto& d = t.counters(0);
      (void)c;
      CHILD_CHECK(d.slot_misses >= 1, 13, "no slot miss counted");
      CHILD_CHECK(d.max_lateness_ns >= 3'000'000, 14, "max lateness %lld ns",
                  static_cast<long long>(d.max_lateness_ns));
    }
    return 0;
  };
  run_cluster(2, cfg);
}

TEST(slotted_transport, missing_delivery_fails_with_slot_timeout) {
  for (auto mode : {slot_mode::paced, slot_mode::logical}) {
    run_config cfg;
    cfg.table = one_link_table();
    cfg.settings = settings("shm", mode, 1000, 150);
    cfg.steps = 3;
    cfg.hooks.skip_send = [](uint64_t step, const slot_op&) {
      return step == 2;
    };
    cfg.check = [](uint32_t host, slotted_transport&, const caf::error& err) {
      if (host == 0)
        return err ? fail("host 0", err) : 0;
      auto text = render(err);
      CHILD_CHECK(text.find("transport.slot_timeout: link h0.c0->h1.c0 slot "
                            "0 step 2: no delivery") != std::string::npos,
                  15, "got '%s'", text.c_str());
      return 0;
    };
    run_cluster(2, cfg);
  }
}

TEST(slotted_transport, sender_cannot_run_ahead_of_an_unreleased_buffer) {
  run_config cfg;
  cfg.table = one_link_table();
  cfg.settings = settings("shm", slot_mode::logical, 50, 200);
  cfg.steps = 3;
  // Host 1 consumes step 0 but does not release it for longer than the
  // sender's hard timeout. It keeps polling meanwhile (libfabric progress
  // is manual on both sides: a host that stops polling stalls its senders'
  // completions, not only its own).
  cfg.hooks.after_receive = [](slotted_transport& t, uint64_t step,
                               const slot_op&) {
    if (step != 0)
      return;
    auto until = std::chrono::steady_clock::now() + 600ms;
    while (std::chrono::steady_clock::now() < until) {
      static_cast<void>(t.progress());
      std::this_thread::sleep_for(100us);
    }
  };
  cfg.check = [](uint32_t host, slotted_transport& t, const caf::error& err) {
    if (host == 1)
      return 0; // it later times out waiting for step 2; not the point
    auto text = render(err);
    CHILD_CHECK(text.find("transport.back_pressure: link h0.c0->h1.c0 slot 0 "
                          "step 2: receiver has not released step 0") !=
                    std::string::npos,
                16, "got '%s'", text.c_str());
    CHILD_CHECK(t.counters(0).transfers_sent == 2, 17, "sent %llu",
                static_cast<unsigned long long>(t.counters(0).transfers_sent));
    return 0;
  };
  run_cluster(2, cfg);
}

TEST(slotted_transport, tcp_two_hosts_logical_and_paced) {
  for (auto mode : {slot_mode::logical, slot_mode::paced}) {
    run_config cfg;
    cfg.table = build_slot_table(ring_pattern(2, 2, 3, 2, 16384));
    cfg.settings = settings("tcp;ofi_rxm", mode, 1000, 5000);
    cfg.steps = 10;
    cfg.check = [&](uint32_t host, slotted_transport& t,
                    const caf::error& err) {
      return expect_all_received(host, t, err, cfg.steps);
    };
    run_cluster(2, cfg);
  }
}

TEST(slotted_transport, startup_rejects_corrupt_hellos_and_other_tables) {
  // Host 1's "hello" is garbage: host 0 must fail with a clear error rather
  // than misread it.
  {
    temp_dir dir;
    auto table = one_link_table();
    std::vector<std::byte> junk(4096, std::byte{0x5a});
    file_rendezvous{dir.path()}.publish(1, junk);
    auto codes = run_hosts(
        1,
        [&](uint32_t host) {
          file_rendezvous rv{dir.path()};
          transport_options opts;
          opts.host = host;
          auto t =
              slotted_transport::create(opts, *slot_program::load(table), rv);
          CHILD_CHECK(!t, 20, "created with a corrupt peer hello");
          auto text = render(t.error());
          CHILD_CHECK(text.find("transport.bad_control_message: hello of host "
                                "1: corrupt message") != std::string::npos,
                      21, "got '%s'", text.c_str());
          return 0;
        },
        60s);
    EXPECT_EQ(codes[0], 0);
  }
  // Two hosts loaded different tables: both refuse to start.
  {
    temp_dir dir;
    auto codes = run_hosts(
        2,
        [&](uint32_t host) {
          auto spec = ring_pattern(2, 1, 1, 1, host == 0 ? 4096 : 2048);
          file_rendezvous rv{dir.path()};
          transport_options opts;
          opts.host = host;
          auto t = slotted_transport::create(
              opts, *slot_program::load(build_slot_table(spec)), rv);
          CHILD_CHECK(!t, 22, "started with different tables");
          auto text = render(t.error());
          CHILD_CHECK(text.find("runs a different slot table") !=
                          std::string::npos,
                      23, "got '%s'", text.c_str());
          return 0;
        },
        60s);
    EXPECT_EQ(codes[0], 0);
    EXPECT_EQ(codes[1], 0);
  }
}

TEST(slotted_transport, unavailable_provider_names_the_failed_call) {
  temp_dir dir;
  auto table = one_link_table();
  auto codes = run_hosts(
      1,
      [&](uint32_t host) {
        file_rendezvous rv{dir.path()};
        transport_options opts;
        opts.host = host;
        opts.settings.provider = "no_such_provider";
        auto t =
            slotted_transport::create(opts, *slot_program::load(table), rv);
        CHILD_CHECK(!t, 24, "opened a provider that does not exist");
        auto text = render(t.error());
        CHILD_CHECK(text.find("transport.fabric_failure: fi_getinfo (provider "
                              "no_such_provider): ") != std::string::npos,
                    25, "got '%s'", text.c_str());
        CHILD_CHECK(detail::memory_region::live_count() == 0, 26, "leak");
        return 0;
      },
      60s);
  EXPECT_EQ(codes[0], 0);
}
