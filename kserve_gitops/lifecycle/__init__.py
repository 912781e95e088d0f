"""The model lifecycle: training, the registry, the quality gate and rollouts as Git changes."""
