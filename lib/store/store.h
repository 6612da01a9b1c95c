/*
 * Persistence: the storage interface and the journal that feeds it.
 *
 * The broker never calls a backend from a loop thread. Workers append
 * records (what changed: a session, a subscription, a delivery...) to their
 * journal; at the end of each loop iteration the records go to the storage
 * thread (journal.c), which applies many of them in one transaction (group
 * commit) and tells each worker how far its records are durable. With
 * persistence.sync = always, acknowledgements that promise a message wait
 * for that (docs/PERSISTENCE.md).
 *
 * A backend implements mqbi_store_ops; it is only ever called from one
 * thread at a time (the storage thread, or the starting thread for load).
 */
#ifndef MQBI_STORE_H
#define MQBI_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mqttbroker.h"

struct mqbi_msg;

/* What a record changes. Keys: sid = the session's store id (never reused),
 * mid = the message's store id (increasing: queue order). */
typedef enum mqbi_rec_op {
	MQBI_REC_SESSION_PUT = 1, /* sid, text = client id, num = expiry (s), flags = protocol
	                             level, at = when it went offline (wall ms; 0 = connected) */
	MQBI_REC_SESSION_DEL,     /* sid, and everything of it: subscriptions, deliveries,
	                             awaited PUBRELs, its will */
	MQBI_REC_SUB_PUT,         /* sid, text = filter as subscribed ("$share/g/a/#"),
	                             flags = options byte, num = subscription id */
	MQBI_REC_SUB_DEL,         /* sid, text */
	MQBI_REC_MSG_PUT,         /* mid, msg: stored unless a row with mid exists */
	MQBI_REC_DLV_PUT,         /* sid, mid, qos, flags = retain flag, sub ids; queued */
	MQBI_REC_DLV_STATE,       /* sid, mid, packet_id, state (MQBI_DS_*): in flight */
	MQBI_REC_DLV_DEL,         /* sid, mid; a message goes with its last delivery */
	MQBI_REC_DLV_DROP_OLDEST, /* sid, num = how many of its oldest queued deliveries */
	MQBI_REC_AWREL_PUT,       /* sid, packet_id: a QoS 2 message from it awaits PUBREL */
	MQBI_REC_AWREL_DEL,       /* sid, packet_id */
	MQBI_REC_RETAIN_PUT,      /* msg (its topic is the key) */
	MQBI_REC_RETAIN_DEL,      /* text = topic */
	MQBI_REC_WILL_PUT,        /* sid, msg, at = when it is due (wall ms) */
	MQBI_REC_WILL_DEL,        /* sid */
} mqbi_rec_op;

typedef struct mqbi_rec {
	uint8_t op; /* mqbi_rec_op */
	uint8_t qos;
	uint8_t state;
	uint8_t flags;
	uint16_t packet_id;
	uint16_t n_sub_ids; /* DLV_PUT: 0, 1 (num), or more (sub_ids) */
	uint32_t num;
	uint32_t text_len;
	uint64_t sid, mid;
	int64_t at;
	struct mqbi_msg *msg; /* a reference the record holds */
	char *text;           /* owned by the record */
	uint32_t *sub_ids;    /* owned, when n_sub_ids > 1 */
} mqbi_rec;

/* Releases what a record owns. */
void mqbi_rec_release(const mqb_allocator *a, mqbi_rec *r);

/* A message's fields as stored. expire_at is wall-clock ms (0: no expiry),
 * so that expiry keeps counting across a restart. */
typedef struct mqbi_stored_msg {
	const char *topic;
	size_t topic_len;
	const uint8_t *props; /* MQTT 5 properties that travel with it */
	size_t props_len;
	const uint8_t *payload;
	size_t payload_len;
	const char *publisher;
	size_t publisher_len;
	uint8_t qos;
	bool retain;
	int64_t expire_at;
	uint32_t expiry_interval;
} mqbi_stored_msg;

/* The fields of m to store (pointing into m). */
void mqbi_store_msg_fields(const struct mqbi_msg *m, mqbi_stored_msg *out);
/* A message rebuilt from stored fields (refs = 1); NULL when out of memory. */
struct mqbi_msg *mqbi_store_msg_make(const mqb_allocator *a, const mqbi_stored_msg *f);
/* Bytes a message counts against the disk budget. */
uint64_t mqbi_store_msg_cost(const struct mqbi_msg *m);

/* A stored delivery as loaded or paged in. */
typedef struct mqbi_stored_delivery {
	uint64_t mid;
	struct mqbi_msg *msg; /* a new reference for the receiver */
	const uint32_t *sub_ids;
	uint32_t sub_id; /* for the receiver's use (a backend leaves it 0) */
	uint16_t n_sub_ids;
	uint16_t packet_id; /* 0: queued */
	uint8_t qos;
	uint8_t state; /* MQBI_DS_* */
	bool retain;
} mqbi_stored_delivery;

/* What load() hands over, in this order: sessions, then their
 * subscriptions, deliveries in flight (ascending mid) and awaited PUBRELs,
 * then retained messages and wills. A callback returns MQB_OK to go on.
 * Callbacks that receive a message take over its reference. */
typedef struct mqbi_store_loader {
	void *user;
	mqb_err (*session)(void *user, uint64_t sid, const char *client_id, size_t len,
	                   uint32_t expiry, uint8_t level, int64_t offline_at, uint64_t queued);
	mqb_err (*sub)(void *user, uint64_t sid, const char *text, size_t len, uint8_t options,
	               uint32_t sub_id);
	mqb_err (*inflight)(void *user, uint64_t sid, const mqbi_stored_delivery *d);
	mqb_err (*awaiting_rel)(void *user, uint64_t sid, uint16_t packet_id);
	mqb_err (*retained)(void *user, struct mqbi_msg *msg);
	mqb_err (*will)(void *user, uint64_t sid, struct mqbi_msg *msg, int64_t due_at);
} mqbi_store_loader;

typedef mqb_err (*mqbi_store_dlv_fn)(void *user, const mqbi_stored_delivery *d);

typedef struct mqbi_store mqbi_store;

typedef struct mqbi_store_stats {
	uint64_t bytes;      /* logical bytes stored: messages, rows (the disk budget) */
	uint64_t messages;   /* message rows */
	uint64_t deliveries; /* delivery rows */
	uint64_t file_bytes; /* database and WAL on disk */
} mqbi_store_stats;

typedef struct mqbi_store_ops {
	const char *name;
	/* Applies records in order as one transaction, durable as the store
	 * was opened for. On error nothing of them is applied. */
	mqb_err (*apply)(mqbi_store *st, const mqbi_rec *recs, size_t n);
	/* Restores everything (at start, before any apply). Also returns the
	 * highest sid and mid in use. */
	mqb_err (*load)(mqbi_store *st, const mqbi_store_loader *l, uint64_t *max_sid,
	                uint64_t *max_mid);
	/* The deliveries of one session in queue order (ascending mid), the
	 * first `limit` of them, those in flight included. */
	mqb_err (*read_queue)(mqbi_store *st, uint64_t sid, uint32_t limit, mqbi_store_dlv_fn fn,
	                      void *user);
	/* Deletes the oldest queued deliveries (and so messages) of any session
	 * until the stored bytes are at most `target`; how many went. */
	mqb_err (*trim)(mqbi_store *st, uint64_t target, uint64_t *dropped);
	/* Folds the write-ahead log back into the database file. */
	mqb_err (*checkpoint)(mqbi_store *st);
	void (*stats)(mqbi_store *st, mqbi_store_stats *out);
	/* The last error in words (for logs); valid until the next call. */
	const char *(*errmsg)(mqbi_store *st);
	void (*close)(mqbi_store *st);
} mqbi_store_ops;

struct mqbi_store {
	const mqbi_store_ops *ops;
};

/* Durability of a commit (persistence.sync). */
typedef enum { MQBI_SYNC_ALWAYS = 0, MQBI_SYNC_BATCH, MQBI_SYNC_OFF } mqbi_sync_mode;
/* What to do with a database that cannot be used (persistence.on_corrupt). */
typedef enum { MQBI_CORRUPT_REFUSE = 0, MQBI_CORRUPT_MOVE_ASIDE } mqbi_corrupt_mode;

typedef struct mqbi_store_options {
	const char *path; /* database file */
	mqbi_sync_mode sync;
	mqbi_corrupt_mode on_corrupt;
	uint32_t checkpoint_pages; /* WAL pages before an automatic checkpoint */
	uint64_t max_file_bytes;   /* 0 = no limit: beyond it writes fail as on a full disk */
	bool skip_check;           /* no integrity check of the whole file at open */
	const mqb_allocator *alloc;
	/* Where the backend reports what it did on its own (moved a file aside). */
	void (*log)(void *user, mqb_log_level lvl, const char *text);
	void *log_user;
} mqbi_store_options;

/* Opens (creating or migrating) the SQLite database at o->path. On failure
 * *why says what is wrong with the file in words a user can act on. */
mqb_err mqbi_store_sqlite_open(const mqbi_store_options *o, mqbi_store **out, char *why,
                               size_t why_len);

/* Schema version this build writes (PRAGMA user_version). */
#define MQBI_STORE_SCHEMA_VERSION 1
/* PRAGMA application_id of our databases: "MQB1". */
#define MQBI_STORE_APP_ID 0x4D514231

#endif
