/*
 * The SQLite storage backend (store.h).
 *
 * One connection, used by one thread at a time, in WAL mode with an
 * exclusive lock held for as long as the store is open: a second broker on
 * the same file is refused at open instead of corrupting its state.
 *
 * A message is stored once (msg) and referenced by one delivery row per
 * session it goes to; it is deleted with its last delivery. The logical
 * byte count (the disk budget) is kept in memory: computed at load, then
 * updated by every committed transaction.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "core/core.h"
#include "store/store.h"

/* Bytes a delivery row counts against the disk budget. */
#define DLV_COST 32u
/* Pages of cache: bounded whatever the database size (-N = N KiB). */
#define CACHE_KIB 8192
/* The WAL file is truncated to this after a checkpoint. */
#define WAL_KEEP_BYTES (64 * 1024 * 1024)
/* Deliveries deleted per transaction by trim(). */
#define TRIM_BATCH 256

/* ---- Schema ------------------------------------------------------------ */

/* Version 1. msg_cost is a narrow covering index so that counting the
 * budget and finding unreferenced messages at load never reads payloads;
 * delivery_inflight lets load read the few deliveries in flight without
 * scanning the queued ones. */
static const char schema_v1[] =
        "CREATE TABLE session(sid INTEGER PRIMARY KEY, client_id BLOB NOT NULL,"
        " expiry INTEGER NOT NULL, level INTEGER NOT NULL, offline_at INTEGER NOT NULL);"
        "CREATE TABLE sub(sid INTEGER NOT NULL, text BLOB NOT NULL, options INTEGER NOT NULL,"
        " sub_id INTEGER NOT NULL, PRIMARY KEY(sid, text)) WITHOUT ROWID;"
        "CREATE TABLE msg(mid INTEGER PRIMARY KEY, cost INTEGER NOT NULL, topic BLOB NOT NULL,"
        " props BLOB NOT NULL, payload BLOB NOT NULL, publisher BLOB NOT NULL,"
        " qos INTEGER NOT NULL, retain INTEGER NOT NULL, expire_at INTEGER NOT NULL,"
        " expiry_interval INTEGER NOT NULL);"
        "CREATE INDEX msg_cost ON msg(mid, cost);"
        "CREATE TABLE delivery(sid INTEGER NOT NULL, mid INTEGER NOT NULL, qos INTEGER NOT NULL,"
        " retain INTEGER NOT NULL, sub_ids BLOB NOT NULL, packet_id INTEGER NOT NULL,"
        " state INTEGER NOT NULL, PRIMARY KEY(sid, mid)) WITHOUT ROWID;"
        "CREATE INDEX delivery_mid ON delivery(mid);"
        "CREATE INDEX delivery_inflight ON delivery(sid, mid) WHERE packet_id != 0;"
        "CREATE TABLE awrel(sid INTEGER NOT NULL, packet_id INTEGER NOT NULL,"
        " PRIMARY KEY(sid, packet_id)) WITHOUT ROWID;"
        /* Rowid tables: retained and will payloads may be large. */
        "CREATE TABLE retained(topic BLOB PRIMARY KEY, props BLOB NOT NULL,"
        " payload BLOB NOT NULL, publisher BLOB NOT NULL, qos INTEGER NOT NULL,"
        " retain INTEGER NOT NULL, expire_at INTEGER NOT NULL,"
        " expiry_interval INTEGER NOT NULL);"
        "CREATE TABLE will(sid INTEGER PRIMARY KEY, topic BLOB NOT NULL, props BLOB NOT NULL,"
        " payload BLOB NOT NULL, publisher BLOB NOT NULL, qos INTEGER NOT NULL,"
        " retain INTEGER NOT NULL, expire_at INTEGER NOT NULL,"
        " expiry_interval INTEGER NOT NULL, due_at INTEGER NOT NULL);";

/* migrations[k] takes a database from version k to k + 1; a later schema
 * appends its step here and raises MQBI_STORE_SCHEMA_VERSION. */
static const char *const migrations[] = {schema_v1};

_Static_assert(sizeof(migrations) / sizeof(*migrations) == MQBI_STORE_SCHEMA_VERSION,
               "one migration step per schema version");

/* ---- Prepared statements ---------------------------------------------- */

enum {
	S_BEGIN,
	S_COMMIT,
	S_ROLLBACK,
	S_SESSION_PUT,
	S_SESSION_DEL,
	S_SESSION_SUBS_DEL,
	S_SESSION_AWREL_DEL,
	S_SESSION_WILL_DEL,
	S_SESSION_DLV_DEL,
	S_SUB_PUT,
	S_SUB_DEL,
	S_MSG_PUT,
	S_DLV_PUT,
	S_DLV_STATE,
	S_DLV_DEL,
	S_DLV_COLLECT_SESSION,
	S_DLV_COLLECT_OLDEST,
	S_DLV_DEL_COLLECTED,
	S_AWREL_PUT,
	S_AWREL_DEL,
	S_RETAIN_PUT,
	S_RETAIN_DEL,
	S_WILL_PUT,
	S_WILL_DEL,
	S_GC_ONE_COST,
	S_GC_ONE,
	S_GC_SET_COST,
	S_GC_SET,
	S_GC_CLEAR,
	S_TRIM_PICK,
	S_READ_QUEUE,
	S_COUNT
};

#define MSG_COLS "topic, props, payload, publisher, qos, retain, expire_at, expiry_interval"
#define MSG_COLS_M                                                                                 \
	"m.topic, m.props, m.payload, m.publisher, m.qos, m.retain, m.expire_at, "                 \
	"m.expiry_interval"
/* Messages among those collected in temp.gc that no delivery references. */
#define GC_SET_WHERE                                                                               \
	" WHERE mid IN (SELECT mid FROM temp.gc)"                                                  \
	" AND NOT EXISTS (SELECT 1 FROM delivery d WHERE d.mid = msg.mid)"

static const char *const stmt_sql[S_COUNT] = {
        [S_BEGIN] = "BEGIN IMMEDIATE",
        [S_COMMIT] = "COMMIT",
        [S_ROLLBACK] = "ROLLBACK",
        [S_SESSION_PUT] = "INSERT INTO session(sid, client_id, expiry, level, offline_at)"
                          " VALUES(?1, ?2, ?3, ?4, ?5) ON CONFLICT(sid) DO UPDATE SET"
                          " client_id = ?2, expiry = ?3, level = ?4, offline_at = ?5",
        [S_SESSION_DEL] = "DELETE FROM session WHERE sid = ?",
        [S_SESSION_SUBS_DEL] = "DELETE FROM sub WHERE sid = ?",
        [S_SESSION_AWREL_DEL] = "DELETE FROM awrel WHERE sid = ?",
        [S_SESSION_WILL_DEL] = "DELETE FROM will WHERE sid = ?",
        [S_SESSION_DLV_DEL] = "DELETE FROM delivery WHERE sid = ?",
        [S_SUB_PUT] = "INSERT OR REPLACE INTO sub(sid, text, options, sub_id) VALUES(?, ?, ?, ?)",
        [S_SUB_DEL] = "DELETE FROM sub WHERE sid = ? AND text = ?",
        [S_MSG_PUT] = "INSERT OR IGNORE INTO msg(mid, cost, " MSG_COLS ")"
                      " VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [S_DLV_PUT] = "INSERT OR IGNORE INTO delivery(sid, mid, qos, retain, sub_ids, packet_id,"
                      " state) VALUES(?, ?, ?, ?, ?, 0, 0)",
        [S_DLV_STATE] =
                "UPDATE delivery SET packet_id = ?3, state = ?4 WHERE sid = ?1 AND mid = ?2",
        [S_DLV_DEL] = "DELETE FROM delivery WHERE sid = ? AND mid = ?",
        [S_DLV_COLLECT_SESSION] = "INSERT OR IGNORE INTO temp.gc(mid)"
                                  " SELECT mid FROM delivery WHERE sid = ?",
        [S_DLV_COLLECT_OLDEST] = "INSERT OR IGNORE INTO temp.gc(mid) SELECT mid FROM delivery"
                                 " WHERE sid = ? AND packet_id = 0 ORDER BY mid LIMIT ?",
        [S_DLV_DEL_COLLECTED] = "DELETE FROM delivery WHERE sid = ?"
                                " AND mid IN (SELECT mid FROM temp.gc)",
        [S_AWREL_PUT] = "INSERT OR IGNORE INTO awrel(sid, packet_id) VALUES(?, ?)",
        [S_AWREL_DEL] = "DELETE FROM awrel WHERE sid = ? AND packet_id = ?",
        [S_RETAIN_PUT] = "INSERT OR REPLACE INTO retained(" MSG_COLS ")"
                         " VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
        [S_RETAIN_DEL] = "DELETE FROM retained WHERE topic = ?",
        [S_WILL_PUT] = "INSERT OR REPLACE INTO will(sid, " MSG_COLS ", due_at)"
                       " VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [S_WILL_DEL] = "DELETE FROM will WHERE sid = ?",
        [S_GC_ONE_COST] = "SELECT cost FROM msg WHERE mid = ?1"
                          " AND NOT EXISTS (SELECT 1 FROM delivery WHERE mid = ?1)",
        [S_GC_ONE] = "DELETE FROM msg WHERE mid = ?",
        [S_GC_SET_COST] = "SELECT count(*), coalesce(sum(cost), 0) FROM msg" GC_SET_WHERE,
        [S_GC_SET] = "DELETE FROM msg" GC_SET_WHERE,
        [S_GC_CLEAR] = "DELETE FROM temp.gc",
        [S_TRIM_PICK] = "SELECT sid, mid FROM delivery WHERE packet_id = 0 ORDER BY mid LIMIT ?",
        [S_READ_QUEUE] =
                "SELECT d.mid, d.qos, d.retain, d.sub_ids, d.packet_id, d.state, " MSG_COLS_M
                " FROM delivery d JOIN msg m ON m.mid = d.mid"
                " WHERE d.sid = ? ORDER BY d.mid LIMIT ?",
};

typedef struct sq_store {
	mqbi_store base;
	const mqb_allocator *a;
	sqlite3 *db;
	sqlite3_stmt *st[S_COUNT];
	char *path, *wal_path;
	/* Committed totals, and what the open transaction adds to them. */
	uint64_t bytes, messages, deliveries;
	int64_t d_bytes, d_messages, d_deliveries;
	bool counted; /* totals computed (load, or the first call needing them) */
	uint8_t *ids; /* scratch for sub id blobs */
	size_t ids_cap;
	char err[512];
} sq_store;

/* ---- Helpers ------------------------------------------------------------ */

/* Binds bytes as a blob; empty is a zero-length blob, never NULL, so that
 * length() and comparisons stay simple. */
static int bind_blob(sqlite3_stmt *s, int i, const void *p, size_t len)
{
	return sqlite3_bind_blob64(s, i, len ? p : (const void *)"", len, SQLITE_STATIC);
}

static const void *col_blob(sqlite3_stmt *s, int i, size_t *len)
{
	const void *p = sqlite3_column_blob(s, i);
	*len = (size_t)sqlite3_column_bytes(s, i);
	return p ? p : "";
}

/* Binds a message's fields at columns first .. first + 7 (MSG_COLS). */
static int bind_msg(sqlite3_stmt *s, int first, const mqbi_msg *m)
{
	mqbi_stored_msg f;
	mqbi_store_msg_fields(m, &f);
	int rc = bind_blob(s, first, f.topic, f.topic_len);
	if (rc == SQLITE_OK)
		rc = bind_blob(s, first + 1, f.props, f.props_len);
	if (rc == SQLITE_OK)
		rc = bind_blob(s, first + 2, f.payload, f.payload_len);
	if (rc == SQLITE_OK)
		rc = bind_blob(s, first + 3, f.publisher, f.publisher_len);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int(s, first + 4, f.qos);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int(s, first + 5, f.retain);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, first + 6, f.expire_at);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, first + 7, f.expiry_interval);
	return rc;
}

/* Rebuilds a message from columns first .. first + 7 (MSG_COLS). */
static mqbi_msg *col_msg(const mqb_allocator *a, sqlite3_stmt *s, int first)
{
	mqbi_stored_msg f;
	const void *p;
	p = col_blob(s, first, &f.topic_len);
	f.topic = p;
	p = col_blob(s, first + 1, &f.props_len);
	f.props = p;
	p = col_blob(s, first + 2, &f.payload_len);
	f.payload = p;
	p = col_blob(s, first + 3, &f.publisher_len);
	f.publisher = p;
	f.qos = (uint8_t)sqlite3_column_int(s, first + 4);
	f.retain = sqlite3_column_int(s, first + 5) != 0;
	f.expire_at = sqlite3_column_int64(s, first + 6);
	f.expiry_interval = (uint32_t)sqlite3_column_int64(s, first + 7);
	return mqbi_store_msg_make(a, &f);
}

/* Makes room for n bytes in the scratch buffer. */
static bool scratch(sq_store *s, size_t n)
{
	if (n <= s->ids_cap)
		return true;
	size_t cap = s->ids_cap ? s->ids_cap : 64;
	while (cap < n)
		cap *= 2;
	uint8_t *p = mqbi_realloc(s->a, s->ids, cap);
	if (!p)
		return false;
	s->ids = p;
	s->ids_cap = cap;
	return true;
}

/* Subscription ids as little-endian u32s in the scratch buffer. */
static bool encode_ids(sq_store *s, const mqbi_rec *r, size_t *len)
{
	uint16_t n = r->n_sub_ids;
	*len = (size_t)n * 4;
	if (n == 0)
		return true;
	if (!scratch(s, *len))
		return false;
	for (uint16_t i = 0; i < n; i++) {
		uint32_t v = n == 1 ? r->num : r->sub_ids[i];
		uint8_t *p = s->ids + (size_t)i * 4;
		p[0] = (uint8_t)v;
		p[1] = (uint8_t)(v >> 8);
		p[2] = (uint8_t)(v >> 16);
		p[3] = (uint8_t)(v >> 24);
	}
	return true;
}

/* Decodes a sub id blob into the scratch buffer (aligned for uint32_t). */
static bool decode_ids(sq_store *s, const uint8_t *p, size_t len, const uint32_t **ids, uint16_t *n)
{
	size_t count = len / 4;
	if (count > UINT16_MAX)
		count = UINT16_MAX;
	*n = (uint16_t)count;
	*ids = NULL;
	if (count == 0)
		return true;
	if (!scratch(s, count * sizeof(uint32_t)))
		return false;
	uint32_t *out = (uint32_t *)(void *)s->ids;
	for (size_t i = 0; i < count; i++, p += 4)
		out[i] = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
		         (uint32_t)p[3] << 24;
	*ids = out;
	return true;
}

/* The error of the last SQLite call as an mqb_err, recording what was being
 * done. */
static mqb_err fail(sq_store *s, int rc, const char *doing)
{
	snprintf(s->err, sizeof s->err, "%s: %s: %s", s->path, doing, sqlite3_errmsg(s->db));
	switch (rc & 0xff) {
	case SQLITE_FULL:
		return MQB_ERR_RANGE;
	case SQLITE_NOMEM:
		return MQB_ERR_NOMEM;
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
		return MQB_ERR_PARSE;
	default:
		return MQB_ERR_IO;
	}
}

static mqb_err nomem(sq_store *s, const char *doing)
{
	snprintf(s->err, sizeof s->err, "%s: %s: out of memory", s->path, doing);
	return MQB_ERR_NOMEM;
}

/* Runs a prepared statement that returns no rows, then resets it. */
static int run(sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

static void finish(sqlite3_stmt *st)
{
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
}

/* One integer from a query (0 when it returns no row). */
static int query_int(sqlite3 *db, const char *sql, int64_t *out)
{
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
	if (rc != SQLITE_OK)
		return rc;
	*out = 0;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*out = sqlite3_column_int64(st, 0);
		rc = SQLITE_OK;
	} else if (rc == SQLITE_DONE) {
		rc = SQLITE_OK;
	}
	sqlite3_finalize(st);
	return rc;
}

static void rollback(sq_store *s)
{
	/* SQLite rolls back on its own after some errors (SQLITE_FULL). */
	if (!sqlite3_get_autocommit(s->db))
		run(s->st[S_ROLLBACK]);
	s->d_bytes = s->d_messages = s->d_deliveries = 0;
}

static mqb_err begin(sq_store *s)
{
	s->d_bytes = s->d_messages = s->d_deliveries = 0;
	int rc = run(s->st[S_BEGIN]);
	return rc == SQLITE_OK ? MQB_OK : fail(s, rc, "starting a transaction");
}

static mqb_err commit(sq_store *s)
{
	int rc = run(s->st[S_COMMIT]);
	if (rc != SQLITE_OK) {
		mqb_err e = fail(s, rc, "committing");
		rollback(s);
		return e;
	}
	s->bytes = (uint64_t)((int64_t)s->bytes + s->d_bytes);
	s->messages = (uint64_t)((int64_t)s->messages + s->d_messages);
	s->deliveries = (uint64_t)((int64_t)s->deliveries + s->d_deliveries);
	s->d_bytes = s->d_messages = s->d_deliveries = 0;
	return MQB_OK;
}

/* ---- Message garbage collection ---------------------------------------- */

/* Deletes message mid if no delivery references it any more. */
static int gc_one(sq_store *s, uint64_t mid)
{
	sqlite3_stmt *q = s->st[S_GC_ONE_COST];
	sqlite3_bind_int64(q, 1, (int64_t)mid);
	int rc = sqlite3_step(q);
	if (rc != SQLITE_ROW) {
		finish(q);
		return rc == SQLITE_DONE ? SQLITE_OK : rc;
	}
	int64_t cost = sqlite3_column_int64(q, 0);
	finish(q);
	sqlite3_stmt *d = s->st[S_GC_ONE];
	sqlite3_bind_int64(d, 1, (int64_t)mid);
	rc = run(d);
	if (rc == SQLITE_OK) {
		s->d_bytes -= cost;
		s->d_messages--;
	}
	return rc;
}

/* Deletes the messages collected in temp.gc that lost their last delivery,
 * then empties temp.gc. */
static int gc_set(sq_store *s)
{
	sqlite3_stmt *q = s->st[S_GC_SET_COST];
	int rc = sqlite3_step(q);
	if (rc != SQLITE_ROW) {
		finish(q);
		return rc == SQLITE_DONE ? SQLITE_OK : rc;
	}
	int64_t count = sqlite3_column_int64(q, 0), cost = sqlite3_column_int64(q, 1);
	finish(q);
	if (count > 0) {
		rc = run(s->st[S_GC_SET]);
		if (rc != SQLITE_OK)
			return rc;
		s->d_messages -= count;
		s->d_bytes -= cost;
	}
	return run(s->st[S_GC_CLEAR]);
}

/* ---- Totals ------------------------------------------------------------- */

static int count_totals(sq_store *s)
{
	int64_t msgs, cost, dlvs;
	int rc = query_int(s->db, "SELECT count(*) FROM msg", &msgs);
	if (rc == SQLITE_OK)
		rc = query_int(s->db, "SELECT coalesce(sum(cost), 0) FROM msg", &cost);
	if (rc == SQLITE_OK)
		rc = query_int(s->db, "SELECT count(*) FROM delivery", &dlvs);
	if (rc != SQLITE_OK)
		return rc;
	s->messages = (uint64_t)msgs;
	s->deliveries = (uint64_t)dlvs;
	s->bytes = (uint64_t)cost + (uint64_t)dlvs * DLV_COST;
	s->counted = true;
	return SQLITE_OK;
}

static mqb_err ensure_counted(sq_store *s)
{
	if (s->counted)
		return MQB_OK;
	int rc = count_totals(s);
	return rc == SQLITE_OK ? MQB_OK : fail(s, rc, "counting stored messages");
}

/* ---- apply -------------------------------------------------------------- */

static const char *op_name(uint8_t op)
{
	static const char *const names[] = {
	        [MQBI_REC_SESSION_PUT] = "storing a session",
	        [MQBI_REC_SESSION_DEL] = "deleting a session",
	        [MQBI_REC_SUB_PUT] = "storing a subscription",
	        [MQBI_REC_SUB_DEL] = "deleting a subscription",
	        [MQBI_REC_MSG_PUT] = "storing a message",
	        [MQBI_REC_DLV_PUT] = "queueing a delivery",
	        [MQBI_REC_DLV_STATE] = "updating a delivery",
	        [MQBI_REC_DLV_DEL] = "deleting a delivery",
	        [MQBI_REC_DLV_DROP_OLDEST] = "dropping queued deliveries",
	        [MQBI_REC_AWREL_PUT] = "storing an awaited PUBREL",
	        [MQBI_REC_AWREL_DEL] = "deleting an awaited PUBREL",
	        [MQBI_REC_RETAIN_PUT] = "storing a retained message",
	        [MQBI_REC_RETAIN_DEL] = "deleting a retained message",
	        [MQBI_REC_WILL_PUT] = "storing a will",
	        [MQBI_REC_WILL_DEL] = "deleting a will",
	};
	return op < sizeof(names) / sizeof(*names) && names[op] ? names[op] : "an unknown record";
}

static int apply_one(sq_store *s, const mqbi_rec *r)
{
	sqlite3_stmt **st = s->st, *q;
	int64_t sid = (int64_t)r->sid, mid = (int64_t)r->mid;
	int rc;
	size_t len;
	switch (r->op) {
	case MQBI_REC_SESSION_PUT:
		q = st[S_SESSION_PUT];
		sqlite3_bind_int64(q, 1, sid);
		bind_blob(q, 2, r->text, r->text_len);
		sqlite3_bind_int64(q, 3, r->num);
		sqlite3_bind_int(q, 4, r->flags);
		sqlite3_bind_int64(q, 5, r->at);
		return run(q);
	case MQBI_REC_SESSION_DEL: {
		static const int dels[] = {S_SESSION_DEL, S_SESSION_SUBS_DEL, S_SESSION_AWREL_DEL,
		                           S_SESSION_WILL_DEL};
		for (size_t i = 0; i < sizeof(dels) / sizeof(*dels); i++) {
			sqlite3_bind_int64(st[dels[i]], 1, sid);
			if ((rc = run(st[dels[i]])) != SQLITE_OK)
				return rc;
		}
		/* Its mids first, so that only those messages are checked. */
		sqlite3_bind_int64(st[S_DLV_COLLECT_SESSION], 1, sid);
		if ((rc = run(st[S_DLV_COLLECT_SESSION])) != SQLITE_OK)
			return rc;
		sqlite3_bind_int64(st[S_SESSION_DLV_DEL], 1, sid);
		if ((rc = run(st[S_SESSION_DLV_DEL])) != SQLITE_OK)
			return rc;
		int gone = sqlite3_changes(s->db);
		s->d_deliveries -= gone;
		s->d_bytes -= (int64_t)gone * DLV_COST;
		return gc_set(s);
	}
	case MQBI_REC_SUB_PUT:
		q = st[S_SUB_PUT];
		sqlite3_bind_int64(q, 1, sid);
		bind_blob(q, 2, r->text, r->text_len);
		sqlite3_bind_int(q, 3, r->flags);
		sqlite3_bind_int64(q, 4, r->num);
		return run(q);
	case MQBI_REC_SUB_DEL:
		q = st[S_SUB_DEL];
		sqlite3_bind_int64(q, 1, sid);
		bind_blob(q, 2, r->text, r->text_len);
		return run(q);
	case MQBI_REC_MSG_PUT:
		if (!r->msg)
			return SQLITE_MISUSE;
		q = st[S_MSG_PUT];
		sqlite3_bind_int64(q, 1, mid);
		sqlite3_bind_int64(q, 2, (int64_t)mqbi_store_msg_cost(r->msg));
		if ((rc = bind_msg(q, 3, r->msg)) != SQLITE_OK || (rc = run(q)) != SQLITE_OK) {
			finish(q);
			return rc;
		}
		if (sqlite3_changes(s->db) > 0) {
			s->d_messages++;
			s->d_bytes += (int64_t)mqbi_store_msg_cost(r->msg);
		}
		return SQLITE_OK;
	case MQBI_REC_DLV_PUT:
		if (!encode_ids(s, r, &len))
			return SQLITE_NOMEM;
		q = st[S_DLV_PUT];
		sqlite3_bind_int64(q, 1, sid);
		sqlite3_bind_int64(q, 2, mid);
		sqlite3_bind_int(q, 3, r->qos);
		sqlite3_bind_int(q, 4, r->flags != 0);
		bind_blob(q, 5, s->ids, len);
		if ((rc = run(q)) != SQLITE_OK)
			return rc;
		if (sqlite3_changes(s->db) > 0) {
			s->d_deliveries++;
			s->d_bytes += DLV_COST;
		}
		return SQLITE_OK;
	case MQBI_REC_DLV_STATE:
		q = st[S_DLV_STATE];
		sqlite3_bind_int64(q, 1, sid);
		sqlite3_bind_int64(q, 2, mid);
		sqlite3_bind_int(q, 3, r->packet_id);
		sqlite3_bind_int(q, 4, r->state);
		return run(q);
	case MQBI_REC_DLV_DEL:
		q = st[S_DLV_DEL];
		sqlite3_bind_int64(q, 1, sid);
		sqlite3_bind_int64(q, 2, mid);
		if ((rc = run(q)) != SQLITE_OK)
			return rc;
		if (sqlite3_changes(s->db) == 0)
			return SQLITE_OK;
		s->d_deliveries--;
		s->d_bytes -= DLV_COST;
		return gc_one(s, r->mid);
	case MQBI_REC_DLV_DROP_OLDEST: {
		if (r->num == 0)
			return SQLITE_OK;
		q = st[S_DLV_COLLECT_OLDEST];
		sqlite3_bind_int64(q, 1, sid);
		sqlite3_bind_int64(q, 2, r->num);
		if ((rc = run(q)) != SQLITE_OK)
			return rc;
		q = st[S_DLV_DEL_COLLECTED];
		sqlite3_bind_int64(q, 1, sid);
		if ((rc = run(q)) != SQLITE_OK)
			return rc;
		int gone = sqlite3_changes(s->db);
		s->d_deliveries -= gone;
		s->d_bytes -= (int64_t)gone * DLV_COST;
		return gc_set(s);
	}
	case MQBI_REC_AWREL_PUT:
	case MQBI_REC_AWREL_DEL:
		q = st[r->op == MQBI_REC_AWREL_PUT ? S_AWREL_PUT : S_AWREL_DEL];
		sqlite3_bind_int64(q, 1, sid);
		sqlite3_bind_int(q, 2, r->packet_id);
		return run(q);
	case MQBI_REC_RETAIN_PUT:
		if (!r->msg)
			return SQLITE_MISUSE;
		q = st[S_RETAIN_PUT];
		if ((rc = bind_msg(q, 1, r->msg)) != SQLITE_OK) {
			finish(q);
			return rc;
		}
		return run(q);
	case MQBI_REC_RETAIN_DEL:
		q = st[S_RETAIN_DEL];
		bind_blob(q, 1, r->text, r->text_len);
		return run(q);
	case MQBI_REC_WILL_PUT:
		if (!r->msg)
			return SQLITE_MISUSE;
		q = st[S_WILL_PUT];
		sqlite3_bind_int64(q, 1, sid);
		sqlite3_bind_int64(q, 10, r->at);
		if ((rc = bind_msg(q, 2, r->msg)) != SQLITE_OK) {
			finish(q);
			return rc;
		}
		return run(q);
	case MQBI_REC_WILL_DEL:
		q = st[S_WILL_DEL];
		sqlite3_bind_int64(q, 1, sid);
		return run(q);
	default:
		return SQLITE_MISUSE;
	}
}

static mqb_err sq_apply(mqbi_store *base, const mqbi_rec *recs, size_t n)
{
	sq_store *s = (sq_store *)base;
	mqb_err e = ensure_counted(s);
	if (e != MQB_OK || n == 0)
		return e;
	if ((e = begin(s)) != MQB_OK)
		return e;
	for (size_t i = 0; i < n; i++) {
		int rc = apply_one(s, &recs[i]);
		if (rc == SQLITE_OK)
			continue;
		char doing[96];
		snprintf(doing, sizeof doing,
		         "%s (record %zu of %zu, session %" PRIu64 ", message %" PRIu64 ")",
		         op_name(recs[i].op), i + 1, n, recs[i].sid, recs[i].mid);
		if (rc == SQLITE_NOMEM && sqlite3_errcode(s->db) != SQLITE_NOMEM)
			e = nomem(s, doing); /* ours, not SQLite's */
		else if (rc == SQLITE_MISUSE) {
			snprintf(s->err, sizeof s->err, "%s: %s: invalid record", s->path, doing);
			e = MQB_ERR_INVAL;
		} else
			e = fail(s, rc, doing);
		rollback(s);
		return e;
	}
	return commit(s);
}

/* ---- load ---------------------------------------------------------------- */

/* Delivery counts of one session. */
typedef struct dlv_count {
	uint64_t sid, total, queued;
} dlv_count;

typedef struct counts {
	dlv_count *v;
	size_t n, cap;
} counts;

/* Restores consistency after anything a crash or an older build could have
 * left: duplicate client ids, rows of missing sessions, messages without
 * deliveries, expired retained messages. Also counts deliveries per session
 * (into c, by ascending sid) and the totals. */
static mqb_err load_cleanup(sq_store *s, counts *c)
{
	static const char *const sweeps[] = {
	        /* A client id has one session: the newest. */
	        ("DELETE FROM session WHERE sid NOT IN"
	         " (SELECT max(sid) FROM session GROUP BY client_id)"),
	        "DELETE FROM sub WHERE sid NOT IN (SELECT sid FROM session)",
	        "DELETE FROM awrel WHERE sid NOT IN (SELECT sid FROM session)",
	        "DELETE FROM will WHERE sid NOT IN (SELECT sid FROM session)",
	};
	mqb_err e = begin(s);
	if (e != MQB_OK)
		return e;
	const char *doing = "removing orphaned rows";
	int rc = SQLITE_OK;
	for (size_t i = 0; i < sizeof(sweeps) / sizeof(*sweeps) && rc == SQLITE_OK; i++)
		rc = sqlite3_exec(s->db, sweeps[i], NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		goto fail;

	/* One pass over the (narrow) delivery table, in sid order. */
	doing = "counting deliveries";
	sqlite3_stmt *q = NULL, *has = NULL;
	rc = sqlite3_prepare_v2(
	        s->db, "SELECT sid, count(*), sum(packet_id = 0) FROM delivery GROUP BY sid", -1,
	        &q, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(s->db, "SELECT 1 FROM session WHERE sid = ?", -1, &has,
		                        NULL);
	while (rc == SQLITE_OK && (rc = sqlite3_step(q)) == SQLITE_ROW) {
		rc = SQLITE_OK;
		if (c->n == c->cap) {
			size_t cap = c->cap ? c->cap * 2 : 64;
			dlv_count *v = mqbi_realloc(s->a, c->v, cap * sizeof(*v));
			if (!v) {
				sqlite3_finalize(q);
				sqlite3_finalize(has);
				e = nomem(s, doing);
				rollback(s);
				return e;
			}
			c->v = v;
			c->cap = cap;
		}
		dlv_count *d = &c->v[c->n++];
		d->sid = (uint64_t)sqlite3_column_int64(q, 0);
		d->total = (uint64_t)sqlite3_column_int64(q, 1);
		d->queued = (uint64_t)sqlite3_column_int64(q, 2);
		sqlite3_bind_int64(has, 1, (int64_t)d->sid);
		int hr = sqlite3_step(has);
		sqlite3_reset(has);
		if (hr == SQLITE_DONE)
			d->total = UINT64_MAX; /* orphaned: deleted below */
		else if (hr != SQLITE_ROW)
			rc = hr;
	}
	sqlite3_finalize(q);
	sqlite3_finalize(has);
	if (rc != SQLITE_DONE)
		goto fail;
	rc = SQLITE_OK;

	doing = "removing deliveries of missing sessions";
	sqlite3_stmt *del = s->st[S_SESSION_DLV_DEL];
	size_t kept = 0;
	uint64_t dlvs = 0;
	for (size_t i = 0; i < c->n; i++) {
		if (c->v[i].total != UINT64_MAX) {
			dlvs += c->v[i].total;
			c->v[kept++] = c->v[i];
			continue;
		}
		sqlite3_bind_int64(del, 1, (int64_t)c->v[i].sid);
		if ((rc = run(del)) != SQLITE_OK)
			goto fail;
	}
	c->n = kept;

	/* Through msg_cost, so that payloads are not read. */
	doing = "removing messages without deliveries";
	rc = sqlite3_exec(s->db,
	                  "DELETE FROM msg WHERE mid IN (SELECT mid FROM msg INDEXED BY msg_cost"
	                  " WHERE NOT EXISTS (SELECT 1 FROM delivery d WHERE d.mid = msg.mid))",
	                  NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		goto fail;

	doing = "removing expired retained messages";
	sqlite3_stmt *ex;
	rc = sqlite3_prepare_v2(s->db,
	                        "DELETE FROM retained WHERE expire_at != 0 AND expire_at < ?", -1,
	                        &ex, NULL);
	if (rc != SQLITE_OK)
		goto fail;
	sqlite3_bind_int64(ex, 1, mqbi_wall_ms());
	rc = sqlite3_step(ex);
	sqlite3_finalize(ex);
	if (rc != SQLITE_DONE)
		goto fail;

	doing = "counting stored messages";
	int64_t msgs, cost;
	if ((rc = query_int(s->db, "SELECT count(*) FROM msg", &msgs)) != SQLITE_OK ||
	    (rc = query_int(s->db, "SELECT coalesce(sum(cost), 0) FROM msg", &cost)) != SQLITE_OK)
		goto fail;
	if ((e = commit(s)) != MQB_OK)
		return e;
	s->messages = (uint64_t)msgs;
	s->deliveries = dlvs;
	s->bytes = (uint64_t)cost + dlvs * DLV_COST;
	s->counted = true;
	return MQB_OK;
fail:
	e = fail(s, rc, doing);
	rollback(s);
	return e;
}

/* Steps q calling row(s, q, user) for each row; stops at the first error. */
typedef mqb_err (*row_fn)(sq_store *s, sqlite3_stmt *q, void *user);

static mqb_err each_row(sq_store *s, const char *sql, const char *doing, row_fn row, void *user)
{
	sqlite3_stmt *q;
	int rc = sqlite3_prepare_v2(s->db, sql, -1, &q, NULL);
	if (rc != SQLITE_OK)
		return fail(s, rc, doing);
	mqb_err e = MQB_OK;
	while ((rc = sqlite3_step(q)) == SQLITE_ROW)
		if ((e = row(s, q, user)) != MQB_OK)
			break;
	if (e == MQB_OK && rc != SQLITE_DONE)
		e = fail(s, rc, doing);
	sqlite3_finalize(q);
	return e;
}

typedef struct load_ctx {
	const mqbi_store_loader *l;
	const counts *c;
	size_t next; /* in c, sessions ascending */
} load_ctx;

static mqb_err row_session(sq_store *s, sqlite3_stmt *q, void *user)
{
	(void)s;
	load_ctx *x = user;
	uint64_t sid = (uint64_t)sqlite3_column_int64(q, 0), queued = 0;
	/* Both go by ascending sid. */
	while (x->next < x->c->n && x->c->v[x->next].sid < sid)
		x->next++;
	if (x->next < x->c->n && x->c->v[x->next].sid == sid)
		queued = x->c->v[x->next].queued;
	size_t len;
	const char *id = col_blob(q, 1, &len);
	return x->l->session(x->l->user, sid, id, len, (uint32_t)sqlite3_column_int64(q, 2),
	                     (uint8_t)sqlite3_column_int(q, 3), sqlite3_column_int64(q, 4), queued);
}

static mqb_err row_sub(sq_store *s, sqlite3_stmt *q, void *user)
{
	(void)s;
	load_ctx *x = user;
	size_t len;
	const char *text = col_blob(q, 1, &len);
	return x->l->sub(x->l->user, (uint64_t)sqlite3_column_int64(q, 0), text, len,
	                 (uint8_t)sqlite3_column_int(q, 2), (uint32_t)sqlite3_column_int64(q, 3));
}

/* A delivery from columns mid, qos, retain, sub_ids, packet_id, state and
 * the message's (MSG_COLS) starting at `col`. */
static mqb_err col_delivery(sq_store *s, sqlite3_stmt *q, int col, mqbi_stored_delivery *d)
{
	size_t len;
	const uint8_t *ids = col_blob(q, col + 3, &len);
	*d = (mqbi_stored_delivery){
	        .mid = (uint64_t)sqlite3_column_int64(q, col),
	        .qos = (uint8_t)sqlite3_column_int(q, col + 1),
	        .retain = sqlite3_column_int(q, col + 2) != 0,
	        .packet_id = (uint16_t)sqlite3_column_int(q, col + 4),
	        .state = (uint8_t)sqlite3_column_int(q, col + 5),
	};
	if (!decode_ids(s, ids, len, &d->sub_ids, &d->n_sub_ids))
		return nomem(s, "reading a delivery");
	d->msg = col_msg(s->a, q, col + 6);
	return d->msg ? MQB_OK : nomem(s, "reading a delivery");
}

static mqb_err row_inflight(sq_store *s, sqlite3_stmt *q, void *user)
{
	load_ctx *x = user;
	mqbi_stored_delivery d;
	mqb_err e = col_delivery(s, q, 1, &d);
	if (e != MQB_OK)
		return e;
	return x->l->inflight(x->l->user, (uint64_t)sqlite3_column_int64(q, 0), &d);
}

static mqb_err row_awrel(sq_store *s, sqlite3_stmt *q, void *user)
{
	(void)s;
	load_ctx *x = user;
	return x->l->awaiting_rel(x->l->user, (uint64_t)sqlite3_column_int64(q, 0),
	                          (uint16_t)sqlite3_column_int(q, 1));
}

static mqb_err row_retained(sq_store *s, sqlite3_stmt *q, void *user)
{
	load_ctx *x = user;
	mqbi_msg *m = col_msg(s->a, q, 0);
	if (!m)
		return nomem(s, "reading a retained message");
	return x->l->retained(x->l->user, m);
}

static mqb_err row_will(sq_store *s, sqlite3_stmt *q, void *user)
{
	load_ctx *x = user;
	mqbi_msg *m = col_msg(s->a, q, 1);
	if (!m)
		return nomem(s, "reading a will");
	return x->l->will(x->l->user, (uint64_t)sqlite3_column_int64(q, 0), m,
	                  sqlite3_column_int64(q, 9));
}

static mqb_err sq_load(mqbi_store *base, const mqbi_store_loader *l, uint64_t *max_sid,
                       uint64_t *max_mid)
{
	sq_store *s = (sq_store *)base;
	counts c = {0};
	mqb_err e = load_cleanup(s, &c);
	load_ctx x = {.l = l, .c = &c};
	if (e == MQB_OK && l->session)
		e = each_row(s,
		             "SELECT sid, client_id, expiry, level, offline_at FROM session ORDER "
		             "BY sid",
		             "reading sessions", row_session, &x);
	if (e == MQB_OK && l->sub)
		e = each_row(s, "SELECT sid, text, options, sub_id FROM sub ORDER BY sid, text",
		             "reading subscriptions", row_sub, &x);
	/* delivery_inflight: queued rows are never visited. */
	if (e == MQB_OK && l->inflight)
		e = each_row(s,
		             "SELECT d.sid, d.mid, d.qos, d.retain, d.sub_ids, d.packet_id, "
		             "d.state, " MSG_COLS_M " FROM delivery d INDEXED BY delivery_inflight"
		             " JOIN msg m ON m.mid = d.mid"
		             " WHERE d.packet_id != 0 ORDER BY d.sid, d.mid",
		             "reading deliveries in flight", row_inflight, &x);
	if (e == MQB_OK && l->awaiting_rel)
		e = each_row(s, "SELECT sid, packet_id FROM awrel ORDER BY sid, packet_id",
		             "reading awaited PUBRELs", row_awrel, &x);
	if (e == MQB_OK && l->retained)
		e = each_row(s, "SELECT " MSG_COLS " FROM retained", "reading retained messages",
		             row_retained, &x);
	if (e == MQB_OK && l->will)
		e = each_row(s, "SELECT sid, " MSG_COLS ", due_at FROM will ORDER BY sid",
		             "reading wills", row_will, &x);
	mqbi_free(s->a, c.v);
	if (e != MQB_OK)
		return e;
	int64_t sid, mid1, mid2;
	int rc = query_int(s->db, "SELECT coalesce(max(sid), 0) FROM session", &sid);
	if (rc == SQLITE_OK)
		rc = query_int(s->db, "SELECT coalesce(max(mid), 0) FROM msg", &mid1);
	if (rc == SQLITE_OK)
		rc = query_int(s->db, "SELECT coalesce(max(mid), 0) FROM delivery", &mid2);
	if (rc != SQLITE_OK)
		return fail(s, rc, "reading the highest ids");
	if (max_sid)
		*max_sid = (uint64_t)sid;
	if (max_mid)
		*max_mid = (uint64_t)(mid1 > mid2 ? mid1 : mid2);
	return MQB_OK;
}

/* ---- read_queue, trim, checkpoint, stats ------------------------------- */

static mqb_err sq_read_queue(mqbi_store *base, uint64_t sid, uint32_t limit, mqbi_store_dlv_fn fn,
                             void *user)
{
	sq_store *s = (sq_store *)base;
	sqlite3_stmt *q = s->st[S_READ_QUEUE];
	sqlite3_bind_int64(q, 1, (int64_t)sid);
	sqlite3_bind_int64(q, 2, limit);
	mqb_err e = MQB_OK;
	int rc;
	while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
		mqbi_stored_delivery d;
		if ((e = col_delivery(s, q, 0, &d)) != MQB_OK || (e = fn(user, &d)) != MQB_OK)
			break;
	}
	if (e == MQB_OK && rc != SQLITE_DONE)
		e = fail(s, rc, "reading a session's queue");
	finish(q);
	return e;
}

static mqb_err sq_trim(mqbi_store *base, uint64_t target, uint64_t *dropped)
{
	sq_store *s = (sq_store *)base;
	uint64_t n = 0;
	mqb_err e = ensure_counted(s);
	while (e == MQB_OK && s->bytes > target) {
		/* Picked first: rows are not deleted under a running query. */
		struct {
			int64_t sid, mid;
		} pick[TRIM_BATCH];
		size_t k = 0;
		sqlite3_stmt *q = s->st[S_TRIM_PICK];
		sqlite3_bind_int(q, 1, TRIM_BATCH);
		int rc = SQLITE_DONE;
		while (k < TRIM_BATCH && (rc = sqlite3_step(q)) == SQLITE_ROW) {
			pick[k].sid = sqlite3_column_int64(q, 0);
			pick[k].mid = sqlite3_column_int64(q, 1);
			k++;
		}
		finish(q);
		if (k < TRIM_BATCH && rc != SQLITE_DONE) {
			e = fail(s, rc, "choosing deliveries to drop");
			break;
		}
		if (k == 0)
			break; /* nothing queued left */
		if ((e = begin(s)) != MQB_OK)
			break;
		size_t done = 0;
		for (; done < k && (int64_t)s->bytes + s->d_bytes > (int64_t)target; done++) {
			mqbi_rec r = {.op = MQBI_REC_DLV_DEL,
			              .sid = (uint64_t)pick[done].sid,
			              .mid = (uint64_t)pick[done].mid};
			if ((rc = apply_one(s, &r)) != SQLITE_OK) {
				e = fail(s, rc, "dropping the oldest queued deliveries");
				rollback(s);
				break;
			}
		}
		if (e != MQB_OK || (e = commit(s)) != MQB_OK)
			break;
		n += done;
	}
	if (dropped)
		*dropped = n;
	return e;
}

static mqb_err sq_checkpoint(mqbi_store *base)
{
	sq_store *s = (sq_store *)base;
	int rc = sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
	if (rc == SQLITE_BUSY)
		rc = sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
	return rc == SQLITE_OK ? MQB_OK : fail(s, rc, "checkpointing");
}

static uint64_t file_size(const char *path)
{
	struct stat sb;
	return stat(path, &sb) == 0 ? (uint64_t)sb.st_size : 0;
}

static void sq_stats(mqbi_store *base, mqbi_store_stats *out)
{
	sq_store *s = (sq_store *)base;
	ensure_counted(s);
	*out = (mqbi_store_stats){
	        .bytes = s->bytes,
	        .messages = s->messages,
	        .deliveries = s->deliveries,
	        .file_bytes = file_size(s->path) + file_size(s->wal_path),
	};
}

static const char *sq_errmsg(mqbi_store *base)
{
	return ((sq_store *)base)->err;
}

static void destroy(sq_store *s)
{
	for (int i = 0; i < S_COUNT; i++)
		sqlite3_finalize(s->st[i]);
	if (s->db) {
		sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
		sqlite3_close(s->db);
	}
	mqbi_free(s->a, s->ids);
	mqbi_free(s->a, s->path);
	mqbi_free(s->a, s->wal_path);
	mqbi_free(s->a, s);
}

static void sq_close(mqbi_store *base)
{
	if (base)
		destroy((sq_store *)base);
}

static const mqbi_store_ops sq_ops = {
        .name = "sqlite",
        .apply = sq_apply,
        .load = sq_load,
        .read_queue = sq_read_queue,
        .trim = sq_trim,
        .checkpoint = sq_checkpoint,
        .stats = sq_stats,
        .errmsg = sq_errmsg,
        .close = sq_close,
};

/* ---- open ------------------------------------------------------------------ */

/* Why a database cannot be used, by what to do about it. */
typedef enum {
	BAD_NONE,
	BAD_UNUSABLE, /* corrupt, foreign, not a database: may be moved aside */
	BAD_NEWER,    /* never moved aside: a newer build can use it */
	BAD_IN_USE,
	BAD_IO,
} bad_kind;

typedef struct opening {
	const mqbi_store_options *o;
	char *why;
	size_t why_len;
} opening;

/* The directory that holds path, into dir; false when too long. */
static bool parent_of(const char *path, char *dir, size_t size)
{
	const char *slash = strrchr(path, '/');
	size_t len = !slash ? 1 : slash == path ? 1 : (size_t)(slash - path);
	if (len >= size)
		return false;
	memcpy(dir, slash ? path : ".", len);
	dir[len] = '\0';
	return true;
}

/* Explains a failure to open by the file's permissions, if they are why
 * (SQLite falls back to read-only and then fails with other errors). */
static bool explain_access(opening *op)
{
	const char *path = op->o->path;
	char dir[4096];
	struct stat sb;
	if (!parent_of(path, dir, sizeof dir))
		return false;
	if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
		snprintf(op->why, op->why_len, "%s: cannot open: its directory does not exist",
		         path);
		return true;
	}
	if (stat(path, &sb) == 0) {
		if (access(path, R_OK | W_OK) == 0)
			return false;
		snprintf(op->why, op->why_len,
		         "%s: permission denied (the broker must be able to read and write it)",
		         path);
		return true;
	}
	if (access(dir, W_OK | X_OK) == 0)
		return false;
	snprintf(op->why, op->why_len,
	         "%s: permission denied: cannot create it in %s (the broker must be able to "
	         "write there)",
	         path, dir);
	return true;
}

static bad_kind classify(opening *op, sqlite3 *db, int rc, const char *doing)
{
	const char *path = op->o->path;
	switch (rc & 0xff) {
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		snprintf(op->why, op->why_len,
		         "%s is in use by another process (or another broker in this one)", path);
		return BAD_IN_USE;
	case SQLITE_NOTADB:
		snprintf(op->why, op->why_len,
		         "%s: not a libmqttbroker database (file is not a database)", path);
		return BAD_UNUSABLE;
	case SQLITE_CORRUPT:
		snprintf(op->why, op->why_len, "%s: database is corrupt (%s while %s)", path,
		         db ? sqlite3_errmsg(db) : sqlite3_errstr(rc), doing);
		return BAD_UNUSABLE;
	case SQLITE_NOMEM:
		snprintf(op->why, op->why_len, "%s: out of memory while %s", path, doing);
		return BAD_IO;
	default:
		break;
	}
	int err = db ? sqlite3_system_errno(db) : 0;
	const char *msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
	if (explain_access(op))
		return BAD_IO;
	if ((rc & 0xff) == SQLITE_READONLY)
		snprintf(op->why, op->why_len, "%s: cannot be written (read-only file system?)",
		         path);
	else if ((rc & 0xff) == SQLITE_FULL)
		snprintf(op->why, op->why_len, "%s: disk full while %s", path, doing);
	else if (err)
		snprintf(op->why, op->why_len, "%s: %s while %s: %s", path, msg, doing,
		         strerror(err));
	else
		snprintf(op->why, op->why_len, "%s: %s while %s", path, msg, doing);
	return BAD_IO;
}

/* Creates or migrates the schema; called inside the open transaction. */
static int migrate(sqlite3 *db, int64_t from)
{
	for (int64_t v = from; v < MQBI_STORE_SCHEMA_VERSION; v++) {
		int rc = sqlite3_exec(db, migrations[v], NULL, NULL, NULL);
		if (rc != SQLITE_OK)
			return rc;
	}
	char sql[96];
	snprintf(sql, sizeof sql, "PRAGMA application_id = %d; PRAGMA user_version = %d",
	         (int)MQBI_STORE_APP_ID, MQBI_STORE_SCHEMA_VERSION);
	return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

/* Takes the lock, checks what the file is and brings its schema up to date. */
static bad_kind validate(opening *op, sqlite3 *db)
{
	const char *path = op->o->path;
	/* The lock is taken now and kept until close. */
	int rc = sqlite3_exec(db, "PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE", NULL, NULL,
	                      NULL);
	if (rc != SQLITE_OK)
		return classify(op, db, rc, "reading it");
	int64_t app, version, tables;
	const char *doing = "reading its header";
	if ((rc = query_int(db, "PRAGMA application_id", &app)) != SQLITE_OK ||
	    (rc = query_int(db, "PRAGMA user_version", &version)) != SQLITE_OK ||
	    (rc = query_int(db, "SELECT count(*) FROM sqlite_master", &tables)) != SQLITE_OK)
		goto fail;
	bool fresh = app == 0 && version == 0 && tables == 0;
	if (!fresh && (uint32_t)app != MQBI_STORE_APP_ID) {
		snprintf(op->why, op->why_len,
		         "%s: not a libmqttbroker database (an SQLite database of another "
		         "application: application_id 0x%08" PRIx32 ")",
		         path, (uint32_t)app);
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
		return BAD_UNUSABLE;
	}
	if (version > MQBI_STORE_SCHEMA_VERSION) {
		snprintf(op->why, op->why_len,
		         "%s: written by a newer libmqttbroker (schema %" PRId64
		         "; this build knows up to %d)",
		         path, version, MQBI_STORE_SCHEMA_VERSION);
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
		return BAD_NEWER;
	}
	if (!fresh && !op->o->skip_check) {
		doing = "checking it";
		sqlite3_stmt *q;
		if ((rc = sqlite3_prepare_v2(db, "PRAGMA quick_check(1)", -1, &q, NULL)) !=
		    SQLITE_OK)
			goto fail;
		rc = sqlite3_step(q);
		if (rc == SQLITE_ROW) {
			const char *res = (const char *)sqlite3_column_text(q, 0);
			if (!res || strcmp(res, "ok") != 0) {
				/* One line: without SQLite's header, newlines as spaces. */
				static const char head[] = "*** in database main ***\n";
				if (res && strncmp(res, head, sizeof head - 1) == 0)
					res += sizeof head - 1;
				int n = snprintf(op->why, op->why_len,
				                 "%s: database is corrupt (%s)", path,
				                 res ? res : "integrity check failed");
				for (int i = 0; i < n && (size_t)i < op->why_len; i++)
					if (op->why[i] == '\n')
						op->why[i] = ' ';
				sqlite3_finalize(q);
				sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
				return BAD_UNUSABLE;
			}
			rc = SQLITE_OK;
		}
		sqlite3_finalize(q);
		if (rc != SQLITE_OK)
			goto fail;
	}
	doing = "creating or upgrading its tables";
	if (version < MQBI_STORE_SCHEMA_VERSION && (rc = migrate(db, version)) != SQLITE_OK)
		goto fail;
	doing = "opening it";
	if ((rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL)) != SQLITE_OK)
		goto fail;
	return BAD_NONE;
fail:;
	bad_kind k = classify(op, db, rc, doing);
	if (!sqlite3_get_autocommit(db))
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	return k;
}

/* The connection's settings, after validation (WAL changes the file). */
static int configure(const mqbi_store_options *o, sqlite3 *db)
{
	int64_t mode_ok, page_size;
	sqlite3_stmt *q;
	int rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode = WAL", -1, &q, NULL);
	if (rc != SQLITE_OK)
		return rc;
	rc = sqlite3_step(q);
	mode_ok = rc == SQLITE_ROW &&
	          sqlite3_stricmp((const char *)sqlite3_column_text(q, 0), "wal") == 0;
	sqlite3_finalize(q);
	if (rc != SQLITE_ROW)
		return rc;
	if (!mode_ok)
		return SQLITE_CANTOPEN;
	static const char *const sync[] = {"FULL", "NORMAL", "OFF"};
	char sql[320];
	snprintf(sql, sizeof sql,
	         "PRAGMA synchronous = %s; PRAGMA wal_autocheckpoint = %u;"
	         " PRAGMA cache_size = -%d; PRAGMA journal_size_limit = %d;"
	         " PRAGMA temp_store = FILE; PRAGMA foreign_keys = OFF;"
	         " CREATE TEMP TABLE IF NOT EXISTS gc(mid INTEGER PRIMARY KEY)",
	         sync[o->sync <= MQBI_SYNC_OFF ? o->sync : 0],
	         o->checkpoint_pages ? o->checkpoint_pages : 1000u, CACHE_KIB, WAL_KEEP_BYTES);
	if ((rc = sqlite3_exec(db, sql, NULL, NULL, NULL)) != SQLITE_OK)
		return rc;
	if (o->max_file_bytes) {
		if ((rc = query_int(db, "PRAGMA page_size", &page_size)) != SQLITE_OK)
			return rc;
		uint64_t pages = o->max_file_bytes / (uint64_t)(page_size > 0 ? page_size : 4096);
		snprintf(sql, sizeof sql, "PRAGMA max_page_count = %" PRIu64, pages ? pages : 1);
		if ((rc = sqlite3_exec(db, sql, NULL, NULL, NULL)) != SQLITE_OK)
			return rc;
	}
	return SQLITE_OK;
}

/* Moves the file and its companions aside; false with *why set on failure. */
static bool move_aside(opening *op)
{
	const char *path = op->o->path;
	char stamp[32], dest[4096], from[4096], to[4200];
	time_t now = time(NULL);
	struct tm tm;
	localtime_r(&now, &tm);
	strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
	struct stat sb;
	for (int i = 0;; i++) {
		int n = i ? snprintf(dest, sizeof dest, "%s.corrupt-%s-%d", path, stamp, i)
		          : snprintf(dest, sizeof dest, "%s.corrupt-%s", path, stamp);
		if (n < 0 || (size_t)n >= sizeof dest) {
			snprintf(op->why, op->why_len, "%s: path too long to move the file aside",
			         path);
			return false;
		}
		if (stat(dest, &sb) != 0 && errno == ENOENT)
			break;
		if (i == 1000) {
			snprintf(op->why, op->why_len, "%s: no free name to move the file aside",
			         path);
			return false;
		}
	}
	if (rename(path, dest) != 0) {
		snprintf(op->why, op->why_len, "%s: cannot move it aside to %s: %s", path, dest,
		         strerror(errno));
		return false;
	}
	static const char *const companions[] = {"-wal", "-shm", "-journal"};
	for (size_t i = 0; i < sizeof(companions) / sizeof(*companions); i++) {
		snprintf(from, sizeof from, "%s%s", path, companions[i]);
		snprintf(to, sizeof to, "%s%s", dest, companions[i]);
		if (rename(from, to) != 0 && errno != ENOENT) {
			snprintf(op->why, op->why_len, "%s: cannot move %s aside: %s", path, from,
			         strerror(errno));
			return false;
		}
	}
	if (op->o->log) {
		char text[8400];
		snprintf(text, sizeof text,
		         "moved %s aside to %s and starting with an empty database: %s", path, dest,
		         op->why);
		op->o->log(op->o->log_user, MQB_LOG_WARNING, text);
	}
	return true;
}

static mqb_err bad_err(bad_kind k)
{
	switch (k) {
	case BAD_UNUSABLE:
		return MQB_ERR_PARSE;
	case BAD_NEWER:
		return MQB_ERR_UNSUPPORTED;
	case BAD_IN_USE:
		return MQB_ERR_STATE;
	default:
		return MQB_ERR_IO;
	}
}

/* Opens and checks the database: a connection ready to prepare on. */
static bad_kind open_db(opening *op, sqlite3 **out)
{
	sqlite3 *db = NULL;
	int rc = sqlite3_open_v2(op->o->path, &db,
	                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
	                         NULL);
	bad_kind k = BAD_NONE;
	if (rc != SQLITE_OK)
		k = classify(op, db, rc, "opening it");
	/* SQLite opens read-only when it may not write: refused, with why. */
	if (k == BAD_NONE && sqlite3_db_readonly(db, "main") == 1)
		k = classify(op, db, SQLITE_READONLY, "opening it");
	if (k == BAD_NONE)
		k = validate(op, db);
	if (k == BAD_NONE && (rc = configure(op->o, db)) != SQLITE_OK)
		k = classify(op, db, rc, "setting it up");
	if (k != BAD_NONE) {
		sqlite3_close(db);
		return k;
	}
	*out = db;
	return BAD_NONE;
}

mqb_err mqbi_store_sqlite_open(const mqbi_store_options *o, mqbi_store **out, char *why,
                               size_t why_len)
{
	char spare[8];
	if (!why || !why_len) {
		why = spare;
		why_len = sizeof spare;
	}
	why[0] = '\0';
	*out = NULL;
	if (!o || !o->path || !o->path[0] || !o->alloc) {
		snprintf(why, why_len, "no database path");
		return MQB_ERR_INVAL;
	}
	opening op = {.o = o, .why = why, .why_len = why_len};
	sqlite3 *db = NULL;
	bad_kind k = open_db(&op, &db);
	if (k == BAD_UNUSABLE && o->on_corrupt == MQBI_CORRUPT_MOVE_ASIDE) {
		if (!move_aside(&op))
			return MQB_ERR_IO;
		why[0] = '\0';
		k = open_db(&op, &db);
	}
	if (k != BAD_NONE)
		return bad_err(k);

	const mqb_allocator *a = o->alloc;
	size_t plen = strlen(o->path);
	sq_store *s = mqbi_calloc(a, sizeof(*s));
	if (!s) {
		sqlite3_close(db);
		snprintf(why, why_len, "%s: out of memory", o->path);
		return MQB_ERR_NOMEM;
	}
	s->base.ops = &sq_ops;
	s->a = a;
	s->db = db;
	s->path = mqbi_strndup(a, o->path, plen);
	s->wal_path = mqbi_malloc(a, plen + 5);
	if (!s->path || !s->wal_path) {
		destroy(s);
		snprintf(why, why_len, "%s: out of memory", o->path);
		return MQB_ERR_NOMEM;
	}
	memcpy(s->wal_path, o->path, plen);
	memcpy(s->wal_path + plen, "-wal", 5);
	for (int i = 0; i < S_COUNT; i++) {
		int rc = sqlite3_prepare_v3(db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
		                            &s->st[i], NULL);
		if (rc != SQLITE_OK) {
			opening op2 = {.o = o, .why = why, .why_len = why_len};
			mqb_err e = bad_err(classify(&op2, db, rc, "preparing its statements"));
			destroy(s);
			return e;
		}
	}
	*out = &s->base;
	return MQB_OK;
}
