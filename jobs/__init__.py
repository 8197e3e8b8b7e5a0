"""Your own Python jobs live here: name them in schedule.yaml as ``python: jobs.module:function``."""
