/*
 * The configuration registry, as the library sees it: typed values indexed by
 * key id, so hot paths read an integer, never parse a string. The public face
 * (mqb_config_set, files, environment) is in mqttbroker.h.
 */
#ifndef MQBI_CONFIG_H
#define MQBI_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "mqttbroker.h"

/* Fixed keys, in registry order (docs/CONFIG.md follows this order). */
typedef enum mqbi_cfg_key {
	MQBI_K_NODE_NAME,    /* node.name                       string  "mqb@127.0.0.1" */
	MQBI_K_LOOP_THREADS, /* node.loop_threads               int     0 = one per core */
	MQBI_K_LOG_LEVEL, /* log.level                       enum    error|warning|notice|info|debug
	                   */
	MQBI_K_ALLOW_ANONYMOUS,   /* allow_anonymous                 enum    loopback|true|false */
	MQBI_K_MAX_PACKET_SIZE,   /* mqtt.max_packet_size            size    1MB (max 256MB) */
	MQBI_K_MAX_CLIENTID_LEN,  /* mqtt.max_clientid_len           int     65535 (23..65535) */
	MQBI_K_MAX_TOPIC_LEVELS,  /* mqtt.max_topic_levels           int     128 (0 = unlimited) */
	MQBI_K_MAX_QOS,           /* mqtt.max_qos_allowed            int     2 (0..2) */
	MQBI_K_MAX_TOPIC_ALIAS,   /* mqtt.max_topic_alias            int     65535 (0..65535) */
	MQBI_K_RETAIN_AVAILABLE,  /* mqtt.retain_available           bool    true */
	MQBI_K_WILDCARD_SUB,      /* mqtt.wildcard_subscription      bool    true */
	MQBI_K_SHARED_SUB,        /* mqtt.shared_subscription        bool    true */
	MQBI_K_SUB_ID_AVAILABLE,  /* mqtt.subscription_identifiers   bool    true */
	MQBI_K_SHARED_STRATEGY,   /* mqtt.shared_subscription_strategy enum
	                             random|round_robin|sticky|hash_clientid|hash_topic (round_robin)
	                           */
	MQBI_K_RECEIVE_MAX,       /* mqtt.receive_maximum            int     65535 (1..65535): QoS>0
	                             PUBLISH in flight from a client */
	MQBI_K_MAX_INFLIGHT,      /* mqtt.max_inflight               int     32 (1..65535): QoS>0
	                             deliveries in flight to a client */
	MQBI_K_MAX_AWAITING_REL,  /* mqtt.max_awaiting_rel           int     100 (0 = unlimited) */
	MQBI_K_AWAIT_REL_TIMEOUT, /* mqtt.await_rel_timeout          duration 300s */
	MQBI_K_MAX_MQUEUE_LEN,    /* mqtt.max_mqueue_len             int     1000 (0 = unlimited) */
	MQBI_K_MAX_MQUEUE_BYTES,  /* mqtt.max_mqueue_bytes           size    0 = unlimited */
	MQBI_K_BACKPRESSURE_QUEUE_LEN, /* mqtt.backpressure_queue_len int    500 (0 = off) */
	MQBI_K_BACKPRESSURE_MAX_HOLD,  /* mqtt.backpressure_max_hold  duration 1s */
	MQBI_K_MQUEUE_STORE_QOS0,      /* mqtt.mqueue_store_qos0          bool    true */
	MQBI_K_SESSION_EXPIRY, /* mqtt.session_expiry_interval    duration 2h: for 3.x clients with
	                          clean session = 0 */
	MQBI_K_MAX_SESSION_EXPIRY, /* mqtt.max_session_expiry         duration 0 = no cap (v5
	                              clients' request is capped) */
	MQBI_K_MAX_KEEPALIVE,      /* mqtt.max_keepalive              int     65535 seconds; above:
	                              Server Keep Alive (v5) or refused (v3) */
	MQBI_K_SERVER_KEEPALIVE,  /* mqtt.server_keepalive           int     0 = use the client's */
	MQBI_K_KEEPALIVE_BACKOFF, /* mqtt.keepalive_backoff          float-as-text "1.5" stored as
	                             per-mille 1500 */
	MQBI_K_IDLE_TIMEOUT, /* mqtt.idle_timeout               duration 15s: time to send CONNECT
	                      */
	MQBI_K_MAX_SUBSCRIPTIONS, /* mqtt.max_subscriptions          int     0 = unlimited */
	MQBI_K_SYS_INTERVAL,      /* sys.interval              duration 1m (0 = no $SYS stats) */
	MQBI_K_DRAIN_TIMEOUT, /* node.drain_timeout        duration 5s: output flush time at stop */
	/* Persistence (lib/store, docs/PERSISTENCE.md) */
	MQBI_K_PERSIST_ENABLE,         /* persistence.enable            bool    false */
	MQBI_K_PERSIST_PATH,           /* persistence.path              string  database file */
	MQBI_K_PERSIST_SYNC,           /* persistence.sync              enum    always|batch|off */
	MQBI_K_PERSIST_FLUSH_INTERVAL, /* persistence.flush_interval    duration 100ms */
	MQBI_K_PERSIST_MAX_BYTES,      /* persistence.max_bytes         size    disk budget */
	MQBI_K_PERSIST_OVERFLOW,      /* persistence.overflow          enum    drop_oldest|refuse */
	MQBI_K_PERSIST_MAX_FILE_SIZE, /* persistence.max_file_size     size    0 = no limit */
	MQBI_K_PERSIST_QUEUE_WINDOW,  /* persistence.queue_window      int     1000 */
	MQBI_K_PERSIST_CHECKPOINT_PAGES, /* persistence.checkpoint_pages  int     1000 */
	MQBI_K_PERSIST_ON_CORRUPT,     /* persistence.on_corrupt        enum    refuse|move_aside */
	MQBI_K_PERSIST_CHECK_ON_START, /* persistence.check_on_start bool true */
	MQBI_K__COUNT
} mqbi_cfg_key;

/* Enum values. */
enum { MQBI_ANON_LOOPBACK = 0, MQBI_ANON_TRUE = 1, MQBI_ANON_FALSE = 2 };
enum {
	MQBI_SHARE_RANDOM = 0,
	MQBI_SHARE_ROUND_ROBIN,
	MQBI_SHARE_STICKY,
	MQBI_SHARE_HASH_CLIENTID,
	MQBI_SHARE_HASH_TOPIC
};

/* Sizes of a listener's text settings (with the terminating NUL). */
#define MQBI_CFG_PATH 256
#define MQBI_CFG_LIST 1024

enum { MQBI_VERIFY_NONE = 0, MQBI_VERIFY_PEER = 1 };
/* What of a TLS client certificate becomes the username or client id. */
enum { MQBI_CERT_AS_OFF = 0, MQBI_CERT_AS_CN, MQBI_CERT_AS_DN, MQBI_CERT_AS_SAN };

/* A listener, from "listener.<type>.<name> = [host:]port" and its sub-keys.
 * Every type has every field; a family (config.c) exposes those that apply
 * to it, the others keep their defaults. Copied by value. */
typedef struct mqbi_listener_cfg {
	char type[8];  /* "tcp", "ssl", "ws", "wss" */
	char name[64]; /* "default" */
	char host[64]; /* numeric IPv4/IPv6 address or "localhost"; "0.0.0.0" / "::" = any */
	int port;      /* 0 = ephemeral */
	int64_t max_connections;        /* default 1024000 */
	int64_t proxy_protocol;         /* bool: a PROXY v1/v2 header precedes the stream */
	int64_t proxy_protocol_timeout; /* ms */
	/* TLS (ssl, wss) */
	char certfile[MQBI_CFG_PATH];
	char keyfile[MQBI_CFG_PATH];
	char key_password[MQBI_CFG_PATH];
	char cacertfile[MQBI_CFG_PATH];
	char cacertdir[MQBI_CFG_PATH];
	int64_t verify;               /* MQBI_VERIFY_* */
	int64_t fail_if_no_peer_cert; /* bool */
	char tls_versions[64];        /* "tlsv1.2" */
	char ciphers[MQBI_CFG_LIST];
	char alpn[MQBI_CFG_PATH];
	char psk_file[MQBI_CFG_PATH];
	char sni_certs[MQBI_CFG_LIST];
	int64_t reuse_sessions;                               /* bool */
	int64_t handshake_timeout;                            /* ms */
	int64_t peer_cert_as_username, peer_cert_as_clientid; /* MQBI_CERT_AS_* */
	/* WebSocket (ws, wss) */
	char mqtt_path[MQBI_CFG_PATH];
	int64_t max_frame_size;         /* bytes; 0 = unlimited */
	int64_t fail_if_no_subprotocol; /* bool */
	char proxy_address_header[64];
	char proxy_port_header[64];
} mqbi_listener_cfg;

static inline bool mqbi_listener_is_tls(const mqbi_listener_cfg *l)
{
	return l->type[0] == 's' || (l->type[0] == 'w' && l->type[2] == 's');
}
static inline bool mqbi_listener_is_ws(const mqbi_listener_cfg *l)
{
	return l->type[0] == 'w';
}

/* Value of a fixed key: bool 0/1, int, size in bytes, duration in
 * milliseconds, enum index, keepalive_backoff in per-mille. */
int64_t mqbi_cfg_int(const mqb_config *c, mqbi_cfg_key k);
/* Value of a string key (node.name). */
const char *mqbi_cfg_str(const mqb_config *c, mqbi_cfg_key k);

size_t mqbi_cfg_listener_count(const mqb_config *c);
const mqbi_listener_cfg *mqbi_cfg_listener(const mqb_config *c, size_t i);

const mqb_allocator *mqbi_cfg_allocator(const mqb_config *c);
void mqbi_cfg_log(const mqb_config *c, mqb_log_fn *fn, void **user, mqb_log_level *level);

/* True if the key (a fixed key's name) takes effect without a restart. */
bool mqbi_cfg_key_runtime(const char *key);

/* Deep copy (the broker keeps its own). */
mqb_err mqbi_config_clone(const mqb_config *src, mqb_config **out);

#endif
