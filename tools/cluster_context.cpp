#include "tools/cluster_context.hpp"

#include "actors/errc.hpp"

#include <nlohmann/json.hpp>

#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

namespace lockstep::tools {

std::filesystem::path context_path() {
  if (const char* p = std::getenv("LOCKSTEP_CONTEXT"); p != nullptr && *p)
    return p;
  const char* home = std::getenv("HOME");
  return std::filesystem::path{home != nullptr ? home : "/tmp"} / ".lockstep" /
         "context.json";
}

caf::expected<cluster_context> read_context() {
  auto path = context_path();
  std::ifstream in{path};
  if (!in)
    return caf::make_error(actors::errc::bad_request,
                           "no cluster is up (no context at " +
                               path.string() + "; run `lockstep up`)");
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    auto j = nlohmann::json::parse(ss.str());
    cluster_context c;
    c.cluster = j.at("cluster").get<std::string>();
    c.config = j.at("config").get<std::string>();
    c.head = j.at("head").get<std::string>();
    c.token = j.at("token").get<std::string>();
    c.run_dir = j.at("run_dir").get<std::string>();
    c.pids = j.at("pids").get<std::vector<int32_t>>();
    c.logs = j.at("logs").get<std::vector<std::string>>();
    return c;
  } catch (const nlohmann::json::exception& e) {
    return caf::make_error(actors::errc::bad_request,
                           "the context " + path.string() +
                               " is corrupt: " + e.what());
  }
}

caf::error write_context(const cluster_context& c) {
  auto path = context_path();
  std::error_code ec;
  std::filesystem::create_directories(path.parent_path(), ec);
  nlohmann::json j{{"cluster", c.cluster}, {"config", c.config},
                   {"head", c.head},       {"token", c.token},
                   {"run_dir", c.run_dir}, {"pids", c.pids},
                   {"logs", c.logs}};
  auto tmp = path.string() + ".tmp";
  {
    // Created 0600 before anything is written: it holds the token.
    std::ofstream touch{tmp};
  }
  ::chmod(tmp.c_str(), 0600);
  std::ofstream out{tmp, std::ios::trunc};
  if (!(out << j.dump(2) << "\n"))
    return caf::make_error(actors::errc::bad_request,
                           "cannot write the context " + path.string());
  out.close();
  std::filesystem::rename(tmp, path, ec);
  if (ec)
    return caf::make_error(actors::errc::bad_request,
                           "cannot write the context " + path.string() +
                               ": " + ec.message());
  return {};
}

void remove_context() {
  std::error_code ec;
  std::filesystem::remove(context_path(), ec);
}

caf::expected<actors::cluster_address>
resolve_cluster(const std::string& cluster_flag) {
  auto ctx = read_context();
  if (cluster_flag.empty()) {
    if (!ctx)
      return ctx.error();
    return ctx->address();
  }
  actors::cluster_address a{cluster_flag, ""};
  if (const char* t = std::getenv("LOCKSTEP_CLUSTER_TOKEN"))
    a.token = t;
  else if (ctx && ctx->head == cluster_flag)
    a.token = ctx->token;
  if (a.token.empty())
    return caf::make_error(actors::errc::bad_request,
                           "--cluster " + cluster_flag +
                               ": no cluster token (set "
                               "LOCKSTEP_CLUSTER_TOKEN)");
  return a;
}

} // namespace lockstep::tools
