/* mqb-bench's transports: TLS (mbedTLS), WebSocket, WebSocket over TLS.
 * Each connection's MQTT bytes pass through xport_send / xport_recv once the
 * handshakes are done. One xport_ctx per tool thread (no locks). */
#ifndef MQB_BENCH_XPORT_H
#define MQB_BENCH_XPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum { XP_TCP, XP_TLS, XP_WS, XP_WSS };

typedef struct xport_ctx xport_ctx;
typedef struct xport xport;

/* kind: XP_*; ws_path for XP_WS/XP_WSS. NULL with *why on failure. The
 * server certificate is not verified: this is a load tool for loopback. */
xport_ctx *xport_ctx_new(int kind, const char *ws_path, const char **why);
void xport_ctx_free(xport_ctx *x);
/* A connection over connected socket fd, or NULL for XP_TCP. */
xport *xport_new(xport_ctx *ctx, int fd);
void xport_free(xport *x);

/* Drives the TLS handshake and the WebSocket upgrade: 1 done, 0 under way
 * (*want_out: wait for writability too), -1 failed (*why). */
int xport_handshake(xport *x, bool *want_out, const char **why);
/* MQTT bytes out: how many were taken (> 0), or -1 with errno (EAGAIN). */
ssize_t xport_send(xport *x, const uint8_t *p, size_t n);
/* Writes what the transport holds: 0 all written, 1 more pending, -1 error. */
int xport_flush(xport *x);
/* MQTT bytes in: > 0, 0 at the end of the stream, -1 with errno (EAGAIN). */
ssize_t xport_recv(xport *x, uint8_t *buf, size_t n);

#endif
