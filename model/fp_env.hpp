#pragma once

// The floating-point environment the determinism rule assumes
// (docs/determinism.md, section 3): IEEE-754 defaults, i.e. round to nearest
// and subnormals kept. Compiler flags cannot pin these: they are run-time
// state of each thread, and a library loaded into the process (one built
// with -ffast-math or -Ofast links crtfastmath.o, which sets FTZ and DAZ when
// it loads) or a caller's fesetround() changes them for every kernel we run.

#include <caf/error.hpp>

namespace lockstep::model {

/// Checks the calling thread's floating-point environment: on x86-64, MXCSR
/// must have FTZ (bit 15) and DAZ (bit 6) clear and rounding control (bits
/// 13-14) round-to-nearest; everywhere, std::fegetround() == FE_TONEAREST.
/// Threads started afterwards inherit this state, so programs call it once at
/// start-up, before any model math. Returns errc::bad_fp_environment naming
/// every deviation, or an empty error.
caf::error check_fp_environment();

} // namespace lockstep::model
