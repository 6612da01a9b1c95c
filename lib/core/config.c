/*
 * The configuration registry. One constant table of typed keys drives
 * parsing, validation, defaults, get, visit (and so the generated docs) and
 * environment overrides. Listener keys ("listener.<type>.<name>[.<sub-key>]")
 * form families described by a second table, so a new listener type (ssl,
 * ws, ...) adds rows, not code.
 *
 * A configuration is not thread-safe: the host fills it in, then the broker
 * takes a deep copy (mqbi_config_clone) and only reads its own copy.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/config.h"
#include "util/alloc.h"

#define KIB     INT64_C(1024)
#define MIB     (KIB * 1024)
#define GIB     (MIB * 1024)
#define MS_SEC  INT64_C(1000)
#define MS_MIN  (MS_SEC * 60)
#define MS_HOUR (MS_MIN * 60)
#define MS_DAY  (MS_HOUR * 24)
/* MQTT 5 intervals are 32-bit counts of seconds. */
#define DURATION_MAX (INT64_C(4294967295) * MS_SEC)
/* A config file larger than this is certainly a mistake (wrong path). */
#define FILE_MAX (16 * MIB)

typedef enum cfg_type {
	CFG_BOOL,
	CFG_INT,
	CFG_SIZE,     /* bytes; text "64KB", "1MB" */
	CFG_DURATION, /* milliseconds; text "500ms", "30s", plain number = seconds */
	CFG_STRING,   /* min/max bound the length */
	CFG_ENUM,     /* index into `values` */
	CFG_RATIO,    /* per-mille; text "1.5" */
	CFG_ADDRESS   /* a listener's "[host:]port" */
} cfg_type;

typedef struct cfg_def {
	const char *key;
	cfg_type type;
	const char *def; /* default, in canonical text form (what get returns) */
	int64_t min, max;
	/* CFG_ENUM: the allowed values "a|b|c" (index = stored value);
	 * CFG_STRING: characters that may not appear. */
	const char *values;
	const char *doc;
	/* Takes effect for new connections and packets without a restart. */
	bool runtime;
} cfg_def;

/* Indexed by mqbi_cfg_key, so the order is the one config.h declares. */
static const cfg_def registry[] = {
        [MQBI_K_NODE_NAME] = {"node.name", CFG_STRING, "mqb@127.0.0.1", 1, 255, "/+#",
                              "Name of this node in $SYS topics and in a cluster.", false},
        [MQBI_K_LOOP_THREADS] = {"node.loop_threads", CFG_INT, "0", 0, 1024, NULL,
                                 "Event-loop threads; 0 = one per CPU core.", false},
        [MQBI_K_LOG_LEVEL] = {"log.level", CFG_ENUM, "notice", 0, 0,
                              "error|warning|notice|info|debug",
                              "Most verbose level passed to the log callback.", true},
        [MQBI_K_ALLOW_ANONYMOUS] = {"allow_anonymous", CFG_ENUM, "loopback", 0, 0,
                                    "loopback|true|false",
                                    "Accept clients without credentials; loopback = only from "
                                    "127.0.0.0/8 and ::1.",
                                    true},
        [MQBI_K_MAX_PACKET_SIZE] = {"mqtt.max_packet_size", CFG_SIZE, "1MB", 16, 256 * MIB, NULL,
                                    "Largest MQTT packet accepted from or sent to a client.", true},
        [MQBI_K_MAX_CLIENTID_LEN] = {"mqtt.max_clientid_len", CFG_INT, "65535", 23, 65535, NULL,
                                     "Longest client identifier accepted.", true},
        [MQBI_K_MAX_TOPIC_LEVELS] = {"mqtt.max_topic_levels", CFG_INT, "128", 0, 65535, NULL,
                                     "Most levels in a topic name or filter; 0 = unlimited.", true},
        [MQBI_K_MAX_QOS] = {"mqtt.max_qos_allowed", CFG_INT, "2", 0, 2, NULL,
                            "Highest QoS accepted on publish and granted to subscriptions.", true},
        [MQBI_K_MAX_TOPIC_ALIAS] = {"mqtt.max_topic_alias", CFG_INT, "65535", 0, 65535, NULL,
                                    "Topic Alias Maximum offered to MQTT 5 clients; 0 = none.",
                                    false},
        [MQBI_K_RETAIN_AVAILABLE] = {"mqtt.retain_available", CFG_BOOL, "true", 0, 1, NULL,
                                     "Support retained messages.", true},
        [MQBI_K_WILDCARD_SUB] = {"mqtt.wildcard_subscription", CFG_BOOL, "true", 0, 1, NULL,
                                 "Allow the wildcards + and # in topic filters.", true},
        [MQBI_K_SHARED_SUB] = {"mqtt.shared_subscription", CFG_BOOL, "true", 0, 1, NULL,
                               "Allow shared subscriptions ($share/group/filter).", true},
        [MQBI_K_SUB_ID_AVAILABLE] = {"mqtt.subscription_identifiers", CFG_BOOL, "true", 0, 1, NULL,
                                     "Support MQTT 5 Subscription Identifiers.", true},
        [MQBI_K_SHARED_STRATEGY] = {"mqtt.shared_subscription_strategy", CFG_ENUM, "round_robin", 0,
                                    0, "random|round_robin|sticky|hash_clientid|hash_topic",
                                    "How a shared subscription group picks the member that "
                                    "receives a message.",
                                    true},
        [MQBI_K_RECEIVE_MAX] = {"mqtt.receive_maximum", CFG_INT, "65535", 1, 65535, NULL,
                                "QoS 1/2 PUBLISH packets a client may have in flight to the "
                                "broker (MQTT 5 Receive Maximum).",
                                false},
        [MQBI_K_MAX_INFLIGHT] = {"mqtt.max_inflight", CFG_INT, "32", 1, 65535, NULL,
                                 "QoS 1/2 deliveries in flight to one client; further messages "
                                 "queue.",
                                 false},
        [MQBI_K_MAX_AWAITING_REL] = {"mqtt.max_awaiting_rel", CFG_INT, "100", 0, 65535, NULL,
                                     "QoS 2 messages from one client awaiting PUBREL; "
                                     "0 = unlimited.",
                                     true},
        [MQBI_K_AWAIT_REL_TIMEOUT] = {"mqtt.await_rel_timeout", CFG_DURATION, "5m", MS_SEC,
                                      DURATION_MAX, NULL,
                                      "How long a QoS 2 message waits for PUBREL before it is "
                                      "dropped.",
                                      true},
        [MQBI_K_MAX_MQUEUE_LEN] = {"mqtt.max_mqueue_len", CFG_INT, "1000", 0, INT32_MAX, NULL,
                                   "Messages queued per session (client offline or its inflight "
                                   "window full); 0 = unlimited.",
                                   true},
        [MQBI_K_MAX_MQUEUE_BYTES] = {"mqtt.max_mqueue_bytes", CFG_SIZE, "0", 0, INT64_MAX, NULL,
                                     "Payload bytes queued per session; 0 = unlimited.", true},
        [MQBI_K_BACKPRESSURE_QUEUE_LEN] =
                {"mqtt.backpressure_queue_len", CFG_INT, "500", 0, INT32_MAX, NULL,
                 "Flow control: when a connected client's queue reaches this many messages, "
                 "the broker stops reading from the clients whose QoS 1/2 messages go to it "
                 "until the queue is back to half; 0 = off (full queues drop, counted).",
                 true},
        [MQBI_K_BACKPRESSURE_MAX_HOLD] =
                {"mqtt.backpressure_max_hold", CFG_DURATION, "1s", 1, MS_DAY, NULL,
                 "Flow control: the longest a publisher is held back at a time; then the "
                 "queue limits decide.",
                 true},
        [MQBI_K_MQUEUE_STORE_QOS0] = {"mqtt.mqueue_store_qos0", CFG_BOOL, "true", 0, 1, NULL,
                                      "Queue QoS 0 messages for offline sessions too.", true},
        [MQBI_K_SESSION_EXPIRY] = {"mqtt.session_expiry_interval", CFG_DURATION, "2h", 0,
                                   DURATION_MAX, NULL,
                                   "How long the session of an MQTT 3.x client with clean "
                                   "session = 0 outlives its connection.",
                                   true},
        [MQBI_K_MAX_SESSION_EXPIRY] = {"mqtt.max_session_expiry", CFG_DURATION, "0", 0,
                                       DURATION_MAX, NULL,
                                       "Cap on the Session Expiry Interval MQTT 5 clients ask "
                                       "for; 0 = no cap.",
                                       true},
        [MQBI_K_MAX_KEEPALIVE] = {"mqtt.max_keepalive", CFG_INT, "65535", 1, 65535, NULL,
                                  "Longest keepalive in seconds; a longer one is answered with "
                                  "Server Keep Alive (MQTT 5) or refused (3.x).",
                                  true},
        [MQBI_K_SERVER_KEEPALIVE] = {"mqtt.server_keepalive", CFG_INT, "0", 0, 65535, NULL,
                                     "Keepalive in seconds imposed on MQTT 5 clients; 0 = use "
                                     "the client's.",
                                     true},
        [MQBI_K_KEEPALIVE_BACKOFF] = {"mqtt.keepalive_backoff", CFG_RATIO, "1.5", 1000, 3000, NULL,
                                      "A client silent for keepalive times this factor is "
                                      "disconnected.",
                                      true},
        [MQBI_K_IDLE_TIMEOUT] = {"mqtt.idle_timeout", CFG_DURATION, "15s", 100, MS_DAY, NULL,
                                 "How long a new connection may take to send CONNECT.", true},
        [MQBI_K_MAX_SUBSCRIPTIONS] = {"mqtt.max_subscriptions", CFG_INT, "0", 0, INT32_MAX, NULL,
                                      "Subscriptions per client; 0 = unlimited.", true},
        [MQBI_K_SYS_INTERVAL] = {"sys.interval", CFG_DURATION, "1m", 0, MS_DAY, NULL,
                                 "Period of the $SYS statistics messages; 0 = none.", true},
        [MQBI_K_DRAIN_TIMEOUT] = {"node.drain_timeout", CFG_DURATION, "5s", 0, MS_DAY, NULL,
                                  "At stop, how long clients' pending output may take to flush "
                                  "before their connections close.",
                                  true},
        [MQBI_K_PERSIST_ENABLE] = {"persistence.enable", CFG_BOOL, "false", 0, 1, NULL,
                                   "Keep retained messages, sessions with an expiry, their "
                                   "queues and in-flight messages in a database "
                                   "(persistence.path), so that they survive a restart or a "
                                   "crash. broker-cli turns it on (--data-dir).",
                                   false},
        [MQBI_K_PERSIST_PATH] = {"persistence.path", CFG_STRING, "", 0, 4095, NULL,
                                 "The SQLite database file; created if missing.", false},
        [MQBI_K_PERSIST_SYNC] = {"persistence.sync", CFG_ENUM, "always", 0, 0, "always|batch|off",
                                 "always: a QoS 1/2 message is acknowledged only once it is on "
                                 "disk (fsync; many messages per commit); batch: written every "
                                 "flush_interval, a crash loses at most that much, power loss "
                                 "what the OS had not written; off: like batch without fsync.",
                                 false},
        [MQBI_K_PERSIST_FLUSH_INTERVAL] = {"persistence.flush_interval", CFG_DURATION, "100ms", 1,
                                           MS_MIN, NULL,
                                           "With sync = batch or off: time between commits.",
                                           false},
        [MQBI_K_PERSIST_MAX_BYTES] = {"persistence.max_bytes", CFG_SIZE, "1GB", 0, INT64_MAX, NULL,
                                      "Disk budget: bytes of stored messages and records "
                                      "in total (0 = no budget, the disk is the limit).",
                                      false},
        [MQBI_K_PERSIST_OVERFLOW] = {"persistence.overflow", CFG_ENUM, "drop_oldest", 0, 0,
                                     "drop_oldest|refuse",
                                     "When the disk budget or a session's queue limit "
                                     "(mqtt.max_mqueue_len / max_mqueue_bytes) is reached: drop "
                                     "the oldest queued messages, or refuse new ones (MQTT 5 "
                                     "publishers get reason 0x97; counted either way).",
                                     false},
        [MQBI_K_PERSIST_MAX_FILE_SIZE] = {"persistence.max_file_size", CFG_SIZE, "0", 0, INT64_MAX,
                                          NULL,
                                          "Hard limit on the database file; reaching it acts as "
                                          "a full disk (0 = none).",
                                          false},
        [MQBI_K_PERSIST_QUEUE_WINDOW] = {"persistence.queue_window", CFG_INT, "1000", 16, 1000000,
                                         NULL,
                                         "Queued messages of a stored session kept in RAM; the "
                                         "rest of its queue stays on disk until needed.",
                                         false},
        [MQBI_K_PERSIST_CHECKPOINT_PAGES] = {"persistence.checkpoint_pages", CFG_INT, "1000", 0,
                                             INT32_MAX, NULL,
                                             "Write-ahead-log pages after which it is folded "
                                             "into the database (checkpoint); 0 = SQLite's "
                                             "default.",
                                             false},
        [MQBI_K_PERSIST_ON_CORRUPT] = {"persistence.on_corrupt", CFG_ENUM, "refuse", 0, 0,
                                       "refuse|move_aside",
                                       "A database file that is corrupt or not ours: refuse to "
                                       "start, or rename it aside (*.corrupt-<time>) and start "
                                       "empty.",
                                       false},
        [MQBI_K_PERSIST_CHECK_ON_START] = {"persistence.check_on_start", CFG_BOOL, "true", 0, 1,
                                           NULL,
                                           "Check the whole database file for damage at start "
                                           "(about 2 ms per MB). false starts a large store "
                                           "faster; damage is then found when the damaged part "
                                           "is read or written, and logged as a store error.",
                                           false},
};
_Static_assert(sizeof registry / sizeof registry[0] == MQBI_K__COUNT,
               "every mqbi_cfg_key needs a registry row");

/* ---- listener families ---- */

/* A sub-key "listener.<type>.<name>.<sub>": a number stored in an int64_t
 * field, or (CFG_STRING) text in a char array of def.max + 1 bytes. */
typedef struct listener_subkey {
	cfg_def def; /* def.key is the sub-key's name */
	size_t offset;
} listener_subkey;

#define LFIELD(f)    offsetof(mqbi_listener_cfg, f)
#define LTEXT_MAX(f) ((int64_t)sizeof(((mqbi_listener_cfg *)0)->f) - 1)
#define LTEXT(f, def, doc)                                                                         \
	{                                                                                          \
		{#f, CFG_STRING, def, 0, LTEXT_MAX(f), NULL, doc, false}, LFIELD(f)                \
	}

static const listener_subkey common_subkeys[] = {
        {{"max_connections", CFG_INT, "1024000", 1, INT32_MAX, NULL,
          "Most concurrent connections on this listener.", false},
         LFIELD(max_connections)},
};

static const listener_subkey proxy_subkeys[] = {
        {{"proxy_protocol", CFG_BOOL, "false", 0, 1, NULL,
          "Every connection starts with a PROXY protocol v1 or v2 header (from a load "
          "balancer); its source address becomes the client's address. A connection without "
          "one is refused.",
          false},
         LFIELD(proxy_protocol)},
        {{"proxy_protocol_timeout", CFG_DURATION, "3s", 100, MS_HOUR, NULL,
          "How long a connection may take to send its PROXY header.", false},
         LFIELD(proxy_protocol_timeout)},
};

static const listener_subkey tls_subkeys[] = {
        LTEXT(certfile, "",
              "Server certificate chain (PEM): the certificate first, then "
              "intermediates. Required."),
        LTEXT(keyfile, "", "Private key of the certificate (PEM or DER). Required."),
        LTEXT(key_password, "", "Password of an encrypted keyfile."),
        LTEXT(cacertfile, "",
              "CA certificates (PEM) that client certificates are verified "
              "against."),
        LTEXT(cacertdir, "", "A directory of CA certificate files, in addition to cacertfile."),
        {{"verify", CFG_ENUM, "verify_none", 0, 0, "verify_none|verify_peer",
          "verify_peer asks for a client certificate and refuses one that does not verify "
          "against the CAs.",
          false},
         LFIELD(verify)},
        {{"fail_if_no_peer_cert", CFG_BOOL, "false", 0, 1, NULL,
          "With verify_peer: refuse a client that sends no certificate.", false},
         LFIELD(fail_if_no_peer_cert)},
        LTEXT(tls_versions, "tlsv1.2",
              "Accepted versions, comma-separated: tlsv1.2, tlsv1.1, "
              "tlsv1 (TLS 1.3 needs mbedTLS 3; Debian 12 has 2.28)."),
        LTEXT(ciphers, "",
              "Cipher suites in order of preference, comma-separated, IANA or "
              "mbedTLS names (TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256); empty = "
              "mbedTLS's defaults."),
        LTEXT(alpn, "", "ALPN protocols offered, comma-separated (e.g. mqtt); empty = no ALPN."),
        LTEXT(psk_file, "",
              "Pre-shared keys, one 'identity:hexkey' per line; enables the PSK "
              "cipher suites."),
        LTEXT(sni_certs, "",
              "Certificates chosen by SNI server name: "
              "'host=certfile,keyfile; host2=...'. Other names get certfile."),
        {{"reuse_sessions", CFG_BOOL, "true", 0, 1, NULL,
          "TLS session resumption by session tickets and a session cache.", false},
         LFIELD(reuse_sessions)},
        {{"handshake_timeout", CFG_DURATION, "15s", 100, MS_HOUR, NULL,
          "A TLS handshake not finished in this time is dropped.", false},
         LFIELD(handshake_timeout)},
        {{"peer_cert_as_username", CFG_ENUM, "off", 0, 0, "off|cn|dn|san",
          "Use the client certificate's Common Name, Distinguished Name or first Subject "
          "Alternative Name as the username.",
          false},
         LFIELD(peer_cert_as_username)},
        {{"peer_cert_as_clientid", CFG_ENUM, "off", 0, 0, "off|cn|dn|san",
          "Use the client certificate's CN, DN or first SAN as the client id.", false},
         LFIELD(peer_cert_as_clientid)},
};

static const listener_subkey ws_subkeys[] = {
        LTEXT(mqtt_path, "/mqtt", "HTTP path of the WebSocket endpoint (must start with '/')."),
        {{"max_frame_size", CFG_SIZE, "0", 0, 256 * MIB, NULL,
          "Largest WebSocket frame payload accepted; a larger one closes the connection with "
          "code 1009. 0 = no limit but the MQTT packet size.",
          false},
         LFIELD(max_frame_size)},
        {{"fail_if_no_subprotocol", CFG_BOOL, "true", 0, 1, NULL,
          "Refuse an upgrade request that offers no subprotocol (MQTT clients offer mqtt or "
          "mqttv3.1; an offer of neither is always refused).",
          false},
         LFIELD(fail_if_no_subprotocol)},
        LTEXT(proxy_address_header, "",
              "HTTP header holding the real client address behind a reverse proxy (e.g. "
              "X-Forwarded-For: its first address is taken); empty = not used. Only for "
              "listeners that only a trusted proxy can reach."),
        LTEXT(proxy_port_header, "",
              "HTTP header holding the real client port (e.g. "
              "X-Forwarded-Port); empty = not used."),
};

#define GROUP(g)                                                                                   \
	{                                                                                          \
		g, sizeof g / sizeof g[0]                                                          \
	}
typedef struct subkey_group {
	const listener_subkey *v;
	size_t n;
} subkey_group;

typedef struct listener_family {
	const char *type;
	const char *doc; /* of the address key */
	subkey_group groups[4];
} listener_family;

static const listener_family families[] = {
        {"tcp",
         "MQTT over TCP: [host:]port, or off. Host: IPv4, [IPv6] or localhost; "
         "a port alone listens on all interfaces (0.0.0.0). Port 0 = ephemeral.",
         {GROUP(common_subkeys), GROUP(proxy_subkeys)}},
        {"ssl",
         "MQTT over TLS (usually port 8883): [host:]port, or off, as for tcp.",
         {GROUP(common_subkeys), GROUP(proxy_subkeys), GROUP(tls_subkeys)}},
        {"ws",
         "MQTT over WebSocket (usually port 8083): [host:]port, or off, as for tcp.",
         {GROUP(common_subkeys), GROUP(proxy_subkeys), GROUP(ws_subkeys)}},
        {"wss",
         "MQTT over WebSocket over TLS (usually port 8084): [host:]port, or off, as for tcp.",
         {GROUP(common_subkeys), GROUP(proxy_subkeys), GROUP(tls_subkeys), GROUP(ws_subkeys)}},
};
#define NFAMILIES (sizeof families / sizeof families[0])

/* The i-th sub-key of a family, or NULL past the last. */
static const listener_subkey *family_subkey(const listener_family *f, size_t i)
{
	for (size_t g = 0; g < sizeof f->groups / sizeof f->groups[0]; g++) {
		if (i < f->groups[g].n)
			return &f->groups[g].v[i];
		i -= f->groups[g].n;
	}
	return NULL;
}

/* Listeners a fresh configuration has; loopback only, so that a broker
 * started without configuration is not reachable from the network. */
static const struct builtin_listener {
	const char *type, *name, *address;
} builtin_listeners[] = {
        {"tcp", "default", "127.0.0.1:1883"},
};
#define NBUILTINS (sizeof builtin_listeners / sizeof builtin_listeners[0])

static const cfg_def address_def = {"", CFG_ADDRESS, "off", 0, 65535, NULL, NULL, false};

struct mqb_config {
	mqb_allocator alloc;
	int64_t ival[MQBI_K__COUNT];
	char *sval[MQBI_K__COUNT]; /* CFG_STRING keys only */
	mqbi_listener_cfg *listeners;
	size_t nlisteners, listeners_cap;
	mqb_log_fn log_fn;
	void *log_user;
};

/* ---- small helpers ---- */

static void errf(char *err, size_t errlen, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static void errf(char *err, size_t errlen, const char *fmt, ...)
{
	if (!err || !errlen)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Parses decimal digits at *p; returns false if there are none or on
 * overflow (then *overflow is set). */
static bool parse_digits(const char **p, uint64_t *out, bool *overflow)
{
	const char *s = *p;
	uint64_t v = 0;
	*overflow = false;
	if (!isdigit((unsigned char)*s))
		return false;
	for (; isdigit((unsigned char)*s); s++) {
		unsigned d = (unsigned)(*s - '0');
		if (v > (UINT64_MAX - d) / 10)
			*overflow = true;
		else
			v = v * 10 + d;
	}
	*p = s;
	*out = v;
	return !*overflow;
}

/* Index of `word` in "a|b|c" (case-insensitive), or -1. */
static int enum_index(const char *values, const char *word)
{
	size_t wlen = strlen(word);
	int i = 0;
	for (const char *v = values;; i++) {
		const char *bar = strchr(v, '|');
		size_t len = bar ? (size_t)(bar - v) : strlen(v);
		if (len == wlen && strncasecmp(v, word, len) == 0)
			return i;
		if (!bar)
			return -1;
		v = bar + 1;
	}
}

/* Writes the i-th value of "a|b|c" to buf. */
static void enum_name(const char *values, int64_t idx, char *buf, size_t n)
{
	const char *v = values;
	for (int64_t i = 0; i < idx && v; i++) {
		v = strchr(v, '|');
		if (v)
			v++;
	}
	if (!v) {
		snprintf(buf, n, "%" PRId64, idx);
		return;
	}
	const char *bar = strchr(v, '|');
	int len = bar ? (int)(bar - v) : (int)strlen(v);
	snprintf(buf, n, "%.*s", len, v);
}

/* "a|b|c" -> "a, b, c" */
static void enum_list(const char *values, char *buf, size_t n)
{
	size_t o = 0;
	for (const char *v = values; *v && o + 3 < n; v++) {
		if (*v == '|') {
			buf[o++] = ',';
			buf[o++] = ' ';
		} else {
			buf[o++] = *v;
		}
	}
	buf[o < n ? o : n - 1] = '\0';
}

/* ---- text forms ---- */

static void format_size(int64_t v, char *buf, size_t n)
{
	if (v != 0 && v % GIB == 0)
		snprintf(buf, n, "%" PRId64 "GB", v / GIB);
	else if (v != 0 && v % MIB == 0)
		snprintf(buf, n, "%" PRId64 "MB", v / MIB);
	else if (v != 0 && v % KIB == 0)
		snprintf(buf, n, "%" PRId64 "KB", v / KIB);
	else
		snprintf(buf, n, "%" PRId64, v);
}

static void format_duration(int64_t ms, char *buf, size_t n)
{
	static const struct {
		int64_t ms;
		const char *unit;
	} units[] = {{MS_DAY, "d"}, {MS_HOUR, "h"}, {MS_MIN, "m"}, {MS_SEC, "s"}};
	if (ms == 0) {
		snprintf(buf, n, "0");
		return;
	}
	for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
		if (ms % units[i].ms == 0) {
			snprintf(buf, n, "%" PRId64 "%s", ms / units[i].ms, units[i].unit);
			return;
		}
	}
	snprintf(buf, n, "%" PRId64 "ms", ms);
}

static void format_ratio(int64_t pm, char *buf, size_t n)
{
	int64_t frac = pm % 1000;
	if (frac == 0)
		snprintf(buf, n, "%" PRId64 ".0", pm / 1000);
	else if (frac % 100 == 0)
		snprintf(buf, n, "%" PRId64 ".%" PRId64, pm / 1000, frac / 100);
	else if (frac % 10 == 0)
		snprintf(buf, n, "%" PRId64 ".%02" PRId64, pm / 1000, frac / 10);
	else
		snprintf(buf, n, "%" PRId64 ".%03" PRId64, pm / 1000, frac);
}

/* Text form of a stored number of the given type. */
static void format_value(const cfg_def *d, int64_t v, char *buf, size_t n)
{
	switch (d->type) {
	case CFG_BOOL:
		snprintf(buf, n, "%s", v ? "true" : "false");
		return;
	case CFG_SIZE:
		format_size(v, buf, n);
		return;
	case CFG_DURATION:
		format_duration(v, buf, n);
		return;
	case CFG_ENUM:
		enum_name(d->values, v, buf, n);
		return;
	case CFG_RATIO:
		format_ratio(v, buf, n);
		return;
	default:
		snprintf(buf, n, "%" PRId64, v);
		return;
	}
}

/* "0..2", "16..256MB", ">= 0" */
static void format_range(const cfg_def *d, char *buf, size_t n)
{
	char lo[32], hi[32];
	format_value(d, d->min, lo, sizeof lo);
	if (d->max >= INT32_MAX && d->type != CFG_DURATION && d->type != CFG_SIZE) {
		snprintf(buf, n, ">= %s", lo);
		return;
	}
	if (d->max == INT64_MAX) {
		snprintf(buf, n, ">= %s", lo);
		return;
	}
	format_value(d, d->max, hi, sizeof hi);
	snprintf(buf, n, "%s..%s", lo, hi);
}

/* The type column of the docs: "int (0..2)", "enum (a|b)". */
static void format_type(const cfg_def *d, char *buf, size_t n)
{
	char range[80];
	switch (d->type) {
	case CFG_BOOL:
		snprintf(buf, n, "bool");
		return;
	case CFG_STRING:
		snprintf(buf, n, "string");
		return;
	case CFG_ENUM:
		snprintf(buf, n, "enum (%s)", d->values);
		return;
	case CFG_ADDRESS:
		snprintf(buf, n, "listener");
		return;
	default:
		break;
	}
	static const char *const names[] = {[CFG_INT] = "int",
	                                    [CFG_SIZE] = "size",
	                                    [CFG_DURATION] = "duration",
	                                    [CFG_RATIO] = "float"};
	format_range(d, range, sizeof range);
	snprintf(buf, n, "%s (%s)", names[d->type], range);
}

/* ---- parsing one value ---- */

static mqb_err parse_bool(const char *s, int64_t *out)
{
	static const char *const yes[] = {"true", "on", "yes", "1"};
	static const char *const no[] = {"false", "off", "no", "0"};
	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = 1;
			return MQB_OK;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = 0;
			return MQB_OK;
		}
	}
	return MQB_ERR_PARSE;
}

static mqb_err parse_int(const char *s, int64_t *out)
{
	bool neg = false, overflow;
	uint64_t v;
	if (*s == '+' || *s == '-')
		neg = *s++ == '-';
	if (!parse_digits(&s, &v, &overflow))
		return overflow ? MQB_ERR_RANGE : MQB_ERR_PARSE;
	if (*s)
		return MQB_ERR_PARSE;
	if (v > (uint64_t)INT64_MAX + (neg ? 1 : 0))
		return MQB_ERR_RANGE;
	*out = neg ? (int64_t)(0 - v) : (int64_t)v;
	return MQB_OK;
}

/* A number followed by a unit from `units` (multipliers); the empty unit
 * must be in the table. */
typedef struct unit {
	const char *name;
	int64_t mult;
} unit;

static mqb_err parse_with_unit(const char *s, const unit *units, size_t nunits, int64_t *out)
{
	bool overflow;
	uint64_t v;
	if (!parse_digits(&s, &v, &overflow))
		return overflow ? MQB_ERR_RANGE : MQB_ERR_PARSE;
	while (*s == ' ')
		s++;
	for (size_t i = 0; i < nunits; i++) {
		if (strcasecmp(s, units[i].name) != 0)
			continue;
		if (v > (uint64_t)(INT64_MAX / units[i].mult))
			return MQB_ERR_RANGE;
		*out = (int64_t)v * units[i].mult;
		return MQB_OK;
	}
	return MQB_ERR_PARSE;
}

static mqb_err parse_size(const char *s, int64_t *out)
{
	static const unit units[] = {{"", 1},    {"b", 1},    {"k", KIB}, {"kb", KIB},
	                             {"m", MIB}, {"mb", MIB}, {"g", GIB}, {"gb", GIB}};
	return parse_with_unit(s, units, sizeof units / sizeof units[0], out);
}

static mqb_err parse_duration(const char *s, int64_t *out)
{
	static const unit units[] = {{"", MS_SEC},  {"ms", 1},      {"s", MS_SEC},
	                             {"m", MS_MIN}, {"h", MS_HOUR}, {"d", MS_DAY}};
	return parse_with_unit(s, units, sizeof units / sizeof units[0], out);
}

/* "1.5" -> 1500; at most three decimals. */
static mqb_err parse_ratio(const char *s, int64_t *out)
{
	bool overflow;
	uint64_t whole, frac = 0;
	if (!parse_digits(&s, &whole, &overflow))
		return overflow ? MQB_ERR_RANGE : MQB_ERR_PARSE;
	if (*s == '.') {
		const char *f = ++s;
		if (!parse_digits(&s, &frac, &overflow) || s - f > 3)
			return MQB_ERR_PARSE;
		for (ptrdiff_t i = s - f; i < 3; i++)
			frac *= 10;
	}
	if (*s)
		return MQB_ERR_PARSE;
	if (whole > (uint64_t)INT64_MAX / 1000 - 1)
		return MQB_ERR_RANGE;
	*out = (int64_t)(whole * 1000 + frac);
	return MQB_OK;
}

/* The hint after "'x' is not a valid <type>". */
static const char *type_hint(cfg_type t)
{
	switch (t) {
	case CFG_BOOL:
		return "a boolean (true/false, on/off, yes/no, 1/0)";
	case CFG_INT:
		return "an integer";
	case CFG_SIZE:
		return "a size (e.g. 1024, 64KB, 1MB, 2GB)";
	case CFG_DURATION:
		return "a duration (e.g. 500ms, 30s, 15m, 2h, 1d)";
	case CFG_RATIO:
		return "a decimal number (e.g. 1.5)";
	default:
		return "a value of this key";
	}
}

/* Parses `text` as a value of `d` into *out (not for strings and addresses).
 * On error `why` gets the reason without the key. */
static mqb_err parse_value(const cfg_def *d, const char *text, int64_t *out, char *why,
                           size_t whylen)
{
	mqb_err rc;
	int64_t v = 0;
	switch (d->type) {
	case CFG_BOOL:
		rc = parse_bool(text, &v);
		break;
	case CFG_INT:
		rc = parse_int(text, &v);
		break;
	case CFG_SIZE:
		rc = parse_size(text, &v);
		break;
	case CFG_DURATION:
		rc = parse_duration(text, &v);
		break;
	case CFG_RATIO:
		rc = parse_ratio(text, &v);
		break;
	case CFG_ENUM: {
		int i = enum_index(d->values, text);
		if (i < 0) {
			char list[256];
			enum_list(d->values, list, sizeof list);
			errf(why, whylen, "'%s' is not one of: %s", text, list);
			return MQB_ERR_PARSE;
		}
		*out = i;
		return MQB_OK;
	}
	default:
		errf(why, whylen, "not a numeric key");
		return MQB_ERR_INVAL;
	}
	if (rc == MQB_ERR_PARSE) {
		errf(why, whylen, "'%s' is not %s", text, type_hint(d->type));
		return rc;
	}
	if (rc == MQB_OK && (v < d->min || v > d->max))
		rc = MQB_ERR_RANGE;
	if (rc == MQB_ERR_RANGE) {
		char range[80];
		format_range(d, range, sizeof range);
		errf(why, whylen, "%s is out of range (%s)", text, range);
		return rc;
	}
	*out = v;
	return MQB_OK;
}

static mqb_err check_string(const cfg_def *d, const char *text, char *why, size_t whylen)
{
	size_t len = strlen(text);
	if ((int64_t)len < d->min || (int64_t)len > d->max) {
		errf(why, whylen, "'%s' must be %" PRId64 "..%" PRId64 " characters long", text,
		     d->min, d->max);
		return MQB_ERR_RANGE;
	}
	for (const char *p = text; *p; p++) {
		if ((unsigned char)*p < 0x20 || *p == 0x7f ||
		    (d->values && strchr(d->values, *p))) {
			errf(why, whylen, "'%s' may not contain control characters or any of '%s'",
			     text, d->values ? d->values : "");
			return MQB_ERR_PARSE;
		}
	}
	return MQB_OK;
}

/* ---- key lookup and suggestions ---- */

static int find_fixed(const char *key)
{
	for (int k = 0; k < MQBI_K__COUNT; k++)
		if (strcmp(registry[k].key, key) == 0)
			return k;
	return -1;
}

/* Levenshtein distance, or a large number for very long strings. */
static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	size_t row[128];
	if (lb >= sizeof row / sizeof row[0] || la >= 128)
		return SIZE_MAX;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j];
			size_t best = diag + (tolower((unsigned char)a[i - 1]) !=
			                      tolower((unsigned char)b[j - 1]));
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

/* The closest candidate seen so far, if within edit distance 3. */
typedef struct suggestion {
	const char *word;
	size_t dist;
	char best[160];
} suggestion;

static void suggestion_init(suggestion *s, const char *word)
{
	s->word = word;
	s->dist = 4;
	s->best[0] = '\0';
}

static void consider(suggestion *s, const char *cand)
{
	size_t d = edit_distance(s->word, cand);
	if (d < s->dist) {
		s->dist = d;
		snprintf(s->best, sizeof s->best, "%s", cand);
	}
}

/* "; did you mean 'X'?" or "". */
static void suggestion_text(const suggestion *s, char *out, size_t outlen)
{
	if (s->best[0])
		snprintf(out, outlen, "; did you mean '%s'?", s->best);
	else if (outlen)
		out[0] = '\0';
}

/* Candidates: the fixed keys and the keys of the listeners now set. */
static mqb_err unknown_key(const mqb_config *c, const char *key, char *err, size_t errlen)
{
	char hint[200], lkey[160];
	suggestion s;
	suggestion_init(&s, key);
	for (int k = 0; k < MQBI_K__COUNT; k++)
		consider(&s, registry[k].key);
	for (size_t i = 0; i < c->nlisteners; i++) {
		snprintf(lkey, sizeof lkey, "listener.%s.%s", c->listeners[i].type,
		         c->listeners[i].name);
		consider(&s, lkey);
	}
	suggestion_text(&s, hint, sizeof hint);
	errf(err, errlen, "key '%s': unknown key%s", key, hint);
	return MQB_ERR_NOTFOUND;
}

/* ---- lifetime ---- */

static mqb_err set_fixed(mqb_config *c, int k, const char *value, char *err, size_t errlen);
static mqb_err set_listener(mqb_config *c, const char *key, const char *value, char *err,
                            size_t errlen);

static void config_free(mqb_config *c)
{
	for (int k = 0; k < MQBI_K__COUNT; k++)
		mqbi_free(&c->alloc, c->sval[k]);
	mqbi_free(&c->alloc, c->listeners);
}

MQB_API mqb_err mqb_config_create(mqb_config **out, const mqb_allocator *alloc)
{
	if (!out)
		return MQB_ERR_INVAL;
	*out = NULL;
	if (!alloc)
		alloc = &mqbi_default_allocator;
	if (!alloc->malloc_fn || !alloc->realloc_fn || !alloc->free_fn)
		return MQB_ERR_INVAL;
	mqb_config *c = mqbi_calloc(alloc, sizeof *c);
	if (!c)
		return MQB_ERR_NOMEM;
	c->alloc = *alloc;
	for (int k = 0; k < MQBI_K__COUNT; k++) {
		mqb_err rc = set_fixed(c, k, registry[k].def, NULL, 0);
		if (rc != MQB_OK) {
			mqb_config_destroy(c);
			return rc;
		}
	}
	for (size_t i = 0; i < NBUILTINS; i++) {
		char key[96];
		snprintf(key, sizeof key, "listener.%s.%s", builtin_listeners[i].type,
		         builtin_listeners[i].name);
		mqb_err rc = set_listener(c, key, builtin_listeners[i].address, NULL, 0);
		if (rc != MQB_OK) {
			mqb_config_destroy(c);
			return rc;
		}
	}
	*out = c;
	return MQB_OK;
}

MQB_API void mqb_config_destroy(mqb_config *cfg)
{
	if (!cfg)
		return;
	mqb_allocator alloc = cfg->alloc;
	config_free(cfg);
	mqbi_free(&alloc, cfg);
}

mqb_err mqbi_config_clone(const mqb_config *src, mqb_config **out)
{
	if (!src || !out)
		return MQB_ERR_INVAL;
	*out = NULL;
	mqb_config *c = mqbi_calloc(&src->alloc, sizeof *c);
	if (!c)
		return MQB_ERR_NOMEM;
	*c = *src;
	memset(c->sval, 0, sizeof c->sval);
	c->listeners = NULL;
	c->nlisteners = c->listeners_cap = 0;
	for (int k = 0; k < MQBI_K__COUNT; k++) {
		if (!src->sval[k])
			continue;
		c->sval[k] = mqbi_strndup(&c->alloc, src->sval[k], strlen(src->sval[k]));
		if (!c->sval[k])
			goto fail;
	}
	if (src->nlisteners) {
		size_t bytes = src->nlisteners * sizeof *src->listeners;
		c->listeners = mqbi_malloc(&c->alloc, bytes);
		if (!c->listeners)
			goto fail;
		memcpy(c->listeners, src->listeners, bytes);
		c->nlisteners = c->listeners_cap = src->nlisteners;
	}
	*out = c;
	return MQB_OK;
fail:
	mqb_config_destroy(c);
	return MQB_ERR_NOMEM;
}

/* Moves the contents of `scratch` into `cfg` and frees the old contents. */
static void commit(mqb_config *cfg, mqb_config *scratch)
{
	mqb_config old = *cfg;
	*cfg = *scratch;
	*scratch = old;
	mqb_config_destroy(scratch);
}

/* ---- fixed keys ---- */

static mqb_err set_fixed(mqb_config *c, int k, const char *value, char *err, size_t errlen)
{
	const cfg_def *d = &registry[k];
	char why[400];
	mqb_err rc;
	if (d->type == CFG_STRING) {
		rc = check_string(d, value, why, sizeof why);
		if (rc != MQB_OK) {
			errf(err, errlen, "key '%s': %s", d->key, why);
			return rc;
		}
		char *s = mqbi_strndup(&c->alloc, value, strlen(value));
		if (!s)
			return MQB_ERR_NOMEM;
		mqbi_free(&c->alloc, c->sval[k]);
		c->sval[k] = s;
		return MQB_OK;
	}
	int64_t v;
	rc = parse_value(d, value, &v, why, sizeof why);
	if (rc != MQB_OK) {
		errf(err, errlen, "key '%s': %s", d->key, why);
		return rc;
	}
	c->ival[k] = v;
	return MQB_OK;
}

/* ---- listeners ---- */

static const listener_family *find_family(const char *type, size_t len)
{
	for (size_t i = 0; i < NFAMILIES; i++)
		if (strlen(families[i].type) == len && strncmp(families[i].type, type, len) == 0)
			return &families[i];
	return NULL;
}

static mqbi_listener_cfg *find_listener(const mqb_config *c, const char *type, const char *name)
{
	for (size_t i = 0; i < c->nlisteners; i++)
		if (strcmp(c->listeners[i].type, type) == 0 &&
		    strcmp(c->listeners[i].name, name) == 0)
			return &c->listeners[i];
	return NULL;
}

static bool listener_name_valid(const char *name, size_t len)
{
	if (len == 0 || len >= sizeof((mqbi_listener_cfg *)0)->name)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!isalnum((unsigned char)name[i]) && name[i] != '_' && name[i] != '-')
			return false;
	return true;
}

/* "[host:]port" / "[v6]:port" -> host, port. */
static mqb_err parse_address(const char *text, char *host, size_t hostlen, int *port, char *why,
                             size_t whylen)
{
	const char *p = text, *hs = NULL;
	size_t hl = 0;
	if (*p == '[') {
		const char *close = strchr(p, ']');
		if (!close || close[1] != ':') {
			errf(why, whylen, "'%s' is not [IPv6]:port", text);
			return MQB_ERR_PARSE;
		}
		hs = p + 1;
		hl = (size_t)(close - hs);
		p = close + 2;
	} else if (strchr(p, ':')) {
		const char *colon = strrchr(p, ':');
		hs = p;
		hl = (size_t)(colon - p);
		p = colon + 1;
		if (memchr(hs, ':', hl)) {
			errf(why, whylen,
			     "'%s': write an IPv6 address in brackets, e.g. [::1]:1883", text);
			return MQB_ERR_PARSE;
		}
	}
	bool overflow;
	uint64_t v;
	const char *ps = p;
	if (!parse_digits(&p, &v, &overflow) || *p) {
		if (overflow) {
			errf(why, whylen, "port %s is out of range (0..65535)", ps);
			return MQB_ERR_RANGE;
		}
		errf(why, whylen, "'%s' is not [host:]port (e.g. 1883, 127.0.0.1:1883, [::1]:1883)",
		     text);
		return MQB_ERR_PARSE;
	}
	if (v > 65535) {
		errf(why, whylen, "port %s is out of range (0..65535)", ps);
		return MQB_ERR_RANGE;
	}
	if (!hs) {
		/* A port alone listens on every interface, as in EMQX. */
		snprintf(host, hostlen, "0.0.0.0");
		*port = (int)v;
		return MQB_OK;
	}
	char h[64];
	unsigned char addr[16];
	if (hl == 0 || hl >= sizeof h || hl >= hostlen) {
		errf(why, whylen, "'%s' has no valid host", text);
		return MQB_ERR_PARSE;
	}
	memcpy(h, hs, hl);
	h[hl] = '\0';
	bool v6 = *text == '[';
	if (!(v6 ? inet_pton(AF_INET6, h, addr) == 1
	         : (inet_pton(AF_INET, h, addr) == 1 || strcmp(h, "localhost") == 0))) {
		errf(why, whylen, "'%s' is not a numeric %s address%s", h, v6 ? "IPv6" : "IPv4",
		     v6 ? "" : " or localhost");
		return MQB_ERR_PARSE;
	}
	memcpy(host, h, hl + 1);
	*port = (int)v;
	return MQB_OK;
}

static void format_address(const mqbi_listener_cfg *l, char *buf, size_t n)
{
	if (strchr(l->host, ':'))
		snprintf(buf, n, "[%s]:%d", l->host, l->port);
	else
		snprintf(buf, n, "%s:%d", l->host, l->port);
}

static int64_t *subkey_field(mqbi_listener_cfg *l, const listener_subkey *s)
{
	return (int64_t *)((char *)l + s->offset);
}

static char *subkey_text(mqbi_listener_cfg *l, const listener_subkey *s)
{
	return (char *)l + s->offset;
}

static const listener_subkey *find_subkey(const listener_family *f, const char *name)
{
	const listener_subkey *s;
	for (size_t i = 0; (s = family_subkey(f, i)) != NULL; i++)
		if (strcmp(s->def.key, name) == 0)
			return s;
	return NULL;
}

/* Stores a sub-key's value, given as text. */
static mqb_err set_subkey(mqbi_listener_cfg *l, const listener_subkey *s, const char *text,
                          char *why, size_t whylen)
{
	if (s->def.type == CFG_STRING) {
		mqb_err rc = check_string(&s->def, text, why, whylen);
		if (rc == MQB_OK)
			snprintf(subkey_text(l, s), (size_t)s->def.max + 1, "%s", text);
		return rc;
	}
	int64_t v;
	mqb_err rc = parse_value(&s->def, text, &v, why, whylen);
	if (rc == MQB_OK)
		*subkey_field(l, s) = v;
	return rc;
}

static void format_subkey(mqbi_listener_cfg *l, const listener_subkey *s, char *buf, size_t n)
{
	if (s->def.type == CFG_STRING)
		snprintf(buf, n, "%s", subkey_text(l, s));
	else
		format_value(&s->def, *subkey_field(l, s), buf, n);
}

static mqb_err add_listener(mqb_config *c, const listener_family *f, const char *name,
                            mqbi_listener_cfg **out)
{
	if (c->nlisteners == c->listeners_cap) {
		size_t cap = c->listeners_cap ? c->listeners_cap * 2 : 4;
		mqbi_listener_cfg *nl = mqbi_realloc(&c->alloc, c->listeners, cap * sizeof *nl);
		if (!nl)
			return MQB_ERR_NOMEM;
		c->listeners = nl;
		c->listeners_cap = cap;
	}
	mqbi_listener_cfg *l = &c->listeners[c->nlisteners];
	memset(l, 0, sizeof *l);
	snprintf(l->type, sizeof l->type, "%s", f->type);
	snprintf(l->name, sizeof l->name, "%s", name);
	/* Every field gets its default, also those of other families. */
	for (size_t i = 0; i < NFAMILIES; i++) {
		const listener_subkey *s;
		for (size_t j = 0; (s = family_subkey(&families[i], j)) != NULL; j++) {
			mqb_err rc = set_subkey(l, s, s->def.def, NULL, 0);
			if (rc != MQB_OK)
				return rc;
		}
	}
	c->nlisteners++;
	*out = l;
	return MQB_OK;
}

/* A parsed listener key. */
typedef struct listener_key {
	const listener_family *family;
	char name[64];
	const char *sub; /* NULL for the address key */
} listener_key;

static mqb_err parse_listener_key(const char *key, listener_key *lk, char *err, size_t errlen)
{
	const char *type = key + strlen("listener.");
	const char *dot = strchr(type, '.');
	if (!dot) {
		errf(err, errlen, "key '%s': unknown key; listeners are listener.<type>.<name>",
		     key);
		return MQB_ERR_NOTFOUND;
	}
	lk->family = find_family(type, (size_t)(dot - type));
	if (!lk->family) {
		char known[128] = "";
		for (size_t i = 0; i < NFAMILIES; i++)
			snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s",
			         i ? ", " : "", families[i].type);
		errf(err, errlen, "key '%s': unknown listener type '%.*s' (known: %s)", key,
		     (int)(dot - type), type, known);
		return MQB_ERR_NOTFOUND;
	}
	const char *name = dot + 1;
	const char *end = strchr(name, '.');
	size_t nlen = end ? (size_t)(end - name) : strlen(name);
	if (!listener_name_valid(name, nlen)) {
		errf(err, errlen,
		     "key '%s': invalid listener name '%.*s' (1..63 letters, digits, '_' or '-')",
		     key, (int)nlen, name);
		return MQB_ERR_PARSE;
	}
	memcpy(lk->name, name, nlen);
	lk->name[nlen] = '\0';
	lk->sub = end ? end + 1 : NULL;
	return MQB_OK;
}

static mqb_err set_listener(mqb_config *c, const char *key, const char *value, char *err,
                            size_t errlen)
{
	listener_key lk;
	char why[400];
	mqb_err rc = parse_listener_key(key, &lk, err, errlen);
	if (rc != MQB_OK)
		return rc;
	const listener_family *f = lk.family;
	mqbi_listener_cfg *l = find_listener(c, f->type, lk.name);
	if (!lk.sub) {
		if (strcasecmp(value, "off") == 0) {
			if (l) {
				size_t i = (size_t)(l - c->listeners);
				memmove(l, l + 1, (c->nlisteners - i - 1) * sizeof *l);
				c->nlisteners--;
			}
			return MQB_OK;
		}
		char host[sizeof l->host];
		int port;
		rc = parse_address(value, host, sizeof host, &port, why, sizeof why);
		if (rc != MQB_OK) {
			errf(err, errlen, "key '%s': %s", key, why);
			return rc;
		}
		if (!l) {
			rc = add_listener(c, f, lk.name, &l);
			if (rc != MQB_OK)
				return rc;
		}
		memcpy(l->host, host, sizeof l->host);
		l->port = port;
		return MQB_OK;
	}
	const listener_subkey *s = find_subkey(f, lk.sub);
	if (!s) {
		char hint[200];
		suggestion sg;
		suggestion_init(&sg, lk.sub);
		const listener_subkey *cand;
		for (size_t i = 0; (cand = family_subkey(f, i)) != NULL; i++)
			consider(&sg, cand->def.key);
		suggestion_text(&sg, hint, sizeof hint);
		errf(err, errlen, "key '%s': unknown listener setting '%s'%s", key, lk.sub, hint);
		return MQB_ERR_NOTFOUND;
	}
	if (!l) {
		errf(err, errlen,
		     "key '%s': listener '%s.%s' is not defined; set listener.%s.%s "
		     "= [host:]port first",
		     key, f->type, lk.name, f->type, lk.name);
		return MQB_ERR_NOTFOUND;
	}
	rc = set_subkey(l, s, value, why, sizeof why);
	if (rc != MQB_OK)
		errf(err, errlen, "key '%s': %s", key, why);
	return rc;
}

static bool is_listener_key(const char *key)
{
	return strncmp(key, "listener.", strlen("listener.")) == 0;
}

/* ---- public setters and getters ---- */

static mqb_err set_key(mqb_config *c, const char *key, const char *value, char *err, size_t errlen)
{
	int k = find_fixed(key);
	if (k >= 0)
		return set_fixed(c, k, value, err, errlen);
	if (is_listener_key(key))
		return set_listener(c, key, value, err, errlen);
	return unknown_key(c, key, err, errlen);
}

MQB_API mqb_err mqb_config_set(mqb_config *cfg, const char *key, const char *value, char *err,
                               size_t errlen)
{
	if (!cfg || !key || !value) {
		errf(err, errlen, "missing argument");
		return MQB_ERR_INVAL;
	}
	return set_key(cfg, key, value, err, errlen);
}

/* The type of a key, or -1 if unknown (listener keys resolved by family). */
static int key_type(const char *key)
{
	int k = find_fixed(key);
	if (k >= 0)
		return (int)registry[k].type;
	if (!is_listener_key(key))
		return -1;
	listener_key lk;
	if (parse_listener_key(key, &lk, NULL, 0) != MQB_OK)
		return -1;
	if (!lk.sub)
		return CFG_ADDRESS;
	const listener_subkey *s = find_subkey(lk.family, lk.sub);
	return s ? (int)s->def.type : -1;
}

MQB_API mqb_err mqb_config_set_int(mqb_config *cfg, const char *key, int64_t value)
{
	if (!cfg || !key)
		return MQB_ERR_INVAL;
	int t = key_type(key);
	if (t < 0)
		return MQB_ERR_NOTFOUND;
	/* The number means what its text form means: seconds for durations,
	 * bytes for sizes, a whole factor for ratios. */
	if (t == CFG_STRING || t == CFG_ENUM || t == CFG_ADDRESS)
		return MQB_ERR_INVAL;
	char text[32];
	snprintf(text, sizeof text, "%" PRId64, value);
	return set_key(cfg, key, text, NULL, 0);
}

MQB_API mqb_err mqb_config_set_bool(mqb_config *cfg, const char *key, int value)
{
	if (!cfg || !key)
		return MQB_ERR_INVAL;
	int t = key_type(key);
	if (t < 0)
		return MQB_ERR_NOTFOUND;
	/* Enums whose values include true/false (allow_anonymous) take a bool. */
	if (t != CFG_BOOL && t != CFG_ENUM)
		return MQB_ERR_INVAL;
	return set_key(cfg, key, value ? "true" : "false", NULL, 0);
}

MQB_API mqb_err mqb_config_get(const mqb_config *cfg, const char *key, char *buf, size_t buflen)
{
	if (!cfg || !key)
		return MQB_ERR_INVAL;
	int k = find_fixed(key);
	if (k >= 0) {
		if (registry[k].type == CFG_STRING)
			snprintf(buf, buflen, "%s", cfg->sval[k]);
		else
			format_value(&registry[k], cfg->ival[k], buf, buflen);
		return MQB_OK;
	}
	listener_key lk;
	if (!is_listener_key(key) || parse_listener_key(key, &lk, NULL, 0) != MQB_OK)
		return MQB_ERR_NOTFOUND;
	mqbi_listener_cfg *l = find_listener(cfg, lk.family->type, lk.name);
	if (!lk.sub) {
		/* Any well-formed listener name is a valid key: absent means off. */
		if (l)
			format_address(l, buf, buflen);
		else
			snprintf(buf, buflen, "off");
		return MQB_OK;
	}
	const listener_subkey *s = find_subkey(lk.family, lk.sub);
	if (!s || !l)
		return MQB_ERR_NOTFOUND;
	format_subkey(l, s, buf, buflen);
	return MQB_OK;
}

MQB_API void mqb_config_visit(const mqb_config *cfg, mqb_config_visit_fn fn, void *user)
{
	char value[MQBI_CFG_LIST + 64], type[160], key[160];
	if (!cfg || !fn)
		return;
	for (int k = 0; k < MQBI_K__COUNT; k++) {
		const cfg_def *d = &registry[k];
		mqb_config_get(cfg, d->key, value, sizeof value);
		format_type(d, type, sizeof type);
		/* Keys that mqb_broker_reconfigure() (SIGHUP) applies at run time. */
		if (d->runtime) {
			size_t len = strlen(type);
			snprintf(type + len, sizeof type - len, ", reloadable");
		}
		fn(user, d->key, value, d->def, type, d->doc);
	}
	/* A removed built-in listener is listed as off so that printed
	 * configurations read back the same. */
	for (size_t i = 0; i < NBUILTINS; i++) {
		const struct builtin_listener *b = &builtin_listeners[i];
		if (find_listener(cfg, b->type, b->name))
			continue;
		const listener_family *f = find_family(b->type, strlen(b->type));
		snprintf(key, sizeof key, "listener.%s.%s", b->type, b->name);
		format_type(&address_def, type, sizeof type);
		fn(user, key, "off", b->address, type, f->doc);
	}
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		mqbi_listener_cfg *l = &cfg->listeners[i];
		const listener_family *f = find_family(l->type, strlen(l->type));
		const char *addr_def = "off";
		for (size_t j = 0; j < NBUILTINS; j++)
			if (strcmp(builtin_listeners[j].type, l->type) == 0 &&
			    strcmp(builtin_listeners[j].name, l->name) == 0)
				addr_def = builtin_listeners[j].address;
		snprintf(key, sizeof key, "listener.%s.%s", l->type, l->name);
		format_address(l, value, sizeof value);
		format_type(&address_def, type, sizeof type);
		fn(user, key, value, addr_def, type, f->doc);
		const listener_subkey *s;
		for (size_t j = 0; (s = family_subkey(f, j)) != NULL; j++) {
			snprintf(key, sizeof key, "listener.%s.%s.%s", l->type, l->name,
			         s->def.key);
			format_subkey(l, s, value, sizeof value);
			format_type(&s->def, type, sizeof type);
			fn(user, key, value, s->def.def, type, s->def.doc);
		}
	}
}

MQB_API void mqb_config_set_log(mqb_config *cfg, mqb_log_fn fn, void *user, mqb_log_level level)
{
	if (!cfg)
		return;
	cfg->log_fn = fn;
	cfg->log_user = user;
	/* One level for both: this call and the log.level key. */
	if (level < MQB_LOG_ERROR)
		level = MQB_LOG_ERROR;
	if (level > MQB_LOG_DEBUG)
		level = MQB_LOG_DEBUG;
	cfg->ival[MQBI_K_LOG_LEVEL] = level;
}

/* ---- files ---- */

/* Reads a whole file into an allocator buffer, NUL-terminated. */
static mqb_err read_file(const mqb_allocator *a, const char *path, char **out, size_t *outlen,
                         char *err, size_t errlen)
{
	char ebuf[128];
	FILE *f = fopen(path, "rb");
	if (!f) {
		errf(err, errlen, "%s: cannot open: %s", path,
		     strerror_r(errno, ebuf, sizeof ebuf));
		return MQB_ERR_IO;
	}
	char *buf = NULL;
	size_t len = 0, cap = 0;
	for (;;) {
		if (cap - len < 4096 + 1) {
			size_t ncap = cap ? cap * 2 : 8192;
			char *nb = mqbi_realloc(a, buf, ncap);
			if (!nb) {
				fclose(f);
				mqbi_free(a, buf);
				return MQB_ERR_NOMEM;
			}
			buf = nb;
			cap = ncap;
		}
		size_t n = fread(buf + len, 1, cap - len - 1, f);
		len += n;
		if (len > FILE_MAX) {
			fclose(f);
			mqbi_free(a, buf);
			errf(err, errlen, "%s: file is larger than %d MB", path,
			     (int)(FILE_MAX / MIB));
			return MQB_ERR_RANGE;
		}
		if (n == 0)
			break;
	}
	bool failed = ferror(f);
	int saved = errno;
	fclose(f);
	if (failed) {
		mqbi_free(a, buf);
		errf(err, errlen, "%s: cannot read: %s", path,
		     strerror_r(saved, ebuf, sizeof ebuf));
		return MQB_ERR_IO;
	}
	buf[len] = '\0';
	*out = buf;
	*outlen = len;
	return MQB_OK;
}

static char *trim(char *s)
{
	while (is_space(*s))
		s++;
	size_t n = strlen(s);
	while (n && is_space(s[n - 1]))
		s[--n] = '\0';
	return s;
}

/* Turns the text after '=' into the value: strips a trailing comment
 * ('#' after whitespace) and the quotes of a "quoted value" (\" and \\ are
 * escapes inside). Works in place. */
static const char *line_value(char *v, const char **why)
{
	v = trim(v);
	if (*v != '"') {
		for (char *p = v; *p; p++) {
			if (*p == '#' && p > v && (p[-1] == ' ' || p[-1] == '\t')) {
				*p = '\0';
				break;
			}
		}
		return trim(v);
	}
	char *o = v, *p = v + 1;
	for (; *p && *p != '"'; p++) {
		if (*p == '\\' && (p[1] == '"' || p[1] == '\\'))
			p++;
		*o++ = *p;
	}
	if (*p != '"') {
		*why = "unterminated quoted value";
		return NULL;
	}
	for (p++; *p == ' ' || *p == '\t'; p++)
		;
	if (*p && *p != '#') {
		*why = "unexpected text after the quoted value";
		return NULL;
	}
	*o = '\0';
	return v;
}

/* Applies every line of `text` to `c`; stops at the first bad line. */
static mqb_err apply_lines(mqb_config *c, const char *path, char *text, char *err, size_t errlen)
{
	char inner[512];
	unsigned lineno = 0;
	char *line = text;
	if ((unsigned char)line[0] == 0xEF && (unsigned char)line[1] == 0xBB &&
	    (unsigned char)line[2] == 0xBF)
		line += 3; /* UTF-8 byte-order mark */
	while (line) {
		char *nl = strchr(line, '\n');
		if (nl)
			*nl = '\0';
		lineno++;
		char *s = trim(line);
		line = nl ? nl + 1 : NULL;
		if (*s == '\0' || *s == '#')
			continue;
		char *eq = strchr(s, '=');
		if (!eq) {
			errf(err, errlen, "%s:%u: expected 'key = value'", path, lineno);
			return MQB_ERR_PARSE;
		}
		*eq = '\0';
		const char *key = trim(s);
		const char *why = NULL;
		const char *value = line_value(eq + 1, &why);
		if (*key == '\0') {
			errf(err, errlen, "%s:%u: expected 'key = value'", path, lineno);
			return MQB_ERR_PARSE;
		}
		if (!value) {
			errf(err, errlen, "%s:%u: key '%s': %s", path, lineno, key, why);
			return MQB_ERR_PARSE;
		}
		mqb_err rc = set_key(c, key, value, inner, sizeof inner);
		if (rc != MQB_OK) {
			if (rc == MQB_ERR_NOMEM)
				snprintf(inner, sizeof inner, "key '%s': out of memory", key);
			errf(err, errlen, "%s:%u: %s", path, lineno, inner);
			return rc;
		}
	}
	return MQB_OK;
}

MQB_API mqb_err mqb_config_load_file(mqb_config *cfg, const char *path, char *err, size_t errlen)
{
	if (!cfg || !path) {
		errf(err, errlen, "missing argument");
		return MQB_ERR_INVAL;
	}
	char *text;
	size_t len;
	mqb_err rc = read_file(&cfg->alloc, path, &text, &len, err, errlen);
	if (rc != MQB_OK)
		return rc;
	if (memchr(text, '\0', len)) {
		mqbi_free(&cfg->alloc, text);
		errf(err, errlen, "%s: not a text file (contains NUL bytes)", path);
		return MQB_ERR_PARSE;
	}
	/* All or nothing: lines go to a scratch copy committed only if every
	 * line is good. */
	mqb_config *scratch;
	rc = mqbi_config_clone(cfg, &scratch);
	if (rc != MQB_OK) {
		mqbi_free(&cfg->alloc, text);
		return rc;
	}
	rc = apply_lines(scratch, path, text, err, errlen);
	mqbi_free(&cfg->alloc, text);
	if (rc != MQB_OK) {
		mqb_config_destroy(scratch);
		return rc;
	}
	commit(cfg, scratch);
	return MQB_OK;
}

/* ---- environment ---- */

/* True if the key's first segment is one the registry uses ("mqtt", ...),
 * so an unknown MQB_MQTT__... variable is a typo worth reporting while
 * MQB_SOMETHING_ELSE belongs to someone else. */
static bool known_section(const char *key)
{
	const char *dot = strchr(key, '.');
	if (!dot)
		return false;
	size_t len = (size_t)(dot - key);
	if (len == strlen("listener") && strncmp(key, "listener", len) == 0)
		return true;
	for (int k = 0; k < MQBI_K__COUNT; k++)
		if (strncmp(registry[k].key, key, len) == 0 && registry[k].key[len] == '.')
			return true;
	return false;
}

/* MQB_MQTT__MAX_PACKET_SIZE -> mqtt.max_packet_size; false if too long. */
static bool env_to_key(const char *name, size_t len, char *key, size_t keylen)
{
	size_t o = 0;
	for (size_t i = 0; i < len; i++) {
		if (o + 1 >= keylen)
			return false;
		if (name[i] == '_' && i + 1 < len && name[i + 1] == '_') {
			key[o++] = '.';
			i++;
		} else {
			key[o++] = (char)tolower((unsigned char)name[i]);
		}
	}
	key[o] = '\0';
	return true;
}

MQB_API mqb_err mqb_config_apply_env(mqb_config *cfg, char *const *envp, char *err, size_t errlen)
{
	if (!cfg) {
		errf(err, errlen, "missing argument");
		return MQB_ERR_INVAL;
	}
	if (!envp)
		return MQB_OK;
	mqb_config *scratch;
	mqb_err rc = mqbi_config_clone(cfg, &scratch);
	if (rc != MQB_OK)
		return rc;
	/* Pass 0 sets plain keys and listener addresses, pass 1 listener
	 * sub-keys, so a sub-key never depends on the environment's order. */
	for (int pass = 0; pass < 2; pass++) {
		for (char *const *e = envp; *e; e++) {
			const char *eq = strchr(*e, '=');
			if (strncmp(*e, "MQB_", 4) != 0 || !eq)
				continue;
			const char *name = *e + 4;
			size_t nlen = (size_t)(eq - name);
			char key[256], inner[512];
			if (!env_to_key(name, nlen, key, sizeof key)) {
				if (strncmp(name, "LISTENER__", 10) != 0)
					continue;
				errf(err, errlen, "%.*s: name too long", (int)(nlen + 4), *e);
				rc = MQB_ERR_PARSE;
				goto fail;
			}
			bool fixed = find_fixed(key) >= 0;
			if (!fixed && !known_section(key))
				continue;
			bool sub = false;
			if (!fixed && is_listener_key(key)) {
				const char *t = strchr(key + strlen("listener."), '.');
				sub = t && strchr(t + 1, '.');
			}
			if ((pass == 1) != sub)
				continue;
			rc = set_key(scratch, key, eq + 1, inner, sizeof inner);
			if (rc != MQB_OK) {
				if (rc == MQB_ERR_NOMEM)
					snprintf(inner, sizeof inner, "key '%s': out of memory",
					         key);
				errf(err, errlen, "%.*s: %s", (int)(nlen + 4), *e, inner);
				goto fail;
			}
		}
	}
	commit(cfg, scratch);
	return MQB_OK;
fail:
	mqb_config_destroy(scratch);
	return rc;
}

/* ---- internal interface ---- */

bool mqbi_cfg_key_runtime(const char *key)
{
	int k = find_fixed(key);
	return k >= 0 && registry[k].runtime;
}

int64_t mqbi_cfg_int(const mqb_config *c, mqbi_cfg_key k)
{
	if (k < 0 || k >= MQBI_K__COUNT)
		return 0;
	return c->ival[k];
}

const char *mqbi_cfg_str(const mqb_config *c, mqbi_cfg_key k)
{
	if (k < 0 || k >= MQBI_K__COUNT)
		return NULL;
	return c->sval[k];
}

size_t mqbi_cfg_listener_count(const mqb_config *c)
{
	return c->nlisteners;
}

const mqbi_listener_cfg *mqbi_cfg_listener(const mqb_config *c, size_t i)
{
	return i < c->nlisteners ? &c->listeners[i] : NULL;
}

const mqb_allocator *mqbi_cfg_allocator(const mqb_config *c)
{
	return &c->alloc;
}

void mqbi_cfg_log(const mqb_config *c, mqb_log_fn *fn, void **user, mqb_log_level *level)
{
	if (fn)
		*fn = c->log_fn;
	if (user)
		*user = c->log_user;
	if (level)
		*level = (mqb_log_level)c->ival[MQBI_K_LOG_LEVEL];
}
