# Guest assets: kernel, static init, initrd, and the init's C unit tests.
#   make guest       -> build/guest/vmlinux (boot this one), build/guest/initrd.img
#   make guest-test  -> codec tests against tests/golden/guest_protocol.txt, mount walk,
#                       capability and limit-parser tests, pod member roots, root copy,
#                       STAGE_LOWER's reads (ASan/UBSan)
# GUEST_KERNEL=source (default): our own kernel, built from Debian's linux-source package with
#   guest/kernel/steelcup.config and everything built in; the initrd carries no modules.
# GUEST_KERNEL=debian: Debian's packaged kernel (+ build/guest/vmlinuz) with its virtio/9p/overlay
#   modules in the initrd. The `cloud` flavour has no 9p (CONFIG_NET_9P unset); hence `amd64`.
GUEST_BUILD := $(BUILD)/guest
GUEST_KERNEL ?= source
ifeq ($(filter $(GUEST_KERNEL),source debian),)
$(error GUEST_KERNEL must be source or debian, not '$(GUEST_KERNEL)')
endif
GUEST_KERNEL_FLAVOUR ?= amd64
GUEST_MODULES := virtio_mmio,virtio_console,virtio_blk,virtio_net,virtio_balloon,9pnet_virtio,9p,overlay
GUEST_MODULES_OPTIONAL := virtio_rng,virtio_mem
GUEST_KSRC_PKG := linux-source-6.1
GUEST_KSRC_TAR := /usr/src/$(GUEST_KSRC_PKG).tar.xz
GUEST_KSRC := $(GUEST_BUILD)/kernel-src
GUEST_KOBJ := $(GUEST_BUILD)/kernel-obj
GUEST_KFRAGMENT := guest/kernel/steelcup.config
# Our changes to the kernel's source, applied in name order after unpacking (docs/architecture.md,
# "Guest kernel and boot").
GUEST_KPATCHES := $(sort $(wildcard guest/kernel/patches/*.patch))
# none or gzip: an uncompressed initrd boots faster under TCG (see the guest report).
GUEST_INITRD_COMPRESS ?= none
GUEST_INIT_SRCS := $(wildcard guest/init/*.c)
GUEST_INIT_HDRS := $(wildcard guest/init/*.h)
GUEST_CFLAGS := -std=gnu11 -static -Os -Wall -Wextra -Werror
GUEST_INIT_VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
GUEST_TEST_CFLAGS := -std=gnu11 -g -O1 -Wall -Wextra -Werror
GUEST_SANITIZE := $(shell echo 'int main(void){return 0;}' | \
	gcc -x c -fsanitize=address,undefined -o /dev/null - 2>/dev/null && \
	echo -fsanitize=address,undefined -fno-sanitize-recover=all)
GUEST_KPKG := $(GUEST_BUILD)/kernel-pkg

# Settings files rewritten only when a setting changes, so editing rules here rebuilds nothing.
guest_setting = $(shell mkdir -p $(GUEST_BUILD) && f=$(GUEST_BUILD)/$(1); \
	[ "$$(cat $$f 2>/dev/null)" = "$(2)" ] || echo "$(2)" > $$f; echo $$f)
GUEST_KERNEL_CFG := $(call guest_setting,kernel.cfg,$(GUEST_KERNEL) $(GUEST_KERNEL_FLAVOUR))
GUEST_KPKG_CFG := $(call guest_setting,kpkg.cfg,$(GUEST_KERNEL_FLAVOUR))
GUEST_INITRD_CFG := $(call guest_setting,initrd.cfg,$(if $(filter debian,$(GUEST_KERNEL)),\
	$(GUEST_MODULES) $(GUEST_MODULES_OPTIONAL),no-modules) $(GUEST_INITRD_COMPRESS))
GUEST_INIT_CFG := $(call guest_setting,init.cfg,$(GUEST_CFLAGS))

.PHONY: guest guest-test guest-clean
guest: $(GUEST_BUILD)/vmlinux $(GUEST_BUILD)/initrd.img

$(GUEST_BUILD)/init: $(GUEST_INIT_SRCS) $(GUEST_INIT_HDRS) $(GUEST_INIT_CFG)
	@mkdir -p $(GUEST_BUILD)
	musl-gcc $(GUEST_CFLAGS) -DINIT_VERSION='"steelcup-init $(GUEST_INIT_VERSION)"' \
		-o $@ $(GUEST_INIT_SRCS)

ifeq ($(GUEST_KERNEL),source)
# Kernel source: Debian's linux-source tarball (an apt package, see APT_PACKAGES), unpacked once
# with our patches applied; a newer tarball (package upgrade) or a changed patch set unpacks
# afresh and rebuilds from scratch (a reverted file would keep the tarball's old mtime).
$(GUEST_KSRC_TAR): | $(BUILD)/.apt-stamp
	@test -f $@ || { echo "$@ missing: apt-get install $(GUEST_KSRC_PKG)" >&2; exit 1; }

GUEST_KPATCH_CFG := $(call guest_setting,kpatch.cfg,$(notdir $(GUEST_KPATCHES)))
$(GUEST_KSRC)/.stamp: $(GUEST_KSRC_TAR) $(GUEST_KPATCHES) $(GUEST_KPATCH_CFG)
	@rm -rf $(GUEST_KSRC) $(GUEST_KOBJ) && mkdir -p $(GUEST_KSRC)
	@echo "guest: unpacking $<"
	tar -xJf $< -C $(GUEST_KSRC) --strip-components=1
	@for p in $(GUEST_KPATCHES); do echo "guest: applying $$p"; \
		patch -s -p1 -d $(GUEST_KSRC) --no-backup-if-mismatch -F0 < $$p || exit 1; done
	@touch $@

# Out of tree in $(GUEST_KOBJ): a changed fragment re-runs the config and Kbuild recompiles only
# what the changed options touch.
$(GUEST_BUILD)/vmlinux: $(GUEST_KSRC)/.stamp $(GUEST_KFRAGMENT) guest/kernel/build.sh $(GUEST_KERNEL_CFG)
	guest/kernel/build.sh $(GUEST_KSRC) $(GUEST_KOBJ) $(GUEST_KFRAGMENT) $@

$(GUEST_BUILD)/initrd.img: $(GUEST_BUILD)/init tools/guest_assets.py $(GUEST_INITRD_CFG)
	python3 tools/guest_assets.py --no-modules \
		--compress $(GUEST_INITRD_COMPRESS) --init $(GUEST_BUILD)/init --out $@
else
guest: $(GUEST_BUILD)/vmlinuz

# Kernel: the versioned package the metapackage depends on, extracted (no /boot install).
# depmod because the package ships no modules.dep (it is generated at install time).
$(GUEST_KPKG)/.stamp: $(GUEST_KPKG_CFG)
	@rm -rf $(GUEST_KPKG) $(GUEST_BUILD)/deb && mkdir -p $(GUEST_BUILD)/deb
	@pkg=$$(apt-cache depends linux-image-$(GUEST_KERNEL_FLAVOUR) | \
	        awk '/Depends: linux-image-[0-9]/ {print $$2; exit}'); \
	if [ -z "$$pkg" ]; then echo "no package for linux-image-$(GUEST_KERNEL_FLAVOUR) (run make apt?)" >&2; exit 1; fi; \
	echo "guest: downloading $$pkg"; \
	cd $(GUEST_BUILD)/deb && apt-get download -q $$pkg 2>&1 | grep -v '^W: Download is performed unsandboxed' || true
	@ls $(GUEST_BUILD)/deb/*.deb >/dev/null
	dpkg -x $(GUEST_BUILD)/deb/*.deb $(GUEST_KPKG)
	@rel=$$(ls $(GUEST_KPKG)/lib/modules); depmod -b $(GUEST_KPKG) $$rel
	@touch $@

$(GUEST_BUILD)/vmlinuz: $(GUEST_KPKG)/.stamp
	cp $(GUEST_KPKG)/boot/vmlinuz-* $@

# The ELF inside the bzImage: QEMU boots it through PVH without the ~9 s xz decompression (TCG).
$(GUEST_BUILD)/vmlinux: $(GUEST_BUILD)/vmlinuz tools/guest_assets.py $(GUEST_KERNEL_CFG)
	python3 tools/guest_assets.py vmlinux $< $@

$(GUEST_BUILD)/initrd.img: $(GUEST_BUILD)/init $(GUEST_KPKG)/.stamp tools/guest_assets.py $(GUEST_INITRD_CFG)
	python3 tools/guest_assets.py --moddir $$(echo $(GUEST_KPKG)/lib/modules/*) \
		--modules $(GUEST_MODULES) --optional $(GUEST_MODULES_OPTIONAL) \
		--compress $(GUEST_INITRD_COMPRESS) --init $(GUEST_BUILD)/init --out $@
endif

$(GUEST_BUILD)/test_proto: guest/init/tests/test_proto.c guest/init/proto.c guest/init/proto.h \
		guest/init/tests/check.h
	@mkdir -p $(GUEST_BUILD)
	gcc $(GUEST_TEST_CFLAGS) $(GUEST_SANITIZE) -o $@ guest/init/tests/test_proto.c guest/init/proto.c

$(GUEST_BUILD)/test_mounts_net: guest/init/tests/test_mounts_net.c guest/init/mounts.c \
		guest/init/net.c guest/init/rootcopy.c guest/init/mounts.h guest/init/net.h \
		guest/init/tests/check.h
	@mkdir -p $(GUEST_BUILD)
	gcc $(GUEST_TEST_CFLAGS) $(GUEST_SANITIZE) -o $@ guest/init/tests/test_mounts_net.c \
		guest/init/mounts.c guest/init/net.c guest/init/rootcopy.c

$(GUEST_BUILD)/test_caps: guest/init/tests/test_caps.c guest/init/caps.c guest/init/caps.h \
		guest/init/tests/check.h
	@mkdir -p $(GUEST_BUILD)
	gcc $(GUEST_TEST_CFLAGS) $(GUEST_SANITIZE) -o $@ guest/init/tests/test_caps.c guest/init/caps.c

$(GUEST_BUILD)/test_ctlimits: guest/init/tests/test_ctlimits.c guest/init/ctlimits.c \
		guest/init/ctlimits.h guest/init/tests/check.h
	@mkdir -p $(GUEST_BUILD)
	gcc $(GUEST_TEST_CFLAGS) $(GUEST_SANITIZE) -o $@ guest/init/tests/test_ctlimits.c \
		guest/init/ctlimits.c

$(GUEST_BUILD)/test_pods: guest/init/tests/test_pods.c guest/init/pods.c guest/init/pods.h \
		guest/init/mounts.c guest/init/mounts.h guest/init/rootcopy.c guest/init/tests/check.h
	@mkdir -p $(GUEST_BUILD)
	gcc $(GUEST_TEST_CFLAGS) $(GUEST_SANITIZE) -o $@ guest/init/tests/test_pods.c \
		guest/init/pods.c guest/init/mounts.c guest/init/rootcopy.c

$(GUEST_BUILD)/test_rootcopy: guest/init/tests/test_rootcopy.c guest/init/rootcopy.c \
		guest/init/rootcopy.h guest/init/tests/check.h
	@mkdir -p $(GUEST_BUILD)
	gcc $(GUEST_TEST_CFLAGS) $(GUEST_SANITIZE) -o $@ guest/init/tests/test_rootcopy.c \
		guest/init/rootcopy.c

$(GUEST_BUILD)/test_lower: guest/init/tests/test_lower.c guest/init/lower.c guest/init/lower.h \
		guest/init/tests/check.h
	@mkdir -p $(GUEST_BUILD)
	gcc $(GUEST_TEST_CFLAGS) $(GUEST_SANITIZE) -o $@ guest/init/tests/test_lower.c \
		guest/init/lower.c

guest-test: $(GUEST_BUILD)/test_proto $(GUEST_BUILD)/test_mounts_net $(GUEST_BUILD)/test_caps \
		$(GUEST_BUILD)/test_ctlimits $(GUEST_BUILD)/test_pods $(GUEST_BUILD)/test_rootcopy \
		$(GUEST_BUILD)/test_lower
	$(GUEST_BUILD)/test_proto tests/golden/guest_protocol.txt
	$(GUEST_BUILD)/test_mounts_net
	$(GUEST_BUILD)/test_caps
	$(GUEST_BUILD)/test_ctlimits
	$(GUEST_BUILD)/test_pods
	$(GUEST_BUILD)/test_rootcopy
	$(GUEST_BUILD)/test_lower

guest-clean:
	rm -rf $(GUEST_BUILD)
