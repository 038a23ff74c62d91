"""Swarm-style services on one node: desired state, tasks (one container each), reconciler."""
