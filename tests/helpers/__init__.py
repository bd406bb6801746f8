"""Helpers shared by the test folders (import as ``tests.helpers.<module>``); fixtures stay in
the conftest files."""
