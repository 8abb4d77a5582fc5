#include "host_cluster.hpp"

#include "transport/detail/fabric.hpp"

#include <gtest/gtest.h>

#include <algorithm>

namespace lockstep::transport::test {

using namespace std::chrono_literals;

namespace {

int host_main(uint32_t host, const run_config& cfg,
              const std::filesystem::path& dir) {
  transport_options opts;
  opts.host = host;
  opts.settings = cfg.settings;
  if (host < cfg.clock_offsets_ns.size())
    opts.clock_offset_ns = cfg.clock_offsets_ns[host];
  if (host < cfg.clock_drift_ppb.size())
    opts.clock_drift_ppb = cfg.clock_drift_ppb[host];
  if (!cfg.resync)
    opts.resync_interval = 0s;
  opts.startup_timeout = 60s;
  {
    auto opened = open_host(cfg.table, opts, dir);
    auto& memory = opened.memory;
    auto& t = opened.transport;
    if (!t)
      return fail("host " + std::to_string(host) + ": open", t.error());
    // Hooks may keep references into the program: the transport's copy.
    auto hooks =
        cfg.hooks ? cfg.hooks(host, (*t)->program()) : threaded_hooks{};
    auto err = run_threaded(**t, memory, cfg.steps, hooks);
    if (cfg.check) {
      if (int rc = cfg.check(host, **t, memory, err); rc != 0)
        return rc;
    } else if (err) {
      return fail("host " + std::to_string(host) + ": run", err);
    }
    if (auto cerr = (*t)->close())
      return fail("host " + std::to_string(host) + ": close", cerr, 5);
  }
  CHILD_CHECK(detail::memory_region::live_count() == 0, 6,
              "%lld registrations leaked",
              static_cast<long long>(detail::memory_region::live_count()));
  return 0;
}

} // namespace

bool run_cluster(uint32_t hosts, const run_config& cfg,
                 std::chrono::seconds timeout, bool report) {
  temp_dir dir;
  std::vector<int> pids;
  auto codes = run_hosts(
      hosts, [&](uint32_t h) { return host_main(h, cfg, dir.path()); }, timeout,
      &pids);
  bool ok = true;
  for (uint32_t h = 0; h < hosts; ++h) {
    ok &= codes[h] == 0;
    if (report) {
      EXPECT_EQ(codes[h], 0) << "host " << h;
    }
  }
  for (const auto& name : shm_segments_of(pids)) {
    ADD_FAILURE() << "leaked /dev/shm segment " << name;
    std::filesystem::remove(std::filesystem::path{"/dev/shm"} / name);
  }
  return ok;
}

int expect_all_received(uint32_t host, host_transport& t, const caf::error& err,
                        uint64_t steps) {
  if (err)
    return fail("host " + std::to_string(host) + ": run", err);
  const auto& prog = t.program();
  for (uint32_t l = 0; l < prog.links().size(); ++l) {
    const auto& link = prog.links()[l];
    auto c = t.counters(l);
    if (link.dst.host == host) {
      CHILD_CHECK(
          c.transfers_received == steps * link.transfers.size(), 7,
          "link %s: received %llu of %llu", link.name.c_str(),
          static_cast<unsigned long long>(c.transfers_received),
          static_cast<unsigned long long>(steps * link.transfers.size()));
      CHILD_CHECK(c.refused_unscheduled + c.refused_duplicate +
                          c.refused_stale + c.refused_ahead ==
                      0,
                  7, "link %s refused arrivals", link.name.c_str());
    }
    if (link.src.host == host)
      CHILD_CHECK(c.transfers_sent == steps * link.transfers.size(), 7,
                  "link %s: sent %llu", link.name.c_str(),
                  static_cast<unsigned long long>(c.transfers_sent));
  }
  return 0;
}

bool contains(const caf::error& err, const std::string& text) {
  auto r = render(err);
  if (r.find(text) != std::string::npos)
    return true;
  std::fprintf(stderr, "expected '%s' in '%s'\n", text.c_str(), r.c_str());
  return false;
}

double percentile(std::vector<int64_t> v, double p) {
  if (v.empty())
    return 0;
  std::sort(v.begin(), v.end());
  return static_cast<double>(
      v[static_cast<size_t>(p * static_cast<double>(v.size() - 1))]);
}

} // namespace lockstep::transport::test
