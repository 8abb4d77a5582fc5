// Transfers between two chips of one host, delivered in place by the
// sender's thread (host_transport::send_or_deliver): the bytes land in the
// planned receive window at once, the receiver-side checks and counters
// apply as to a fabric arrival, the receiver's release gives the credit
// back without a write, and a window still in use makes the send wait for
// the progress thread instead of overwriting it. Really uses libfabric
// (shm) and its progress thread.

#include "tests/transport/multi_host.hpp"
#include "transport/host_transport.hpp"
#include "transport/table_builder.hpp"

#include <gtest/gtest.h>

#include <sys/mman.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <thread>

namespace lockstep::transport {
namespace {

using namespace std::chrono_literals;

constexpr uint64_t payload = 4096;

// One host, chips 0 -> 1, one transfer a step into a single receive window
// (so step k + 1 may be delivered only after step k was released).
table_spec two_chips(uint32_t buffers) {
  table_spec t;
  t.slots_per_step = 4;
  t.arenas = {{{0, 0}, 0, payload}, {{0, 1}, payload * buffers, 0}};
  link_spec l{{0, 0}, {0, 1}, {}};
  transfer_spec x;
  x.id = 7;
  x.start_slot = 1;
  x.bytes = payload;
  for (uint32_t b = 0; b < buffers; ++b)
    x.dst_offsets.push_back(b * payload);
  l.transfers.push_back(x);
  t.links.push_back(l);
  return t;
}

struct one_host {
  std::vector<std::byte> send0 = std::vector<std::byte>(payload);
  std::vector<std::byte> recv1;
  std::unique_ptr<host_transport> t;

  explicit one_host(uint32_t buffers, slot_mode mode = slot_mode::logical) {
    recv1.resize(payload * buffers);
    auto spec = two_chips(buffers);
    spec.slot_ns = 1'000'000;
    auto program = slot_program::load(build_slot_table(spec));
    EXPECT_TRUE(program) << render(program.error());
    test::temp_dir dir;
    file_rendezvous rv{dir.path()};
    transport_options opts;
    opts.settings.mode = mode;
    opts.settings.slot_ns = 1'000'000;
    std::vector<arena_memory> mem{{{0, 0}, send0, {}}, {{0, 1}, {}, recv1}};
    auto made = host_transport::create(opts, std::move(*program), rv, mem);
    EXPECT_TRUE(made) << render(made.error());
    if (made)
      t = std::move(*made);
  }
  ~one_host() {
    if (t) {
      EXPECT_FALSE(t->close(5s));
    }
  }
  // The progress thread's events until `done` or a deadline.
  std::vector<transport_event> events_until(
      const std::function<bool(const std::vector<transport_event>&)>& done) {
    std::vector<transport_event> all;
    auto deadline = std::chrono::steady_clock::now() + 5s;
    while (!done(all) && std::chrono::steady_clock::now() < deadline) {
      std::vector<transport_event> ev;
      EXPECT_FALSE(t->wait(ev, 50ms));
      all.insert(all.end(), ev.begin(), ev.end());
    }
    return all;
  }
};

void fill(std::vector<std::byte>& w, uint64_t step) {
  for (size_t i = 0; i < w.size(); ++i)
    w[i] = static_cast<std::byte>((i * 31 + step * 7) & 0xff);
}

bool holds(std::span<const std::byte> w, uint64_t step) {
  for (size_t i = 0; i < w.size(); ++i)
    if (w[i] != static_cast<std::byte>((i * 31 + step * 7) & 0xff))
      return false;
  return true;
}

size_t arrivals(const std::vector<transport_event>& ev) {
  return static_cast<size_t>(
      std::count_if(ev.begin(), ev.end(), [](const transport_event& e) {
        return e.what == transport_event::kind::arrival;
      }));
}

TEST(local_delivery, copies_in_place_and_counts_like_an_arrival) {
  one_host h{1};
  ASSERT_TRUE(h.t);
  fill(h.send0, 0);
  auto path = h.t->send_or_deliver(0, 0);
  ASSERT_TRUE(path) << render(path.error());
  EXPECT_EQ(*path, send_path::delivered);
  // In the window before any progress thread ran.
  EXPECT_TRUE(holds(h.recv1, 0));
  auto c = h.t->counters(0);
  EXPECT_EQ(c.bytes_sent, payload);
  EXPECT_EQ(c.transfers_sent, 1u);
  EXPECT_EQ(c.bytes_received, payload);
  EXPECT_EQ(c.transfers_received, 1u);
  // A second send of the same step is refused by the sender's check.
  EXPECT_TRUE(h.t->send_or_deliver(0, 0).error());
  // Step 1 reuses the one window: not before the receiver released step 0.
  fill(h.send0, 1);
  auto queued = h.t->send_or_deliver(0, 1);
  ASSERT_TRUE(queued) << render(queued.error());
  EXPECT_EQ(*queued, send_path::queued);
  EXPECT_TRUE(holds(h.recv1, 0)) << "a window in use was overwritten";
  ASSERT_FALSE(h.t->release({0, 1}, 0));
  // The queued write goes over the fabric once the credit is back, and is
  // reported as an arrival (the delivered step 0 never is).
  auto ev = h.events_until([](const auto& e) { return arrivals(e) >= 1; });
  EXPECT_EQ(arrivals(ev), 1u);
  EXPECT_TRUE(holds(h.recv1, 1));
  // Released through step 1: step 2 is delivered in place again.
  ASSERT_FALSE(h.t->release({0, 1}, 1));
  h.events_until([&](const auto&) {
    return h.t->released_through(0) >= 1;
  });
  fill(h.send0, 2);
  auto again = h.t->send_or_deliver(0, 2);
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, send_path::delivered);
  EXPECT_TRUE(holds(h.recv1, 2));
  c = h.t->counters(0);
  EXPECT_EQ(c.transfers_received, 3u);
  EXPECT_EQ(c.refused_duplicate + c.refused_stale + c.refused_ahead, 0u);
}

TEST(local_delivery, paced_transfers_keep_their_slots) {
  one_host h{2, slot_mode::paced};
  ASSERT_TRUE(h.t);
  fill(h.send0, 0);
  auto path = h.t->send_or_deliver(0, 0);
  ASSERT_TRUE(path) << render(path.error());
  // A paced transfer leaves in its slot, by the progress thread.
  EXPECT_EQ(*path, send_path::queued);
  auto ev = h.events_until([](const auto& e) { return arrivals(e) >= 1; });
  EXPECT_EQ(arrivals(ev), 1u);
  EXPECT_TRUE(holds(std::span<const std::byte>{h.recv1}.first(payload), 0));
}

// A killed host leaves its shm region behind; a new process that gets its
// pid must still start (libfabric's shm fails fi_enable with EBUSY on an
// existing "<pid>:..." name).
TEST(local_delivery, a_stale_region_of_a_reused_pid_does_not_stop_a_host) {
  auto codes = test::run_hosts(
      1,
      [](uint32_t) {
        auto name = "/" + std::to_string(::getpid()) + ":0:0";
        int fd = ::shm_open(name.c_str(), O_CREAT | O_RDWR, 0600);
        if (fd < 0)
          return 3;
        ::close(fd);
        one_host h{1};
        return h.t ? 0 : 1;
      },
      60s);
  ASSERT_EQ(codes.size(), 1u);
  EXPECT_EQ(codes[0], 0);
}

} // namespace
} // namespace lockstep::transport
