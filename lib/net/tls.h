/*
 * MQTT over TLS with mbedTLS. The TLS layer transforms bytes: it never owns
 * the socket. conn.c reads and writes through the connection's transport
 * (mqbi_transport_ops), and mbedTLS reaches the non-blocking socket through
 * its BIO callbacks.
 */
#ifndef MQBI_TLS_H
#define MQBI_TLS_H

#include <stddef.h>

#include "core/core.h"

/* A TLS listener's settings: certificates, keys, CAs, PSKs, session tickets.
 * Reference counted: each connection keeps the one it was accepted with, so
 * a reload (new certificates) does not touch established connections. */
typedef struct mqbi_tls_server mqbi_tls_server;

/* Reads the files the listener's settings name. Errors are logged with the
 * file and the reason; MQB_ERR_INVAL for bad settings or files. */
mqb_err mqbi_tls_server_create(mqb_broker *b, const mqbi_listener_cfg *cfg, mqbi_tls_server **out);
void mqbi_tls_server_release(mqbi_tls_server *s);
/* Reloads the certificates of every open TLS listener (SIGHUP). A listener
 * whose files do not load keeps the ones it has, and the error is logged. */
void mqbi_tls_reload(mqb_broker *b);

/* Starts the TLS handshake on a new connection of a TLS listener; reading
 * MQTT starts (mqbi_client_start) once it is done. False if out of memory. */
bool mqbi_tls_accept(mqbi_client *c, mqbi_tls_server *s);

/* What a client certificate says (after the handshake): the DER bytes, and
 * one of MQBI_CERT_AS_CN/DN/SAN as text. False when there is none. */
bool mqbi_tls_peer_cert(const mqbi_client *c, const void **der, size_t *len);
bool mqbi_tls_peer_name(const mqbi_client *c, int which, char *buf, size_t buflen);

#endif
