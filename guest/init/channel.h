/* The control channel: the steelcup.ctl virtio-serial port, input framing, output queue. */
#ifndef STEELCUP_CHANNEL_H
#define STEELCUP_CHANNEL_H

#include "proto.h"

#include <poll.h>
#include <stddef.h>
#include <stdint.h>

typedef void (*channel_dispatch_fn)(const struct proto_frame *f);

/* Waits (bounded) for the port to appear and opens it; returns 0 or -errno. */
int channel_open(const char *name, int timeout_ms);
/* Fills a pollfd for the port (fd -1 while no host is connected). */
void channel_pollfd(struct pollfd *pfd);
/* Handles poll events on the port; complete frames go to dispatch. */
void channel_handle(short revents, channel_dispatch_fn dispatch);
/* The host may have (re)connected (SIGIO or periodic re-check). */
void channel_recheck(void);
/* Milliseconds until the next periodic re-check, or -1. */
int channel_timeout_ms(void);
/* Bytes queued for the host. */
size_t channel_pending(void);
/* Queues a complete frame. */
void channel_send(const uint8_t *frame, size_t n);
void channel_send_ok(uint32_t id);
/* OK carrying one u32 field (START's PID, STAGE_LOWER's BYTES). */
void channel_send_ok_u32(uint32_t id, uint16_t tag, uint32_t v);
void channel_send_error(uint32_t id, int err, const char *msg);
void channel_send_credit(uint32_t id, uint32_t bytes);
/* Reserves room for a data frame of up to max bytes; returns where the data goes. */
uint8_t *channel_data_begin(size_t max);
/* Completes the reserved data frame with n bytes (n == 0 drops it). */
void channel_data_commit(uint16_t op, uint32_t id, size_t n);
/* Writes out the queue, waiting up to timeout_ms. */
void channel_flush(int timeout_ms);

#endif
