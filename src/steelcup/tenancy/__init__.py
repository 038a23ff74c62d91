"""Tenants of a multi-tenant steelcup: who they are, what they may use, how they prove it."""
