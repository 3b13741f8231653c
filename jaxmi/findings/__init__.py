"""One importable ``run(config, workdir)`` per finding of Zhang et al. (2022)."""
