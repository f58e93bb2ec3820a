"""The data plane: listeners, proxying, upstream pools, balancing, health checks, metrics."""
