"""medsynth.app."""
