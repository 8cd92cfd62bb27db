"""medsynth: synthetic medical images, from real data to a gated, served, monitored generator.

The repository's fixed top-level folders are installed under this import name:
``medsynth.components`` (components/), ``medsynth.training`` (training/),
``medsynth.monitoring`` (monitoring/), ``medsynth.pipelines`` (pipelines/), ``medsynth.app`` (app/).
This package itself is the small core: config, data formats, transforms, tracking and the CLI.
"""

__version__ = "0.1.0"
