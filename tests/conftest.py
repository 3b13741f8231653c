import os
import tempfile

# Tests run on the CPU with float32, like CI.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# One persistent compilation cache for the whole session, shared with the subprocesses the
# tests start (experiment scripts, benchmarks): a program compiled once (the same model, step or
# estimator pass built again by another test or process) is loaded instead of recompiled. The
# same mechanism as --compile-cache; results are unaffected.
_CACHE = os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="jaxmi-test-xla-cache-"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

# Compile with XLA's cheap settings (LLVM at -O0, expensive passes off): the suite's programs
# are tiny and mostly compile time, and this halves it. It changes how fast the compiled
# code runs, and what it computes only at the level of float rounding (tests that compare two
# computations allow for that); benchmarks and experiments run with the defaults.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

from jaxmi import progress  # noqa: E402

progress.enabled(False)
