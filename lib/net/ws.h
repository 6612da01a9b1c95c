/*
 * MQTT over WebSocket (RFC 6455) as a transport of the connection's loop:
 * the HTTP upgrade, then binary frames whose payloads, concatenated, are the
 * MQTT byte stream. Stacks over the socket (ws) or over TLS (wss). The
 * parsers are pure (no I/O, no allocation) so that they can be tested and
 * fuzzed without sockets.
 */
#ifndef MQBI_WS_H
#define MQBI_WS_H

#include <arpa/inet.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"

/* The longest upgrade request accepted (request line and headers). */
#define MQBI_WS_MAX_REQUEST 8192

typedef struct mqbi_ws_options {
	const char *path;           /* "/mqtt"; the query string is not compared */
	bool require_subprotocol;   /* refuse a client that offers no MQTT subprotocol */
	const char *address_header; /* e.g. "X-Forwarded-For"; "" = not used */
	const char *port_header;    /* e.g. "X-Forwarded-Port"; "" = not used */
} mqbi_ws_options;

typedef struct mqbi_ws_request {
	char key[25];                         /* Sec-WebSocket-Key (24 base64 characters) */
	const char *subprotocol;              /* chosen ("mqtt", "mqttv3.1"), or NULL */
	char forwarded_for[INET6_ADDRSTRLEN]; /* first address of address_header, or "" */
	int forwarded_port;                   /* from port_header, or -1 */
} mqbi_ws_request;

/* Parses the upgrade request at p[0..len). Returns its length (> 0) when it
 * is complete and acceptable, 0 when more bytes are needed, or -1: *status
 * then has the HTTP status to answer (400, 404, 405, 426, 431) and *why the
 * reason. */
long mqbi_ws_parse_request(const uint8_t *p, size_t len, const mqbi_ws_options *o,
                           mqbi_ws_request *out, int *status, const char **why);

/* Sec-WebSocket-Accept for a Sec-WebSocket-Key: 28 characters and a NUL. */
void mqbi_ws_accept_key(const char *key, char out[29]);

enum {
	MQBI_WS_CONT = 0,
	MQBI_WS_TEXT = 1,
	MQBI_WS_BINARY = 2,
	MQBI_WS_CLOSE = 8,
	MQBI_WS_PING = 9,
	MQBI_WS_PONG = 10
};

typedef struct mqbi_ws_frame {
	bool fin;
	uint8_t opcode;
	uint8_t mask[4];
	uint64_t len; /* payload bytes */
} mqbi_ws_frame;

/* Parses a client frame's header at p[0..len). Returns the header's length
 * (6..14), 0 when more bytes are needed, or -1: *code then has the close code
 * (1002) and *why the reason. Client frames must be masked; control frames
 * must be final and at most 125 bytes. */
int mqbi_ws_parse_frame(const uint8_t *p, size_t len, mqbi_ws_frame *f, uint16_t *code,
                        const char **why);

/* Writes the header of an unmasked server frame of `len` payload bytes:
 * returns its length (2, 4 or 10; out needs room for 10). */
size_t mqbi_ws_frame_header(uint8_t *out, uint8_t opcode, uint64_t len);

/* dst[i] = src[i] ^ mask[(pos + i) % 4]; dst may be src. */
void mqbi_ws_unmask(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t mask[4],
                    uint64_t pos);

/* Puts the WebSocket transport on top of the client's stack (ws and wss
 * listeners, once the socket or TLS is ready). False if out of memory. */
bool mqbi_ws_attach(mqbi_client *c);

#endif
