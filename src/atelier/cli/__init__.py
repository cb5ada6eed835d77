"""Command line: parses flags and calls the suites' typed functions, nothing more."""
