"""What the tests share: fixtures, the fake clock, the clock-process harness, the log parser."""
