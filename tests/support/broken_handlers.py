"""A handler module that fails while it is imported (tests/test_startup.py)."""
raise RuntimeError("broken on purpose")
