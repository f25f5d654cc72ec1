"""The composition root: settings, the embedded AWS, wiring of the stages, and the `jwo` CLI."""
