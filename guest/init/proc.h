/* Process table: START, stdio relay with credit flow control, reaping, EXIT. */
#ifndef STEELCUP_PROC_H
#define STEELCUP_PROC_H

#include "proto.h"

#include <poll.h>
#include <stddef.h>
#include <stdint.h>

/* Handles START; root is the root of container `container` (the process runs in that container's
 * PID and mount namespaces, new ones pivoted into root for a MAIN process) or NULL ("/", the VM's
 * namespaces). Replies OK+PID (its pid in its PID namespace) or ERROR. */
void proc_start(const struct proto_frame *f, const char *root, uint32_t container);
void proc_stdin(uint32_t id, const uint8_t *data, size_t len);
void proc_close_stdin(uint32_t id);
void proc_credit(uint32_t id, uint32_t bytes);
void proc_signal(uint32_t id, int signo);
void proc_resize(uint32_t id, unsigned rows, unsigned cols);
/* A new host connection (HELLO): no process is the host's until it START's or RESUMEs it. */
void proc_detach_all(void);
/* Handles RESUME: replays what the host does not have of a process's output (and its EXIT). */
void proc_resume(const struct proto_frame *f);
/* Reaps every exited child, ours or not. */
void proc_reap(void);
/* Adds pollfds of live streams; returns how many were added (at most max). */
size_t proc_pollfds(struct pollfd *pfds, size_t max);
/* Handles events for pollfds filled by proc_pollfds. */
void proc_handle(const struct pollfd *pfds, size_t n);
/* Sends EXIT where due; returns ms until the next deadline or -1. */
int proc_tick(void);
/* Number of processes not yet reaped. */
size_t proc_live(void);

#endif
