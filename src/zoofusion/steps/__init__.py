"""One plain function per stage: explicit paths and typed params in; reads, calls core, writes atomically; no DVC,
no MLflow."""
