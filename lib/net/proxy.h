/*
 * PROXY protocol v1 (text) and v2 (binary) headers, as a load balancer sends
 * them before the client's own bytes: the parser is pure (no I/O, no
 * allocation); proxy.c's connection phase reads the header off the socket
 * without taking a byte of what follows it.
 */
#ifndef MQBI_PROXY_H
#define MQBI_PROXY_H

#include <arpa/inet.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The longest header accepted: v1's limit is 107 bytes; v2's TLVs can in
 * principle reach 64 KiB, but load balancers send a few hundred bytes. */
#define MQBI_PROXY_MAX 4096

typedef struct mqbi_proxy_hdr {
	/* false: LOCAL (v2), UNKNOWN (v1) or a family without addresses: the
	 * connection's own addresses stand (health checks). */
	bool has_addr;
	char src[INET6_ADDRSTRLEN + 8]; /* "ip:port" of the real client */
	bool dst_loopback;              /* the address the client connected to */
} mqbi_proxy_hdr;

/* Parses the header at the start of p[0..len). Returns its length (> 0),
 * 0 when more bytes are needed, or -1 when the bytes are not a valid PROXY
 * header (*why then says what is wrong). */
long mqbi_proxy_parse(const uint8_t *p, size_t len, mqbi_proxy_hdr *out, const char **why);

#endif
