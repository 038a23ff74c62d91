/* Shared declarations of the steelcup guest init (PID 1). */
#ifndef STEELCUP_INIT_H
#define STEELCUP_INIT_H

#ifndef INIT_VERSION
#define INIT_VERSION "steelcup-init 1"
#endif

#define INIT_ROOT "/run/steelcup/root"

/* Logs a line to the console (fd 2). */
void main_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Syncs and powers the VM off; never returns. */
void main_fatal(const char *msg) __attribute__((noreturn));
/* Monotonic clock in milliseconds. */
long long main_now_ms(void);

#endif
