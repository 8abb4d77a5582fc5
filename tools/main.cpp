// lockstep — the admin CLI.

#include "tools/cli.hpp"

#include "model/fp_env.hpp"

#include <cstdio>
#include <exception>

namespace lockstep::tools {

int fail(int code, const std::string& message) {
  std::fprintf(stderr, "lockstep: %s\n", message.c_str());
  return code;
}

int exit_code_for(const caf::error& err) {
  auto kind = lockstep::kind_of(err);
  switch (kind) {
  case error_kind::invalid_input:
    return exit_bad_input;
  case error_kind::overloaded:
    return exit_overloaded;
  default:
    return exit_problem;
  }
}

int fail_with(const caf::error& err) {
  if (lockstep::kind_of(err) == error_kind::overloaded) {
    std::fprintf(stderr, "overloaded: %s\n", detail_of(err).c_str());
    return exit_overloaded;
  }
  return fail(exit_code_for(err), render(err));
}

void add_output_option(CLI::App& cmd, std::string& format) {
  cmd.add_option("-o,--output", format, "output format")
      ->check(CLI::IsMember({"text", "json"}))
      ->default_val("text");
}

} // namespace lockstep::tools

int main(int argc, char** argv) {
  using namespace lockstep::tools;
  // Before anything else: if a library loaded into the process has set
  // FTZ/DAZ or another rounding mode (see model/fp_env.hpp), every command
  // that does model math would produce different bits without noticing.
  if (auto err = lockstep::model::check_fp_environment())
    return fail(exit_problem, lockstep::render(err));
  CLI::App app{"lockstep: deterministic, compiler-scheduled multi-chip "
               "inference"};
  app.require_subcommand(1);
  command_context ctx;
  add_models_command(app, ctx);
#ifdef LOCKSTEP_HAVE_WEIGHTS_COMMAND
  add_weights_commands(app, ctx);
#endif
#ifdef LOCKSTEP_HAVE_GENERATE_COMMAND
  add_generate_command(app, ctx);
#endif
#ifdef LOCKSTEP_HAVE_PLAN_COMMAND
  add_plan_command(app, ctx);
#endif
#ifdef LOCKSTEP_HAVE_CLUSTER_COMMANDS
  add_cluster_commands(app, ctx);
#endif
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // One clear line, exit code 2, whatever CLI11's own code would be.
    return fail(exit_bad_input, e.what());
  } catch (const std::exception& e) {
    return fail(exit_problem, std::string{"internal error: "} + e.what());
  }
  return ctx.exit_code;
}
