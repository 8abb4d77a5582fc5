#include "multi_host.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <random>
#include <thread>

namespace lockstep::transport::test {

transport_settings settings(const char* provider, slot_mode mode,
                            uint64_t slot_us, uint64_t hard_timeout_ms) {
  transport_settings s;
  s.provider = provider;
  s.mode = mode;
  s.slot_ns = slot_us * 1000;
  s.hard_timeout_ns = hard_timeout_ms * 1'000'000;
  return s;
}


std::vector<int> run_hosts(uint32_t hosts,
                           const std::function<int(uint32_t)>& body,
                           std::chrono::seconds timeout,
                           std::vector<int>* pids_out) {
  std::fflush(stdout);
  std::fflush(stderr);
  std::vector<pid_t> pids;
  for (uint32_t h = 0; h < hosts; ++h) {
    pid_t pid = fork();
    if (pid == 0) {
      int rc = 1;
      try {
        rc = body(h);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "host %u: exception: %s\n", h, e.what());
      }
      std::fflush(stderr);
      _exit(rc);
    }
    pids.push_back(pid);
  }
  if (pids_out != nullptr)
    pids_out->assign(pids.begin(), pids.end());
  std::vector<int> codes(hosts, -1);
  auto deadline = std::chrono::steady_clock::now() + timeout;
  size_t left = hosts;
  while (left > 0) {
    for (uint32_t h = 0; h < hosts; ++h) {
      if (codes[h] != -1)
        continue;
      int status = 0;
      if (waitpid(pids[h], &status, WNOHANG) == pids[h]) {
        codes[h] =
            WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        --left;
      }
    }
    if (left > 0 && std::chrono::steady_clock::now() > deadline) {
      for (uint32_t h = 0; h < hosts; ++h)
        if (codes[h] == -1) {
          kill(pids[h], SIGKILL);
          waitpid(pids[h], nullptr, 0);
          codes[h] = 124;
        }
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return codes;
}

temp_dir::temp_dir() {
  std::random_device rd;
  path_ =
      std::filesystem::temp_directory_path() /
      ("lockstep-rv-" + std::to_string(getpid()) + "-" + std::to_string(rd()));
  std::filesystem::create_directories(path_);
}

temp_dir::~temp_dir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

uint64_t pattern_word(uint32_t id, uint64_t step, size_t i) {
  uint64_t z = (uint64_t{id} << 40) ^ (step << 20) ^ i;
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Transfers that share a send window (one output sent on several links)
// carry the same bytes: the pattern is the window's, not the transfer's.
uint32_t window_key(const slot_program& program, const transfer_plan& tp) {
  const auto& src = program.links()[tp.link].src;
  return static_cast<uint32_t>(
      pattern_word(src.host, uint64_t{src.chip} << 32 ^ tp.src_offset, 0));
}

void fill_payload(std::span<std::byte> p, uint32_t id, uint64_t step) {
  for (size_t i = 0; i * 8 < p.size(); ++i) {
    uint64_t w = pattern_word(id, step, i);
    std::memcpy(p.data() + i * 8, &w, std::min<size_t>(8, p.size() - i * 8));
  }
}

bool check_payload(std::span<const std::byte> p, uint32_t id, uint64_t step) {
  for (size_t i = 0; i * 8 < p.size(); ++i) {
    uint64_t w = pattern_word(id, step, i);
    if (std::memcmp(p.data() + i * 8, &w,
                    std::min<size_t>(8, p.size() - i * 8)) != 0)
      return false;
  }
  return true;
}

caf::error drive(slotted_transport& t, uint64_t steps,
                 const drive_hooks& hooks) {
  auto program = t.program().host_program(t.host());
  const auto& transfers = t.program().transfers();
  for (uint64_t step = 0; step < steps; ++step) {
    for (const auto& op : program) {
      const auto& tp = transfers[op.transfer];
      if (op.send) {
        if (hooks.skip_send && hooks.skip_send(step, op))
          continue;
        auto buf = t.send_buffer(op.link, op.start_slot);
        if (!buf)
          return buf.error();
        fill_payload(*buf, window_key(t.program(), tp), step);
        if (hooks.before_send)
          hooks.before_send(step, op);
        if (auto err = t.send(op.link, op.start_slot, step, buf->size()))
          return err;
      } else {
        auto in = t.receive(op.link, op.start_slot, step);
        if (!in)
          return in.error();
        if (hooks.after_receive)
          hooks.after_receive(t, step, op);
        if (!check_payload(*in, window_key(t.program(), tp), step))
          return caf::make_error(errc::bad_payload,
                                 "payload mismatch on link " +
                                     t.program().links()[op.link].name +
                                     " slot " + std::to_string(op.start_slot) +
                                     " step " + std::to_string(step));
      }
    }
    if (auto err = t.release(step))
      return err;
  }
  return caf::none;
}

std::set<std::string> shm_entries() {
  std::set<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/dev/shm", ec))
    out.insert(e.path().filename().string());
  return out;
}

std::vector<std::string> shm_segments_of(const std::vector<int>& pids) {
  std::vector<std::string> out;
  for (const auto& name : shm_entries())
    for (int pid : pids)
      if (name.rfind(std::to_string(pid) + ":", 0) == 0 ||
          name.rfind("lockstep-bell-" + std::to_string(pid) + "-", 0) == 0)
        out.push_back(name);
  return out;
}

int fail(const std::string& what, const caf::error& err, int code) {
  std::fprintf(stderr, "%s: %s\n", what.c_str(), render(err).c_str());
  return code;
}

} // namespace lockstep::transport::test
