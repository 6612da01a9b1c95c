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
/* Hooks                                                                     */

/** What a hook answers. */
typedef enum mqb_verdict {
	MQB_ALLOW = 0,
	MQB_DENY,
	MQB_IGNORE, /* no opinion: the next provider, then the defaults decide */
	MQB_PENDING /* the answer comes later through a completion call */
} mqb_verdict;

/** MQTT 5 enhanced authentication (AUTH packets). Called for a CONNECT that
 * carries an Authentication Method and for each AUTH packet that follows.
 * `data`/`data_len` is the client's Authentication Data. The hook answers:
 *   MQB_ALLOW  - authentication succeeded (CONNACK 0x00, or AUTH 0x00 on re-auth);
 *   MQB_DENY   - refused (CONNACK/DISCONNECT 0x87 Not authorized);
 *   MQB_IGNORE - the method is not supported (0x8C Bad authentication method);
 *   MQB_PENDING- continue: the broker sends AUTH 0x18 with `*out_data` (which the
 *                hook allocates with malloc(); the broker frees it).
 * Runs on the loop thread that owns the client. */
typedef struct mqb_auth_exchange {
	const char *client_id;
	const char *method;
	const uint8_t *data;
	size_t data_len;
	int reauth; /* 1 when the client re-authenticates on a live connection */
} mqb_auth_exchange;
typedef mqb_verdict (*mqb_enhanced_auth_fn)(void *user, const mqb_auth_exchange *ex,
                                            uint8_t **out_data, size_t *out_len);

/* ------------------------------------------------------------------------ */
/* Broker                                                                    */

typedef struct mqb_broker mqb_broker;

/** Creates a broker from a configuration (copied; `cfg` may be destroyed
 * afterwards). Nothing listens until the broker runs. */
MQB_API mqb_err mqb_broker_create(mqb_broker **out, const mqb_config *cfg);

/** Registers the enhanced-authentication hook (before start). */
MQB_API mqb_err mqb_broker_set_enhanced_auth(mqb_broker *b, mqb_enhanced_auth_fn fn, void *user);

/** Opens the listeners and starts the loop threads; returns at once. */
MQB_API mqb_err mqb_broker_start(mqb_broker *b);

/** Starts the broker and blocks until mqb_broker_stop() is called (from a signal
 * handler's thread, another thread, or a hook). */
MQB_API mqb_err mqb_broker_run(mqb_broker *b);

/** Asks the broker to stop: listeners close, connected clients are disconnected
 * (MQTT 5: reason 0x8B Server shutting down) and wills are published. Safe from
 * any thread and from a signal handler. Returns at once. */
MQB_API void mqb_broker_stop(mqb_broker *b);

/** Waits for a started broker to finish stopping. */
MQB_API mqb_err mqb_broker_wait(mqb_broker *b);

/** Destroys a broker, stopping it first if it runs. Frees every resource. */
MQB_API void mqb_broker_destroy(mqb_broker *b);

/** Writes the TCP port the listener named `name` ("default" for
 * listener.tcp.default) is bound to; useful with port 0. */
MQB_API mqb_err mqb_broker_listener_port(mqb_broker *b, const char *name, int *port);

/** Publishes a message from the host, as if a client had. Thread-safe. */
MQB_API mqb_err mqb_broker_publish(mqb_broker *b, const char *topic, const void *payload,
                                   size_t len, int qos, int retain);

#ifdef __cplusplus
}
#endif
#endif
