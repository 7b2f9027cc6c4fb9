"""Running jobs: one job's flow (jobrun), the local batch engine, and the Ray engine."""
