#pragma once

// Runs the built `lockstep` binary as a user would, for CLI tests: stdout and
// stderr are captured to files (so neither is a terminal, as in CI).

#include "tests/storage/temp_dir.hpp"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

namespace lockstep::test {

struct result {
  int code = -1;
  std::string out;
  std::string err;
};

inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream in{p};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs the CLI with `args`; `tmp` holds the captured output.
inline result run(const temp_dir& tmp, const std::vector<std::string>& args) {
  auto out = tmp / "stdout", err = tmp / "stderr";
  pid_t child = ::fork();
  if (child == 0) {
    std::vector<char*> argv;
    std::string path = LOCKSTEP_CLI_PATH;
    argv.push_back(path.data());
    std::vector<std::string> copy = args;
    for (auto& a : copy)
      argv.push_back(a.data());
    argv.push_back(nullptr);
    if (!std::freopen(out.c_str(), "w", stdout) ||
        !std::freopen(err.c_str(), "w", stderr))
      ::_exit(127);
    ::execv(path.c_str(), argv.data());
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  result r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

} // namespace lockstep::test
