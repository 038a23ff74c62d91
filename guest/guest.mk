# guest assets (kernel, initrd, init): rules added by the guest work
guest:
