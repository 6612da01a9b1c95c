/* The SQLite storage backend (lib/store/sqlite.c). */
#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sqlite3.h>

#include "core/core.h"
#include "store/store.h"

#include "counting_alloc.h"

/* ---- Fixtures ------------------------------------------------------------ */

static char dir[64];

static void make_dir(void)
{
	strcpy(dir, "/tmp/mqb-test-store-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void remove_dir(void)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *e;
	char p[512];
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
		unlink(p);
	}
	closedir(d);
	rmdir(dir);
}

static void setup(void)
{
	cnt.live = cnt.fail_in = 0;
}

static void teardown(void)
{
	ck_assert_int_eq(cnt.live, 0);
}

/* A database path of its own for each test. */
static const char *db_path(const char *name)
{
	static char p[256];
	snprintf(p, sizeof p, "%s/%s.db", dir, name);
	return p;
}

static mqbi_store_options opts(const char *path)
{
	return (mqbi_store_options){.path = path, .sync = MQBI_SYNC_BATCH, .alloc = &alloc};
}

static mqbi_store *open_ok(const mqbi_store_options *o)
{
	mqbi_store *st = NULL;
	char why[512] = "";
	mqb_err e = mqbi_store_sqlite_open(o, &st, why, sizeof why);
	ck_assert_msg(e == MQB_OK, "open %s: %d %s", o->path, e, why);
	ck_assert_ptr_nonnull(st);
	return st;
}

static mqb_err open_fail(const mqbi_store_options *o, char *why, size_t len)
{
	mqbi_store *st = (mqbi_store *)1;
	mqb_err e = mqbi_store_sqlite_open(o, &st, why, len);
	ck_assert_int_ne(e, MQB_OK);
	ck_assert_ptr_null(st);
	ck_assert_msg(strstr(why, o->path) != NULL, "why names the path: %s", why);
	return e;
}

static void apply_ok(mqbi_store *st, const mqbi_rec *r, size_t n)
{
	mqb_err e = st->ops->apply(st, r, n);
	ck_assert_msg(e == MQB_OK, "apply: %d %s", e, st->ops->errmsg(st));
}

static mqbi_store_stats stats(mqbi_store *st)
{
	mqbi_store_stats s;
	st->ops->stats(st, &s);
	return s;
}

/* ---- Messages and records ----------------------------------------------- */

/* Content Type "text": a property that travels with the message. */
static const uint8_t props_ct[] = {0x03, 0x00, 0x04, 't', 'e', 'x', 't'};

static mqbi_msg *made[256];
static size_t n_made;

static mqbi_msg *msg_full(const char *topic, const void *payload, size_t len, uint8_t qos,
                          bool retain, bool props, bool expiry, uint32_t expiry_s, uint64_t now)
{
	mqbi_msg *m = mqbi_msg_create(&alloc, topic, strlen(topic), props ? props_ct : NULL,
	                              props ? sizeof props_ct : 0, payload, len, qos, retain,
	                              "publisher-1", 11, NULL, expiry, expiry_s, now);
	ck_assert_ptr_nonnull(m);
	ck_assert_uint_lt(n_made, 256);
	made[n_made++] = m;
	return m;
}

static mqbi_msg *msg_new(const char *topic, const char *payload, uint8_t qos)
{
	return msg_full(topic, payload, strlen(payload), qos, false, false, false, 0,
	                mqbi_clock_ms());
}

static void drop_msgs(void)
{
	for (size_t i = 0; i < n_made; i++)
		mqbi_msg_unref(&alloc, made[i]);
	n_made = 0;
}

static mqbi_rec r_session(uint64_t sid, const char *id, uint32_t expiry, uint8_t level,
                          int64_t offline_at)
{
	return (mqbi_rec){.op = MQBI_REC_SESSION_PUT,
	                  .sid = sid,
	                  .text = (char *)id,
	                  .text_len = (uint32_t)strlen(id),
	                  .num = expiry,
	                  .flags = level,
	                  .at = offline_at};
}

static mqbi_rec r_sub(uint64_t sid, const char *text, uint8_t options, uint32_t sub_id)
{
	return (mqbi_rec){.op = MQBI_REC_SUB_PUT,
	                  .sid = sid,
	                  .text = (char *)text,
	                  .text_len = (uint32_t)strlen(text),
	                  .flags = options,
	                  .num = sub_id};
}

static mqbi_rec r_msg(uint64_t mid, mqbi_msg *m)
{
	return (mqbi_rec){.op = MQBI_REC_MSG_PUT, .mid = mid, .msg = m};
}

static mqbi_rec r_dlv(uint64_t sid, uint64_t mid, uint8_t qos, uint32_t sub_id)
{
	return (mqbi_rec){.op = MQBI_REC_DLV_PUT,
	                  .sid = sid,
	                  .mid = mid,
	                  .qos = qos,
	                  .n_sub_ids = sub_id ? 1 : 0,
	                  .num = sub_id};
}

static mqbi_rec r_state(uint64_t sid, uint64_t mid, uint16_t packet_id, uint8_t state)
{
	return (mqbi_rec){.op = MQBI_REC_DLV_STATE,
	                  .sid = sid,
	                  .mid = mid,
	                  .packet_id = packet_id,
	                  .state = state};
}

static mqbi_rec r_op(uint8_t op, uint64_t sid, uint64_t mid)
{
	return (mqbi_rec){.op = op, .sid = sid, .mid = mid};
}

static mqbi_rec r_awrel(uint64_t sid, uint16_t packet_id)
{
	return (mqbi_rec){.op = MQBI_REC_AWREL_PUT, .sid = sid, .packet_id = packet_id};
}

static uint64_t cost(const mqbi_msg *m)
{
	return mqbi_store_msg_cost(m);
}

/* ---- A loader that records what it gets --------------------------------- */

#define GOT_MAX 16

typedef struct got_dlv {
	uint64_t sid;
	mqbi_stored_delivery d;
	uint32_t ids[8];
} got_dlv;

typedef struct got {
	int phase; /* the callbacks come in store.h's order */
	size_t n_sessions, n_subs, n_inflight, n_awrel, n_retained, n_wills;
	struct {
		uint64_t sid, queued;
		char id[64];
		uint32_t expiry;
		uint8_t level;
		int64_t offline_at;
	} sessions[GOT_MAX];
	struct {
		uint64_t sid;
		char text[64];
		uint8_t options;
		uint32_t sub_id;
	} subs[GOT_MAX];
	got_dlv inflight[GOT_MAX];
	struct {
		uint64_t sid;
		uint16_t packet_id;
	} awrel[GOT_MAX];
	mqbi_msg *retained[GOT_MAX];
	struct {
		uint64_t sid;
		mqbi_msg *msg;
		int64_t due_at;
	} wills[GOT_MAX];
} got;

static void enter(got *g, int phase)
{
	ck_assert_int_ge(phase, g->phase);
	g->phase = phase;
}

static mqb_err on_session(void *user, uint64_t sid, const char *id, size_t len, uint32_t expiry,
                          uint8_t level, int64_t offline_at, uint64_t queued)
{
	got *g = user;
	enter(g, 1);
	if (g->n_sessions < GOT_MAX) {
		ck_assert_uint_lt(len, 64);
		g->sessions[g->n_sessions].sid = sid;
		memcpy(g->sessions[g->n_sessions].id, id, len);
		g->sessions[g->n_sessions].id[len] = '\0';
		g->sessions[g->n_sessions].expiry = expiry;
		g->sessions[g->n_sessions].level = level;
		g->sessions[g->n_sessions].offline_at = offline_at;
		g->sessions[g->n_sessions].queued = queued;
	}
	g->n_sessions++;
	return MQB_OK;
}

static mqb_err on_sub(void *user, uint64_t sid, const char *text, size_t len, uint8_t options,
                      uint32_t sub_id)
{
	got *g = user;
	enter(g, 2);
	if (g->n_subs < GOT_MAX) {
		ck_assert_uint_lt(len, 64);
		g->subs[g->n_subs].sid = sid;
		memcpy(g->subs[g->n_subs].text, text, len);
		g->subs[g->n_subs].text[len] = '\0';
		g->subs[g->n_subs].options = options;
		g->subs[g->n_subs].sub_id = sub_id;
	}
	g->n_subs++;
	return MQB_OK;
}

static void keep_dlv(got_dlv *out, uint64_t sid, const mqbi_stored_delivery *d)
{
	out->sid = sid;
	out->d = *d;
	ck_assert_uint_le(d->n_sub_ids, 8);
	if (d->n_sub_ids)
		memcpy(out->ids, d->sub_ids, d->n_sub_ids * sizeof(uint32_t));
	out->d.sub_ids = out->ids;
}

static mqb_err on_inflight(void *user, uint64_t sid, const mqbi_stored_delivery *d)
{
	got *g = user;
	enter(g, 3);
	ck_assert_uint_ne(d->packet_id, 0);
	if (g->n_inflight < GOT_MAX)
		keep_dlv(&g->inflight[g->n_inflight], sid, d);
	else
		mqbi_msg_unref(&alloc, d->msg);
	g->n_inflight++;
	return MQB_OK;
}

static mqb_err on_awrel(void *user, uint64_t sid, uint16_t packet_id)
{
	got *g = user;
	enter(g, 4);
	ck_assert_uint_lt(g->n_awrel, GOT_MAX);
	g->awrel[g->n_awrel].sid = sid;
	g->awrel[g->n_awrel++].packet_id = packet_id;
	return MQB_OK;
}

static mqb_err on_retained(void *user, mqbi_msg *m)
{
	got *g = user;
	enter(g, 5);
	ck_assert_uint_lt(g->n_retained, GOT_MAX);
	g->retained[g->n_retained++] = m;
	return MQB_OK;
}

static mqb_err on_will(void *user, uint64_t sid, mqbi_msg *m, int64_t due_at)
{
	got *g = user;
	enter(g, 6);
	ck_assert_uint_lt(g->n_wills, GOT_MAX);
	g->wills[g->n_wills].sid = sid;
	g->wills[g->n_wills].msg = m;
	g->wills[g->n_wills++].due_at = due_at;
	return MQB_OK;
}

static void got_free(got *g)
{
	for (size_t i = 0; i < g->n_inflight && i < GOT_MAX; i++)
		mqbi_msg_unref(&alloc, g->inflight[i].d.msg);
	for (size_t i = 0; i < g->n_retained; i++)
		mqbi_msg_unref(&alloc, g->retained[i]);
	for (size_t i = 0; i < g->n_wills; i++)
		mqbi_msg_unref(&alloc, g->wills[i].msg);
	memset(g, 0, sizeof *g);
}

static void load_ok(mqbi_store *st, got *g, uint64_t *max_sid, uint64_t *max_mid)
{
	memset(g, 0, sizeof *g);
	mqbi_store_loader l = {.user = g,
	                       .session = on_session,
	                       .sub = on_sub,
	                       .inflight = on_inflight,
	                       .awaiting_rel = on_awrel,
	                       .retained = on_retained,
	                       .will = on_will};
	uint64_t s = 77, m = 77;
	mqb_err e = st->ops->load(st, &l, &s, &m);
	ck_assert_msg(e == MQB_OK, "load: %d %s", e, st->ops->errmsg(st));
	if (max_sid)
		*max_sid = s;
	if (max_mid)
		*max_mid = m;
}

/* Closes and reopens, then loads: what a restart sees. */
static mqbi_store *restart(mqbi_store *st, const mqbi_store_options *o, got *g)
{
	st->ops->close(st);
	st = open_ok(o);
	load_ok(st, g, NULL, NULL);
	return st;
}

static void assert_msg(const mqbi_msg *m, const char *topic, const char *payload)
{
	ck_assert_ptr_nonnull(m);
	ck_assert_uint_eq(m->topic_len, strlen(topic));
	ck_assert_str_eq(m->topic, topic);
	ck_assert_uint_eq(m->payload_len, strlen(payload));
	ck_assert(memcmp(m->payload, payload, m->payload_len) == 0);
	ck_assert_uint_eq(m->publisher_len, 11);
	ck_assert(memcmp(m->publisher, "publisher-1", 11) == 0);
}

/* ---- Tests ----------------------------------------------------------------- */

START_TEST(test_empty)
{
	mqbi_store_options o = opts(db_path("empty"));
	mqbi_store *st = open_ok(&o);
	ck_assert_str_eq(st->ops->name, "sqlite");
	got g;
	uint64_t max_sid, max_mid;
	load_ok(st, &g, &max_sid, &max_mid);
	ck_assert_uint_eq(max_sid, 0);
	ck_assert_uint_eq(max_mid, 0);
	ck_assert_uint_eq(g.n_sessions + g.n_subs + g.n_inflight + g.n_retained + g.n_wills, 0);
	mqbi_store_stats s = stats(st);
	ck_assert_uint_eq(s.bytes, 0);
	ck_assert_uint_eq(s.messages, 0);
	ck_assert_uint_eq(s.deliveries, 0);
	ck_assert_uint_gt(s.file_bytes, 0);
	ck_assert_int_eq(st->ops->checkpoint(st), MQB_OK);
	ck_assert_int_eq(st->ops->apply(st, NULL, 0), MQB_OK);
	st->ops->close(st);

	/* The file carries our identity and schema version. */
	sqlite3 *db;
	ck_assert_int_eq(sqlite3_open(o.path, &db), SQLITE_OK);
	sqlite3_stmt *q;
	ck_assert_int_eq(sqlite3_prepare_v2(db, "PRAGMA application_id", -1, &q, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_step(q), SQLITE_ROW);
	ck_assert_int_eq(sqlite3_column_int64(q, 0), MQBI_STORE_APP_ID);
	sqlite3_finalize(q);
	ck_assert_int_eq(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &q, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_step(q), SQLITE_ROW);
	ck_assert_int_eq(sqlite3_column_int(q, 0), MQBI_STORE_SCHEMA_VERSION);
	sqlite3_finalize(q);
	ck_assert_int_eq(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &q, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_step(q), SQLITE_ROW);
	ck_assert_str_eq((const char *)sqlite3_column_text(q, 0), "wal");
	sqlite3_finalize(q);
	sqlite3_close(db);
}
END_TEST

START_TEST(test_roundtrip)
{
	static const uint8_t sync_modes[] = {MQBI_SYNC_ALWAYS, MQBI_SYNC_BATCH, MQBI_SYNC_OFF};
	char name[32];
	snprintf(name, sizeof name, "roundtrip-%d", _i);
	mqbi_store_options o = opts(db_path(name));
	o.sync = sync_modes[_i];
	mqbi_store *st = open_ok(&o);
	got g;
	load_ok(st, &g, NULL, NULL);

	uint64_t now = mqbi_clock_ms();
	mqbi_msg *m10 = msg_full("a/x", "hello", 5, 2, false, true, false, 0, now);
	mqbi_msg *m11 = msg_new("a/y", "queued", 1);
	mqbi_msg *m12 = msg_new("c", "to bob", 1);
	mqbi_msg *ret = msg_full("r/1", "kept", 4, 1, true, true, false, 0, now);
	mqbi_msg *will = msg_new("will/bob", "bob is gone", 1);
	uint32_t ids[] = {7, 9, 4000000000u};
	mqbi_rec dlv10 = r_dlv(1, 10, 2, 0);
	dlv10.flags = 1; /* retain */
	dlv10.n_sub_ids = 3;
	dlv10.sub_ids = ids;
	mqbi_rec will_put = {.op = MQBI_REC_WILL_PUT, .sid = 2, .msg = will, .at = 1700000000123};
	mqbi_rec recs[] = {
	        r_session(1, "alice", 3600, 5, 1700000000000),
	        r_session(2, "bob", UINT32_MAX, 4, 0),
	        r_sub(1, "a/+", 0x21, 7),
	        r_sub(1, "$share/g/b/#", 0x01, 0),
	        r_sub(2, "c", 0x02, 0),
	        r_msg(10, m10),
	        dlv10,
	        r_state(1, 10, 5, MQBI_DS_WAIT_PUBREC),
	        r_msg(11, m11),
	        r_dlv(1, 11, 1, 7),
	        r_msg(12, m12),
	        r_dlv(2, 12, 1, 0),
	        r_state(2, 12, 9, MQBI_DS_WAIT_PUBACK),
	        r_awrel(1, 33),
	        r_awrel(1, 34),
	        r_awrel(2, 1),
	        {.op = MQBI_REC_RETAIN_PUT, .msg = ret},
	        will_put,
	};
	apply_ok(st, recs, sizeof recs / sizeof *recs);
	uint64_t bytes = cost(m10) + cost(m11) + cost(m12) + 3 * 32;
	mqbi_store_stats s = stats(st);
	ck_assert_uint_eq(s.messages, 3);
	ck_assert_uint_eq(s.deliveries, 3);
	ck_assert_uint_eq(s.bytes, bytes);

	uint64_t max_sid, max_mid;
	st->ops->close(st);
	st = open_ok(&o);
	load_ok(st, &g, &max_sid, &max_mid);
	ck_assert_uint_eq(max_sid, 2);
	ck_assert_uint_eq(max_mid, 12);

	ck_assert_uint_eq(g.n_sessions, 2);
	ck_assert_uint_eq(g.sessions[0].sid, 1);
	ck_assert_str_eq(g.sessions[0].id, "alice");
	ck_assert_uint_eq(g.sessions[0].expiry, 3600);
	ck_assert_uint_eq(g.sessions[0].level, 5);
	ck_assert_int_eq(g.sessions[0].offline_at, 1700000000000);
	ck_assert_uint_eq(g.sessions[0].queued, 1);
	ck_assert_uint_eq(g.sessions[1].sid, 2);
	ck_assert_str_eq(g.sessions[1].id, "bob");
	ck_assert_uint_eq(g.sessions[1].expiry, UINT32_MAX);
	ck_assert_uint_eq(g.sessions[1].level, 4);
	ck_assert_int_eq(g.sessions[1].offline_at, 0);
	ck_assert_uint_eq(g.sessions[1].queued, 0);

	ck_assert_uint_eq(g.n_subs, 3);
	ck_assert_uint_eq(g.subs[0].sid, 1);
	ck_assert_str_eq(g.subs[0].text, "$share/g/b/#");
	ck_assert_uint_eq(g.subs[0].options, 0x01);
	ck_assert_uint_eq(g.subs[0].sub_id, 0);
	ck_assert_str_eq(g.subs[1].text, "a/+");
	ck_assert_uint_eq(g.subs[1].options, 0x21);
	ck_assert_uint_eq(g.subs[1].sub_id, 7);
	ck_assert_uint_eq(g.subs[2].sid, 2);
	ck_assert_str_eq(g.subs[2].text, "c");
	ck_assert_uint_eq(g.subs[2].options, 0x02);

	ck_assert_uint_eq(g.n_inflight, 2);
	got_dlv *d = &g.inflight[0];
	ck_assert_uint_eq(d->sid, 1);
	ck_assert_uint_eq(d->d.mid, 10);
	ck_assert_uint_eq(d->d.packet_id, 5);
	ck_assert_uint_eq(d->d.state, MQBI_DS_WAIT_PUBREC);
	ck_assert_uint_eq(d->d.qos, 2);
	ck_assert(d->d.retain);
	ck_assert_uint_eq(d->d.n_sub_ids, 3);
	ck_assert_uint_eq(d->ids[0], 7);
	ck_assert_uint_eq(d->ids[1], 9);
	ck_assert_uint_eq(d->ids[2], 4000000000u);
	assert_msg(d->d.msg, "a/x", "hello");
	ck_assert_uint_eq(d->d.msg->qos, 2);
	ck_assert_uint_eq(d->d.msg->props_len, sizeof props_ct);
	ck_assert(memcmp(d->d.msg->props, props_ct, sizeof props_ct) == 0);
	ck_assert(!d->d.msg->has_expiry);
	d = &g.inflight[1];
	ck_assert_uint_eq(d->sid, 2);
	ck_assert_uint_eq(d->d.mid, 12);
	ck_assert_uint_eq(d->d.packet_id, 9);
	ck_assert_uint_eq(d->d.state, MQBI_DS_WAIT_PUBACK);
	ck_assert(!d->d.retain);
	ck_assert_uint_eq(d->d.n_sub_ids, 0);
	assert_msg(d->d.msg, "c", "to bob");

	ck_assert_uint_eq(g.n_awrel, 3);
	ck_assert_uint_eq(g.awrel[0].sid, 1);
	ck_assert_uint_eq(g.awrel[0].packet_id, 33);
	ck_assert_uint_eq(g.awrel[1].packet_id, 34);
	ck_assert_uint_eq(g.awrel[2].sid, 2);
	ck_assert_uint_eq(g.awrel[2].packet_id, 1);

	ck_assert_uint_eq(g.n_retained, 1);
	assert_msg(g.retained[0], "r/1", "kept");
	ck_assert(g.retained[0]->retain);
	ck_assert_uint_eq(g.retained[0]->props_len, sizeof props_ct);

	ck_assert_uint_eq(g.n_wills, 1);
	ck_assert_uint_eq(g.wills[0].sid, 2);
	ck_assert_int_eq(g.wills[0].due_at, 1700000000123);
	assert_msg(g.wills[0].msg, "will/bob", "bob is gone");

	s = stats(st);
	ck_assert_uint_eq(s.messages, 3);
	ck_assert_uint_eq(s.deliveries, 3);
	ck_assert_uint_eq(s.bytes, bytes);
	got_free(&g);

	/* Replacing, then deleting, each kind of row. */
	mqbi_msg *ret2 = msg_new("r/1", "newer", 0);
	mqbi_rec again[] = {
	        r_session(1, "alice", 60, 4, 0),
	        r_sub(1, "a/+", 0x02, 8),
	        {.op = MQBI_REC_SUB_DEL, .sid = 1, .text = "$share/g/b/#", .text_len = 12},
	        {.op = MQBI_REC_AWREL_DEL, .sid = 1, .packet_id = 33},
	        {.op = MQBI_REC_RETAIN_PUT, .msg = ret2},
	        r_op(MQBI_REC_WILL_DEL, 2, 0),
	};
	apply_ok(st, again, sizeof again / sizeof *again);
	st = restart(st, &o, &g);
	ck_assert_uint_eq(g.n_sessions, 2);
	ck_assert_uint_eq(g.sessions[0].expiry, 60);
	ck_assert_uint_eq(g.sessions[0].level, 4);
	ck_assert_uint_eq(g.sessions[0].queued, 1); /* SESSION_PUT kept its rows */
	ck_assert_uint_eq(g.n_subs, 2);
	ck_assert_str_eq(g.subs[0].text, "a/+");
	ck_assert_uint_eq(g.subs[0].options, 0x02);
	ck_assert_uint_eq(g.subs[0].sub_id, 8);
	ck_assert_uint_eq(g.n_inflight, 2);
	ck_assert_uint_eq(g.n_awrel, 2);
	ck_assert_uint_eq(g.awrel[0].packet_id, 34);
	ck_assert_uint_eq(g.n_retained, 1);
	assert_msg(g.retained[0], "r/1", "newer");
	ck_assert_uint_eq(g.n_wills, 0);
	got_free(&g);

	mqbi_rec del = {.op = MQBI_REC_RETAIN_DEL, .text = "r/1", .text_len = 3};
	apply_ok(st, &del, 1);
	st = restart(st, &o, &g);
	ck_assert_uint_eq(g.n_retained, 0);
	got_free(&g);
	st->ops->close(st);
	drop_msgs();
}
END_TEST

START_TEST(test_shared_message)
{
	mqbi_store_options o = opts(db_path("shared"));
	mqbi_store *st = open_ok(&o);
	got g;
	load_ok(st, &g, NULL, NULL);
	mqbi_msg *m = msg_new("t", "one payload", 1);
	mqbi_rec recs[] = {
	        r_session(1, "a", 0, 5, 0),
	        r_session(2, "b", 0, 5, 0),
	        r_msg(1, m),
	        r_dlv(1, 1, 1, 0),
	        r_msg(1, m), /* a second put is ignored */
	        r_dlv(2, 1, 1, 0),
	        r_dlv(2, 1, 1, 0),
	};
	apply_ok(st, recs, sizeof recs / sizeof *recs);
	mqbi_store_stats s = stats(st);
	ck_assert_uint_eq(s.messages, 1);
	ck_assert_uint_eq(s.deliveries, 2);
	ck_assert_uint_eq(s.bytes, cost(m) + 64);

	mqbi_rec del1 = r_op(MQBI_REC_DLV_DEL, 1, 1);
	apply_ok(st, &del1, 1);
	s = stats(st);
	ck_assert_uint_eq(s.messages, 1); /* still referenced by session 2 */
	ck_assert_uint_eq(s.deliveries, 1);
	ck_assert_uint_eq(s.bytes, cost(m) + 32);
	st = restart(st, &o, &g);
	ck_assert_uint_eq(g.sessions[0].queued, 0);
	ck_assert_uint_eq(g.sessions[1].queued, 1);
	ck_assert_uint_eq(stats(st).messages, 1);

	mqbi_rec del2[] = {r_op(MQBI_REC_DLV_DEL, 2, 1), r_op(MQBI_REC_DLV_DEL, 2, 1)};
	apply_ok(st, del2, 2);
	s = stats(st);
	ck_assert_uint_eq(s.messages, 0);
	ck_assert_uint_eq(s.deliveries, 0);
	ck_assert_uint_eq(s.bytes, 0);
	st = restart(st, &o, &g);
	s = stats(st);
	ck_assert_uint_eq(s.messages, 0);
	ck_assert_uint_eq(s.bytes, 0);
	st->ops->close(st);
	drop_msgs();
}
END_TEST

START_TEST(test_session_del)
{
	mqbi_store_options o = opts(db_path("session-del"));
	mqbi_store *st = open_ok(&o);
	got g;
	load_ok(st, &g, NULL, NULL);
	mqbi_msg *shared = msg_new("t/shared", "both", 1);
	mqbi_msg *only1 = msg_new("t/1", "one", 1);
	mqbi_msg *only2 = msg_new("t/2", "two", 1);
	mqbi_msg *w1 = msg_new("will/1", "x", 0), *w2 = msg_new("will/2", "y", 0);
	mqbi_rec recs[] = {
	        r_session(1, "one", 100, 5, 0),
	        r_session(2, "two", 100, 5, 0),
	        r_sub(1, "t/#", 1, 0),
	        r_sub(2, "t/#", 1, 0),
	        r_msg(1, shared),
	        r_dlv(1, 1, 1, 0),
	        r_dlv(2, 1, 1, 0),
	        r_msg(2, only1),
	        r_dlv(1, 2, 1, 0),
	        r_state(1, 2, 1, MQBI_DS_WAIT_PUBACK),
	        r_msg(3, only2),
	        r_dlv(2, 3, 1, 0),
	        r_awrel(1, 5),
	        r_awrel(2, 6),
	        {.op = MQBI_REC_WILL_PUT, .sid = 1, .msg = w1, .at = 1},
	        {.op = MQBI_REC_WILL_PUT, .sid = 2, .msg = w2, .at = 2},
	};
	apply_ok(st, recs, sizeof recs / sizeof *recs);
	ck_assert_uint_eq(stats(st).messages, 3);
	mqbi_rec del = r_op(MQBI_REC_SESSION_DEL, 1, 0);
	apply_ok(st, &del, 1);
	mqbi_store_stats s = stats(st);
	ck_assert_uint_eq(s.messages, 2); /* only1 went; shared stays for session 2 */
	ck_assert_uint_eq(s.deliveries, 2);
	ck_assert_uint_eq(s.bytes, cost(shared) + cost(only2) + 64);

	st = restart(st, &o, &g);
	ck_assert_uint_eq(g.n_sessions, 1);
	ck_assert_uint_eq(g.sessions[0].sid, 2);
	ck_assert_uint_eq(g.sessions[0].queued, 2);
	ck_assert_uint_eq(g.n_subs, 1);
	ck_assert_uint_eq(g.subs[0].sid, 2);
	ck_assert_uint_eq(g.n_inflight, 0);
	ck_assert_uint_eq(g.n_awrel, 1);
	ck_assert_uint_eq(g.awrel[0].sid, 2);
	ck_assert_uint_eq(g.n_wills, 1);
	ck_assert_uint_eq(g.wills[0].sid, 2);
	s = stats(st);
	ck_assert_uint_eq(s.messages, 2);
	ck_assert_uint_eq(s.bytes, cost(shared) + cost(only2) + 64);
	got_free(&g);

	/* The last session takes every message with it. */
	del.sid = 2;
	apply_ok(st, &del, 1);
	s = stats(st);
	ck_assert_uint_eq(s.messages, 0);
	ck_assert_uint_eq(s.deliveries, 0);
	ck_assert_uint_eq(s.bytes, 0);
	st->ops->close(st);
	drop_msgs();
}
END_TEST

typedef struct queue_read {
	got_dlv d[GOT_MAX];
	size_t n, stop_after;
} queue_read;

static mqb_err on_queued(void *user, const mqbi_stored_delivery *d)
{
	queue_read *q = user;
	ck_assert_uint_lt(q->n, GOT_MAX);
	keep_dlv(&q->d[q->n++], 0, d);
	return q->stop_after && q->n == q->stop_after ? MQB_ERR_RANGE : MQB_OK;
}

static void queue_free(queue_read *q)
{
	for (size_t i = 0; i < q->n; i++)
		mqbi_msg_unref(&alloc, q->d[i].d.msg);
	q->n = 0;
}

START_TEST(test_read_queue)
{
	mqbi_store_options o = opts(db_path("read-queue"));
	mqbi_store *st = open_ok(&o);
	got g;
	load_ok(st, &g, NULL, NULL);
	mqbi_rec s = r_session(1, "q", 0, 5, 0);
	apply_ok(st, &s, 1);
	/* Stored out of order: the queue goes by mid. */
	static const uint64_t order[] = {5, 3, 9, 1, 7, 2, 10, 4, 8, 6};
	for (size_t i = 0; i < 10; i++) {
		char payload[16];
		snprintf(payload, sizeof payload, "p%" PRIu64, order[i]);
		mqbi_rec r[] = {r_msg(order[i], msg_new("q/t", payload, 1)),
		                r_dlv(1, order[i], 1, (uint32_t)order[i])};
		apply_ok(st, r, 2);
	}
	mqbi_rec fl = r_state(1, 2, 77, MQBI_DS_WAIT_PUBACK);
	apply_ok(st, &fl, 1);
	st = restart(st, &o, &g);
	ck_assert_uint_eq(g.sessions[0].queued, 9);
	got_free(&g);

	queue_read q = {0};
	ck_assert_int_eq(st->ops->read_queue(st, 1, 4, on_queued, &q), MQB_OK);
	ck_assert_uint_eq(q.n, 4);
	for (size_t i = 0; i < 4; i++) {
		char payload[16];
		snprintf(payload, sizeof payload, "p%zu", i + 1);
		ck_assert_uint_eq(q.d[i].d.mid, i + 1);
		ck_assert_uint_eq(q.d[i].d.n_sub_ids, 1);
		ck_assert_uint_eq(q.d[i].ids[0], i + 1);
		assert_msg(q.d[i].d.msg, "q/t", payload);
	}
	ck_assert_uint_eq(q.d[1].d.packet_id, 77); /* in flight ones included */
	ck_assert_uint_eq(q.d[1].d.state, MQBI_DS_WAIT_PUBACK);
	ck_assert_uint_eq(q.d[0].d.packet_id, 0);
	queue_free(&q);

	ck_assert_int_eq(st->ops->read_queue(st, 1, 100, on_queued, &q), MQB_OK);
	ck_assert_uint_eq(q.n, 10);
	ck_assert_uint_eq(q.d[9].d.mid, 10);
	queue_free(&q);

	q.stop_after = 3;
	ck_assert_int_eq(st->ops->read_queue(st, 1, 100, on_queued, &q), MQB_ERR_RANGE);
	ck_assert_uint_eq(q.n, 3);
	queue_free(&q);
	q.stop_after = 0;
	ck_assert_int_eq(st->ops->read_queue(st, 42, 100, on_queued, &q), MQB_OK);
	ck_assert_uint_eq(q.n, 0);
	st->ops->close(st);
	drop_msgs();
}
END_TEST

START_TEST(test_drop_oldest)
{
	mqbi_store_options o = opts(db_path("drop-oldest"));
	mqbi_store *st = open_ok(&o);
	got g;
	load_ok(st, &g, NULL, NULL);
	mqbi_rec ss[] = {r_session(1, "a", 0, 5, 0), r_session(2, "b", 0, 5, 0)};
	apply_ok(st, ss, 2);
	for (uint64_t mid = 1; mid <= 5; mid++) {
		mqbi_rec r[] = {r_msg(mid, msg_new("t", "x", 1)), r_dlv(1, mid, 1, 0)};
		apply_ok(st, r, 2);
	}
	mqbi_rec more[] = {r_state(1, 1, 10, MQBI_DS_WAIT_PUBACK), r_dlv(2, 2, 1, 0)};
	apply_ok(st, more, 2);
	ck_assert_uint_eq(stats(st).messages, 5);

	mqbi_rec drop = {.op = MQBI_REC_DLV_DROP_OLDEST, .sid = 1, .num = 2};
	apply_ok(st, &drop, 1);
	mqbi_store_stats s = stats(st);
	ck_assert_uint_eq(s.deliveries, 4);
	ck_assert_uint_eq(s.messages, 4); /* mid 2 stays: session 2 has it */

	queue_read q = {0};
	ck_assert_int_eq(st->ops->read_queue(st, 1, 100, on_queued, &q), MQB_OK);
	ck_assert_uint_eq(q.n, 3);
	ck_assert_uint_eq(q.d[0].d.mid, 1); /* in flight: not dropped */
	ck_assert_uint_eq(q.d[1].d.mid, 4);
	ck_assert_uint_eq(q.d[2].d.mid, 5);
	queue_free(&q);

	drop.num = 100;
	apply_ok(st, &drop, 1);
	st = restart(st, &o, &g);
	ck_assert_uint_eq(g.sessions[0].queued, 0);
	ck_assert_uint_eq(g.sessions[1].queued, 1);
	ck_assert_uint_eq(g.n_inflight, 1);
	s = stats(st);
	ck_assert_uint_eq(s.deliveries, 2);
	ck_assert_uint_eq(s.messages, 2);
	got_free(&g);
	st->ops->close(st);
	drop_msgs();
}
END_TEST

START_TEST(test_trim)
{
	mqbi_store_options o = opts(db_path("trim"));
	mqbi_store *st = open_ok(&o);
	got g;
	load_ok(st, &g, NULL, NULL);
	mqbi_rec ss[] = {r_session(1, "a", 0, 5, 0), r_session(2, "b", 0, 5, 0)};
	apply_ok(st, ss, 2);
	char payload[101];
	memset(payload, 'p', 100);
	payload[100] = '\0';
	mqbi_msg *m = msg_new("trim/t", payload, 1);
	/* 600 deliveries, alternating sessions; the first of each in flight. */
	mqbi_rec r[600];
	for (uint64_t mid = 1; mid <= 300; mid++) {
		r[2 * (mid - 1)] = r_msg(mid, m);
		r[2 * (mid - 1) + 1] = r_dlv(1 + mid % 2, mid, 1, 0);
	}
	apply_ok(st, r, 600);
	mqbi_rec fl[] = {r_state(1, 2, 1, MQBI_DS_WAIT_PUBACK),
	                 r_state(2, 1, 1, MQBI_DS_WAIT_PUBACK)};
	apply_ok(st, fl, 2);
	uint64_t full = stats(st).bytes;
	ck_assert_uint_eq(full, 300 * (cost(m) + 32));

	uint64_t dropped = 0, target = full / 2;
	ck_assert_int_eq(st->ops->trim(st, target, &dropped), MQB_OK);
	mqbi_store_stats s = stats(st);
	ck_assert_uint_le(s.bytes, target);
	ck_assert_uint_gt(s.bytes, target - (cost(m) + 32)); /* no more than needed */
	ck_assert_uint_eq(dropped, 300 - s.deliveries);
	ck_assert_uint_eq(s.messages, s.deliveries);

	/* The oldest went: what is left of session 1 is its in-flight one, then
	 * the newest. */
	queue_read q = {0};
	ck_assert_int_eq(st->ops->read_queue(st, 1, 2, on_queued, &q), MQB_OK);
	ck_assert_uint_eq(q.n, 2);
	ck_assert_uint_eq(q.d[0].d.mid, 2);
	ck_assert_uint_ge(q.d[1].d.mid, 300 - 2 * s.deliveries);
	queue_free(&q);

	ck_assert_int_eq(st->ops->trim(st, 0, &dropped), MQB_OK);
	s = stats(st);
	ck_assert_uint_eq(s.deliveries, 2); /* in flight: never trimmed */
	ck_assert_uint_eq(s.bytes, 2 * (cost(m) + 32));
	st = restart(st, &o, &g);
	ck_assert_uint_eq(g.n_inflight, 2);
	ck_assert_uint_eq(g.sessions[0].queued + g.sessions[1].queued, 0);
	ck_assert_uint_eq(stats(st).bytes, 2 * (cost(m) + 32));
	got_free(&g);
	st->ops->close(st);
	drop_msgs();
}
END_TEST

START_TEST(test_expiry)
{
	mqbi_store_options o = opts(db_path("expiry"));
	mqbi_store *st = open_ok(&o);
	got g;
	load_ok(st, &g, NULL, NULL);
	uint64_t now = mqbi_clock_ms();
	mqbi_msg *live = msg_full("e/live", "l", 1, 1, false, false, true, 3600, now);
	mqbi_msg *ret_live = msg_full("e/r1", "r", 1, 1, true, false, true, 3600, now);
	/* Published 10 s ago with 5 s to live. */
	mqbi_msg *ret_dead = msg_full("e/r2", "r", 1, 1, true, false, true, 5, now - 10000);
	mqbi_rec recs[] = {
	        r_session(1, "a", 0, 5, 0),
	        r_msg(1, live),
	        r_dlv(1, 1, 1, 0),
	        r_state(1, 1, 3, MQBI_DS_WAIT_PUBACK),
	        {.op = MQBI_REC_RETAIN_PUT, .msg = ret_live},
	        {.op = MQBI_REC_RETAIN_PUT, .msg = ret_dead},
	};
	apply_ok(st, recs, sizeof recs / sizeof *recs);
	st = restart(st, &o, &g);
	ck_assert_uint_eq(g.n_inflight, 1);
	mqbi_msg *m = g.inflight[0].d.msg;
	uint64_t t = mqbi_clock_ms();
	ck_assert(m->has_expiry);
	ck_assert_uint_eq(m->expiry_interval, 3600);
	ck_assert_uint_le(mqbi_msg_expiry_left(m, t), 3600);
	ck_assert_uint_ge(mqbi_msg_expiry_left(m, t), 3590);
	ck_assert_uint_eq(g.n_retained, 1); /* the expired one was dropped */
	assert_msg(g.retained[0], "e/r1", "r");
	ck_assert(g.retained[0]->has_expiry);
	got_free(&g);
	st = restart(st, &o, &g);
	ck_assert_uint_eq(g.n_retained, 1);
	got_free(&g);
	st->ops->close(st);
	drop_msgs();
}
END_TEST

START_TEST(test_orphans)
{
	mqbi_store_options o = opts(db_path("orphans"));
	mqbi_store *st = open_ok(&o);
	got g;
	load_ok(st, &g, NULL, NULL);
	mqbi_msg *m = msg_new("o", "x", 1);
	/* What no well-behaved journal writes, but a crash or bug could leave. */
	mqbi_rec recs[] = {
	        r_session(1, "dup", 0, 5, 0),
	        r_session(5, "dup", 0, 5, 0),
	        r_sub(1, "old/#", 1, 0),
	        r_sub(5, "new/#", 1, 0),
	        r_awrel(1, 3),
	        r_sub(99, "nobody/#", 1, 0),
	        r_awrel(99, 4),
	        {.op = MQBI_REC_WILL_PUT, .sid = 99, .msg = m, .at = 1},
	        r_msg(1, m),
	        r_dlv(99, 1, 1, 0),
	        r_state(99, 1, 2, MQBI_DS_WAIT_PUBACK),
	        r_msg(2, m),
	        r_dlv(1, 2, 1, 0),
	        r_msg(3, m), /* no delivery at all */
	        r_msg(4, m),
	        r_dlv(5, 4, 1, 0),
	};
	apply_ok(st, recs, sizeof recs / sizeof *recs);
	ck_assert_uint_eq(stats(st).messages, 4);
	st->ops->close(st);
	st = open_ok(&o);
	uint64_t max_sid, max_mid;
	load_ok(st, &g, &max_sid, &max_mid);
	ck_assert_uint_eq(g.n_sessions, 1);
	ck_assert_uint_eq(g.sessions[0].sid, 5);
	ck_assert_uint_eq(g.sessions[0].queued, 1);
	ck_assert_uint_eq(g.n_subs, 1);
	ck_assert_str_eq(g.subs[0].text, "new/#");
	ck_assert_uint_eq(g.n_inflight, 0);
	ck_assert_uint_eq(g.n_awrel, 0);
	ck_assert_uint_eq(g.n_wills, 0);
	ck_assert_uint_eq(max_sid, 5);
	ck_assert_uint_eq(max_mid, 4);
	mqbi_store_stats s = stats(st);
	ck_assert_uint_eq(s.messages, 1);
	ck_assert_uint_eq(s.deliveries, 1);
	ck_assert_uint_eq(s.bytes, cost(m) + 32);
	got_free(&g);
	st->ops->close(st);
	drop_msgs();
}
END_TEST

START_TEST(test_rollback_invalid)
{
	mqbi_store_options o = opts(db_path("rollback"));
	mqbi_store *st = open_ok(&o);
	got g;
	load_ok(st, &g, NULL, NULL);
	mqbi_msg *m = msg_new("t", "x", 1);
	mqbi_rec recs[] = {r_session(3, "c", 0, 5, 0),
	                   r_msg(1, m),
	                   r_dlv(3, 1, 1, 0),
	                   {.op = MQBI_REC_MSG_PUT, .mid = 2} /* no message */};
	ck_assert_int_eq(st->ops->apply(st, recs, 4), MQB_ERR_INVAL);
	ck_assert_ptr_nonnull(strstr(st->ops->errmsg(st), "record 4 of 4"));
	mqbi_store_stats s = stats(st);
	ck_assert_uint_eq(s.messages, 0);
	ck_assert_uint_eq(s.bytes, 0);
	st = restart(st, &o, &g);
	ck_assert_uint_eq(g.n_sessions, 0);
	ck_assert_uint_eq(stats(st).messages, 0);
	apply_ok(st, recs, 3);
	ck_assert_uint_eq(stats(st).messages, 1);
	st->ops->close(st);
	drop_msgs();
}
END_TEST

START_TEST(test_disk_full)
{
	mqbi_store_options o = opts(db_path("full"));
	o.max_file_bytes = 256 * 1024;
	mqbi_store *st = open_ok(&o);
	got g;
	load_ok(st, &g, NULL, NULL);
	mqbi_msg *small = msg_new("t", "before", 1);
	mqbi_rec before[] = {r_session(1, "a", 0, 5, 0), r_msg(1, small), r_dlv(1, 1, 1, 0)};
	apply_ok(st, before, 3);
	mqbi_store_stats s0 = stats(st);

	/* 40 x 16 KiB: more than the file may hold. */
	static char big[16384];
	memset(big, 'b', sizeof big);
	mqbi_msg *m = msg_full("big", big, sizeof big, 1, false, false, false, 0, mqbi_clock_ms());
	mqbi_rec r[81];
	r[0] = r_session(2, "b", 0, 5, 0);
	for (uint64_t i = 0; i < 40; i++) {
		r[1 + 2 * i] = r_msg(10 + i, m);
		r[2 + 2 * i] = r_dlv(2, 10 + i, 1, 0);
	}
	ck_assert_int_eq(st->ops->apply(st, r, 81), MQB_ERR_RANGE);
	ck_assert_ptr_nonnull(strstr(st->ops->errmsg(st), "full"));
	mqbi_store_stats s1 = stats(st);
	ck_assert_uint_eq(s1.bytes, s0.bytes);
	ck_assert_uint_eq(s1.messages, 1);
	/* Still usable for what fits. */
	mqbi_rec later = r_session(3, "c", 0, 5, 0);
	apply_ok(st, &later, 1);
	st->ops->close(st);

	o.max_file_bytes = 0;
	st = open_ok(&o);
	load_ok(st, &g, NULL, NULL);
	ck_assert_uint_eq(g.n_sessions, 2);
	ck_assert_uint_eq(g.sessions[0].sid, 1);
	ck_assert_uint_eq(g.sessions[0].queued, 1);
	ck_assert_uint_eq(g.sessions[1].sid, 3);
	ck_assert_uint_eq(stats(st).messages, 1);
	apply_ok(st, r, 81);
	ck_assert_uint_eq(stats(st).messages, 41);
	st = restart(st, &o, &g);
	ck_assert_uint_eq(g.n_sessions, 3);
	ck_assert_uint_eq(g.sessions[1].queued, 40);
	st->ops->close(st);
	drop_msgs();
}
END_TEST

static void write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(data, 1, len, f), len);
	fclose(f);
}

static void write_garbage(const char *path)
{
	uint8_t junk[8192];
	srand(42);
	for (size_t i = 0; i < sizeof junk; i++)
		junk[i] = (uint8_t)rand();
	write_file(path, junk, sizeof junk);
}

START_TEST(test_garbage)
{
	mqbi_store_options o = opts(db_path("garbage"));
	write_garbage(o.path);
	char why[512] = "";
	ck_assert_int_eq(open_fail(&o, why, sizeof why), MQB_ERR_PARSE);
	ck_assert_msg(strstr(why, "not a libmqttbroker database") != NULL, "%s", why);
	/* Left as it was. */
	struct stat sb;
	ck_assert_int_eq(stat(o.path, &sb), 0);
	ck_assert_int_eq(sb.st_size, 8192);

	/* A too small buffer is cut, not overrun. */
	char tiny[8];
	mqbi_store *st;
	ck_assert_int_eq(mqbi_store_sqlite_open(&o, &st, tiny, sizeof tiny), MQB_ERR_PARSE);
	ck_assert_uint_eq(strlen(tiny), 7);
}
END_TEST

START_TEST(test_truncated)
{
	mqbi_store_options o = opts(db_path("truncated"));
	mqbi_store *st = open_ok(&o);
	got g;
	load_ok(st, &g, NULL, NULL);
	static char payload[2000];
	memset(payload, 'z', sizeof payload);
	mqbi_msg *m =
	        msg_full("tr", payload, sizeof payload, 1, false, false, false, 0, mqbi_clock_ms());
	mqbi_rec r[401];
	r[0] = r_session(1, "a", 0, 5, 0);
	for (uint64_t i = 0; i < 200; i++) {
		r[1 + 2 * i] = r_msg(i + 1, m);
		r[2 + 2 * i] = r_dlv(1, i + 1, 1, 0);
	}
	apply_ok(st, r, 401);
	st->ops->close(st);
	drop_msgs();

	struct stat sb;
	ck_assert_int_eq(stat(o.path, &sb), 0);
	ck_assert_int_gt(sb.st_size, 400000);
	ck_assert_int_eq(truncate(o.path, sb.st_size / 2), 0);
	char why[512] = "";
	ck_assert_int_eq(open_fail(&o, why, sizeof why), MQB_ERR_PARSE);
	ck_assert_msg(strstr(why, "corrupt") != NULL, "%s", why);
}
END_TEST

/* A damaged page inside an otherwise intact file: found by the check at open. */
START_TEST(test_damaged_page)
{
	mqbi_store_options o = opts(db_path("damaged"));
	mqbi_store *st = open_ok(&o);
	mqbi_rec r[] = {r_session(1, "a", 0, 5, 0), r_sub(1, "x/#", 1, 0)};
	apply_ok(st, r, 2);
	st->ops->close(st);
	int fd = open(o.path, O_WRONLY);
	ck_assert_int_ge(fd, 0);
	static const uint8_t zero[4096];
	ck_assert_int_eq(pwrite(fd, zero, sizeof zero, 4096), (ssize_t)sizeof zero); /* page 2 */
	close(fd);
	char why[512] = "";
	ck_assert_int_eq(open_fail(&o, why, sizeof why), MQB_ERR_PARSE);
	ck_assert_msg(strstr(why, "database is corrupt") != NULL, "%s", why);
	ck_assert_msg(strchr(why, '\n') == NULL, "one line: %s", why);
}
END_TEST

/* Runs fn in a child process that then dies by SIGKILL (as in a crash, and
 * so that nothing it leaves behind is reported); fn's result. */
static int in_child(int (*fn)(const mqbi_store_options *o), const mqbi_store_options *o)
{
	int fds[2];
	ck_assert_int_eq(pipe(fds), 0);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		unsigned char res = (unsigned char)fn(o);
		if (write(fds[1], &res, 1) != 1)
			_exit(1);
		kill(getpid(), SIGKILL);
	}
	close(fds[1]);
	unsigned char res = 255;
	ck_assert_int_eq(read(fds[0], &res, 1), 1);
	close(fds[0]);
	int status;
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	return res;
}

/* Stores a session and a message, then returns without closing. */
static int crash_after_apply(const mqbi_store_options *o)
{
	mqbi_store *st = NULL;
	char why[256];
	if (mqbi_store_sqlite_open(o, &st, why, sizeof why) != MQB_OK)
		return 1;
	mqbi_msg *m = mqbi_msg_create(&mqbi_default_allocator, "t", 1, NULL, 0, "x", 1, 1, false,
	                              "publisher-1", 11, NULL, false, 0, 0);
	mqbi_rec r[] = {r_session(1, "a", 0, 5, 0), r_msg(1, m), r_dlv(1, 1, 1, 0)};
	return st->ops->apply(st, r, 3) == MQB_OK ? 0 : 2;
}

static int open_result(const mqbi_store_options *o)
{
	mqbi_store *st = NULL;
	char why[512];
	mqb_err e = mqbi_store_sqlite_open(o, &st, why, sizeof why);
	return e == MQB_ERR_STATE && strstr(why, "in use by another process") ? 0 : 1;
}

/* Killed without closing: what was committed is there at the next start. */
START_TEST(test_crash_recovery)
{
	mqbi_store_options o = opts(db_path("crash"));
	ck_assert_int_eq(in_child(crash_after_apply, &o), 0);
	mqbi_store *st = open_ok(&o);
	got g;
	load_ok(st, &g, NULL, NULL);
	ck_assert_uint_eq(g.n_sessions, 1);
	ck_assert_uint_eq(g.sessions[0].queued, 1);
	ck_assert_uint_eq(stats(st).messages, 1);
	st->ops->close(st);
}
END_TEST

static void make_foreign(const char *path, int app_id)
{
	sqlite3 *db;
	ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
	char sql[128];
	snprintf(sql, sizeof sql,
	         "CREATE TABLE t(x); INSERT INTO t VALUES(1);"
	         " PRAGMA application_id = %d",
	         app_id);
	ck_assert_int_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
}

START_TEST(test_foreign)
{
	mqbi_store_options o = opts(db_path("foreign"));
	make_foreign(o.path, 0x12345678);
	char why[512] = "";
	ck_assert_int_eq(open_fail(&o, why, sizeof why), MQB_ERR_PARSE);
	ck_assert_msg(strstr(why, "another application") != NULL, "%s", why);
	ck_assert_msg(strstr(why, "0x12345678") != NULL, "%s", why);

	/* No application id at all, but tables: not ours either. */
	o = opts(db_path("foreign0"));
	make_foreign(o.path, 0);
	ck_assert_int_eq(open_fail(&o, why, sizeof why), MQB_ERR_PARSE);
	ck_assert_msg(strstr(why, "not a libmqttbroker database") != NULL, "%s", why);

	/* Its data was not touched. */
	sqlite3 *db;
	ck_assert_int_eq(sqlite3_open(o.path, &db), SQLITE_OK);
	ck_assert_int_eq(sqlite3_exec(db, "SELECT x FROM t", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
}
END_TEST

static void set_user_version(const char *path, int v)
{
	sqlite3 *db;
	ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
	char sql[64];
	snprintf(sql, sizeof sql, "PRAGMA user_version = %d", v);
	ck_assert_int_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
}

typedef struct logged {
	int n;
	mqb_log_level lvl;
	char text[1024];
} logged;

static void on_log(void *user, mqb_log_level lvl, const char *text)
{
	logged *l = user;
	l->n++;
	l->lvl = lvl;
	snprintf(l->text, sizeof l->text, "%s", text);
}

START_TEST(test_newer_schema)
{
	mqbi_store_options o = opts(db_path("newer"));
	mqbi_store *st = open_ok(&o);
	st->ops->close(st);
	set_user_version(o.path, MQBI_STORE_SCHEMA_VERSION + 1);
	char why[512] = "";
	ck_assert_int_eq(open_fail(&o, why, sizeof why), MQB_ERR_UNSUPPORTED);
	ck_assert_msg(strstr(why, "newer libmqttbroker") != NULL, "%s", why);
	ck_assert_msg(strstr(why, "schema 2") != NULL, "%s", why);

	/* Never moved aside: a newer build can still use it. */
	logged lg = {0};
	o.on_corrupt = MQBI_CORRUPT_MOVE_ASIDE;
	o.log = on_log;
	o.log_user = &lg;
	ck_assert_int_eq(open_fail(&o, why, sizeof why), MQB_ERR_UNSUPPORTED);
	ck_assert_int_eq(lg.n, 0);
	ck_assert_int_eq(access(o.path, F_OK), 0);
}
END_TEST

/* How many files in the test directory start with prefix. */
static int count_files(const char *prefix)
{
	DIR *d = opendir(dir);
	ck_assert_ptr_nonnull(d);
	struct dirent *e;
	int n = 0;
	while ((e = readdir(d)) != NULL)
		n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
	closedir(d);
	return n;
}

START_TEST(test_move_aside)
{
	mqbi_store_options o = opts(db_path("aside"));
	logged lg = {0};
	o.on_corrupt = MQBI_CORRUPT_MOVE_ASIDE;
	o.log = on_log;
	o.log_user = &lg;
	write_garbage(o.path);
	mqbi_store *st = open_ok(&o);
	ck_assert_int_eq(lg.n, 1);
	ck_assert_int_eq(lg.lvl, MQB_LOG_WARNING);
	ck_assert_msg(strstr(lg.text, o.path) != NULL, "%s", lg.text);
	const char *moved = strstr(lg.text, ".corrupt-");
	ck_assert_msg(moved != NULL, "%s", lg.text);
	ck_assert_int_eq(count_files("aside.db.corrupt-"), 1);

	/* A fresh, working database in its place. */
	got g;
	load_ok(st, &g, NULL, NULL);
	ck_assert_uint_eq(g.n_sessions, 0);
	mqbi_rec s = r_session(1, "a", 0, 5, 0);
	apply_ok(st, &s, 1);
	st = restart(st, &o, &g);
	ck_assert_uint_eq(g.n_sessions, 1);
	st->ops->close(st);

	/* Again, within the same second: the name gets a counter. */
	ck_assert_int_eq(unlink(o.path), 0);
	make_foreign(o.path, 0x1234);
	st = open_ok(&o);
	ck_assert_int_eq(lg.n, 2);
	ck_assert_int_ge(count_files("aside.db.corrupt-"), 2);
	st->ops->close(st);
}
END_TEST

START_TEST(test_in_use)
{
	mqbi_store_options o = opts(db_path("in-use"));
	mqbi_store *st = open_ok(&o);
	got g;
	load_ok(st, &g, NULL, NULL);
	mqbi_rec s = r_session(1, "a", 0, 5, 0);
	apply_ok(st, &s, 1);
	char why[512] = "";
	ck_assert_int_eq(open_fail(&o, why, sizeof why), MQB_ERR_STATE);
	ck_assert_msg(strstr(why, "in use by another process") != NULL, "%s", why);
	/* Not for move-aside either. */
	o.on_corrupt = MQBI_CORRUPT_MOVE_ASIDE;
	ck_assert_int_eq(open_fail(&o, why, sizeof why), MQB_ERR_STATE);
	ck_assert_int_eq(count_files("in-use.db.corrupt-"), 0);
	/* The first one is unharmed. */
	apply_ok(st, &s, 1);
	st = restart(st, &o, &g);
	ck_assert_uint_eq(g.n_sessions, 1);
	st->ops->close(st);

	/* And from another process too. */
	st = open_ok(&o);
	ck_assert_int_eq(in_child(open_result, &o), 0);
	st->ops->close(st);
}
END_TEST

START_TEST(test_io_errors)
{
	char path[300];
	snprintf(path, sizeof path, "%s/no/such/dir/x.db", dir);
	mqbi_store_options o = opts(path);
	char why[512] = "";
	ck_assert_int_eq(open_fail(&o, why, sizeof why), MQB_ERR_IO);
	ck_assert_msg(strstr(why, "directory does not exist") != NULL, "%s", why);

	if (geteuid() != 0) { /* root may write anywhere */
		char ro[200];
		snprintf(ro, sizeof ro, "%s/ro", dir);
		ck_assert_int_eq(mkdir(ro, 0555), 0);
		snprintf(path, sizeof path, "%s/x.db", ro);
		ck_assert_int_eq(open_fail(&o, why, sizeof why), MQB_ERR_IO);
		ck_assert_msg(strstr(why, "permission denied") != NULL, "%s", why);
		rmdir(ro);
	}

	o.path = NULL;
	mqbi_store *st;
	ck_assert_int_eq(mqbi_store_sqlite_open(&o, &st, why, sizeof why), MQB_ERR_INVAL);
}
END_TEST

START_TEST(test_many_queued)
{
	enum { N = 100000, FLIGHT = 3, BATCH = 5000 };
	mqbi_store_options o = opts(db_path("many"));
	o.sync = MQBI_SYNC_OFF;
	mqbi_store *st = open_ok(&o);
	got g;
	load_ok(st, &g, NULL, NULL);
	mqbi_rec s = r_session(1, "many", 0, 5, 0);
	apply_ok(st, &s, 1);
	char payload[100];
	memset(payload, 'm', sizeof payload);
	mqbi_msg *m = msg_full("many/t", payload, sizeof payload, 1, false, false, false, 0,
	                       mqbi_clock_ms());
	static mqbi_rec r[2 * BATCH];
	for (uint64_t base = 0; base < N; base += BATCH) {
		for (uint64_t i = 0; i < BATCH; i++) {
			r[2 * i] = r_msg(base + i + 1, m);
			r[2 * i + 1] = r_dlv(1, base + i + 1, 1, 0);
		}
		apply_ok(st, r, 2 * BATCH);
	}
	for (uint16_t i = 0; i < FLIGHT; i++) {
		mqbi_rec f = r_state(1, i + 1u, (uint16_t)(i + 1), MQBI_DS_WAIT_PUBACK);
		apply_ok(st, &f, 1);
	}
	st->ops->close(st);

	st = open_ok(&o);
	uint64_t t0 = mqbi_clock_ms(), max_mid;
	load_ok(st, &g, NULL, &max_mid);
	uint64_t took = mqbi_clock_ms() - t0;
	ck_assert_uint_eq(g.n_sessions, 1);
	ck_assert_uint_eq(g.sessions[0].queued, N - FLIGHT);
	ck_assert_uint_eq(g.n_inflight, FLIGHT); /* queued ones are never read */
	ck_assert_uint_eq(max_mid, N);
	ck_assert_uint_eq(stats(st).deliveries, N);
	ck_assert_uint_eq(stats(st).bytes, (uint64_t)N * (cost(m) + 32));
	ck_assert_msg(took < 10000, "load took %" PRIu64 " ms", took); /* generous */
	got_free(&g);
	st->ops->close(st);
	drop_msgs();
}
END_TEST

static Suite *store_suite(void)
{
	Suite *s = suite_create("store");
	TCase *tc = tcase_create("sqlite");
	tcase_add_unchecked_fixture(tc, make_dir, remove_dir);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_empty);
	tcase_add_loop_test(tc, test_roundtrip, 0, 3);
	tcase_add_test(tc, test_shared_message);
	tcase_add_test(tc, test_session_del);
	tcase_add_test(tc, test_read_queue);
	tcase_add_test(tc, test_drop_oldest);
	tcase_add_test(tc, test_trim);
	tcase_add_test(tc, test_expiry);
	tcase_add_test(tc, test_orphans);
	tcase_add_test(tc, test_rollback_invalid);
	tcase_add_test(tc, test_disk_full);
	tcase_add_test(tc, test_garbage);
	tcase_add_test(tc, test_truncated);
	tcase_add_test(tc, test_damaged_page);
	tcase_add_test(tc, test_crash_recovery);
	tcase_add_test(tc, test_foreign);
	tcase_add_test(tc, test_newer_schema);
	tcase_add_test(tc, test_move_aside);
	tcase_add_test(tc, test_in_use);
	tcase_add_test(tc, test_io_errors);
	tcase_add_test(tc, test_many_queued);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(store_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
