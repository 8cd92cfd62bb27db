"""Pipeline steps, one module each: ingest, validate, preprocess, train, evaluate, promote, monitor.

Each step is a plain typed function over configs and paths (``run(...)``), with no KFP import;
the CLI, the DVC stages and the KFP components are thin wrappers over the same functions.
"""
