#pragma once

// Entry points of `lockstep-bench <suite>`. Each suite parses its own flags
// (argv[0] is the suite name), prints medians and side-by-side ratios measured
// in one run, and with `-o json` prints one JSON object on stdout.

namespace lockstep::bench {

#ifdef LOCKSTEP_BENCH_KERNELS
int run_kernels(int argc, char** argv);
#endif
#ifdef LOCKSTEP_BENCH_PLANNER
int run_planner(int argc, char** argv);
#endif
#ifdef LOCKSTEP_BENCH_TRANSPORT
int run_transport(int argc, char** argv);
#endif
#ifdef LOCKSTEP_BENCH_SIMULATE
int run_simulate(int argc, char** argv);
#endif
#ifdef LOCKSTEP_BENCH_CLUSTER
int run_cluster(int argc, char** argv);
#endif
#ifdef LOCKSTEP_BENCH_SCALE
int run_scale(int argc, char** argv);
#endif
#ifdef LOCKSTEP_BENCH_CALIBRATE
int run_calibrate(int argc, char** argv);
#endif

} // namespace lockstep::bench
