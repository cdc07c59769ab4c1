"""The bad-input corpus (issue 21); a package, so that its test modules may share names
with those in tests/ (test_config.py)."""
