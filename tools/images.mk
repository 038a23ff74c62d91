# images built from the repo (steelcup/busybox)
images:
