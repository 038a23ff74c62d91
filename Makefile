# steelcup: `make demo` and `make test` work on a fresh Debian 12 machine (as root).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BUILD := build
# The guest kernel's source and what building it takes (GUEST_KERNEL=source, guest/guest.mk).
GUEST_KERNEL_APT := linux-source-6.1 gcc make flex bison bc libelf-dev patch
APT_PACKAGES := qemu-system-x86 qemu-utils busybox-static musl-tools cpio kmod e2fsprogs \
	erofs-utils xz-utils zstd iproute2 nftables util-linux openssl docker-registry skopeo \
	apache2-utils podman runc netavark containernetworking-plugins chromium chromium-driver \
	$(GUEST_KERNEL_APT)
# npm (for `make console`) only where no npm is installed: NodeSource's nodejs ships its own
# and conflicts with Debian's npm package.
# Installed without their Recommends (docker-compose would pull in a whole docker.io engine).
# containerd: the engine steelcup-runtime is tested under besides podman (its runc shim).
APT_PACKAGES_BARE := docker-compose containerd
DEMO_ROOT ?= /tmp/steelcup-demo
# The web console's terminal emulator, from the npm registry at build time (docs/console.md):
# never committed, never fetched by the browser from anywhere but the daemon; the tarballs'
# hashes are pinned.
XTERM_VERSION := 5.5.0
XTERM_FIT_VERSION := 0.10.0
XTERM_SHA256 := bd954fa721872170188cc5d7e83e88db3c83c9a18a4e8d24c2783d26491f59d2
XTERM_FIT_SHA256 := 917ac44972453d5eed52edc1e50260c76398ce48cf2290c2e60671102bba0b33
CONSOLE_VENDOR := src/steelcup/console/static/vendor

.PHONY: all deps apt venv guest images console demo test test-unit test-vm lint clean
all: guest images

deps: apt venv

# System packages: `apt-get update` once per machine, then install what is missing.
apt: $(BUILD)/.apt-stamp
$(BUILD)/.apt-stamp: Makefile
	@mkdir -p $(BUILD)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	bare=$$(for p in $(APT_PACKAGES_BARE); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	command -v npm >/dev/null || missing="$$missing npm"; \
	if [ -n "$$missing$$bare" ]; then \
	  echo "installing: $$missing $$bare"; \
	  apt-get update -qq; \
	fi; \
	export DEBIAN_FRONTEND=noninteractive; \
	if [ -n "$$missing" ]; then apt-get install -y -qq $$missing >/dev/null; fi; \
	if [ -n "$$bare" ]; then apt-get install -y -qq --no-install-recommends $$bare >/dev/null; fi
	@touch $@

venv: $(VENV)/.stamp
$(VENV)/.stamp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	@touch $@

console: $(CONSOLE_VENDOR)/.stamp
$(CONSOLE_VENDOR)/.stamp: Makefile | apt
	rm -rf $(BUILD)/npm $(CONSOLE_VENDOR) && mkdir -p $(BUILD)/npm/xterm $(BUILD)/npm/fit $(CONSOLE_VENDOR)
	cd $(BUILD)/npm && npm pack --silent @xterm/xterm@$(XTERM_VERSION) @xterm/addon-fit@$(XTERM_FIT_VERSION)
	cd $(BUILD)/npm && printf '%s  %s\n' $(XTERM_SHA256) xterm-xterm-$(XTERM_VERSION).tgz \
	  $(XTERM_FIT_SHA256) xterm-addon-fit-$(XTERM_FIT_VERSION).tgz | sha256sum -c --quiet
	tar -xzf $(BUILD)/npm/xterm-xterm-$(XTERM_VERSION).tgz -C $(BUILD)/npm/xterm
	tar -xzf $(BUILD)/npm/xterm-addon-fit-$(XTERM_FIT_VERSION).tgz -C $(BUILD)/npm/fit
	cp $(BUILD)/npm/xterm/package/lib/xterm.js $(BUILD)/npm/xterm/package/css/xterm.css \
	   $(BUILD)/npm/fit/package/lib/addon-fit.js $(CONSOLE_VENDOR)/
	@touch $@

include guest/guest.mk
include tools/images.mk

demo: deps guest images console
	@$(PY) tools/demo.py --root $(DEMO_ROOT)

test: deps guest images console guest-test
	$(PY) -m pytest -q tests

test-unit: venv
	$(PY) -m pytest -q tests/unit

lint: venv
	$(VENV)/bin/ruff check src tests tools bench
	$(VENV)/bin/mypy

clean:
	rm -rf $(BUILD)
