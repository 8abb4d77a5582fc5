// lockstep models: the presets this build knows, with their sizes.

#include "tools/cli.hpp"

#include "model/spec_json.hpp"

#include <nlohmann/json.hpp>

#include <cstdio>

namespace lockstep::tools {

void add_models_command(CLI::App& app, command_context& ctx) {
  auto format = std::make_shared<std::string>("text");
  auto* cmd = app.add_subcommand("models", "list model presets");
  add_output_option(*cmd, *format);
  cmd->callback([format, &ctx] {
    nlohmann::json list = nlohmann::json::array();
    if (*format == "text")
      std::printf("%-12s %7s %7s %6s %5s %6s %7s %5s %9s %10s\n", "model",
                  "layers", "d_model", "heads", "kv", "d_ff", "vocab", "dtype",
                  "params", "weights");
    for (const auto& name : model::preset_names()) {
      auto s = *model::find_preset(name);
      if (*format == "text") {
        bool big = s.param_count() >= 1'000'000'000;
        std::printf("%-12s %7u %7u %6u %5u %6u %7u %5s %8.2f%c %8.3fGB\n",
                    s.name.c_str(), s.n_layers, s.d_model, s.n_heads,
                    s.n_kv_heads, s.d_ff, s.vocab,
                    model::to_string(s.weight_dtype),
                    s.param_count() / (big ? 1e9 : 1e6), big ? 'B' : 'M',
                    s.weight_bytes() / 1e9);
        continue;
      }
      auto j = model::to_json(s);
      j["param_count"] = s.param_count();
      j["weight_bytes"] = s.weight_bytes();
      list.push_back(std::move(j));
    }
    if (*format == "json")
      std::printf("%s\n", list.dump(2).c_str());
    ctx.exit_code = exit_ok;
  });
}

} // namespace lockstep::tools
