"""What the clock tells people: log events, redaction, job status, and how times are written."""
