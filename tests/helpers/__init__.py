"""What several test modules share: the tiny model, fixture paths, small training configs."""
