"""Developer tooling (benchmark, load test): not part of the app or of what a Space runs."""
