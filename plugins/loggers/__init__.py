"""Run observers shipped with benchkit (each one an ordinary ``on_run_event`` plugin)."""
