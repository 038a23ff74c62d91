"""A container's cgroup on the host (OCI linux.cgroupsPath, HostConfig.SteelcupCgroup):
`paths` pure, `place` the few effects (mkdir, cgroup.procs writes, rmdir)."""
