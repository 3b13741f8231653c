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


# The order in which pytest-xdist hands out the files (--dist loadfile): the longest first, so
# that the two workers end together; by default xdist sorts files by their number of tests, which
# leaves the long one-test files (notebook, accelerator report) for the end. Estimated seconds
# per file on a 2-core CPU, longest first; every other file follows in collection order.
LONGEST_FIRST = (
    "test_finding2.py",            # ~200 s: three finding-2 smoke runs (killed, resumed, reference)
    "test_run.py",                 # ~200 s: tiny runs, resumes, seeds
    "test_training.py",            # ~150 s
    "test_findings.py",            # ~100 s: finding-3 and finding-4 smoke runs
    "test_notebook.py",            # ~90 s: the notebook's smoke run
    "test_own_model.py",           # ~70 s
    "test_attacks.py",
    "test_accelerator_report.py",  # ~50 s
    "test_robust.py",
    "test_faults.py",
    "test_parallel.py",            # ~35 s: an 8-device subprocess
)


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist: keep the order set below
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files stay whole
