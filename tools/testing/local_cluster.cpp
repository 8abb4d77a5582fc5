#include "tools/testing/local_cluster.hpp"

#include "actors/errc.hpp"
#include "common/error.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

extern char** environ;

namespace lockstep::testing {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using actors::errc;

namespace {

std::string slurp(const fs::path& path) {
  std::ifstream in{path};
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string last_line(const std::string& text) {
  std::istringstream in{text};
  std::string line, last;
  while (std::getline(in, line))
    if (!line.empty())
      last = line;
  return last;
}

double now_s() {
  return std::chrono::duration<double>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// /proc/PID/stat after the command name (which may hold spaces): field 3
// (state) onwards.
std::vector<std::string> stat_fields(pid_t pid) {
  auto text = slurp("/proc/" + std::to_string(pid) + "/stat");
  auto paren = text.rfind(')');
  if (paren == std::string::npos)
    return {};
  std::istringstream in{text.substr(paren + 1)};
  std::vector<std::string> out;
  for (std::string f; in >> f;)
    out.push_back(f);
  return out;
}

// "VmRSS:   1234 kB" -> bytes.
uint64_t status_kb(const std::string& status, const std::string& key) {
  auto at = status.find(key + ":");
  if (at == std::string::npos)
    return 0;
  return std::strtoull(status.c_str() + at + key.size() + 1, nullptr, 10) *
         1024;
}

fs::path cli_binary(const cluster_options& o) {
  if (!o.cli.empty())
    return o.cli;
  if (const char* env = std::getenv("LOCKSTEP_CLI"); env && *env)
    return env;
#ifdef LOCKSTEP_CLI_PATH
  if (fs::exists(LOCKSTEP_CLI_PATH))
    return LOCKSTEP_CLI_PATH;
#endif
  std::error_code ec;
  auto self = fs::read_symlink("/proc/self/exe", ec);
  return (ec ? fs::path{"."} : self.parent_path()) / "lockstep";
}

// Starts `cli ARGS...` with LOCKSTEP_CONTEXT=`context`, output into files, in
// a process group of its own: a terminal's Ctrl-C must not kill `up`
// halfway (its hosts would be left without a context to stop them by).
caf::expected<pid_t> spawn(const fs::path& cli, const fs::path& context,
                           const std::vector<std::string>& args,
                           const fs::path& out, const fs::path& err) {
  std::vector<std::string> env_text;
  for (char** e = environ; *e != nullptr; ++e)
    if (std::strncmp(*e, "LOCKSTEP_CONTEXT=", 17) != 0)
      env_text.emplace_back(*e);
  env_text.push_back("LOCKSTEP_CONTEXT=" + context.string());
  std::vector<char*> envp;
  for (auto& e : env_text)
    envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_text{cli.string()};
  argv_text.insert(argv_text.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_text)
    argv.push_back(a.data());
  argv.push_back(nullptr);

  posix_spawnattr_t attr;
  ::posix_spawnattr_init(&attr);
  ::posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  ::posix_spawnattr_setpgroup(&attr, 0);
  posix_spawn_file_actions_t fa;
  ::posix_spawn_file_actions_init(&fa);
  ::posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY,
                                     0);
  ::posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, out.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0600);
  ::posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, err.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0600);
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, argv[0], &fa, &attr, argv.data(), envp.data());
  ::posix_spawn_file_actions_destroy(&fa);
  ::posix_spawnattr_destroy(&attr);
  if (rc != 0)
    return caf::make_error(errc::cluster_failed,
                           "cannot start " + cli.string() + ": " +
                               std::strerror(rc));
  return pid;
}

int exit_code_of(int status) {
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

} // namespace

bool process_runs(pid_t pid) {
  auto f = stat_fields(pid);
  return !f.empty() && f[0] != "Z" && f[0] != "X";
}

std::optional<process_figures> figures_of(pid_t pid) {
  auto f = stat_fields(pid);
  if (f.size() < 13 || f[0] == "Z" || f[0] == "X")
    return std::nullopt;
  auto status = slurp("/proc/" + std::to_string(pid) + "/status");
  process_figures p;
  p.pid = pid;
  p.rss_bytes = status_kb(status, "VmRSS");
  p.peak_rss_bytes = status_kb(status, "VmHWM");
  // utime + stime (fields 14 and 15 of stat: every thread), in ticks.
  p.cpu_s = static_cast<double>(std::stoull(f[11]) + std::stoull(f[12])) /
            static_cast<double>(::sysconf(_SC_CLK_TCK));
  return p;
}

std::string config_path(const std::string& name) {
  if (name.find('/') != std::string::npos ||
      name.find(".yaml") != std::string::npos)
    return name;
#ifdef LOCKSTEP_SOURCE_DIR
  return std::string{LOCKSTEP_SOURCE_DIR} + "/cluster_configs/" + name +
         ".yaml";
#else
  return "cluster_configs/" + name + ".yaml";
#endif
}

// --- cli_process ------------------------------------------------------------

cli_process::cli_process(cli_process&& other) noexcept
    : pid_(std::exchange(other.pid_, -1))
    , out_(std::move(other.out_))
    , err_(std::move(other.err_)) {}

cli_process::~cli_process() {
  if (pid_ <= 0)
    return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
}

void cli_process::signal(int sig) const {
  if (pid_ > 0)
    ::kill(pid_, sig);
}

caf::expected<cli_output> cli_process::wait(std::chrono::milliseconds timeout) {
  if (pid_ <= 0)
    return caf::make_error(errc::cluster_failed, "the child was waited for");
  auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  for (;;) {
    auto r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_)
      break;
    if (r < 0 && errno != EINTR)
      return caf::make_error(errc::cluster_failed,
                             std::string{"waitpid: "} + std::strerror(errno));
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      pid_ = -1;
      return caf::make_error(errc::timed_out,
                             "a lockstep child ran longer than " +
                                 std::to_string(timeout.count()) + " ms");
    }
    std::this_thread::sleep_for(10ms); // a nap, not a spin
  }
  pid_ = -1;
  return cli_output{exit_code_of(status), slurp(out_), slurp(err_)};
}

// --- local_cluster ----------------------------------------------------------

caf::expected<local_cluster> local_cluster::start(cluster_options o) {
  local_cluster c;
  c.options_ = std::move(o);
  const auto& opt = c.options_;
  if (opt.work_dir.empty()) {
    auto base = fs::temp_directory_path() / "lockstep-cluster-XXXXXX";
    std::string text = base.string();
    if (::mkdtemp(text.data()) == nullptr)
      return caf::make_error(errc::cluster_failed,
                             "cannot make a directory under " +
                                 fs::temp_directory_path().string() + ": " +
                                 std::strerror(errno));
    c.work_dir_ = text;
    c.own_dir_ = true;
  } else {
    std::error_code ec;
    fs::create_directories(opt.work_dir, ec);
    if (ec)
      return caf::make_error(errc::cluster_failed,
                             "cannot make " + opt.work_dir.string() + ": " +
                                 ec.message());
    c.work_dir_ = opt.work_dir;
  }
  std::vector<std::string> args{"up",
                                config_path(opt.config),
                                "--model",
                                opt.model,
                                "--batch",
                                std::to_string(opt.batch),
                                "--context",
                                std::to_string(opt.context),
                                "--weight-seed",
                                std::to_string(opt.weight_seed),
                                "--max-queue",
                                std::to_string(opt.max_queue),
                                "--db-root",
                                (c.work_dir_ / "run").string(),
                                "-o",
                                "json"};
  if (opt.paced_slot_us != 0)
    for (auto a : {std::string{"--slot-mode"}, std::string{"paced"},
                   std::string{"--slot-us"}, std::to_string(opt.paced_slot_us)})
      args.push_back(a);
  args.insert(args.end(), opt.extra_args.begin(), opt.extra_args.end());
  double t0 = now_s();
  auto res = c.run_cli(args);
  c.up_s_ = now_s() - t0;
  // A failed `up` cleans up after itself, but a context left behind still
  // names processes to stop.
  auto ctx = nlohmann::json::parse(slurp(c.context_file()), nullptr, false);
  if (ctx.is_object()) {
    c.address_ = {ctx.value("head", std::string{}),
                  ctx.value("token", std::string{})};
    for (const auto& p : ctx.value("pids", nlohmann::json::array()))
      c.pids_.push_back(p.get<pid_t>());
    c.up_ = true;
  }
  if (res.code != 0 || !c.up_ || c.pids_.empty()) {
    auto why = "lockstep up " + opt.config + " failed (exit " +
               std::to_string(res.code) +
               "): " + last_line(res.err + res.out);
    c.stop();
    return caf::make_error(errc::cluster_failed, why);
  }
  return c;
}

local_cluster::local_cluster(local_cluster&& other) noexcept
    : options_(std::move(other.options_))
    , work_dir_(std::move(other.work_dir_))
    , own_dir_(std::exchange(other.own_dir_, false))
    , address_(std::move(other.address_))
    , pids_(std::move(other.pids_))
    , up_s_(other.up_s_)
    , up_(std::exchange(other.up_, false))
    , spawned_(other.spawned_) {}

local_cluster::~local_cluster() {
  stop();
}

fs::path local_cluster::context_file() const {
  return work_dir_ / "context.json";
}

cli_output local_cluster::run_cli(const std::vector<std::string>& args) const {
  auto out = work_dir_ / "cli.out", err = work_dir_ / "cli.err";
  auto pid = spawn(cli_binary(options_), context_file(), args, out, err);
  if (!pid)
    return {127, "", render(pid.error())};
  int status = 0;
  while (::waitpid(*pid, &status, 0) < 0 && errno == EINTR) {
  }
  return {exit_code_of(status), slurp(out), slurp(err)};
}

caf::expected<cli_process>
local_cluster::spawn_cli(const std::vector<std::string>& args) {
  auto n = std::to_string(spawned_++);
  auto out = work_dir_ / ("cli-" + n + ".out");
  auto err = work_dir_ / ("cli-" + n + ".err");
  auto pid = spawn(cli_binary(options_), context_file(), args, out, err);
  if (!pid)
    return pid.error();
  return cli_process{*pid, out, err};
}

caf::expected<actors::cluster_generation>
local_cluster::generate(const std::vector<int32_t>& prompt,
                        uint32_t max_tokens,
                        const model::sampling_params& sampling) {
  auto client = actors::cluster_client::connect(address_);
  if (!client)
    return client.error();
  return client->generate(prompt, max_tokens, sampling);
}

caf::expected<nlohmann::json> local_cluster::status() {
  auto client = actors::cluster_client::connect(address_);
  if (!client)
    return client.error();
  auto st = client->status();
  if (!st)
    return st.error();
  auto j = nlohmann::json::parse(st->json, nullptr, false);
  if (j.is_discarded())
    return caf::make_error(errc::bad_message, "the head's status is not JSON");
  return j;
}

std::vector<process_figures> local_cluster::processes() const {
  std::vector<process_figures> out;
  for (auto pid : pids_)
    if (auto f = figures_of(pid))
      out.push_back(*f);
  return out;
}

caf::error local_cluster::stop() {
  caf::error result;
  if (up_) {
    up_ = false;
    auto res = run_cli({"down"});
    if (res.code != 0)
      result = caf::make_error(errc::cluster_failed,
                               "lockstep down: " + last_line(res.err + res.out));
    std::vector<pid_t> killed;
    for (auto pid : pids_)
      if (process_runs(pid)) {
        ::kill(pid, SIGKILL);
        killed.push_back(pid);
      }
    // The hosts are children of init, not ours: wait for them to vanish.
    for (auto deadline = now_s() + 5; now_s() < deadline;) {
      bool any = false;
      for (auto pid : pids_)
        any = any || process_runs(pid);
      if (!any)
        break;
      std::this_thread::sleep_for(20ms);
    }
    if (!killed.empty() && !result)
      result = caf::make_error(errc::cluster_failed,
                               std::to_string(killed.size()) +
                                   " host(s) outlived `lockstep down` and "
                                   "were killed");
  }
  if (own_dir_) {
    own_dir_ = false;
    std::error_code ec;
    fs::remove_all(work_dir_, ec);
  }
  return result;
}

} // namespace lockstep::testing
