"""Live trace replay against the REST API (`manage.py loadgen`) and the simulator-vs-live check
(`manage.py compare_sim`). See docs/loadgen.md.

* `workload`: the arrival schedule and prompt stream, built exactly as `scheduler.simulate` builds them;
  the live configuration (ServingConfig, profile, workers, time factor) as a `SchedulerConfig`.
* `replay`: the HTTP client — submits each arrival at its trace time, waits for every request to end.
* `collect`: final rows → the per-request arrays `scheduler.metrics.summarize` takes; results files.
"""
