/* Persistence through the public embedding API, as a host relies on it: off by
 * default (a restart starts empty, no file is written); with
 * persistence.enable and persistence.path, retained messages and a persistent
 * MQTT session with its queue survive destroying the broker and creating a new
 * one on the same file; a file that is not a database is refused (or moved
 * aside on request); a second broker cannot open a file in use; enabling
 * persistence without a path is an invalid configuration. Clients are raw
 * MQTT clients over TCP; allocations go through a counting allocator. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mqttbroker.h>

#include "count_alloc.h"
#include "mqtt_raw.h"
#include "proc_count.h"

#define WAIT_MS 10000

static int count_fds(void)
{
	return count_proc_entries("/proc/self/fd");
}

/* Log records ------------------------------------------------------------- */

#define LOG_CAP 256
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
	mqb_log_level level;
	char module[32];
	char message[1024];
} logs[LOG_CAP];
static int n_logs;

static void on_log(void *user, const mqb_log_record *rec)
{
	(void)user;
	pthread_mutex_lock(&log_mu);
	if (n_logs < LOG_CAP) {
		logs[n_logs].level = rec->level;
		snprintf(logs[n_logs].module, sizeof logs[n_logs].module, "%s",
		         rec->module ? rec->module : "");
		snprintf(logs[n_logs].message, sizeof logs[n_logs].message, "%s",
		         rec->message ? rec->message : "");
		n_logs++;
	}
	pthread_mutex_unlock(&log_mu);
}

static void log_reset(void)
{
	pthread_mutex_lock(&log_mu);
	n_logs = 0;
	pthread_mutex_unlock(&log_mu);
}

/* 1 if a record at `level` contains `text`. */
static int log_has(mqb_log_level level, const char *text)
{
	int found = 0;
	pthread_mutex_lock(&log_mu);
	for (int i = 0; i < n_logs && !found; i++)
		found = logs[i].level == level && strstr(logs[i].message, text) != NULL;
	pthread_mutex_unlock(&log_mu);
	return found;
}

/* Temporary directories ----------------------------------------------------- */

/* Every test works in its own directory under g_base, which main() creates
 * and removes with whatever a failed test left in it. */
static char g_base[PATH_MAX - 64];

static void tmpdir_make(char *out, size_t cap)
{
	int n = snprintf(out, cap, "%s/t-XXXXXX", g_base);
	ck_assert(n > 0 && (size_t)n < cap);
	ck_assert_msg(mkdtemp(out) != NULL, "mkdtemp: %s", strerror(errno));
}

/* Number of entries in dir (without . and ..). */
static int dir_count(const char *dir)
{
	DIR *d = opendir(dir);
	ck_assert_msg(d != NULL, "opendir %s: %s", dir, strerror(errno));
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

/* Finds an entry of dir whose name starts with prefix; 1 if found. */
static int dir_find_prefix(const char *dir, const char *prefix, char *name, size_t cap)
{
	DIR *d = opendir(dir);
	ck_assert_msg(d != NULL, "opendir %s: %s", dir, strerror(errno));
	int found = 0;
	struct dirent *e;
	while (!found && (e = readdir(d)) != NULL)
		if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) {
			snprintf(name, cap, "%s", e->d_name);
			found = 1;
		}
	closedir(d);
	return found;
}

/* Removes the (flat) directory and everything in it. */
static void tmpdir_remove(const char *dir)
{
	DIR *d = opendir(dir);
	ck_assert_msg(d != NULL, "opendir %s: %s", dir, strerror(errno));
	struct dirent *e;
	char p[PATH_MAX];
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
		ck_assert_msg(unlink(p) == 0, "unlink %s: %s", p, strerror(errno));
	}
	closedir(d);
	ck_assert_msg(rmdir(dir) == 0, "rmdir %s: %s", dir, strerror(errno));
}

static int file_exists(const char *path)
{
	struct stat sb;
	return stat(path, &sb) == 0;
}

static long file_size(const char *path)
{
	struct stat sb;
	ck_assert_msg(stat(path, &sb) == 0, "stat %s: %s", path, strerror(errno));
	return (long)sb.st_size;
}

static void write_file(const char *path, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	ck_assert_msg(fd >= 0, "open %s: %s", path, strerror(errno));
	ck_assert_int_eq(write(fd, data, len), (ssize_t)len);
	ck_assert_int_eq(close(fd), 0);
}

/* 1 if the file holds exactly data[0..len). */
static int file_equals(const char *path, const void *data, size_t len)
{
	if (file_size(path) != (long)len)
		return 0;
	unsigned char *buf = malloc(len ? len : 1);
	ck_assert_ptr_nonnull(buf);
	int fd = open(path, O_RDONLY);
	ck_assert_msg(fd >= 0, "open %s: %s", path, strerror(errno));
	ssize_t n = read(fd, buf, len);
	close(fd);
	int same = n == (ssize_t)len && memcmp(buf, data, len) == 0;
	free(buf);
	return same;
}

/* Brokers ----------------------------------------------------------------- */

static void cfg_set(mqb_config *cfg, const char *key, const char *value)
{
	char err[256] = "";
	ck_assert_msg(mqb_config_set(cfg, key, value, err, sizeof err) == MQB_OK, "%s = %s: %s",
	              key, value, err);
}

/* A configuration listening on 127.0.0.1:<any>, logging to on_log; with
 * persistence on a file when `db` is not NULL. */
static mqb_config *make_cfg(const mqb_allocator *a, const char *db)
{
	mqb_config *cfg;
	ck_assert_int_eq(mqb_config_create(&cfg, a), MQB_OK);
	cfg_set(cfg, "listener.tcp.default", "127.0.0.1:0");
	cfg_set(cfg, "node.loop_threads", "2");
	cfg_set(cfg, "node.drain_timeout", "2s");
	mqb_config_set_log(cfg, on_log, NULL, MQB_LOG_NOTICE);
	if (db) {
		cfg_set(cfg, "persistence.enable", "true");
		cfg_set(cfg, "persistence.path", db);
	}
	return cfg;
}

static mqb_broker *create_broker(const mqb_config *cfg)
{
	mqb_broker *b = NULL;
	ck_assert_int_eq(mqb_broker_create(&b, cfg), MQB_OK);
	ck_assert_ptr_nonnull(b);
	return b;
}

static mqb_broker *start_broker(const mqb_config *cfg)
{
	mqb_broker *b = create_broker(cfg);
	mqb_err e = mqb_broker_start(b);
	ck_assert_msg(e == MQB_OK, "mqb_broker_start: %s", mqb_strerror(e));
	return b;
}

static int port_of(mqb_broker *b)
{
	int port = 0;
	ck_assert_int_eq(mqb_broker_listener_port(b, "default", &port), MQB_OK);
	ck_assert_int_gt(port, 0);
	return port;
}

static void stop_wait(mqb_broker *b)
{
	mqb_broker_stop(b);
	ck_assert_int_eq(mqb_broker_wait(b), MQB_OK);
}

/* The counting allocator's state: the configuration's own allocations stay
 * live while brokers made from it come and go. */
typedef struct ca_mark {
	long live, bytes;
} ca_mark;

static ca_mark mark(count_alloc *ca)
{
	ca_mark m = {atomic_load(&ca->live), atomic_load(&ca->bytes)};
	return m;
}

static const ca_mark nothing_live = {0, 0};

static void assert_no_leak(count_alloc *ca, ca_mark before, const char *what)
{
	long live = atomic_load(&ca->live), bytes = atomic_load(&ca->bytes);
	ck_assert_msg(live == before.live && bytes == before.bytes,
	              "%s: %ld allocations (%ld bytes) live after destroy, %ld (%ld bytes) before",
	              what, live, bytes, before.live, before.bytes);
}

/* Waits until the broker counts `n` retained messages. */
static uint64_t wait_retained(mqb_broker *b, uint64_t n)
{
	int64_t deadline = mr_now_ms() + WAIT_MS;
	mqb_metrics m;
	for (;;) {
		mqb_broker_metrics(b, &m);
		if (m.retained >= n || mr_now_ms() >= deadline)
			return m.retained;
		mr_sleep_ms(10);
	}
}

/* Messages handed to an in-process subscription ----------------------------- */

typedef struct msg_copy {
	char topic[128];
	unsigned char payload[256];
	size_t payload_len;
	int qos, retain;
	int has_ctype;
	char ctype[64];
	size_t nup;
	char upk[32], upv[32];
} msg_copy;

#define MQ_CAP 64
typedef struct msg_queue {
	pthread_mutex_t mu;
	int n;
	msg_copy m[MQ_CAP];
} msg_queue;

static void on_message(void *user, const mqb_message *m)
{
	msg_queue *q = user;
	pthread_mutex_lock(&q->mu);
	if (q->n < MQ_CAP) {
		msg_copy *c = &q->m[q->n++];
		memset(c, 0, sizeof *c);
		snprintf(c->topic, sizeof c->topic, "%s", m->topic);
		c->payload_len = m->payload_len;
		memcpy(c->payload, m->payload,
		       m->payload_len < sizeof c->payload ? m->payload_len : sizeof c->payload);
		c->qos = m->qos;
		c->retain = m->retain;
		if ((c->has_ctype = m->content_type != NULL))
			snprintf(c->ctype, sizeof c->ctype, "%s", m->content_type);
		c->nup = m->user_property_count;
		if (m->user_property_count) {
			snprintf(c->upk, sizeof c->upk, "%s", m->user_properties[0].key);
			snprintf(c->upv, sizeof c->upv, "%s", m->user_properties[0].value);
		}
	}
	pthread_mutex_unlock(&q->mu);
}

/* Subscribes to keep/# and publishes a non-retained sentinel: whatever the
 * subscription gets before the sentinel are the retained messages (they are
 * delivered first). Returns their number; q holds them and the sentinel. */
static int retained_under_keep(mqb_broker *b, msg_queue *q)
{
	pthread_mutex_init(&q->mu, NULL);
	q->n = 0;
	mqb_subscription *sub = NULL;
	ck_assert_int_eq(mqb_subscribe(b, "keep/#", on_message, q, &sub), MQB_OK);
	ck_assert_int_eq(mqb_broker_publish(b, "keep/sentinel", "s", 1, 0, 0), MQB_OK);
	int64_t deadline = mr_now_ms() + WAIT_MS;
	int found = -1;
	while (found < 0 && mr_now_ms() < deadline) {
		pthread_mutex_lock(&q->mu);
		for (int i = 0; i < q->n && found < 0; i++)
			if (strcmp(q->m[i].topic, "keep/sentinel") == 0)
				found = i;
		pthread_mutex_unlock(&q->mu);
		if (found < 0)
			mr_sleep_ms(5);
	}
	ck_assert_int_eq(mqb_unsubscribe(b, sub), MQB_OK);
	ck_assert_msg(found >= 0, "the sentinel message never reached the subscription");
	return found;
}

/* 1. Off by default ------------------------------------------------------- */

START_TEST(test_default_is_memory_only)
{
	count_alloc ca = {0};
	mqb_allocator a = ca_allocator(&ca);
	char dir[PATH_MAX], cwd[PATH_MAX];
	tmpdir_make(dir, sizeof dir);
	ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
	ck_assert_int_eq(chdir(dir), 0);

	mqb_config *cfg = make_cfg(&a, NULL);
	char v[64];
	ck_assert_int_eq(mqb_config_get(cfg, "persistence.enable", v, sizeof v), MQB_OK);
	ck_assert_str_eq(v, "false");

	mqb_broker *b = start_broker(cfg);
	mqb_metrics m;
	mqb_broker_metrics(b, &m);
	uint64_t base = m.retained; /* the broker's own retained $SYS topics */
	static const char payload[] = "state\0kept";
	ck_assert_int_eq(mqb_broker_publish(b, "keep/a", payload, sizeof payload, 1, 1), MQB_OK);
	ck_assert_int_eq(wait_retained(b, base + 1), base + 1);
	stop_wait(b);
	mqb_broker_metrics(b, &m);
	ck_assert_int_eq(m.store_commits, 0);
	ck_assert_int_eq(m.store_records, 0);
	ck_assert_int_eq(m.store_errors, 0);
	mqb_broker_destroy(b);

	/* Nothing written: not in the working directory (no ./data either). */
	ck_assert_msg(dir_count(dir) == 0, "%d files appeared in the working directory",
	              dir_count(dir));

	/* A new broker starts empty. */
	b = start_broker(cfg);
	mqb_broker_metrics(b, &m);
	ck_assert_int_eq(m.retained, base);
	static msg_queue q;
	int n = retained_under_keep(b, &q);
	ck_assert_msg(n == 0, "the restarted broker delivered %d retained message(s), first %s", n,
	              q.m[0].topic);
	stop_wait(b);
	mqb_broker_destroy(b);
	mqb_config_destroy(cfg);
	ck_assert_int_eq(dir_count(dir), 0);

	/* A path alone does not turn persistence on. */
	char db[PATH_MAX + 8];
	snprintf(db, sizeof db, "%s/b.db", dir);
	cfg = make_cfg(&a, NULL);
	cfg_set(cfg, "persistence.path", db);
	b = start_broker(cfg);
	ck_assert_int_eq(mqb_broker_publish(b, "keep/a", payload, sizeof payload, 1, 1), MQB_OK);
	ck_assert_int_eq(wait_retained(b, base + 1), base + 1);
	mqb_broker_destroy(b);
	mqb_config_destroy(cfg);
	ck_assert_msg(!file_exists(db), "%s was created with persistence.enable = false", db);
	ck_assert_int_eq(dir_count(dir), 0);

	assert_no_leak(&ca, nothing_live, "memory-only brokers");
	ck_assert_int_eq(chdir(cwd), 0);
	tmpdir_remove(dir);
}
END_TEST

/* 2. Retained messages survive ---------------------------------------------- */

START_TEST(test_retained_survives_restart)
{
	count_alloc ca = {0};
	mqb_allocator a = ca_allocator(&ca);
	char dir[PATH_MAX], db[PATH_MAX + 8];
	tmpdir_make(dir, sizeof dir);
	snprintf(db, sizeof db, "%s/b.db", dir);
	int fds0 = count_fds();

	mqb_config *cfg = make_cfg(&a, db);
	ca_mark m0 = mark(&ca);
	mqb_broker *b = start_broker(cfg);
	ck_assert_msg(file_exists(db), "%s not created by mqb_broker_start", db);
	mqb_metrics m;
	mqb_broker_metrics(b, &m);
	uint64_t base = m.retained;
	/* Binary payload (a NUL inside) and MQTT 5 properties. */
	static const char payload[] = "hello\0world";
	mqb_user_property up = {"origin", "host"};
	mqb_message msg = {.topic = "keep/t",
	                   .payload = payload,
	                   .payload_len = sizeof payload,
	                   .qos = 1,
	                   .retain = 1,
	                   .content_type = "application/x-test",
	                   .user_properties = &up,
	                   .user_property_count = 1};
	ck_assert_int_eq(mqb_publish(b, &msg), MQB_OK);
	ck_assert_int_eq(wait_retained(b, base + 1), base + 1);
	stop_wait(b);
	mqb_broker_metrics(b, &m);
	ck_assert_msg(m.store_commits > 0, "store_commits = %llu",
	              (unsigned long long)m.store_commits);
	ck_assert_msg(m.store_errors == 0, "store_errors = %llu",
	              (unsigned long long)m.store_errors);
	mqb_broker_destroy(b);
	assert_no_leak(&ca, m0, "first broker");
	ck_assert_int_eq(count_fds(), fds0); /* the file is closed */

	/* A new broker with the same configuration has it. */
	b = start_broker(cfg);
	mqb_broker_metrics(b, &m);
	ck_assert_int_eq(m.retained, base + 1);
	static msg_queue q;
	int n = retained_under_keep(b, &q);
	ck_assert_int_eq(n, 1);
	msg_copy *c = &q.m[0];
	ck_assert_str_eq(c->topic, "keep/t");
	ck_assert_int_eq(c->retain, 1);
	ck_assert_int_eq(c->qos, 1);
	ck_assert_int_eq(c->payload_len, sizeof payload);
	ck_assert(memcmp(c->payload, payload, sizeof payload) == 0);
	ck_assert_msg(c->has_ctype, "content type lost");
	ck_assert_str_eq(c->ctype, "application/x-test");
	ck_assert_int_eq(c->nup, 1);
	ck_assert_str_eq(c->upk, "origin");
	ck_assert_str_eq(c->upv, "host");
	stop_wait(b);
	mqb_broker_metrics(b, &m);
	ck_assert_int_eq(m.store_errors, 0);
	mqb_broker_destroy(b);
	mqb_config_destroy(cfg);
	assert_no_leak(&ca, nothing_live, "second broker");
	ck_assert_int_eq(count_fds(), fds0);
	tmpdir_remove(dir);
}
END_TEST

/* 3. A persistent MQTT session survives ------------------------------------- */

typedef struct status_copy {
	int found, connected;
	size_t subscriptions, inflight, queued;
} status_copy;

static void on_status(void *user, const mqb_client_status *st)
{
	status_copy *s = user;
	s->found = 1;
	s->connected = st->connected;
	s->subscriptions = st->subscriptions;
	s->inflight = st->inflight;
	s->queued = st->queued;
}

static status_copy client_status(mqb_broker *b, const char *id)
{
	status_copy s = {0};
	mqb_err e = mqb_broker_client(b, id, on_status, &s);
	ck_assert_msg(e == MQB_OK || e == MQB_ERR_NOTFOUND, "mqb_broker_client: %s",
	              mqb_strerror(e));
	return s;
}

/* Waits until the session is offline with `queued` messages queued and none
 * in flight; returns the last status seen. */
static status_copy wait_offline_queued(mqb_broker *b, const char *id, size_t queued)
{
	int64_t deadline = mr_now_ms() + WAIT_MS;
	status_copy s;
	for (;;) {
		s = client_status(b, id);
		if ((s.found && !s.connected && s.queued == queued && s.inflight == 0) ||
		    mr_now_ms() >= deadline)
			return s;
		mr_sleep_ms(10);
	}
}

static void send_free(int fd, mr_buf *b)
{
	ck_assert_int_eq(mr_send(fd, b), 0);
	mr_buf_free(b);
}

static void disconnect_client(int fd)
{
	mr_buf d = {0};
	mr_enc_disconnect(&d, 4, 0);
	send_free(fd, &d);
	ck_assert_int_eq(mr_wait_closed(fd, WAIT_MS), 1);
	close(fd);
}

/* CONNECT 3.1.1 with clean session 0; returns the fd, *sp the session present flag. */
static int connect_persistent(int port, const char *id, int *sp)
{
	int fd = mr_dial(port);
	ck_assert_int_ge(fd, 0);
	mr_connect_opts o = {.proto = 4, .client_id = id, .clean = 0, .keepalive = 60};
	mr_buf c = {0};
	mr_enc_connect(&c, &o);
	send_free(fd, &c);
	mr_packet p;
	ck_assert_int_eq(mr_read(fd, &p, WAIT_MS), 1);
	int rc = -1;
	ck_assert_int_eq(mr_parse_connack(&p, 4, sp, &rc, NULL), 0);
	mr_packet_free(&p);
	ck_assert_int_eq(rc, 0);
	return fd;
}

START_TEST(test_session_survives_restart)
{
	count_alloc ca = {0};
	mqb_allocator a = ca_allocator(&ca);
	char dir[PATH_MAX], db[PATH_MAX + 8];
	tmpdir_make(dir, sizeof dir);
	snprintf(db, sizeof db, "%s/b.db", dir);
	int fds0 = count_fds();
	mqb_config *cfg = make_cfg(&a, db);
	ca_mark m0 = mark(&ca);

	/* Run 1: the client subscribes and goes away; the host publishes. */
	mqb_broker *b = start_broker(cfg);
	int sp = -1;
	int fd = connect_persistent(port_of(b), "ps1", &sp);
	ck_assert_int_eq(sp, 0);
	ck_assert_int_eq(mr_subscribe_sync(fd, 4, 1, "ps/#", 1), 1);
	disconnect_client(fd);
	status_copy st = wait_offline_queued(b, "ps1", 0);
	ck_assert_msg(st.found && !st.connected, "session ps1: found %d connected %d", st.found,
	              st.connected);
	/* One topic: the host's messages to one topic keep the order of the calls. */
	for (int i = 1; i <= 3; i++) {
		char payload[16];
		snprintf(payload, sizeof payload, "m%d", i);
		ck_assert_int_eq(mqb_broker_publish(b, "ps/t", payload, strlen(payload), 1, 0),
		                 MQB_OK);
	}
	st = wait_offline_queued(b, "ps1", 3);
	ck_assert_msg(st.queued == 3, "session ps1 queues %zu messages, expected 3", st.queued);
	stop_wait(b);
	mqb_metrics m;
	mqb_broker_metrics(b, &m);
	ck_assert_msg(m.store_commits > 0, "store_commits = %llu",
	              (unsigned long long)m.store_commits);
	ck_assert_int_eq(m.store_errors, 0);
	mqb_broker_destroy(b);
	assert_no_leak(&ca, m0, "run 1");
	ck_assert_int_eq(count_fds(), fds0);

	/* Run 2: the session is back before the client is, then the client gets
	 * the three messages in order. */
	b = start_broker(cfg);
	st = client_status(b, "ps1");
	ck_assert_msg(st.found, "session ps1 not restored");
	ck_assert_int_eq(st.connected, 0);
	ck_assert_int_eq(st.subscriptions, 1);
	/* (Checked at the end, so that a wrong count does not hide the rest.) */
	size_t restored_queued = st.queued;
	fd = connect_persistent(port_of(b), "ps1", &sp);
	ck_assert_msg(sp == 1, "CONNACK session present = %d after the restart", sp);
	for (int i = 1; i <= 3; i++) {
		mr_packet p;
		mr_publish pub;
		char payload[16];
		snprintf(payload, sizeof payload, "m%d", i);
		ck_assert_msg(mr_next_publish(fd, 4, &p, &pub, WAIT_MS) == 1,
		              "message %d of 3 not received", i);
		ck_assert_str_eq(pub.topic, "ps/t");
		ck_assert_int_eq(pub.qos, 1);
		ck_assert_msg(pub.payload_len == strlen(payload) &&
		                      memcmp(pub.payload, payload, pub.payload_len) == 0,
		              "message %d of 3: payload \"%.*s\", expected \"%s\"", i,
		              (int)pub.payload_len, (const char *)pub.payload, payload);
		mr_packet_free(&p); /* (mr_next_publish sent the PUBACK) */
	}
	int skipped = 0;
	ck_assert_int_eq(mr_ping(fd, WAIT_MS, &skipped), 1);
	ck_assert_int_eq(skipped, 0); /* no fourth message */
	disconnect_client(fd);
	/* The acknowledgements are processed: nothing left for the session. */
	st = wait_offline_queued(b, "ps1", 0);
	ck_assert_msg(st.queued == 0 && st.inflight == 0,
	              "after the acks: %zu queued, %zu in flight", st.queued, st.inflight);
	stop_wait(b);
	mqb_broker_metrics(b, &m);
	ck_assert_int_eq(m.store_errors, 0);
	mqb_broker_destroy(b);
	assert_no_leak(&ca, m0, "run 2");

	/* Run 3: the session is still there, the acknowledged messages are not. */
	b = start_broker(cfg);
	fd = connect_persistent(port_of(b), "ps1", &sp);
	ck_assert_int_eq(sp, 1);
	skipped = 0;
	ck_assert_int_eq(mr_ping(fd, WAIT_MS, &skipped), 1);
	ck_assert_msg(skipped == 0, "%d acknowledged message(s) delivered again", skipped);
	disconnect_client(fd);
	mqb_broker_destroy(b);
	mqb_config_destroy(cfg);
	assert_no_leak(&ca, nothing_live, "run 3");
	ck_assert_int_eq(count_fds(), fds0);
	tmpdir_remove(dir);
	/* The host's view of the restored session counts its queue (on disk). */
	ck_assert_msg(restored_queued == 3,
	              "mqb_broker_client(): the restored session ps1 queues %zu messages, "
	              "expected 3",
	              restored_queued);
}
END_TEST

/* 4. A file that is not a database ------------------------------------------ */

START_TEST(test_garbage_file)
{
	count_alloc ca = {0};
	mqb_allocator a = ca_allocator(&ca);
	char dir[PATH_MAX], db[PATH_MAX + 8], name[256], moved[PATH_MAX + 300];
	tmpdir_make(dir, sizeof dir);
	snprintf(db, sizeof db, "%s/b.db", dir);
	static char garbage[4096];
	for (size_t i = 0; i < sizeof garbage; i++)
		garbage[i] = "not a database, just some text\n"[i % 31];
	write_file(db, garbage, sizeof garbage);
	int fds0 = count_fds();

	/* Refused by default, the reason logged with the path; the file is untouched. */
	log_reset();
	mqb_config *cfg = make_cfg(&a, db);
	ca_mark m0 = mark(&ca);
	mqb_broker *b = create_broker(cfg);
	mqb_err e = mqb_broker_start(b);
	ck_assert_msg(e == MQB_ERR_PARSE, "mqb_broker_start: %s, expected %s", mqb_strerror(e),
	              mqb_strerror(MQB_ERR_PARSE));
	ck_assert_msg(log_has(MQB_LOG_ERROR, db), "no error logged that names %s", db);
	mqb_broker_destroy(b);
	ck_assert(file_equals(db, garbage, sizeof garbage));
	ck_assert(!dir_find_prefix(dir, "b.db.corrupt-", name, sizeof name));
	assert_no_leak(&ca, m0, "refused broker");
	ck_assert_int_eq(count_fds(), fds0);

	/* move_aside: the file is kept aside as b.db.corrupt-*, the broker starts
	 * with an empty store on the path. */
	log_reset();
	cfg_set(cfg, "persistence.on_corrupt", "move_aside");
	b = start_broker(cfg);
	ck_assert_msg(dir_find_prefix(dir, "b.db.corrupt-", name, sizeof name),
	              "no b.db.corrupt-* file in %s", dir);
	snprintf(moved, sizeof moved, "%s/%s", dir, name);
	ck_assert_msg(file_equals(moved, garbage, sizeof garbage),
	              "%s does not hold the original file", moved);
	ck_assert(file_exists(db));
	ck_assert_msg(log_has(MQB_LOG_WARNING, name), "moving the file aside was not logged");
	/* The new store works. */
	mqb_metrics m;
	mqb_broker_metrics(b, &m);
	uint64_t base = m.retained;
	ck_assert_int_eq(mqb_broker_publish(b, "keep/x", "x", 1, 1, 1), MQB_OK);
	ck_assert_int_eq(wait_retained(b, base + 1), base + 1);
	stop_wait(b);
	mqb_broker_metrics(b, &m);
	ck_assert_int_gt(m.store_commits, 0);
	ck_assert_int_eq(m.store_errors, 0);
	mqb_broker_destroy(b);
	mqb_config_destroy(cfg);
	assert_no_leak(&ca, nothing_live, "broker after move_aside");
	ck_assert_int_eq(count_fds(), fds0);
	tmpdir_remove(dir);
}
END_TEST

/* 5. One broker per file ----------------------------------------------------- */

START_TEST(test_file_in_use)
{
	count_alloc ca = {0};
	mqb_allocator a = ca_allocator(&ca);
	char dir[PATH_MAX], db[PATH_MAX + 8];
	tmpdir_make(dir, sizeof dir);
	snprintf(db, sizeof db, "%s/b.db", dir);
	int fds0 = count_fds();
	mqb_config *cfg = make_cfg(&a, db);

	log_reset();
	mqb_broker *b1 = start_broker(cfg);
	mqb_broker *b2 = create_broker(cfg);
	mqb_err e = mqb_broker_start(b2);
	ck_assert_msg(e == MQB_ERR_STATE, "second broker on %s: %s, expected %s", db,
	              mqb_strerror(e), mqb_strerror(MQB_ERR_STATE));
	ck_assert_msg(log_has(MQB_LOG_ERROR, db), "no error logged that names %s", db);
	mqb_broker_destroy(b2);

	/* The first one is unharmed and keeps what it is given. */
	mqb_metrics m;
	mqb_broker_metrics(b1, &m);
	uint64_t base = m.retained;
	ck_assert_int_eq(mqb_broker_publish(b1, "keep/one", "1", 1, 1, 1), MQB_OK);
	ck_assert_int_eq(wait_retained(b1, base + 1), base + 1);
	stop_wait(b1);
	mqb_broker_metrics(b1, &m);
	ck_assert_int_gt(m.store_commits, 0);
	ck_assert_int_eq(m.store_errors, 0);
	mqb_broker_destroy(b1);

	/* Once it is destroyed, the file is free again. */
	mqb_broker *b3 = start_broker(cfg);
	static msg_queue q;
	ck_assert_int_eq(retained_under_keep(b3, &q), 1);
	ck_assert_str_eq(q.m[0].topic, "keep/one");
	mqb_broker_destroy(b3);
	mqb_config_destroy(cfg);
	assert_no_leak(&ca, nothing_live, "brokers on one file");
	ck_assert_int_eq(count_fds(), fds0);
	tmpdir_remove(dir);
}
END_TEST

/* 6. Enabled without a path -------------------------------------------------- */

START_TEST(test_enable_without_path)
{
	count_alloc ca = {0};
	mqb_allocator a = ca_allocator(&ca);
	char dir[PATH_MAX], cwd[PATH_MAX];
	tmpdir_make(dir, sizeof dir);
	ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
	ck_assert_int_eq(chdir(dir), 0);
	int fds0 = count_fds();

	log_reset();
	mqb_config *cfg = make_cfg(&a, NULL);
	cfg_set(cfg, "persistence.enable", "true");
	mqb_broker *b = create_broker(cfg);
	mqb_err e = mqb_broker_start(b);
	ck_assert_msg(e == MQB_ERR_INVAL, "mqb_broker_start: %s, expected %s", mqb_strerror(e),
	              mqb_strerror(MQB_ERR_INVAL));
	ck_assert_msg(log_has(MQB_LOG_ERROR, "persistence.path"),
	              "no error logged about persistence.path");
	/* Not running: no listener, no host publishes. */
	ck_assert_int_eq(mqb_broker_publish(b, "t", "x", 1, 0, 0), MQB_ERR_STATE);
	mqb_broker_destroy(b);
	mqb_config_destroy(cfg);
	ck_assert_int_eq(dir_count(dir), 0);
	assert_no_leak(&ca, nothing_live, "broker without a path");
	ck_assert_int_eq(count_fds(), fds0);
	ck_assert_int_eq(chdir(cwd), 0);
	tmpdir_remove(dir);
}
END_TEST

static int rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)sb;
	(void)ftw;
	return type == FTW_DP ? rmdir(path) : unlink(path);
}

int main(void)
{
	const char *tmp = getenv("TMPDIR");
	snprintf(g_base, sizeof g_base, "%s/mqb-persist-api-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(g_base)) {
		perror("mkdtemp");
		return 1;
	}
	Suite *s = suite_create("api_persist");
	TCase *tc = tcase_create("persistence");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_default_is_memory_only);
	tcase_add_test(tc, test_retained_survives_restart);
	tcase_add_test(tc, test_session_survives_restart);
	tcase_add_test(tc, test_garbage_file);
	tcase_add_test(tc, test_file_in_use);
	tcase_add_test(tc, test_enable_without_path);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_ENV);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	if (nftw(g_base, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0) {
		perror(g_base);
		failed++;
	}
	return failed ? 1 : 0;
}
