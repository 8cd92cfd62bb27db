"""medsynth.pipelines."""
