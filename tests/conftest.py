import os

# Tests run on the CPU with float32, like CI; keep XLA from grabbing every core's threads
# per test process more than needed.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from jaxmi import progress  # noqa: E402

progress.enabled(False)
