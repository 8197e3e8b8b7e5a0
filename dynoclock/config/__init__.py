"""Reading schedule.yaml: YAML with lines, values, ${VAR} interpolation, problems with file:line, preflight."""
