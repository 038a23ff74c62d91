"""steelcup: run OCI images in QEMU microVMs, one VM per container."""

__version__ = "0.1.0"
