/* Kernel modules listed in /modules.list, loaded in order. */
#ifndef STEELCUP_MODULES_H
#define STEELCUP_MODULES_H

/* Loads every module of the list with its `<mod>.<param>=` words from /proc/cmdline. */
void modules_load_all(const char *list, const char *dir);

#endif
