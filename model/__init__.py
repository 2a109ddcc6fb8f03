"""posecoach's ground floor: the settings, and the rooms data/, learn/ and serve/."""
