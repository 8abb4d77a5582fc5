// lockstep-bench — benchmarks whose targets live here, not in unit tests.

#include "bench/benches.hpp"

#include "common/error.hpp"
#include "model/fp_env.hpp"

#include <cstdio>
#include <cstring>

int main(int argc, char** argv) {
  using namespace lockstep::bench;
  // Kernel figures measured with FTZ/DAZ set would be for different math
  // (and subnormal-free timings), so refuse to run at all.
  if (auto err = lockstep::model::check_fp_environment()) {
    std::fprintf(stderr, "lockstep-bench: %s\n", lockstep::render(err).c_str());
    return 1;
  }
  struct suite {
    const char* name;
    int (*run)(int, char**);
  };
  const suite suites[] = {
      {"", nullptr}, // keeps the array non-empty whatever is built
#ifdef LOCKSTEP_BENCH_KERNELS
      {"kernels", &run_kernels},
#endif
#ifdef LOCKSTEP_BENCH_PLANNER
      {"planner", &run_planner},
#endif
#ifdef LOCKSTEP_BENCH_TRANSPORT
      {"transport", &run_transport},
#endif
#ifdef LOCKSTEP_BENCH_SIMULATE
      {"simulate", &run_simulate},
#endif
#ifdef LOCKSTEP_BENCH_CLUSTER
      {"cluster", &run_cluster},
#endif
#ifdef LOCKSTEP_BENCH_SCALE
      {"scale", &run_scale},
#endif
#ifdef LOCKSTEP_BENCH_CALIBRATE
      {"calibrate", &run_calibrate},
#endif
  };
  if (argc >= 2)
    for (const auto& s : suites)
      if (s.run != nullptr && std::strcmp(argv[1], s.name) == 0)
        return s.run(argc - 1, argv + 1);
  std::fprintf(stderr, "usage: lockstep-bench <suite> [-o json]\nsuites:");
  for (const auto& s : suites)
    if (s.run != nullptr)
      std::fprintf(stderr, " %s", s.name);
  std::fprintf(stderr, "\n");
  return 2;
}
