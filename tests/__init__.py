"""The test-suite; tests/inputs.py holds the inputs it shares with bench/ and reference/."""
