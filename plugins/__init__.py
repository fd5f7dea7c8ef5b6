"""Built-in plugins of sgid-bench. Each module registers through the ``sgid_bench``
entry-point group in pyproject.toml, exactly as a third-party package would."""
