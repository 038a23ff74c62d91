"""steelcup-runtime: a runc-compatible OCI runtime CLI that runs each container in a steelcup
VM, as a client of a steelcup daemon (docs/oci-runtime.md)."""
