/*
 * libmqttbroker — an embeddable MQTT 3.1 / 3.1.1 / 5.0 broker.
 *
 * Everything hangs off an mqb_broker: there is no global state, so several
 * brokers may live in one process. Every function returns an mqb_err
 * (MQB_OK == 0) unless it says otherwise. Strings are NUL-terminated UTF-8
 * unless a length is passed beside them. The library never prints, aborts or
 * exits: it logs through the callback set with mqb_config_set_log().
 */
#ifndef MQTTBROKER_H
#define MQTTBROKER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(MQB_BUILDING_LIBRARY) && defined(__GNUC__)
#define MQB_API __attribute__((visibility("default")))
#else
#define MQB_API
#endif

#define MQB_VERSION_MAJOR  0
#define MQB_VERSION_MINOR  1
#define MQB_VERSION_PATCH  0
#define MQB_VERSION_STRING "0.1.0"

/** Error codes. 0 is success; every other value has a text in mqb_strerror(). */
typedef enum mqb_err {
	MQB_OK = 0,
	MQB_ERR_NOMEM,       /* an allocation failed */
	MQB_ERR_INVAL,       /* an argument is invalid */
	MQB_ERR_NOTFOUND,    /* no such key, client, listener, ... */
	MQB_ERR_EXISTS,      /* the name is taken */
	MQB_ERR_RANGE,       /* a value is out of its allowed range */
	MQB_ERR_PARSE,       /* a value or file could not be parsed */
	MQB_ERR_IO,          /* an operating-system call failed (see errno in the log) */
	MQB_ERR_ADDRINUSE,   /* a listener's address is in use */
	MQB_ERR_STATE,       /* the call is not valid in the broker's current state */
	MQB_ERR_UNSUPPORTED, /* not supported by this build or platform */
	MQB_ERR_TIMEOUT,     /* a wait ran out */
	MQB_ERR_DENIED       /* refused by policy (ACL, limits) */
} mqb_err;

/** Returns a static, human-readable text for an error code. Never NULL. */
MQB_API const char *mqb_strerror(mqb_err err);

/** Returns the library version as "MAJOR.MINOR.PATCH" (static string). */
MQB_API const char *mqb_version(void);

/* ------------------------------------------------------------------------ */
/* Logging                                                                   */

typedef enum mqb_log_level {
	MQB_LOG_ERROR = 0,
	MQB_LOG_WARNING,
	MQB_LOG_NOTICE,
	MQB_LOG_INFO,
	MQB_LOG_DEBUG
} mqb_log_level;

/** One log record. `client_id` and `peer` are NULL when the record is not about
 * a client. All pointers are valid only during the callback. */
typedef struct mqb_log_record {
	mqb_log_level level;
	const char *module;    /* "net", "session", "config", ... */
	const char *client_id; /* or NULL */
	const char *peer;      /* "ip:port" or NULL */
	const char *message;
} mqb_log_record;

/** Log callback. Called from any broker thread; must be thread-safe and must not
 * call back into the broker. */
typedef void (*mqb_log_fn)(void *user, const mqb_log_record *rec);

/** Returns "error", "warning", "notice", "info" or "debug". */
MQB_API const char *mqb_log_level_name(mqb_log_level level);

/* ------------------------------------------------------------------------ */
/* Allocator                                                                 */

/** Allocator hooks. Every allocation of a broker made with this config goes
 * through them. `realloc_fn(ctx, NULL, n)` must behave as malloc and
 * `free_fn(ctx, NULL)` must be a no-op. The functions must be thread-safe. */
typedef struct mqb_allocator {
	void *(*malloc_fn)(void *ctx, size_t size);
	void *(*realloc_fn)(void *ctx, void *ptr, size_t size);
	void (*free_fn)(void *ctx, void *ptr);
	void *ctx;
} mqb_allocator;

/* ------------------------------------------------------------------------ */
/* Configuration registry                                                    */

/** A set of configuration values. Keys are named, typed and documented in one
 * registry (see docs/CONFIG.md); the same keys are read from broker-cli's file. */
typedef struct mqb_config mqb_config;

/** Creates a configuration holding every key at its default value.
 * `alloc` may be NULL for the C library's allocator; it is copied. */
MQB_API mqb_err mqb_config_create(mqb_config **out, const mqb_allocator *alloc);

/** Destroys a configuration. NULL is allowed. */
MQB_API void mqb_config_destroy(mqb_config *cfg);

/** Sets `key` from its text form ("1MB", "30s", "true", "127.0.0.1:1883").
 * Returns MQB_ERR_NOTFOUND for an unknown key, MQB_ERR_PARSE or MQB_ERR_RANGE for
 * a bad value; then, if `err` is not NULL, a one-line reason is written there. */
MQB_API mqb_err mqb_config_set(mqb_config *cfg, const char *key, const char *value, char *err,
                               size_t errlen);

/** Typed setters; same rules as mqb_config_set(). */
MQB_API mqb_err mqb_config_set_int(mqb_config *cfg, const char *key, int64_t value);
MQB_API mqb_err mqb_config_set_bool(mqb_config *cfg, const char *key, int value);

/** Writes the current text form of `key` into buf (NUL-terminated, truncated to
 * buflen). Returns MQB_ERR_NOTFOUND for an unknown key. */
MQB_API mqb_err mqb_config_get(const mqb_config *cfg, const char *key, char *buf, size_t buflen);

/** Reads a `key = value` file ('#' starts a comment). On error nothing after the
 * bad line is applied and `err` names the file, line and key. */
MQB_API mqb_err mqb_config_load_file(mqb_config *cfg, const char *path, char *err, size_t errlen);

/** Applies environment overrides: for every registry key K, the variable
 * "MQB_" + K uppercased with '.' replaced by "__" (e.g. MQB_MQTT__MAX_QOS_ALLOWED).
 * `envp` is a NULL-terminated "NAME=value" array (e.g. `environ`). */
MQB_API mqb_err mqb_config_apply_env(mqb_config *cfg, char *const *envp, char *err, size_t errlen);

/** Calls `fn` for each key in registry order with its current text value, its
 * default and its one-line documentation. Listener keys are listed as set. */
typedef void (*mqb_config_visit_fn)(void *user, const char *key, const char *value,
                                    const char *default_value, const char *type, const char *doc);
MQB_API void mqb_config_visit(const mqb_config *cfg, mqb_config_visit_fn fn, void *user);

/** Sets the log callback and the most verbose level passed to it. Without a
 * callback the library logs nothing. */
MQB_API void mqb_config_set_log(mqb_config *cfg, mqb_log_fn fn, void *user, mqb_log_level level);

/* ------------------------------------------------------------------------ */
/* Messages                                                                  */

/** An MQTT 5 user property. */
typedef struct mqb_user_property {
	const char *key;
	const char *value;
} mqb_user_property;

/** An application message. On publish the broker copies everything it needs
 * before the call returns. Messages handed to the host (subscription
 * callbacks, hooks) are valid only during the callback. Zero / NULL fields are
 * absent properties. */
typedef struct mqb_message {
	const char *topic;
	const void *payload;
	size_t payload_len;
	int qos;    /* 0, 1 or 2 */
	int retain; /* 0 or 1 */
	/* MQTT 5 properties */
	int has_message_expiry;
	uint32_t message_expiry; /* seconds left */
	int payload_utf8;        /* Payload Format Indicator = 1 */
	const char *content_type;
	const char *response_topic;
	const void *correlation_data;
	size_t correlation_len;
	const mqb_user_property *user_properties;
	size_t user_property_count;
	/* Who published it; set by the broker on messages it hands to the host,
	 * ignored on publish. The host's own messages have client_id "". */
	const char *client_id;
	const char *username; /* or NULL */
} mqb_message;

/* ------------------------------------------------------------------------ */
/* Hooks                                                                     */

/** What a hook answers. */
typedef enum mqb_verdict {
	MQB_ALLOW = 0,
	MQB_DENY,
	MQB_IGNORE, /* no opinion: the defaults decide */
	MQB_PENDING /* the answer comes later through a completion call */
} mqb_verdict;

/** A connected (or connecting) client, as hooks see it. Valid only during the
 * hook call; read it with the accessors below. */
typedef struct mqb_client mqb_client;
MQB_API const char *mqb_client_id(const mqb_client *c);
MQB_API const char *mqb_client_username(const mqb_client *c); /* NULL if none */
MQB_API const char *mqb_client_peer(const mqb_client *c);     /* "ip:port" */
MQB_API const char *mqb_client_listener(const mqb_client *c); /* listener name */
MQB_API int mqb_client_protocol(const mqb_client *c);         /* 3, 4 or 5 */

/** What a client presented in its CONNECT. */
typedef struct mqb_auth_request {
	const char *client_id;
	const char *username; /* NULL if none */
	const void *password; /* NULL if none */
	size_t password_len;
	const char *peer;          /* "ip:port" */
	const char *listener;      /* listener name */
	int protocol;              /* 3, 4 or 5 */
	const void *peer_cert_der; /* TLS client certificate (DER), or NULL */
	size_t peer_cert_len;
} mqb_auth_request;

/** A pending authentication, completed with mqb_auth_complete(). */
typedef struct mqb_auth_ticket mqb_auth_ticket;

/** Authenticates a CONNECT. Answers MQB_ALLOW, MQB_DENY (CONNACK 0x86 Bad
 * user name or password, 3.x: 0x04), MQB_IGNORE (allow_anonymous decides) or
 * MQB_PENDING: the host then calls mqb_auth_complete(ticket, ...) exactly once,
 * from any thread; the client's packets wait until then (its CONNECT timeout,
 * mqtt.idle_timeout, still runs). `req` is valid only during the call. */
typedef mqb_verdict (*mqb_authenticate_fn)(void *user, const mqb_auth_request *req,
                                           mqb_auth_ticket *ticket);

/** Completes a pending authentication with MQB_ALLOW, MQB_DENY or MQB_IGNORE.
 * Thread-safe, also after mqb_broker_stop()/_wait(). Returns MQB_ERR_NOTFOUND
 * when the client went away meanwhile (the ticket is released all the same).
 * Every ticket must be completed exactly once, and before the broker is
 * destroyed. */
MQB_API mqb_err mqb_auth_complete(mqb_auth_ticket *ticket, mqb_verdict verdict);

/** MQTT 5 enhanced authentication (AUTH packets). Called for a CONNECT that
 * carries an Authentication Method and for each AUTH packet that follows.
 * `data`/`data_len` is the client's Authentication Data. The hook answers:
 *   MQB_ALLOW  - authentication succeeded (CONNACK 0x00, or AUTH 0x00 on re-auth);
 *   MQB_DENY   - refused (CONNACK/DISCONNECT 0x87 Not authorized);
 *   MQB_IGNORE - the method is not supported (0x8C Bad authentication method);
 *   MQB_PENDING- continue: the broker sends AUTH 0x18 with `*out_data` (which the
 *                hook allocates with malloc(); the broker frees it with free()). */
typedef struct mqb_auth_exchange {
	const char *client_id;
	const char *method;
	const uint8_t *data;
	size_t data_len;
	int reauth; /* 1 when the client re-authenticates on a live connection */
} mqb_auth_exchange;
typedef mqb_verdict (*mqb_enhanced_auth_fn)(void *user, const mqb_auth_exchange *ex,
                                            uint8_t **out_data, size_t *out_len);

typedef enum mqb_action { MQB_ACTION_PUBLISH = 0, MQB_ACTION_SUBSCRIBE } mqb_action;

/** Authorizes a publish to `topic` (wills included, at CONNECT) or a
 * subscription to the filter `topic` (as the client sent it, "$share/g/..."
 * included). MQB_ALLOW or MQB_IGNORE let it through, MQB_DENY refuses it
 * (PUBACK/PUBREC 0x87 or a dropped QoS 0 message; SUBACK 0x87, 3.x: 0x80; a
 * refused will topic refuses the CONNECT with 0x87). For a subscription,
 * `*qos` is the QoS to grant and may be lowered; for a publish it is ignored.
 * Must answer at once. */
typedef mqb_verdict (*mqb_authorize_fn)(void *user, const mqb_client *c, mqb_action action,
                                        const char *topic, int *qos);

/** Called for every message published by a client (c != NULL) or the host
 * (c == NULL), before it is stored or routed; wills too, when they are
 * published. The hook may change the message's fields or answer MQB_DENY to
 * drop it, setting *reason to the MQTT 5 reason code its publisher gets
 * (default 0x87); any other answer lets it through. Changed fields may point to memory of the
 * hook's that stays valid after it returns, until its next call on the same thread (static or
 * thread-local buffers, not its stack): the broker copies them right after the
 * hook returns. */
typedef mqb_verdict (*mqb_on_publish_fn)(void *user, const mqb_client *c, mqb_message *m,
                                         int *reason);

/** Called once per delivery, when the message is written to the client (a
 * message that waited in the session's queue is asked about when it leaves
 * it); MQB_DENY skips this client. Not asked again for a retransmission.
 * Runs on the loop thread of the receiving client. */
typedef mqb_verdict (*mqb_on_deliver_fn)(void *user, const mqb_client *to, const mqb_message *m);

typedef enum mqb_event_type {
	MQB_EVENT_CONNECTED = 0,   /* CONNACK 0x00 sent */
	MQB_EVENT_CONNACK_REFUSED, /* a CONNECT was refused; `reason` says why */
	MQB_EVENT_DISCONNECTED,    /* `reason`: the DISCONNECT reason or why we closed */
	MQB_EVENT_SUBSCRIBED,      /* `topic` = filter, `qos` = granted */
	MQB_EVENT_UNSUBSCRIBED,
	MQB_EVENT_SESSION_CREATED,
	MQB_EVENT_SESSION_RESUMED,
	MQB_EVENT_SESSION_DISCARDED, /* clean start, or the broker went away */
	MQB_EVENT_SESSION_EXPIRED,
	MQB_EVENT_MESSAGE_DROPPED /* `topic`, `qos`, `text` = why (queue full, expired, ...) */
} mqb_event_type;

/** An event. Strings are valid only during the call; absent ones are NULL. */
typedef struct mqb_event {
	mqb_event_type type;
	const char *client_id;
	const char *username;
	const char *peer;
	int reason; /* MQTT 5 reason code where one applies, else 0 */
	const char *topic;
	int qos;
	const char *text;
} mqb_event;
typedef void (*mqb_event_fn)(void *user, const mqb_event *ev);

/** The host's hooks; any may be NULL. Every hook gets `user` and runs on the
 * loop thread that owns the client (for host publishes: the loop that routes
 * them). A hook must not block for long: every client of that loop waits for
 * it. From a hook the host may call mqb_publish(), mqb_broker_publish(),
 * mqb_auth_complete(), mqb_broker_metrics() and mqb_broker_stop(); the
 * introspection and control calls wait for other loops and must not be called
 * from a hook (two loops waiting for each other would deadlock), nor may a hook
 * destroy the broker. */
typedef struct mqb_hooks {
	void *user;
	mqb_authenticate_fn authenticate;
	mqb_enhanced_auth_fn enhanced_auth;
	mqb_authorize_fn authorize;
	mqb_on_publish_fn on_publish;
	mqb_on_deliver_fn on_deliver;
	mqb_event_fn on_event;
} mqb_hooks;

/* ------------------------------------------------------------------------ */
/* Broker                                                                    */

typedef struct mqb_broker mqb_broker;

/** Creates a broker from a configuration (copied; `cfg` may be destroyed
 * afterwards). Nothing listens until the broker starts. */
MQB_API mqb_err mqb_broker_create(mqb_broker **out, const mqb_config *cfg);

/** Installs the hooks (copied). Only before the broker starts: MQB_ERR_STATE after. */
MQB_API mqb_err mqb_broker_set_hooks(mqb_broker *b, const mqb_hooks *hooks);

/** Opens the listeners and starts the loop threads (node.loop_threads); returns
 * at once. MQB_ERR_ADDRINUSE / MQB_ERR_IO when a listener cannot open. */
MQB_API mqb_err mqb_broker_start(mqb_broker *b);

/** Starts the broker and blocks until it has stopped (mqb_broker_stop() from a
 * signal handler, another thread or a hook). */
MQB_API mqb_err mqb_broker_run(mqb_broker *b);

/** Step mode, for a single-threaded host: opens the listeners but starts no
 * thread (Linux: the descriptor is an epoll set). The host polls mqb_broker_fd() for readability
 * (with a timeout no longer than mqb_broker_timeout()) and calls mqb_broker_step(). */
MQB_API mqb_err mqb_broker_start_stepped(mqb_broker *b);
/** A descriptor that is readable when the broker has work (step mode). */
MQB_API int mqb_broker_fd(const mqb_broker *b);
/** Milliseconds until the broker's next timer, or -1 for none (step mode). */
MQB_API int mqb_broker_timeout(const mqb_broker *b);
/** Does the work that is ready, waiting up to timeout_ms (0: do not wait; -1:
 * until something happens). Returns MQB_ERR_STATE once the broker has stopped. */
MQB_API mqb_err mqb_broker_step(mqb_broker *b, int timeout_ms);

/** Asks the broker to stop: listeners close, the wills of connected clients
 * are published, then every client is disconnected (MQTT 5: DISCONNECT 0x8B)
 * after at most node.drain_timeout for its pending output. Safe from any
 * thread, from a hook and from a signal handler. Returns at once; does nothing
 * if the broker is not running. */
MQB_API void mqb_broker_stop(mqb_broker *b);

/** Waits until a started broker has stopped. MQB_ERR_STATE in step mode (step
 * until mqb_broker_step() says the broker stopped) and before start. */
MQB_API mqb_err mqb_broker_wait(mqb_broker *b);

/** Destroys a broker, stopping it first if it runs. Frees every resource;
 * afterwards no hook is called any more. Not from a hook. */
MQB_API void mqb_broker_destroy(mqb_broker *b);

/** Opens a TCP listener at run time: `address` is "[host:]port" as in the
 * config key listener.tcp.<name>. MQB_ERR_EXISTS if the name is taken. */
MQB_API mqb_err mqb_broker_add_listener(mqb_broker *b, const char *name, const char *address);
/** Opens a listener of any type at run time: `type` is "tcp", "ssl", "ws" or "wss",
 * `address` as in the key listener.<type>.<name>, and `settings` (may be
 * NULL) a NULL-terminated list of sub-key / value pairs, e.g.
 * {"certfile", "/etc/mqb/server.pem", "keyfile", "/etc/mqb/server.key", NULL}.
 * MQB_ERR_INVAL for an unknown type, sub-key or value, or files that do not
 * load (the reason is logged); MQB_ERR_EXISTS if type.name is taken. */
MQB_API mqb_err mqb_broker_open_listener(mqb_broker *b, const char *type, const char *name,
                                         const char *address, const char *const *settings);
/** Closes a listener, named "name" or "type.name"; its established
 * connections stay. */
MQB_API mqb_err mqb_broker_remove_listener(mqb_broker *b, const char *name);
/** Writes the port the listener `name` is bound to (useful with port 0). */
MQB_API mqb_err mqb_broker_listener_port(mqb_broker *b, const char *name, int *port);

/** Called by mqb_broker_reconfigure() for each key whose value differs;
 * `applied` is 0 for keys that only take effect at the next start. */
typedef void (*mqb_config_change_fn)(void *user, const char *key, const char *old_value,
                                     const char *new_value, int applied);

/** Applies the run-time changeable keys of `cfg` (marked in docs/CONFIG.md) to
 * a running broker, for new connections and packets from now on; the other
 * differences are reported to `changed` (may be NULL) as not applied.
 * Listeners are changed with mqb_broker_add_listener() / _remove_listener().
 * Thread-safe. */
MQB_API mqb_err mqb_broker_reconfigure(mqb_broker *b, const mqb_config *cfg,
                                       mqb_config_change_fn changed, void *user);

/* ------------------------------------------------------------------------ */
/* In-process messaging                                                       */

/** Publishes a message from the host, as if a client had (on_publish sees it
 * with c == NULL). Thread-safe; returns once the message is copied. Messages
 * the host publishes to one topic are delivered in the order of the calls
 * (made from one thread, or otherwise ordered by the host). */
MQB_API mqb_err mqb_publish(mqb_broker *b, const mqb_message *m);

/** Shorthand for mqb_publish() without properties. */
MQB_API mqb_err mqb_broker_publish(mqb_broker *b, const char *topic, const void *payload,
                                   size_t len, int qos, int retain);

/** An in-process subscription. */
typedef struct mqb_subscription mqb_subscription;
/** Receives a matching message, on a loop thread of the broker. */
typedef void (*mqb_message_fn)(void *user, const mqb_message *m);

/** Calls `fn` for every message whose topic matches `filter` (wildcards and
 * $share/ groups allowed; `$`-topics follow the MQTT rule). Retained messages
 * matching the filter are delivered first. Thread-safe. */
MQB_API mqb_err mqb_subscribe(mqb_broker *b, const char *filter, mqb_message_fn fn, void *user,
                              mqb_subscription **out);
/** Ends a subscription; once it returns, `fn` is not called any more (unless
 * called from within that `fn`, which then is the last call). Thread-safe. */
MQB_API mqb_err mqb_unsubscribe(mqb_broker *b, mqb_subscription *sub);

/** 1 if `topic` matches `filter` by MQTT rules, else 0. */
MQB_API int mqb_topic_matches(const char *filter, const char *topic);
/** 1 if `topic` is a valid topic name for PUBLISH, else 0. */
MQB_API int mqb_topic_valid(const char *topic);
/** 1 if `filter` is a valid topic filter (incl. $share/ and $queue/), else 0. */
MQB_API int mqb_filter_valid(const char *filter);

/* ------------------------------------------------------------------------ */
/* Introspection and control (thread-safe; not from inside a hook unless stated) */

/** A session and its client, as seen at one moment. Strings are valid only
 * during the callback. */
typedef struct mqb_client_status {
	const char *client_id;
	const char *username; /* NULL if none or offline */
	const char *peer;     /* NULL when offline */
	const char *listener; /* NULL when offline */
	int connected;
	int protocol;            /* 3, 4, 5 (last connection) */
	int keepalive;           /* seconds */
	uint32_t session_expiry; /* seconds; 0xFFFFFFFF = never */
	size_t subscriptions;
	size_t inflight;
	size_t queued;         /* waiting messages, those kept on disk included (persistence) */
	uint64_t queued_bytes; /* payload bytes of the waiting messages held in RAM */
} mqb_client_status;
typedef void (*mqb_client_status_fn)(void *user, const mqb_client_status *st);

/** Calls fn once with the status of the session `client_id`.
 * MQB_ERR_NOTFOUND if there is none. */
MQB_API mqb_err mqb_broker_client(mqb_broker *b, const char *client_id, mqb_client_status_fn fn,
                                  void *user);

/** Calls fn for sessions number offset .. offset+limit-1 in the broker's
 * order (stable while no session starts or ends); *total (may be NULL) gets
 * the number of sessions. */
MQB_API mqb_err mqb_broker_clients(mqb_broker *b, size_t offset, size_t limit,
                                   mqb_client_status_fn fn, void *user, size_t *total);

/** Calls fn for subscriptions offset .. offset+limit-1 of the session
 * `client_id`, or of every session when client_id is NULL. */
typedef void (*mqb_subscription_fn)(void *user, const char *client_id, const char *filter, int qos,
                                    uint32_t subscription_id);
MQB_API mqb_err mqb_broker_subscriptions(mqb_broker *b, const char *client_id, size_t offset,
                                         size_t limit, mqb_subscription_fn fn, void *user,
                                         size_t *total);

/** Disconnects the client (MQTT 5: DISCONNECT 0x98 Administrative action); its
 * session follows its expiry. With discard_session, the session ends too. */
MQB_API mqb_err mqb_broker_kick(mqb_broker *b, const char *client_id, int discard_session);

/** Subscribes / unsubscribes the session `client_id` as if it had sent
 * SUBSCRIBE / UNSUBSCRIBE (retained messages are delivered on subscribe). */
MQB_API mqb_err mqb_broker_subscribe_client(mqb_broker *b, const char *client_id,
                                            const char *filter, int qos);
MQB_API mqb_err mqb_broker_unsubscribe_client(mqb_broker *b, const char *client_id,
                                              const char *filter);

/** Counters since start (EMQX-style names in docs/EMBEDDING.md). */
typedef struct mqb_metrics {
	uint64_t connections;   /* connected now */
	uint64_t sessions;      /* existing now */
	uint64_t subscriptions; /* routes now */
	uint64_t retained;      /* retained messages now */
	uint64_t connects;      /* accepted CONNECTs */
	uint64_t disconnects;
	uint64_t packets_received, packets_sent;
	uint64_t bytes_received, bytes_sent;
	uint64_t messages_received, messages_sent;
	uint64_t messages_dropped;
	uint64_t messages_expired;
	uint64_t malformed_packets;
	uint64_t publishers_held;      /* times a QoS 1/2 publisher was held back by a slow
	                                  subscriber (flow control: mqtt.backpressure_queue_len) */
	uint64_t tls_handshakes;       /* TLS handshakes completed */
	uint64_t tls_handshake_errors; /* TLS handshakes refused, failed or timed out */
	/* Persistence (persistence.enable); all 0 when it is off. */
	uint64_t store_commits; /* transactions committed (each many changes: group commit) */
	uint64_t store_records; /* changes written (acknowledged-before-written ones cancel out) */
	uint64_t store_bytes;   /* bytes stored, as counted against persistence.max_bytes */
	uint64_t store_dropped; /* queued messages dropped for the disk budget (drop_oldest) */
	uint64_t store_refused; /* QoS 1/2 publishes refused for the disk budget (refuse) */
	uint64_t store_errors;  /* failed writes or reads (full disk, I/O); see the log */
	uint64_t store_backlog; /* changes waiting for the storage thread now */
} mqb_metrics;
/** Fills *out. Thread-safe, also from hooks. */
MQB_API void mqb_broker_metrics(mqb_broker *b, mqb_metrics *out);

#ifdef __cplusplus
}
#endif
#endif
