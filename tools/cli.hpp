#pragma once

// The `lockstep` command line: one function per subcommand family adds its
// subcommands to the CLI11 app. Each callback stores the process exit code in
// the context: 0 success, 1 the command ran and found a problem (e.g. a
// corrupt store), 2 bad input (unknown model, missing DB, bad flags).

#include "common/error.hpp"

#include <CLI/CLI.hpp>

#include <string>

namespace lockstep::tools {

inline constexpr int exit_ok = 0;
inline constexpr int exit_problem = 1;
inline constexpr int exit_bad_input = 2;
/// Busy or full (a store in use, a cluster's admission queue full): the same
/// command may succeed later.
inline constexpr int exit_overloaded = 3;

struct command_context {
  int exit_code = exit_ok;
};

/// Prints one error line "lockstep: <message>" to stderr and returns the code.
int fail(int code, const std::string& message);

/// The exit code for an error by its kind: invalid_input -> 2 (fix the
/// input), overloaded -> 3 (retry later), anything else -> 1.
int exit_code_for(const caf::error& err);

/// fail(exit_code_for(err), render(err)); an overloaded error's line reads
/// "overloaded: <what is full>" so scripts can tell it from the rest.
int fail_with(const caf::error& err);

/// Adds `--output/-o text|json` to `cmd`, storing into `format`.
void add_output_option(CLI::App& cmd, std::string& format);

void add_models_command(CLI::App& app, command_context& ctx);
#ifdef LOCKSTEP_HAVE_WEIGHTS_COMMAND
void add_weights_commands(CLI::App& app, command_context& ctx);
#endif
#ifdef LOCKSTEP_HAVE_GENERATE_COMMAND
void add_generate_command(CLI::App& app, command_context& ctx);
#endif
#ifdef LOCKSTEP_HAVE_PLAN_COMMAND
void add_plan_command(CLI::App& app, command_context& ctx);
#endif
#ifdef LOCKSTEP_HAVE_CLUSTER_COMMANDS
void add_cluster_commands(CLI::App& app, command_context& ctx);
#endif

} // namespace lockstep::tools
