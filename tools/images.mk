# images built from the repo (steelcup/busybox); rebuilt only when busybox or the tool changes
BUSYBOX ?= /bin/busybox
IMAGES_DIR := $(BUILD)/images

images: $(IMAGES_DIR)/busybox.tar

$(IMAGES_DIR)/busybox.tar: tools/mkbusybox.py $(BUSYBOX)
	@mkdir -p $(IMAGES_DIR)
	$(PYTHON) tools/mkbusybox.py --busybox $(BUSYBOX) $@
