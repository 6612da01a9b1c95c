/*
 * The journal: how workers hand changes to the storage thread, and how
 * acknowledgements wait until what they promise is durable.
 *
 * Ordering rules that make this correct (docs/PERSISTENCE.md):
 * - A worker's records go to the storage thread in the order it made them,
 *   one chunk per loop iteration; the thread applies chunks in the order
 *   they arrive, so a committed record implies every earlier one is.
 * - A worker appends its open chunk before it posts deliveries to other
 *   workers (under the journal lock), so the records a receiver writes
 *   about a delivery always follow the delivery's own.
 * - Reads of a session's queue (paging it in from disk) are queued like
 *   records: they see exactly what was appended before them.
 */
#ifndef MQBI_JOURNAL_H
#define MQBI_JOURNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "net/loop.h"
#include "proto/codec.h"
#include "store/store.h"

struct mqbi_worker;
struct mqbi_client;
struct mqbi_session;
struct mqbi_delivery;

/* Something to send once chunk `no` of its worker is durable. */
typedef struct mqbi_waiter {
	uint64_t no;
	struct mqbi_client *c;  /* an acknowledgement to c (NULL once c is gone) */
	struct mqbi_session *s; /* or a held delivery of s (a reference) */
	uint8_t *reasons;       /* SUBACK / UNSUBACK: their reason codes (owned) */
	uint32_t n_reasons;
	uint16_t packet_id;
	uint8_t type; /* packet type: PUBACK/PUBREC/PUBCOMP/SUBACK/UNSUBACK to c; PUBLISH/PUBREL of
	                 s */
	uint8_t reason;
} mqbi_waiter;

/* A worker's side of the journal (only its own thread touches it, but for
 * `durable`, written by the storage thread). */
typedef struct mqbi_wjournal {
	mqbi_rec *recs; /* the open chunk */
	uint32_t n, cap;
	uint64_t open_no;         /* number the open chunk gets (from 1) */
	uint64_t appended;        /* records ever appended: marks for mqbi_journal_send */
	_Atomic uint64_t durable; /* highest chunk number committed */
	const void *last_msg;     /* the message of the open chunk's last MSG_PUT */
	mqbi_waiter *waiters;     /* a ring, in order */
	uint32_t w_head, w_count, w_cap;
	mqbi_inbox_item notify; /* posted by the storage thread after commits */
	_Atomic bool notify_posted;
} mqbi_wjournal;

typedef struct mqbi_journal mqbi_journal;

/* Opens the store, restores its state into the broker and starts the
 * storage thread; called at start, before listeners open. MQB_OK and
 * nothing done when persistence is off. */
mqb_err mqbi_journal_start(mqb_broker *b);
/* After the workers stopped: writes what is left, stops the thread and
 * closes the store. Idempotent. */
void mqbi_journal_stop(mqb_broker *b);
void mqbi_journal_free(mqb_broker *b);

/* A new record in w's open chunk, zeroed but for op and sid; NULL when
 * persistence is off (or out of memory, which is logged). */
mqbi_rec *mqbi_journal_add(struct mqbi_worker *w, uint8_t op, uint64_t sid);
/* Records a message once per chunk (MSG_PUT) and returns its store id. */
uint64_t mqbi_journal_msg(struct mqbi_worker *w, struct mqbi_msg *m);

/* A new session store id. */
uint64_t mqbi_journal_new_sid(mqb_broker *b);

/* The journal lock, held while a worker appends its chunk and posts its
 * deliveries to other workers (no-ops when persistence is off). */
void mqbi_journal_lock(mqb_broker *b);
void mqbi_journal_unlock(mqb_broker *b);
/* Hands the open chunk to the storage thread; with the lock held. */
void mqbi_journal_flush_locked(struct mqbi_worker *w);

/* Marks for acknowledgements: records appended by w so far. */
static inline uint64_t mqbi_journal_mark(const struct mqbi_wjournal *j)
{
	return j->appended;
}
/* Sends an acknowledgement (PUBACK, PUBREC, PUBCOMP, SUBACK, UNSUBACK) to
 * c now, or when the records appended since `mark` are durable
 * (persistence.sync = always, or the storage thread is behind); in order
 * with c's earlier ones. */
void mqbi_journal_send(struct mqbi_client *c, const mqbi_packet *p, uint64_t mark);
/* Whether a QoS 2 PUBLISH or PUBREL of a stored delivery must wait for its
 * state to be durable; if so, registers it and it is sent then. */
bool mqbi_journal_hold(struct mqbi_session *s, struct mqbi_delivery *d, uint8_t type);
/* c is closing: its waiting acknowledgements are dropped. */
void mqbi_journal_forget_client(struct mqbi_client *c);
/* Releases w's waiters (at destroy). */
void mqbi_journal_worker_fini(struct mqbi_worker *w);

/* Reads the next page of a spilled session queue from the store; the
 * deliveries arrive on the session's worker (mqbi_session_page_in). */
void mqbi_journal_read_queue(struct mqbi_session *s, uint32_t limit);

/* Whether the total disk budget (persistence.max_bytes) is used up and the
 * overflow policy is to refuse. */
bool mqbi_journal_refusing(const mqb_broker *b);
/* Whether full queues refuse new messages (persistence.overflow = refuse). */
bool mqbi_journal_refusing_queue(const mqb_broker *b);
void mqbi_journal_count_refused(mqb_broker *b);
/* Deliveries each stored session keeps in RAM (persistence.queue_window). */
uint32_t mqbi_journal_window(const mqb_broker *b);

typedef struct mqbi_journal_metrics {
	uint64_t commits, records, bytes, dropped, refused, errors, backlog;
} mqbi_journal_metrics;
void mqbi_journal_metrics_get(const mqb_broker *b, mqbi_journal_metrics *out);

#endif
