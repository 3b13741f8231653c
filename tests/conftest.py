import atexit
import os
import shutil
import tempfile

# Tests run on the CPU with float32, like CI.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# One persistent compilation cache for the whole session, shared with the subprocesses the
# tests start (experiment scripts, benchmarks): a program compiled once (the same model, step or
# estimator pass built again by another test or process) is loaded instead of recompiled. The
# same mechanism as --compile-cache; results are unaffected.
# The process that creates the cache removes it when the session ends (xdist workers and
# subprocesses inherit the variable, so they neither create nor remove one).
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxmi-test-xla-cache-")
    # at exit, after pytest-xdist's workers (which may write to it until they stop) are gone
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
_CACHE = os.environ["JAX_COMPILATION_CACHE_DIR"]
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
# leaves the long one-test files (notebook, accelerator report, 8 devices) for the end. Seconds per
# file summed over its tests in one -n 2 run on the 2-core CPU under a load average of about 6.5
# (roughly 3× a quiet machine); every other file follows in collection order.
LONGEST_FIRST = (
    "test_finding2.py",            # 518: finding-2 smoke runs (reference, killed, resumed)
    "test_training.py",            # 516
    "test_run.py",                 # 451
    "test_findings.py",            # 376: finding-3 and finding-4 smoke runs
    "test_notebook.py",            # 266: after finding 2 has filled the compilation cache
    "test_accelerator_report.py",  # 240
    "test_own_model.py",           # 236
    "test_estimators.py",          # 207
    "test_robust.py",              # 159
    "test_knn.py",                 # 150
    "test_attacks.py",             # 144
    "test_faults.py",              # 141
    "test_evaluation.py",          # 134
    "test_estimators_full.py",     # 133
    "test_parallel.py",            # 127: an 8-device subprocess
)


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist: keep the order set below
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files stay whole
