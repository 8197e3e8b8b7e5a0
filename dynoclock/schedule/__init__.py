"""Time math, pure: cron, the triggers that give a job's slots, and which missed slots a takeover runs."""
