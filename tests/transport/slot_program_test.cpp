// Slot-table loading and validation, control-message limits, payload
// framing. No fabric.

#include "transport/control_messages.hpp"
#include "transport/detail/clock_model.hpp"
#include "transport/detail/cq_data.hpp"
#include "transport/payload_frame.hpp"
#include "transport/slot_program.hpp"
#include "transport/table_builder.hpp"
#include "transport/transport_settings.hpp"

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <cstring>

using namespace lockstep;
using namespace lockstep::transport;

namespace {

table_spec two_chip_table() {
  table_spec s;
  s.slots_per_step = 4;
  s.arenas = {{{0, 0}, 0, 4096}, {{1, 0}, 8192, 0}};
  link_spec l{{0, 0}, {1, 0}, {}};
  l.transfers.push_back({7, 0, 2, 1024, 0, {0, 1024}});
  l.transfers.push_back({8, 2, 1, 512, 1024, {2048, 2560}});
  s.links.push_back(l);
  return s;
}

std::string load_error(const table_spec& s) {
  auto p = slot_program::load(build_slot_table(s));
  return p ? std::string{"ok"} : render(p.error());
}

} // namespace

TEST(slot_program, compiles_a_valid_table) {
  auto p = slot_program::load(build_slot_table(two_chip_table()));
  ASSERT_TRUE(p) << render(p.error());
  EXPECT_EQ(p->hosts(), 2u);
  ASSERT_EQ(p->links().size(), 1u);
  EXPECT_EQ(p->links()[0].name, "h0.c0->h1.c0");
  ASSERT_NE(p->find(0, 2), nullptr);
  EXPECT_EQ(p->find(0, 2)->id, 8u);
  EXPECT_EQ(p->find(0, 1), nullptr);
  EXPECT_EQ(p->send_program(0).size(), 2u);
  EXPECT_EQ(p->receive_program(1).size(), 2u);
  auto prog = p->host_program(1);
  ASSERT_EQ(prog.size(), 2u);
  EXPECT_EQ(prog[0].slot, 2u); // transfer 7 ends at slot 2
  EXPECT_FALSE(prog[0].send);
  // Same table, same digest; a changed table, another one.
  auto q = slot_program::load(build_slot_table(two_chip_table()));
  EXPECT_EQ(p->digest(), q->digest());
  auto s = two_chip_table();
  s.links[0].transfers[1].bytes = 256;
  EXPECT_NE(slot_program::load(build_slot_table(s))->digest(), p->digest());
}

TEST(slot_program, rejects_overlapping_transfers_on_a_link) {
  auto s = two_chip_table();
  s.links[0].transfers[1].start_slot = 1; // transfer 7 holds slots 0..1
  auto e = load_error(s);
  EXPECT_NE(e.find("invalid_table"), std::string::npos) << e;
  EXPECT_NE(e.find("link h0.c0->h1.c0 slot 1"), std::string::npos) << e;
}

TEST(slot_program, rejects_windows_outside_arenas) {
  auto s = two_chip_table();
  s.links[0].transfers[1].dst_offsets = {2048, 8192 - 256};
  auto e = load_error(s);
  EXPECT_NE(e.find("outside the receive arena of 8192 bytes"),
            std::string::npos)
      << e;
  s = two_chip_table();
  s.links[0].transfers[0].src_offset = 4000;
  e = load_error(s);
  EXPECT_NE(e.find("outside the send arena"), std::string::npos) << e;
}

TEST(slot_program, rejects_overlapping_receive_windows) {
  auto s = two_chip_table();
  s.links[0].transfers[1].dst_offsets = {512, 2560};
  auto e = load_error(s);
  EXPECT_NE(e.find("receive arena of h1.c0"), std::string::npos) << e;
  EXPECT_NE(e.find("overlaps"), std::string::npos) << e;
}

TEST(slot_program, rejects_other_malformed_tables) {
  auto s = two_chip_table();
  s.links[0].transfers[0].bytes = 1020; // not a multiple of 8
  EXPECT_NE(load_error(s).find("multiple of 8"), std::string::npos);
  s = two_chip_table();
  s.links[0].transfers[1].start_slot = 4; // past slotsPerStep
  EXPECT_NE(load_error(s).find("slotsPerStep"), std::string::npos);
  s = two_chip_table();
  s.links[0].dst = {3, 0};
  EXPECT_NE(load_error(s).find("has no arena"), std::string::npos);
  s = two_chip_table();
  s.arenas[1].chip = {2, 0}; // host 1 missing
  EXPECT_NE(load_error(s).find("without gaps"), std::string::npos);
  s = two_chip_table();
  s.links[0].transfers[0].dst_offsets.clear();
  EXPECT_NE(load_error(s).find("dstOffsets"), std::string::npos);
}

TEST(control_messages, corrupt_and_oversized_messages_are_rejected) {
  auto good = build_slot_table(two_chip_table());
  // Truncated.
  auto p = slot_program::load(std::span{good}.first(good.size() - 8));
  ASSERT_FALSE(p);
  EXPECT_EQ(render(p.error()).rfind("transport.bad_control_message: slot "
                                    "table: corrupt message",
                                    0),
            0u)
      << render(p.error());
  // Garbage segment table.
  auto bad = good;
  uint32_t huge = 0x7fffffff;
  std::memcpy(bad.data() + 4, &huge, 4);
  p = slot_program::load(bad);
  ASSERT_FALSE(p);
  EXPECT_NE(render(p.error()).find("bad_control_message"), std::string::npos);
  // A corrupted root pointer.
  bad = good;
  std::memset(bad.data() + 8, 0xff, 8);
  p = slot_program::load(bad);
  ASSERT_FALSE(p);
  EXPECT_NE(render(p.error()).find("bad_control_message"), std::string::npos)
      << render(p.error());
  // Not whole words.
  p = slot_program::load(std::span{good}.first(13));
  ASSERT_FALSE(p);
  EXPECT_NE(render(p.error()).find("8-byte words"), std::string::npos);
  // Oversized.
  std::vector<std::byte> big(slot_program::max_message_bytes + 8);
  p = slot_program::load(big);
  ASSERT_FALSE(p);
  EXPECT_NE(render(p.error()).find("exceeds the limit"), std::string::npos);
  // Trailing bytes after a valid message.
  auto trailing = good;
  trailing.resize(good.size() + 8);
  p = slot_program::load(trailing);
  ASSERT_FALSE(p);
  EXPECT_NE(render(p.error()).find("trailing"), std::string::npos);
}

TEST(control_messages, hello_round_trip_and_corruption) {
  host_hello h;
  h.host = 3;
  h.provider = "shm";
  h.table_digest = 42;
  h.fabric_address = std::vector<std::byte>(24, std::byte{7});
  h.arenas.push_back({1, 0x1000, 99, 4096});
  h.mailbox_base = 5;
  h.mailbox_key = 6;
  h.mailbox_bytes = 64;
  h.mode = slot_mode::paced;
  h.slot_ns = 250'000;
  h.doorbell = "/lockstep-bell-1-h3-9";
  auto bytes = encode(h);
  auto d = decode_hello(bytes, "hello of host 3");
  ASSERT_TRUE(d) << render(d.error());
  EXPECT_EQ(d->host, 3u);
  EXPECT_EQ(d->provider, "shm");
  EXPECT_EQ(d->mode, slot_mode::paced);
  EXPECT_EQ(d->slot_ns, 250'000u);
  EXPECT_EQ(d->doorbell, "/lockstep-bell-1-h3-9");
  EXPECT_EQ(d->fabric_address, h.fabric_address);
  ASSERT_EQ(d->arenas.size(), 1u);
  EXPECT_EQ(d->arenas[0].key, 99u);
  h.fabric_address.clear();
  d = decode_hello(encode(h), "hello of host 3");
  ASSERT_FALSE(d);
  EXPECT_NE(render(d.error()).find("hello of host 3: fabric address of 0"),
            std::string::npos)
      << render(d.error());
  std::vector<std::byte> big(host_hello::max_message_bytes + 8);
  d = decode_hello(big, "hello of host 1");
  ASSERT_FALSE(d);
  EXPECT_NE(render(d.error()).find("exceeds the limit"), std::string::npos);
}

TEST(payload_frame, framing_is_written_once_and_read_in_place) {
  alignas(8) std::byte window[24 + 64] = {};
  auto payload = write_frame(window);
  ASSERT_TRUE(payload) << render(payload.error());
  EXPECT_EQ(payload->size(), 64u);
  EXPECT_EQ(payload->data(), window + 24);
  for (size_t i = 0; i < 64; ++i)
    (*payload)[i] = std::byte(i);
  auto in = read_frame(window);
  ASSERT_TRUE(in) << render(in.error());
  EXPECT_EQ(in->data(), window + 24); // zero-copy: same bytes
  EXPECT_EQ((*in)[63], std::byte(63));
  EXPECT_EQ(framed_bytes(61), 88u);
  // A corrupted list pointer is caught, not read past the window.
  std::memset(window + 16, 0x7f, 8);
  auto bad = read_frame(window);
  ASSERT_FALSE(bad);
  EXPECT_NE(render(bad.error()).find("bad_payload"), std::string::npos);
}

TEST(cq_data, encodes_slot_ids_and_widens_clock_values) {
  using namespace detail::cq_data;
  auto d = make_data(1234, 99'999);
  EXPECT_EQ(kind_of(d), kind::data);
  EXPECT_EQ(link_of(d), 1234u);
  EXPECT_EQ(slot_value_of(d), 99'999u);
  // The largest link index and slot survive; neither spills into the kind.
  auto top = make_data(uint32_t(link_mask), slot_mask);
  EXPECT_EQ(kind_of(top), kind::data);
  EXPECT_EQ(link_of(top), uint32_t(link_mask));
  EXPECT_EQ(slot_value_of(top), slot_mask);
  EXPECT_GE(link_mask + 1, slot_program::max_links);
  auto r = make_release(5, 7);
  EXPECT_EQ(kind_of(r), kind::release);
  EXPECT_EQ(link_of(r), 5u);
  EXPECT_EQ(slot_value_of(r), 7u);
  auto c = make_control(control::pong, 1023, 0x123456789abcull);
  EXPECT_EQ(control_of(c), control::pong);
  EXPECT_EQ(host_of(c), 1023u);
  int64_t t = (int64_t{5} << 48) + 1000;
  EXPECT_EQ(widen(value_of(static_cast<uint64_t>(t)), t + 5'000'000), t);
  EXPECT_EQ(widen(value_of(static_cast<uint64_t>(t)), t - 5'000'000), t);
}

TEST(cq_data, resync_pongs_carry_40_clock_bits_and_the_sequence) {
  using namespace detail::cq_data;
  int64_t clock = (int64_t{3} << 45) + 123'456'789;
  auto v = make_resync_pong_value(clock, 0x1234);
  EXPECT_EQ(v & 0xff, 0x34u);
  // Widened around an estimate milliseconds off, the clock comes back.
  EXPECT_EQ(widen(v >> 8, clock - 3'000'000, resync_clock_bits), clock);
  EXPECT_EQ(widen(v >> 8, clock + 3'000'000, resync_clock_bits), clock);
  EXPECT_LE(v, value_mask); // fits a control message's value
}

TEST(clock_model, fits_offset_and_drift_and_inverts_them) {
  using detail::clock_model;
  using detail::clock_sample;
  clock_model m;
  EXPECT_EQ(m.to_local(5'000), 5'000); // empty: the identity (host 0)
  // Reference = local * (1 + 300e-6) + 7 ms, sampled once a second with
  // a few microseconds of noise on the offsets.
  const double rate = 300e-6;
  const int64_t base = int64_t{1} << 40; // large, like monotonic clocks
  int64_t noise[] = {3'000, -2'000, 1'000, -4'000, 2'000, 0};
  for (int i = 0; i < 6; ++i) {
    int64_t local = base + int64_t{i} * 1'000'000'000;
    auto offset =
        7'000'000 +
        static_cast<int64_t>(rate * static_cast<double>(local - base)) +
        noise[i];
    m.add(clock_sample{local, offset, 10'000});
  }
  EXPECT_NEAR(m.rate(), rate, 5e-6);
  int64_t later = base + 7'000'000'000;
  auto expected = 7'000'000 + static_cast<int64_t>(rate * 7e9);
  EXPECT_NEAR(static_cast<double>(m.offset_at(later)),
              static_cast<double>(expected), 20'000);
  // to_local inverts to_reference.
  EXPECT_NEAR(static_cast<double>(m.to_local(m.to_reference(later))),
              static_cast<double>(later), 2);
  EXPECT_EQ(m.error_ns(), 5'000);
  // A delayed round (large RTT) does not drag the fit.
  m.add(clock_sample{base + 6'000'000'000, 9'000'000, 5'000'000});
  EXPECT_NEAR(m.rate(), rate, 20e-6);
  // An absurd rate (noise over a short span) is refused.
  clock_model short_span;
  short_span.add({base, 0, 1000});
  short_span.add({base + 1'000'000, 100'000, 1000}); // 10% "drift", 1 ms
  EXPECT_EQ(short_span.rate(), 0.0);
}

TEST(slot_program, period_defaults_to_the_step_and_may_not_exceed_it) {
  auto spec = two_chip_table();
  auto p = slot_program::load(build_slot_table(spec));
  ASSERT_TRUE(p) << render(p.error());
  EXPECT_EQ(p->period_slots(), 4u);
  spec.period_slots = 2; // steps overlap by half
  p = slot_program::load(build_slot_table(spec));
  ASSERT_TRUE(p) << render(p.error());
  EXPECT_EQ(p->period_slots(), 2u);
  spec.period_slots = 5;
  p = slot_program::load(build_slot_table(spec));
  ASSERT_FALSE(p);
  EXPECT_EQ(render(p.error()),
            "transport.invalid_table: periodSlots 5 exceeds slotsPerStep 4 "
            "(steps would leave idle gaps)");
}

TEST(transport_settings, parses_the_transport_section) {
  auto n = YAML::Load("{provider: 'tcp;ofi_rxm', slot_mode: paced, "
                      "slot_us: 200, hard_timeout_ms: 50}");
  auto s = parse_transport_settings(n, "c.yaml");
  ASSERT_TRUE(s) << render(s.error());
  EXPECT_EQ(s->provider, "tcp;ofi_rxm");
  EXPECT_EQ(s->mode, slot_mode::paced);
  EXPECT_EQ(s->slot_ns, 200'000u);
  EXPECT_EQ(s->hard_timeout_ns, 50'000'000u);
  auto e = parse_transport_settings(YAML::Load("{slot_mode: fast}"), "c.yaml");
  ASSERT_FALSE(e);
  EXPECT_NE(render(e.error()).find("c.yaml: transport.slot_mode"),
            std::string::npos);
}

// A host keeps only its links' transfers, renumbered; links keep their
// table index (the wire names them by it) and the digest stays the table's.
TEST(slot_program, a_host_share_keeps_its_own_links_transfers) {
  // 3 hosts x 2 chips, each chip sending to the next 2 chips: host 1's
  // links are those from or to chips 2 and 3.
  auto whole = slot_program::load(build_slot_table(ring_pattern(3, 2, 2, 2, 256)));
  ASSERT_TRUE(whole) << render(whole.error());
  auto share = whole->share_of(1);
  EXPECT_EQ(share.digest(), whole->digest());
  EXPECT_EQ(share.slots_per_step(), whole->slots_per_step());
  ASSERT_EQ(share.links().size(), whole->links().size());
  size_t mine = 0;
  for (uint32_t l = 0; l < whole->links().size(); ++l) {
    const auto& wl = whole->links()[l];
    bool ours = wl.src.host == 1 || wl.dst.host == 1;
    EXPECT_EQ(share.links()[l].name, wl.name);
    ASSERT_EQ(share.links()[l].transfers.size(), ours ? wl.transfers.size() : 0u)
        << wl.name;
    for (auto t : wl.transfers) {
      auto slot = whole->transfers()[t].start_slot;
      const auto* kept = share.find(l, slot);
      if (!ours) {
        EXPECT_EQ(kept, nullptr) << wl.name;
        continue;
      }
      ++mine;
      ASSERT_NE(kept, nullptr) << wl.name;
      EXPECT_EQ(kept->id, whole->transfers()[t].id);
      EXPECT_EQ(kept->link, l);
    }
  }
  EXPECT_EQ(share.transfers().size(), mine);
  EXPECT_LT(share.transfers().size(), whole->transfers().size());
  // The host's own programs are unchanged by the cut.
  EXPECT_EQ(share.send_program(1).size(), whole->send_program(1).size());
  EXPECT_EQ(share.receive_program(1).size(), whole->receive_program(1).size());
  // Chips 4 and 5 (host 2) send to chips 5, 0 and 1: nothing of host 1.
  EXPECT_TRUE(share.send_program(2).empty());
}
