/*
 * The broker's internal state, shared by lib/core and lib/net.
 *
 * Threading model (docs/ARCHITECTURE.md): N workers, each one event loop on
 * its own thread. A session lives on its home worker, chosen by hashing the
 * client id; a connection is accepted by any worker (SO_REUSEPORT) and moves
 * to the session's home worker right after its CONNECT is read, before
 * anything is answered. So every session and client is touched by one thread
 * only. Shared between threads: the route trie and the retained store (each
 * with its own rwlock), messages (immutable, atomically reference counted),
 * and session reference counts.
 */
#ifndef MQBI_CORE_H
#define MQBI_CORE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <arpa/inet.h>

#include "mqttbroker.h"
#include "core/config.h"
#include "core/retain.h"
#include "core/trie.h"
#include "net/loop.h"
#include "proto/codec.h"
#include "store/journal.h"
#include "util/alloc.h"
#include "util/strmap.h"

typedef struct mqbi_worker mqbi_worker;
typedef struct mqbi_session mqbi_session;
typedef struct mqbi_client mqbi_client;

/* Relaxed counters: written by one thread, read by any. */
typedef _Atomic uint64_t mqbi_counter;
#define MQBI_COUNT(c, n)                                                                           \
	atomic_store_explicit(&(c), atomic_load_explicit(&(c), memory_order_relaxed) + (n),        \
	                      memory_order_relaxed)
#define MQBI_READ(c) atomic_load_explicit(&(c), memory_order_relaxed)

/* Route options byte: the MQTT subscription options plus our marker that the
 * owning session has more than one subscription (so matches must be merged). */
#define MQBI_SUBOPT_QOS(o) ((o)&3u)
#define MQBI_SUBOPT_NL     0x04u
#define MQBI_SUBOPT_RAP    0x08u
#define MQBI_SUBOPT_RH(o)  (((o) >> 4) & 3u)
#define MQBI_ROUTE_MULTI   0x40u

/* ---- Messages --------------------------------------------------------- */

/* An application message, stored once and shared by every delivery. */
typedef struct mqbi_msg {
	_Atomic uint32_t refs;
	_Atomic uint64_t store_id; /* its id in the store once persisted (0: not) */
	uint8_t qos;
	bool retain;
	bool has_expiry;
	uint16_t topic_len;
	uint16_t publisher_len;
	uint32_t props_len; /* v5 properties minus topic alias, sub ids and expiry */
	uint32_t payload_len;
	uint64_t expire_at;       /* monotonic ms, valid when has_expiry */
	uint32_t expiry_interval; /* seconds, as published */
	const char *topic;        /* NUL-terminated; all fields point into data[] */
	const uint8_t *props;
	const uint8_t *payload;
	const char *publisher; /* client id of the publisher ("" for the host) */
	const char *username;  /* the publisher's user name, or NULL */
	uint8_t data[];
} mqbi_msg;

/* Creates a message with refs = 1; props are copied through the filter that
 * drops properties which are per-hop (alias, sub ids, expiry, will delay). */
mqbi_msg *mqbi_msg_create(const mqb_allocator *a, const char *topic, size_t topic_len,
                          const uint8_t *props, size_t props_len, const void *payload,
                          size_t payload_len, uint8_t qos, bool retain, const char *publisher,
                          size_t publisher_len, const char *username, bool has_expiry,
                          uint32_t expiry_s, uint64_t now);
static inline mqbi_msg *mqbi_msg_ref(mqbi_msg *m)
{
	atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
	return m;
}
void mqbi_msg_unref(const mqb_allocator *a, mqbi_msg *m);
static inline bool mqbi_msg_expired(const mqbi_msg *m, uint64_t now)
{
	return m->has_expiry && now >= m->expire_at;
}
/* Seconds of life left, rounded up; never more than it was published with
 * (loops' cached clocks differ by a few milliseconds). */
static inline uint32_t mqbi_msg_expiry_left(const mqbi_msg *m, uint64_t now)
{
	if (now >= m->expire_at)
		return 0;
	uint64_t left = (m->expire_at - now + 999) / 1000;
	return left > m->expiry_interval ? m->expiry_interval : (uint32_t)left;
}

/* ---- Sessions ---------------------------------------------------------- */

/* One delivery of a message to a session: queued or in flight. */
typedef struct mqbi_delivery {
	mqbi_msg *msg;
	uint32_t *sub_ids; /* NULL unless n_sub_ids > 1 */
	uint32_t sub_id;   /* the one identifier when n_sub_ids == 1 */
	uint16_t n_sub_ids;
	uint16_t packet_id;
	uint8_t qos;
	uint8_t state; /* MQBI_DS_* */
	bool retain;
	bool dup;
	bool stored; /* in the store (for a session with one): removed there when done */
	bool held;   /* in flight, but not sent until its state is durable */
} mqbi_delivery;

enum {
	MQBI_DS_QUEUED = 0,
	MQBI_DS_WAIT_PUBACK,
	MQBI_DS_WAIT_PUBREC,
	MQBI_DS_WAIT_PUBCOMP,
	MQBI_DS_DONE /* a hole in the in-flight ring */
};

/* A ring of deliveries. */
typedef struct mqbi_dqueue {
	mqbi_delivery *items;
	uint32_t head, count, cap;
	uint32_t qos0;  /* of which QoS 0 */
	uint64_t bytes; /* payload bytes queued */
} mqbi_dqueue;

/* A will waiting for its Will Delay Interval after its connection closed. */
struct mqbi_pending_will {
	mqbi_timer timer;
	mqbi_session *session;
	mqbi_msg *msg;
};

/* One of the session's subscriptions (also its route in the trie). */
typedef struct mqbi_sub {
	uint32_t sub_id;
	uint16_t text_len;
	uint16_t group_off, group_len; /* group name within text (len 0 = not shared) */
	uint16_t filter_off, filter_len;
	uint8_t options;
	char text[]; /* the filter as subscribed, "$share/g/a/#" included */
} mqbi_sub;

/* An in-process subscriber (mqb_subscribe) in place of a client. */
typedef struct mqbi_host_target {
	mqb_message_fn fn;
	void *user;
} mqbi_host_target;

/* An awaited PUBREL: a QoS 2 packet id received and routed (exactly once). */
typedef struct mqbi_awaiting_rel {
	uint64_t at : 48; /* loop time (ms) it arrived */
	uint64_t id : 16;
} mqbi_awaiting_rel;

struct mqbi_session {
	/* Ordered by size so that the struct has no holes; the id inline at the
	 * end (a host session keeps its mqbi_host_target after its empty id). */
	mqbi_worker *home;
	mqbi_client *client;     /* the connected client, or NULL */
	mqbi_timer expiry_timer; /* armed while offline with a finite expiry */
	mqbi_strmap subs;        /* text -> mqbi_sub */
	mqbi_dqueue queue;       /* waiting for an inflight slot or for the client */
	/* In-flight deliveries: a ring in send (= packet id) order, so finding a
	 * packet id and acknowledging the oldest are O(1). An entry acknowledged
	 * out of order stays as a hole (MQBI_DS_DONE) until it reaches the head. */
	mqbi_delivery *inflight;
	uint32_t inflight_head, inflight_slots, inflight_cap;
	uint32_t inflight_count; /* live entries (holes excluded) */
	mqbi_awaiting_rel *awaiting_rel;
	uint32_t awaiting_rel_count, awaiting_rel_cap;
	struct mqbi_pending_will *pending_will; /* a delayed will, while one waits */
	/* Persistence: the store id (0 = not stored; read by routing workers),
	 * and the queue beyond the RAM window that lives on disk only. */
	_Atomic uint64_t sid;
	uint32_t spilled;      /* queued deliveries on disk only */
	uint32_t queue_stored; /* queued deliveries in RAM that are also stored */
	_Atomic uint32_t refs;
	uint32_t expiry; /* seconds; UINT32_MAX = never */
	uint16_t id_len;
	uint16_t next_packet_id;
	uint8_t level; /* protocol level of the last connection */
	_Atomic bool online;
	_Atomic uint8_t flow;   /* MQBI_FLOW_* (backpressure.c), read by every worker */
	bool ended : 1;         /* removed from the table and the trie; only refs keep it */
	bool listed : 1;        /* in the worker's session table (false for host sessions) */
	bool host : 1;          /* an in-process subscriber: see mqbi_session_host() */
	bool spill : 1;         /* new stored deliveries stay on disk (queue past its window) */
	bool paging : 1;        /* a page of the queue is being read from disk */
	bool paging_missed : 1; /* deliveries arrived (to disk only) while it was read */
	bool any_order : 1;     /* in flight restored from disk: not in packet id order */
	char client_id[];
};

/* The callback of a host session; NULL for a client's session. */
/* ---- Flow control (backpressure.c) ---- */

enum {
	MQBI_FLOW_CONGESTED = 1, /* connected, with a long queue: publishers to it are held */
	MQBI_FLOW_STALLED = 2    /* a hold ran out: no more holds until the queue is at half */
};
static inline bool mqbi_session_congested(mqbi_session *s)
{
	return atomic_load_explicit(&s->flow, memory_order_relaxed) & MQBI_FLOW_CONGESTED;
}

/* Sets or clears s->congested from its queue length; after queue changes. */
void mqbi_bp_update(mqbi_session *s);
/* Stops reading c until s is no longer congested; takes over the reference. */
void mqbi_bp_hold(mqbi_client *c, mqbi_session *s);
/* Releases the held clients whose reason went away; before every sleep. */
void mqbi_bp_check(mqbi_worker *w);
/* Drops c from the held list (it is closing). */
void mqbi_bp_forget(mqbi_client *c);
void mqbi_bp_fini(mqbi_worker *w);

mqbi_host_target *mqbi_session_host(mqbi_session *s);

/* Gives up the session reference the caller holds; frees the session when it
 * was the last one (on its home worker). */
void mqbi_session_unref(mqbi_session *s);
static inline mqbi_session *mqbi_session_ref(mqbi_session *s)
{
	atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
	return s;
}

/* ---- Clients (connections) ---------------------------------------------- */

enum {
	MQBI_CS_CONNECTING = 0, /* waiting for CONNECT */
	MQBI_CS_AUTHENTICATING, /* enhanced authentication in progress */
	MQBI_CS_AUTH_PENDING,   /* waiting for the authenticate hook's answer; reading paused */
	MQBI_CS_CONNECTED,
	MQBI_CS_CLOSING /* no more input is processed */
};

typedef struct mqbi_listener mqbi_listener;

/* Longest client address text, "ip:port" (IPv6 included). */
#define MQBI_PEER_MAX (INET6_ADDRSTRLEN + 8)

/* A CONNECT kept while its authentication goes on: the authenticate hook
 * answers later, or an enhanced-authentication exchange runs. */
/* MQTT 5 topic aliases of one connection. */
typedef struct mqbi_aliases {
	char **in;       /* topics the client set (index = alias - 1) */
	mqbi_strmap out; /* topic -> the alias we assigned towards the client */
	uint16_t in_cap, out_next;
} mqbi_aliases;

/* The connection's aliases, made on first use; NULL when out of memory. */
mqbi_aliases *mqbi_client_aliases(mqbi_client *c);

/* A large payload waiting to be written by reference, after the first `at`
 * bytes of the output buffer (conn.c: output). */
typedef struct mqbi_outref {
	uint32_t at;
	mqbi_msg *msg; /* a reference, held until the payload is written */
} mqbi_outref;

typedef struct mqbi_outrefs {
	mqbi_outref *v;
	uint32_t head, count, cap;
	uint32_t sent;  /* bytes of v[head]'s payload already written */
	uint64_t bytes; /* payload bytes of the pending references */
} mqbi_outrefs;

/* Payloads of at least this many bytes are written by reference, not copied. */
#define MQBI_ZEROCOPY_MIN 1024u

/* Queues m's payload to follow what was committed so far (by reference). */
bool mqbi_client_out_ref(mqbi_client *c, mqbi_msg *m);

typedef struct mqbi_pending_connect {
	struct mqb_auth_ticket *ticket; /* the hook's pending answer, or NULL */
	size_t len;
	uint8_t raw[];
} mqbi_pending_connect;

/* A connection's byte stream when it is more than the plain socket (TLS,
 * WebSocket, WebSocket over TLS): transports transform bytes and stack, each
 * reading and writing through the one below it (`lower`, NULL: the socket).
 * The socket's readiness and the MQTT buffers stay in conn.c. */
typedef struct mqbi_transport mqbi_transport;
typedef struct mqbi_transport_ops {
	/* Up to len bytes of the stream: > 0 bytes, 0 at its end, or -1 with
	 * errno set (EAGAIN: nothing now). */
	ssize_t (*recv)(mqbi_transport *t, uint8_t *buf, size_t len);
	/* Takes bytes to send: how many, or -1 with errno (EAGAIN: no room now).
	 * After EAGAIN, or a count short of len, the next call starts with the
	 * bytes not taken. */
	ssize_t (*send)(mqbi_transport *t, const uint8_t *buf, size_t len);
	/* Input read from the socket that recv has not returned yet: the
	 * socket will not signal it. */
	bool (*buffered)(const mqbi_transport *t);
	/* Bytes of the transport's own (control frames) waiting to be written,
	 * and writing them: 0, or the errno that stopped it. May be NULL. */
	size_t (*pending)(const mqbi_transport *t);
	int (*flush)(mqbi_transport *t);
	/* Best-effort goodbye, then frees the transport and those below it. */
	void (*close)(mqbi_transport *t);
} mqbi_transport_ops;

struct mqbi_transport {
	const mqbi_transport_ops *ops;
	mqbi_client *c;
	mqbi_transport *lower; /* NULL: the socket */
};

/* The lower layer's byte stream: the transport below t, or the socket. */
ssize_t mqbi_transport_lower_recv(mqbi_transport *t, uint8_t *buf, size_t len);
ssize_t mqbi_transport_lower_send(mqbi_transport *t, const uint8_t *buf, size_t len);

struct mqbi_client {
	/* One per connection, so compact: ordered by size so that the struct has
	 * no holes, rarely used state behind pointers, and the peer's address
	 * text inline at the end. */
	mqbi_worker *w;
	mqbi_listener *listener;
	mqbi_client *prev, *next; /* the worker's client list */
	mqbi_client *dirty_next;  /* the worker's flush list */
	mqbi_session *session;
	char *client_id; /* set from CONNECT (the session's id once attached) */
	char *username;
	uint8_t *rbuf;         /* input: a private buffer only while a packet is partly read */
	uint8_t *wbuf;         /* output: a private buffer only while output is pending */
	mqbi_timer timer;      /* idle (CONNECT) timeout, then keepalive */
	mqbi_aliases *aliases; /* MQTT 5 topic aliases, made with the first */
	mqbi_msg *will;        /* the will of this connection */
	char *auth_method;     /* enhanced authentication, kept for re-authentication */
	mqbi_pending_connect *pending; /* while authenticating */
	mqbi_outrefs *refs;            /* large payloads pending by reference, with wbuf */
	mqbi_transport *xport;         /* top of the transport stack; NULL: the plain socket */
	uint32_t last_rx; /* loop time (ms), truncated: only differences below 49 days count */
	uint32_t rlen, rcap;
	uint32_t wlen, wcap, woff;
	int fd;
	uint32_t max_packet_out; /* the client's Maximum Packet Size; 0 = protocol maximum */
	uint32_t will_delay;
	uint16_t keepalive;
	uint16_t receive_max_out; /* in-flight QoS>0 PUBLISH towards the client */
	uint16_t topic_alias_max_out;
	uint8_t state;
	uint8_t level;
	uint8_t disconnect_reason; /* why we closed, for logs and $SYS */
	bool dirty : 1;
	bool close_after_flush : 1; /* shutdown: close once the output is written */
	bool local_loopback : 1;    /* arrived through a loopback interface */
	bool assigned_id : 1;
	bool request_problem_info : 1;
	bool id_borrowed : 1;  /* client_id points to the session's copy */
	bool held : 1;         /* not read: flow control (backpressure.c) */
	uint16_t acks_waiting; /* acknowledgements waiting for durability (journal.h) */
	char peer[];           /* "ip:port"; at most MQBI_PEER_MAX bytes */
};

/* ---- Workers ---------------------------------------------------------- */

/* Cross-worker deliveries, batched per target worker and posted at the end of
 * the publisher worker's iteration. */
typedef struct mqbi_xdelivery {
	mqbi_session *session; /* holds a session reference */
	mqbi_msg *msg;         /* holds a message reference */
	uint32_t sub_id;
	uint32_t *sub_ids; /* allocated when n_sub_ids > 1 */
	uint16_t n_sub_ids;
	uint8_t qos;
	bool retain;
	bool stored; /* the publisher's worker journalled it */
} mqbi_xdelivery;

typedef struct mqbi_xbatch {
	mqbi_inbox_item item;
	mqb_broker *broker;
	mqbi_worker *origin;           /* gets the batch back once it has run */
	struct mqbi_xbatch *free_next; /* in the origin's free list */
	uint32_t count, cap;
	mqbi_xdelivery d[];
} mqbi_xbatch;

/* A match result while routing one message. */
typedef struct mqbi_target {
	mqbi_session *session;
	uint32_t sub_id;
	uint32_t *sub_ids; /* merged identifiers, allocated (n > 1) */
	uint16_t n_sub_ids;
	uint8_t qos;
	bool retain;
	bool multi;
} mqbi_target;

typedef struct mqbi_metrics {
	mqbi_counter connections; /* currently connected */
	mqbi_counter connects;    /* accepted CONNECTs */
	mqbi_counter disconnects;
	mqbi_counter bytes_received, bytes_sent;
	mqbi_counter packets_received, packets_sent;
	mqbi_counter messages_received, messages_sent;
	mqbi_counter messages_dropped; /* queue full, expired, too large, no subscribers */
	mqbi_counter messages_dropped_qos0;
	mqbi_counter messages_expired;
	mqbi_counter messages_too_large;
	mqbi_counter malformed;
	mqbi_counter sessions;
	mqbi_counter publishers_held;      /* flow control (backpressure.c) */
	mqbi_counter tls_handshakes;       /* completed */
	mqbi_counter tls_handshake_errors; /* failed or timed out */
} mqbi_metrics;

/* A publisher held back by a congested session (backpressure.c). */
typedef struct mqbi_held {
	mqbi_client *c;
	mqbi_session *s; /* holds a reference */
	uint64_t since;
} mqbi_held;

struct mqbi_worker {
	mqb_broker *broker;
	mqbi_loop *loop;
	unsigned index;
	pthread_t thread;
	bool thread_started;
	mqbi_strmap sessions;     /* client id -> session homed here */
	mqbi_client *clients;     /* list of live clients */
	mqbi_client *dirty;       /* clients with output to flush, in the order they got it */
	mqbi_client **dirty_tail; /* where the next one is linked (valid while dirty != NULL) */
	mqbi_client *dead;        /* closed clients, freed before the loop sleeps */
	mqbi_xbatch **outbox;     /* [nworkers] pending cross-worker deliveries */
	/* Spent batches: the free list (this worker only) and the stack other
	 * workers push them back onto once they have run them. */
	mqbi_xbatch *xfree;
	_Atomic(mqbi_xbatch *) xreturned;
	uint8_t *rbuf; /* loop-wide read buffer */
	size_t rbuf_cap;
	/* Free client I/O buffers of two sizes: busy connections reuse them, so
	 * delivering a message allocates nothing. */
	uint8_t **iobufs[2];
	unsigned n_iobufs[2];
	mqbi_target *targets; /* scratch for routing */
	uint32_t ntargets, targets_cap;
	/* Scratch for handing messages to the host (mqbi_msg_view). */
	mqb_user_property *view_props;
	size_t view_props_cap;
	char *view_text;
	size_t view_text_cap;
	mqbi_timer sys_timer;
	uint32_t rand_state;
	/* Flow control: held publishers, and what routing one QoS 1/2 PUBLISH
	 * found (the first congested session, referenced). */
	mqbi_held *held;
	uint32_t nheld, held_cap;
	mqbi_timer held_timer;
	mqbi_session *bp_hit;
	bool bp_want;
	/* Shutdown steps, preallocated so mqb_broker_stop() is async-signal-safe. */
	mqbi_inbox_item stop1, stop2;
	mqbi_wjournal j;        /* persistence (store/journal.h) */
	bool draining;          /* phase 2: close clients as their output drains */
	mqbi_timer drain_timer; /* then close the rest */
	mqbi_metrics m;
};

struct mqbi_listener {
	mqbi_listener_cfg cfg;
	mqb_broker *broker;
	mqbi_worker *w;              /* the worker that accepts on it */
	_Atomic int fd;              /* read by host calls, written by the worker */
	_Atomic int port;            /* bound port */
	bool loopback;               /* bound to a loopback address */
	bool removed;                /* closed by mqb_broker_remove_listener() */
	mqbi_timer pause;            /* accept paused after EMFILE */
	struct mqbi_tls_server *tls; /* ssl: certificates and settings (net/tls.c) */
	_Atomic int64_t connections;
};

typedef struct mqbi_limits {
	uint32_t max_packet_size;
	uint32_t max_clientid_len;
	uint32_t max_topic_levels;
	uint8_t max_qos;
	uint16_t max_topic_alias;
	bool retain_available, wildcard_sub, shared_sub, sub_id_available;
	uint8_t share_strategy;
	uint16_t receive_max;
	uint16_t max_inflight;
	uint32_t max_awaiting_rel;
	uint64_t await_rel_timeout;
	uint32_t max_mqueue_len;
	uint64_t max_mqueue_bytes;
	uint32_t backpressure_queue_len; /* 0 = no flow control */
	uint64_t backpressure_max_hold;  /* ms */
	bool mqueue_store_qos0;
	uint32_t session_expiry_v3;  /* s */
	uint32_t max_session_expiry; /* s, 0 = no cap */
	uint16_t max_keepalive, server_keepalive;
	uint32_t keepalive_backoff; /* per mille */
	uint64_t idle_timeout;
	uint32_t max_subscriptions;
	uint64_t sys_interval;
	uint8_t allow_anonymous;
	uint64_t drain_timeout;
} mqbi_limits;

static inline const mqbi_limits *mqbi_lim(const mqb_broker *b);

enum { MQBI_BS_CREATED = 0, MQBI_BS_RUNNING, MQBI_BS_STOPPING, MQBI_BS_STOPPED };

struct mqb_broker {
	mqb_allocator alloc;
	mqb_config *cfg;
	/* Replaced as a whole by mqb_broker_reconfigure(); old versions are kept
	 * until destroy, so a reader never sees one freed. */
	_Atomic(const mqbi_limits *) limits;
	struct mqbi_limits_version *limit_versions;
	mqb_log_fn log_fn;
	void *log_user;
	_Atomic int log_level_now; /* mqb_log_level; changed by reconfigure */
	char node[128];
	mqbi_trie *trie;
	mqbi_retain *retain;
	struct mqbi_journal *journal; /* persistence, or NULL */
	bool restoring;               /* loading the store: changes are not journalled */
	unsigned nworkers;
	mqbi_worker *workers;
	/* Listeners, opened from the config or at run time; removed ones stay
	 * (closed) until destroy since connections refer to them. Guarded by
	 * state_lock. */
	mqbi_listener **listeners;
	unsigned nlisteners, listeners_cap;
	_Atomic int state;
	_Atomic unsigned stop_pending; /* workers yet to finish shutdown phase 1 */
	pthread_mutex_t state_lock;
	uint64_t started_at; /* monotonic ms */
	_Atomic uint64_t next_uid;
	mqb_hooks hooks;
	bool stepped;                  /* started with mqb_broker_start_stepped() */
	_Atomic pthread_t step_thread; /* the thread that last called mqb_broker_step() */
	int step_fd;                   /* epoll set of the workers' loop descriptors */
	_Atomic unsigned next_host_worker;
	pthread_mutex_t host_subs_lock;
	struct mqb_subscription *host_subs; /* live in-process subscriptions */
};

static inline const mqbi_limits *mqbi_lim(const mqb_broker *b)
{
	return atomic_load_explicit(&b->limits, memory_order_acquire);
}

/* ---- Functions shared across lib/core and lib/net ----------------------- */

/* embed.c */
/* Runs fn(w, arg) on worker w's thread and waits for it; runs it directly when
 * called from that thread, before start, after stop, or in step mode from the
 * stepping thread. MQB_ERR_STATE if the worker stopped before running it. */
mqb_err mqbi_worker_call(mqbi_worker *w, void (*fn)(mqbi_worker *w, void *arg), void *arg);
/* Fills *out with a view of msg for the host; valid until the next view on w. */
void mqbi_msg_view(mqbi_worker *w, const mqbi_msg *msg, uint8_t qos, bool retain, mqb_message *out);
/* Builds a message from the host's description. */
/* Ends the in-process subscriptions the host left (at destroy). */
void mqbi_host_subs_release(mqb_broker *b);
mqb_err mqbi_msg_from_api(mqb_broker *b, const mqb_message *m, const char *publisher,
                          const char *username, uint64_t now, mqbi_msg **out, const char **why);

/* log.c */
void mqbi_log(mqb_broker *b, mqb_log_level lvl, const char *module, const mqbi_client *c,
              const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static inline bool mqbi_log_enabled(const mqb_broker *b, mqb_log_level lvl)
{
	return b->log_fn &&
	       (int)lvl <= atomic_load_explicit(&b->log_level_now, memory_order_relaxed);
}

/* broker.c */
/* Publishes new limits read from cfg (mqbi_lim() readers see them at once). */
mqb_err mqbi_limits_reload(mqb_broker *b, const mqb_config *cfg);
mqbi_worker *mqbi_home_worker(mqb_broker *b, const char *client_id, size_t len);
uint32_t mqbi_random(mqbi_worker *w);

/* listener.c */
/* Opens every configured listener (at start). */
mqb_err mqbi_listeners_open(mqb_broker *b);
/* Adds and opens a listener on a running (or starting) broker. */
mqb_err mqbi_listener_add(mqb_broker *b, const mqbi_listener_cfg *cfg);
/* Whether an address (in_addr / in6_addr bytes of `family`, or a sockaddr) is
 * a loopback one, IPv4-mapped IPv6 included. */
bool mqbi_ip_is_loopback(int family, const void *addr);
bool mqbi_sockaddr_is_loopback(const struct sockaddr *sa);
void mqbi_worker_close_listeners(mqbi_worker *w);
void mqbi_listener_free(mqb_broker *b, mqbi_listener *ls); /* at broker destruction */

/* conn.c: socket I/O of a client */
/* A new connection on ls: its PROXY header is read first when the listener
 * has proxy_protocol, then mqbi_client_begin(). */
void mqbi_client_accept(mqbi_worker *w, mqbi_listener *ls, int fd);
/* Starts the connection's transport: the TLS handshake, or reading MQTT. */
void mqbi_client_begin(mqbi_client *c);
/* The transport is ready for MQTT (TLS handshake done): reading starts. */
void mqbi_client_start(mqbi_client *c);
/* proxy.c: reads the PROXY header of a new connection, then mqbi_client_begin(). */
void mqbi_proxy_accept(mqbi_client *c);
/* A pooled I/O buffer of at least `need` bytes, and its return. */
uint8_t *mqbi_iobuf_get(mqbi_worker *w, uint32_t need, uint32_t *cap);
void mqbi_iobuf_put(mqbi_worker *w, uint8_t *buf, uint32_t cap);
void mqbi_client_adopt(mqbi_worker *w, mqbi_client *c); /* after a move between workers */
/* Detaches c from its worker so that another adopts it; the unprocessed input
 * (len bytes at from) moves into the client's own buffer. */
bool mqbi_client_detach_for_move(mqbi_client *c, const uint8_t *from, size_t len);
uint8_t *mqbi_client_out_reserve(mqbi_client *c, size_t n); /* NULL on OOM */
void mqbi_client_out_commit(mqbi_client *c, size_t n);
size_t mqbi_client_out_pending(const mqbi_client *c);
void mqbi_client_mark_dirty(mqbi_client *c);
void mqbi_worker_flush(mqbi_worker *w);
void mqbi_worker_free_iobufs(mqbi_worker *w);
/* Closes the connection now: will, session detach, $SYS event, free. */
void mqbi_client_close(mqbi_client *c, uint8_t reason);
/* Sends DISCONNECT (v5) with reason (and an optional reason string) then closes. */
void mqbi_client_disconnect(mqbi_client *c, uint8_t reason, const char *why);
void mqbi_client_free(mqbi_client *c);
/* Stops or restarts reading from the client; restarting processes what is
 * buffered. Returns false if the client was closed meanwhile. */
void mqbi_client_pause(mqbi_client *c);
bool mqbi_client_resume(mqbi_client *c);
/* Drops the ticket of a client that goes away (client.c). */
void mqbi_client_forget_ticket(mqbi_client *c);

/* client.c: protocol state machine */
/* Processes whole packets from buf; returns bytes consumed, or -1 when the
 * client was closed (c is then freed). */
long mqbi_client_process(mqbi_client *c, const uint8_t *buf, size_t len);
void mqbi_client_timer_fn(mqbi_loop *l, mqbi_timer *t);
mqb_err mqbi_client_send_packet(mqbi_client *c, const mqbi_packet *p);

/* session.c */
mqbi_session *mqbi_session_find(mqbi_worker *w, const char *id, size_t len);
mqbi_session *mqbi_session_create(mqbi_worker *w, const char *id, size_t len);
/* A session that is not in the table: an in-process subscription. */
mqbi_session *mqbi_session_create_host(mqbi_worker *w, mqb_message_fn fn, void *user);
void mqbi_session_end(mqbi_session *s, const char *why); /* discard now */
void mqbi_session_attach(mqbi_session *s, mqbi_client *c);
void mqbi_session_detach(mqbi_session *s); /* the client went away */
/* stored: the routing worker already journalled this delivery. */
void mqbi_session_deliver(mqbi_session *s, mqbi_msg *msg, uint8_t qos, bool retain,
                          const uint32_t *sub_ids, uint16_t n_sub_ids, bool stored);
/* Journals a delivery of msg to a stored session s (from any worker w);
 * false if it could not be. */
bool mqbi_session_journal_delivery(mqbi_worker *w, mqbi_session *s, uint64_t sid, mqbi_msg *msg,
                                   uint8_t qos, bool retain, const uint32_t *sub_ids,
                                   uint16_t n_sub_ids);
/* Persistence of the session itself: stores it (expiry > 0) with what it
 * holds, updates it, or removes it from the store (expiry 0). */
void mqbi_session_persist(mqbi_session *s);
/* A page of the queue read from disk (ok = false: the read failed; end:
 * the disk part was read to its end). Takes the messages it keeps. */
void mqbi_session_page_in(mqbi_session *s, mqbi_stored_delivery *d, uint32_t n,
                          const uint64_t *skip, uint32_t nskip, bool ok, bool end);
/* An in-flight delivery is done (acknowledged): removed, also from disk. */
void mqbi_session_delivery_done(mqbi_session *s, mqbi_delivery *d);
/* Journals an in-flight delivery's new state. */
void mqbi_session_store_state(mqbi_session *s, const mqbi_delivery *d);
/* Journals a subscription added or changed (removed = false) or removed. */
void mqbi_session_store_sub(mqbi_session *s, const char *text, size_t len, bool removed);
/* A held delivery's state is durable: send it (PUBLISH or PUBREL). */
void mqbi_session_send_held(mqbi_session *s, mqbi_delivery *d);
/* Recovery: a delivery that was in flight; takes the message reference. */
mqb_err mqbi_session_restore_inflight(mqbi_session *s, const mqbi_stored_delivery *d);
void mqbi_session_expiry_fn(mqbi_loop *l, mqbi_timer *t);
void mqbi_session_pump(mqbi_session *s);   /* move queued deliveries into flight */
void mqbi_session_resend(mqbi_session *s); /* after reconnect: inflight again, DUP */
mqbi_delivery *mqbi_session_inflight_find(mqbi_session *s, uint16_t packet_id);
void mqbi_session_inflight_remove(mqbi_session *s, mqbi_delivery *d);
bool mqbi_session_awaiting_rel(mqbi_session *s, uint16_t packet_id);
mqb_err mqbi_session_awaiting_rel_add(mqbi_session *s, uint16_t packet_id, uint64_t now);
bool mqbi_session_awaiting_rel_remove(mqbi_session *s, uint16_t packet_id);
void mqbi_session_remove_all_subs(mqbi_session *s);
void mqbi_delivery_release(const mqb_allocator *a, mqbi_delivery *d);
void mqbi_session_schedule_will(mqbi_session *s, mqbi_msg *will, uint32_t delay_s);
void mqbi_session_cancel_will(mqbi_session *s);

/* publish.c */
/* Routes a message to every matching subscription; returns the number of
 * subscriptions it matched. Runs on worker w. */
size_t mqbi_route_message(mqbi_worker *w, mqbi_msg *msg);
void mqbi_worker_flush_outbox(mqbi_worker *w);
void mqbi_worker_free_xbatches(mqbi_worker *w);
void mqbi_handle_publish(mqbi_client *c, const mqbi_publish *p);
void mqbi_handle_ack(mqbi_client *c, mqbi_ptype type, const mqbi_ack *a);
/* Writes one delivery as a PUBLISH to the client; false if it cannot be sent
 * now (output over the high-water mark). */
bool mqbi_send_publish(mqbi_client *c, mqbi_delivery *d);
void mqbi_retain_store(mqb_broker *b, mqbi_msg *msg);
/* Runs the on_publish hook (c == NULL for the host). Returns the message to
 * route (msg itself, or a replacement holding its own reference, in which case
 * msg was released), or NULL when the hook dropped it (msg released, *reason
 * set). */
mqbi_msg *mqbi_hook_on_publish(mqbi_worker *w, mqbi_client *c, mqbi_msg *msg, uint8_t *reason);
/* Publishes a will (through the on_publish hook) and releases it; c is the
 * client it belonged to, or NULL once that client is gone. */
void mqbi_publish_will(mqbi_worker *w, mqbi_client *c, mqbi_msg *will);
/* Stores (if retained) and routes a message on w; returns the matches. */
size_t mqbi_publish_message(mqbi_worker *w, mqbi_msg *msg);

/* subscribe.c */
void mqbi_handle_subscribe(mqbi_client *c, const mqbi_subscribe *s);
void mqbi_handle_unsubscribe(mqbi_client *c, const mqbi_subscribe *s);
/* Adds or replaces one subscription of a session (level: the protocol whose
 * reason codes and options apply); returns the SUBACK reason code. */
uint8_t mqbi_session_subscribe(mqbi_session *s, uint8_t level, mqbi_bytes text,
                               const mqbi_subopts *o, uint32_t sub_id, bool *is_new, bool *shared);
bool mqbi_session_unsubscribe(mqbi_session *s, const char *text, size_t len);
/* Re-marks the session's routes when its subscription count crossed one. */
void mqbi_session_sync_multi(mqbi_session *s, size_t before);
void mqbi_session_send_retained(mqbi_session *s, const char *filter, size_t flen, uint8_t qos,
                                uint32_t sub_id);

/* hooks.c */
void mqbi_event(mqb_broker *b, mqb_event_type type, const mqbi_client *c, const char *client_id,
                int reason, const char *topic, int qos, const char *text);
static inline bool mqbi_events_on(const mqb_broker *b)
{
	return b->hooks.on_event != NULL;
}
/* The authorize hook for (action, topic): false = denied. *qos may be lowered. */
bool mqbi_hook_authorize(mqbi_client *c, mqb_action action, const char *topic, size_t len,
                         uint8_t *qos);
/* The on_deliver hook: false = skip this client. */
bool mqbi_hook_on_deliver(mqbi_client *c, const mqbi_msg *msg, uint8_t qos, bool retain);

/* sys.c */
void mqbi_sys_start(mqbi_worker *w);
void mqbi_sys_client_event(mqbi_client *c, bool connected);
void mqbi_sys_publish(mqbi_worker *w, const char *subtopic, const char *payload, bool retain);

/* Client I/O buffer classes: small ones for the odd packet (an idle
 * client's CONNACK, PINGRESP), large ones for busy connections. */
#define MQBI_IOBUF_SMALL 512u
#define MQBI_IOBUF_LARGE 16384u

/* Output high-water mark: above it QoS 0 deliveries are dropped and QoS 1/2
 * deliveries wait in the session queue. */
#define MQBI_OUT_HIGH_WATER (1u << 20)

#endif
