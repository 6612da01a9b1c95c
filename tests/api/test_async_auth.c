/* Asynchronous authentication: the authenticate hook answers MQB_PENDING and a
 * worker thread completes each ticket later with mqb_auth_complete(). Checks
 * the CONNACK every client gets, clients that leave while pending, that
 * nothing leaks, and that packets pipelined behind the CONNECT wait for the
 * verdict and are then processed in order. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mqttbroker.h>

#include "count_alloc.h"
#include "mqtt_raw.h"

#define N_CLIENTS 2000
#define N_THREADS 4
#define BATCH     25
#define N_GONE    300

/* Ticket queue ------------------------------------------------------------ */

typedef struct item {
	mqb_auth_ticket *ticket;
	mqb_verdict verdict;
	int64_t due;
	int gone; /* the client closed right after CONNECT */
	struct item *next;
} item;

static pthread_mutex_t q_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t q_cv = PTHREAD_COND_INITIALIZER;
static item *q_head;
static int q_stop;
static mqb_auth_ticket *held_ticket; /* for client ids "hold...": released by the test */

static atomic_int hook_calls, hook_calls_gone, hook_calls_c, completed;
static atomic_int rc_ok, rc_notfound, rc_other, gone_ok, gone_notfound;
static atomic_int req_mismatch;
static char req_mismatch_text[256];
static atomic_uint rnd_state = 12345;

static unsigned rnd(void)
{
	unsigned x = atomic_fetch_add(&rnd_state, 0x9E3779B9u);
	x ^= x >> 16;
	x *= 0x85EBCA6Bu;
	x ^= x >> 13;
	return x;
}

static void push(mqb_auth_ticket *t, mqb_verdict v, int delay_ms, int gone)
{
	item *it = calloc(1, sizeof *it);
	it->ticket = t;
	it->verdict = v;
	it->due = mr_now_ms() + delay_ms;
	it->gone = gone;
	pthread_mutex_lock(&q_mu);
	it->next = q_head;
	q_head = it;
	pthread_cond_signal(&q_cv);
	pthread_mutex_unlock(&q_mu);
}

static void complete(item *it)
{
	mqb_err rc = mqb_auth_complete(it->ticket, it->verdict);
	if (rc == MQB_OK)
		atomic_fetch_add(&rc_ok, 1);
	else if (rc == MQB_ERR_NOTFOUND)
		atomic_fetch_add(&rc_notfound, 1);
	else
		atomic_fetch_add(&rc_other, 1);
	if (it->gone)
		atomic_fetch_add(rc == MQB_OK ? &gone_ok : &gone_notfound, 1);
	atomic_fetch_add(&completed, 1);
	free(it);
}

/* Completes tickets in due order. */
static void *worker(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&q_mu);
	for (;;) {
		if (!q_head) {
			if (q_stop)
				break;
			pthread_cond_wait(&q_cv, &q_mu);
			continue;
		}
		item **best = &q_head;
		for (item **pp = &q_head; *pp; pp = &(*pp)->next)
			if ((*pp)->due < (*best)->due)
				best = pp;
		int64_t now = mr_now_ms();
		if ((*best)->due <= now) {
			item *it = *best;
			*best = it->next;
			pthread_mutex_unlock(&q_mu);
			complete(it);
			pthread_mutex_lock(&q_mu);
			continue;
		}
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		int64_t wait = (*best)->due - now;
		ts.tv_sec += wait / 1000;
		ts.tv_nsec += (wait % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&q_cv, &q_mu, &ts);
	}
	pthread_mutex_unlock(&q_mu);
	return NULL;
}

static void mismatch(const char *fmt, const char *a)
{
	if (atomic_fetch_add(&req_mismatch, 1) == 0)
		snprintf(req_mismatch_text, sizeof req_mismatch_text, fmt, a);
}

/* Client ids: "c<N>" (N even: allow, odd: deny; N % 3 == 0: 3.1.1, else v5;
 * N % 5 == 0: username "u<N>", password "pw"), "g<N>" (gone while pending),
 * "hold..." (the test releases it), anything else: allowed at once. */
static mqb_verdict authenticate(void *user, const mqb_auth_request *req, mqb_auth_ticket *t)
{
	(void)user;
	atomic_fetch_add(&hook_calls, 1);
	if (!req->client_id || !req->peer || strncmp(req->peer, "127.0.0.1:", 10) != 0)
		mismatch("bad peer %s", req->peer ? req->peer : "(null)");
	if (!req->listener || strcmp(req->listener, "default") != 0)
		mismatch("bad listener %s", req->listener ? req->listener : "(null)");
	const char *id = req->client_id ? req->client_id : "";
	if (id[0] == 'c') {
		atomic_fetch_add(&hook_calls_c, 1);
		int n = atoi(id + 1);
		if (req->protocol != (n % 3 == 0 ? 4 : 5))
			mismatch("bad protocol for %s", id);
		if (n % 5 == 0) {
			char u[32];
			snprintf(u, sizeof u, "u%d", n);
			if (!req->username || strcmp(req->username, u) != 0 ||
			    req->password_len != 2 || !req->password ||
			    memcmp(req->password, "pw", 2) != 0)
				mismatch("bad credentials for %s", id);
		} else if (req->username || req->password) {
			mismatch("unexpected credentials for %s", id);
		}
		push(t, n % 2 == 0 ? MQB_ALLOW : MQB_DENY, (int)(rnd() % 20), 0);
	} else if (id[0] == 'g') {
		atomic_fetch_add(&hook_calls_gone, 1);
		push(t, MQB_ALLOW, 200 + (int)(rnd() % 50), 1);
	} else if (strncmp(id, "hold", 4) == 0) {
		pthread_mutex_lock(&q_mu);
		if (held_ticket)
			mismatch("two held tickets (%s)", id);
		held_ticket = t;
		pthread_mutex_unlock(&q_mu);
	} else {
		push(t, MQB_ALLOW, 0, 0);
	}
	return MQB_PENDING;
}

/* Fixture --------------------------------------------------------------- */

static count_alloc ca;
static mqb_broker *broker;
static int port;
static pthread_t worker_thread;

static void setup_idle(const char *idle_timeout)
{
	memset(&ca, 0, sizeof ca);
	mqb_allocator a = ca_allocator(&ca);
	mqb_config *cfg;
	ck_assert_int_eq(mqb_config_create(&cfg, &a), MQB_OK);
	ck_assert_int_eq(mqb_config_set(cfg, "listener.tcp.default", "127.0.0.1:0", NULL, 0), 0);
	ck_assert_int_eq(mqb_config_set(cfg, "node.loop_threads", "2", NULL, 0), 0);
	ck_assert_int_eq(mqb_config_set(cfg, "node.drain_timeout", "2s", NULL, 0), 0);
	ck_assert_int_eq(mqb_config_set(cfg, "mqtt.idle_timeout", idle_timeout, NULL, 0), 0);
	ck_assert_int_eq(mqb_broker_create(&broker, cfg), MQB_OK);
	mqb_config_destroy(cfg);
	mqb_hooks h;
	memset(&h, 0, sizeof h);
	h.authenticate = authenticate;
	ck_assert_int_eq(mqb_broker_set_hooks(broker, &h), MQB_OK);
	q_stop = 0;
	ck_assert_int_eq(pthread_create(&worker_thread, NULL, worker, NULL), 0);
	ck_assert_int_eq(mqb_broker_start(broker), MQB_OK);
	ck_assert_int_eq(mqb_broker_listener_port(broker, "default", &port), MQB_OK);
}

static void setup(void)
{
	setup_idle("60s");
}

/* Waits until every ticket handed out has been completed. */
static void wait_all_completed(int ms)
{
	int64_t deadline = mr_now_ms() + ms;
	while (mr_now_ms() < deadline) {
		pthread_mutex_lock(&q_mu);
		int idle = q_head == NULL && held_ticket == NULL;
		pthread_mutex_unlock(&q_mu);
		if (idle && atomic_load(&completed) == atomic_load(&hook_calls))
			return;
		mr_sleep_ms(20);
	}
	ck_abort_msg("tickets not completed: %d hook calls, %d completed", atomic_load(&hook_calls),
	             atomic_load(&completed));
}

static void finish(void)
{
	wait_all_completed(30000);
	pthread_mutex_lock(&q_mu);
	q_stop = 1;
	pthread_cond_broadcast(&q_cv);
	pthread_mutex_unlock(&q_mu);
	pthread_join(worker_thread, NULL);
	mqb_broker_stop(broker);
	ck_assert_int_eq(mqb_broker_wait(broker), MQB_OK);
	mqb_broker_destroy(broker);
	ck_assert_msg(atomic_load(&ca.live) == 0, "%ld allocations (%ld bytes) live after destroy",
	              atomic_load(&ca.live), atomic_load(&ca.bytes));
	ck_assert_msg(atomic_load(&req_mismatch) == 0, "auth request: %s", req_mismatch_text);
}

/* 2,000 connects -------------------------------------------------------- */

static atomic_int wrong_connack, ok_allowed, ok_denied;
static char wrong_text[256];

static void record_wrong(const char *fmt, int n, int a, int b)
{
	if (atomic_fetch_add(&wrong_connack, 1) == 0)
		snprintf(wrong_text, sizeof wrong_text, fmt, n, a, b);
}

static void *connect_thread(void *arg)
{
	int t = (int)(intptr_t)arg;
	for (int base = t * (N_CLIENTS / N_THREADS); base < (t + 1) * (N_CLIENTS / N_THREADS);
	     base += BATCH) {
		int fds[BATCH];
		for (int i = 0; i < BATCH; i++) {
			int n = base + i;
			char id[16], user[16];
			snprintf(id, sizeof id, "c%d", n);
			snprintf(user, sizeof user, "u%d", n);
			mr_connect_opts o = {.proto = n % 3 == 0 ? 4 : 5,
			                     .client_id = id,
			                     .clean = 1,
			                     .keepalive = 60,
			                     .username = n % 5 == 0 ? user : NULL,
			                     .password = n % 5 == 0 ? "pw" : NULL};
			fds[i] = mr_dial(port);
			if (fds[i] < 0) {
				record_wrong("client %d: connect() failed (%d %d)", n, 0, 0);
				continue;
			}
			mr_buf b = {0};
			mr_enc_connect(&b, &o);
			mr_send(fds[i], &b);
			mr_buf_free(&b);
		}
		for (int i = 0; i < BATCH; i++) {
			int n = base + i;
			if (fds[i] < 0)
				continue;
			int proto = n % 3 == 0 ? 4 : 5;
			mr_packet p;
			int r = mr_read(fds[i], &p, 30000);
			if (r != 1) {
				record_wrong("client %d: no CONNACK (read %d, proto %d)", n, r,
				             proto);
			} else {
				int rc = -1, sp = -1;
				if (mr_parse_connack(&p, proto, &sp, &rc, NULL) != 0)
					record_wrong(
					        "client %d: got packet type %d, not CONNACK (%d)",
					        n, p.type, 0);
				int want = n % 2 == 0 ? 0 : proto == 5 ? 0x86 : 0x04;
				if (rc != want)
					record_wrong("client %d: CONNACK %d, expected %d", n, rc,
					             want);
				else if (sp != 0)
					record_wrong("client %d: session present %d with code %d",
					             n, sp, rc);
				else
					atomic_fetch_add(n % 2 == 0 ? &ok_allowed : &ok_denied, 1);
				mr_packet_free(&p);
				/* A refused client is then disconnected by the broker. */
				if (want != 0 && !mr_wait_closed(fds[i], 10000))
					record_wrong("client %d: not closed after CONNACK %d (%d)",
					             n, rc, 0);
			}
			close(fds[i]);
		}
	}
	return NULL;
}

/* Clients that send CONNECT and close at once. */
static void *gone_thread(void *arg)
{
	(void)arg;
	for (int n = 0; n < N_GONE; n++) {
		char id[16];
		snprintf(id, sizeof id, "g%d", n);
		mr_connect_opts o = {
		        .proto = n % 2 ? 5 : 4, .client_id = id, .clean = 1, .keepalive = 60};
		int fd = mr_dial(port);
		if (fd < 0)
			continue;
		mr_buf b = {0};
		mr_enc_connect(&b, &o);
		mr_send(fd, &b);
		mr_buf_free(&b);
		if (n % 3 == 0)
			mr_sleep_ms(1); /* give the broker a chance to read it first */
		close(fd);
	}
	return NULL;
}

START_TEST(test_many_pending_connects)
{
	setup();
	pthread_t th[N_THREADS + 1];
	for (int t = 0; t < N_THREADS; t++)
		ck_assert_int_eq(pthread_create(&th[t], NULL, connect_thread, (void *)(intptr_t)t),
		                 0);
	ck_assert_int_eq(pthread_create(&th[N_THREADS], NULL, gone_thread, NULL), 0);
	for (int t = 0; t <= N_THREADS; t++)
		pthread_join(th[t], NULL);
	ck_assert_msg(atomic_load(&wrong_connack) == 0, "%d wrong CONNACKs; first: %s",
	              atomic_load(&wrong_connack), wrong_text);
	ck_assert_int_eq(atomic_load(&ok_allowed), N_CLIENTS / 2);
	ck_assert_int_eq(atomic_load(&ok_denied), N_CLIENTS / 2);
	ck_assert_int_eq(atomic_load(&hook_calls_c), N_CLIENTS);
	ck_assert_int_le(atomic_load(&hook_calls_gone), N_GONE);

	wait_all_completed(30000);
	/* Every completion of a still-connected client succeeded; the ones of
	 * clients that left answered OK or NOTFOUND. */
	ck_assert_int_eq(atomic_load(&rc_other), 0);
	ck_assert_int_eq(atomic_load(&rc_ok) - atomic_load(&gone_ok),
	                 atomic_load(&hook_calls) - atomic_load(&hook_calls_gone));
	fprintf(stderr, "async auth: %d hook calls for %d abandoned clients: %d OK, %d NOTFOUND\n",
	        atomic_load(&hook_calls_gone), N_GONE, atomic_load(&gone_ok),
	        atomic_load(&gone_notfound));

	/* The broker is healthy: a later client connects, subscribes and gets
	 * its own message. */
	int fd = mr_open_simple(port, 5, "later");
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(mr_subscribe_sync(fd, 5, 1, "later/#", 1), 1);
	ck_assert_int_eq(mr_publish_sync(fd, 5, "later/x", "hi", 0, 0, 0, NULL), 0);
	mr_packet p;
	mr_publish pub;
	ck_assert_int_eq(mr_next_publish(fd, 5, &p, &pub, 10000), 1);
	ck_assert_str_eq(pub.topic, "later/x");
	mr_packet_free(&p);
	close(fd);
	finish();
}
END_TEST

/* Pipelined packets ------------------------------------------------------- */

static mqb_auth_ticket *take_held(void);

static void release_held(mqb_verdict v)
{
	mqb_auth_ticket *t = take_held();
	ck_assert_int_eq(mqb_auth_complete(t, v), MQB_OK);
	atomic_fetch_add(&completed, 1);
}

/* Sends CONNECT, SUBSCRIBE pid 1 (pipe<p>/a, QoS 1), SUBSCRIBE pid 2
 * (pipe<p>/b, QoS 0), PUBLISH QoS 1 pid 3 "one" to pipe<p>/a, PUBLISH QoS 0
 * "two" to pipe<p>/b and PINGREQ in one write. */
static int send_pipelined(int proto, const char *id)
{
	char ta[32], tb[32];
	snprintf(ta, sizeof ta, "pipe%d/a", proto);
	snprintf(tb, sizeof tb, "pipe%d/b", proto);
	mr_connect_opts o = {.proto = proto, .client_id = id, .clean = 1, .keepalive = 60};
	mr_buf b = {0};
	mr_enc_connect(&b, &o);
	mr_enc_subscribe(&b, proto, 1, ta, 1, 0);
	mr_enc_subscribe(&b, proto, 2, tb, 0, 0);
	mr_enc_publish(&b, proto, ta, "one", 3, 1, 0, 3, NULL);
	mr_enc_publish(&b, proto, tb, "two", 3, 0, 0, 0, NULL);
	mr_enc_pingreq(&b);
	int fd = mr_dial(port);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(mr_send(fd, &b), 0);
	mr_buf_free(&b);
	return fd;
}

START_TEST(test_pipelined_after_connect)
{
	setup();
	/* A watcher sees what gets routed. */
	int watch = mr_open_simple(port, 5, "watch");
	ck_assert_int_ge(watch, 0);
	ck_assert_int_eq(mr_subscribe_sync(watch, 5, 1, "+/+", 1), 1);

	for (int proto = 4; proto <= 5; proto++) {
		int fd = send_pipelined(proto, proto == 4 ? "hold4" : "hold5");
		mr_packet p;
		/* Nothing is answered while the authentication is pending. */
		ck_assert_int_eq(mr_read(fd, &p, 1000), 0);
		release_held(MQB_ALLOW);

		ck_assert_int_eq(mr_read(fd, &p, 10000), 1);
		int rc = -1;
		ck_assert_int_eq(mr_parse_connack(&p, proto, NULL, &rc, NULL), 0);
		ck_assert_int_eq(rc, 0);
		mr_packet_free(&p);

		uint16_t pid;
		int codes[4];
		ck_assert_int_eq(mr_read(fd, &p, 10000), 1);
		ck_assert_int_eq(mr_parse_suback(&p, proto, &pid, codes, 4), 1);
		ck_assert_int_eq(pid, 1);
		ck_assert_int_eq(codes[0], 1);
		mr_packet_free(&p);
		/* A retained message could come here, but there is none. */
		ck_assert_int_eq(mr_read(fd, &p, 10000), 1);
		ck_assert_int_eq(mr_parse_suback(&p, proto, &pid, codes, 4), 1);
		ck_assert_int_eq(pid, 2);
		ck_assert_int_eq(codes[0], 0);
		mr_packet_free(&p);

		/* Then PUBACK 3 and the two messages (routed back to the client, in
		 * publish order), then PINGRESP after the PUBACK. */
		int got_puback = 0, got_one = 0, got_two = 0, got_pingresp = 0;
		while (!(got_puback && got_one && got_two && got_pingresp)) {
			ck_assert_int_eq(mr_read(fd, &p, 10000), 1);
			if (p.type == MR_PUBACK) {
				int reason;
				ck_assert_int_eq(mr_parse_ack(&p, proto, &pid, &reason), 0);
				ck_assert_int_eq(pid, 3);
				ck_assert_int_eq(reason, 0);
				ck_assert(!got_puback && !got_pingresp);
				got_puback = 1;
			} else if (p.type == MR_PUBLISH) {
				mr_publish pub;
				ck_assert_int_eq(mr_parse_publish(&p, proto, &pub), 0);
				if (pub.payload_len == 3 && memcmp(pub.payload, "one", 3) == 0) {
					ck_assert(!got_one && !got_two);
					ck_assert_int_eq(pub.qos, 1);
					got_one = 1;
					mr_buf a = {0};
					mr_enc_ack(&a, MR_PUBACK, proto, pub.pid, 0);
					ck_assert_int_eq(mr_send(fd, &a), 0);
					mr_buf_free(&a);
				} else {
					ck_assert(pub.payload_len == 3 &&
					          memcmp(pub.payload, "two", 3) == 0);
					ck_assert(got_one && !got_two);
					ck_assert_int_eq(pub.qos, 0);
					got_two = 1;
				}
			} else {
				ck_assert_int_eq(p.type, MR_PINGRESP);
				ck_assert(got_puback);
				got_pingresp = 1;
			}
			mr_packet_free(&p);
		}
		close(fd);
	}

	/* Refused: CONNACK 0x86 (v5) / 0x04 (3.1.1), the connection closes and the
	 * pipelined packets are not processed (nothing reaches the watcher). */
	for (int proto = 4; proto <= 5; proto++) {
		int fd = send_pipelined(proto, proto == 4 ? "holdd4" : "holdd5");
		release_held(MQB_DENY);
		mr_packet p;
		ck_assert_int_eq(mr_read(fd, &p, 10000), 1);
		int rc = -1;
		ck_assert_int_eq(mr_parse_connack(&p, proto, NULL, &rc, NULL), 0);
		ck_assert_int_eq(rc, proto == 5 ? 0x86 : 0x04);
		mr_packet_free(&p);
		int r = mr_read(fd, &p, 10000);
		ck_assert_msg(r == -1, "after a refused CONNACK: read %d, packet type %d", r,
		              r == 1 ? p.type : -1);
		close(fd);
	}

	/* The watcher got exactly the two allowed clients' messages, then ours. */
	ck_assert_int_eq(mqb_broker_publish(broker, "end/x", "end", 3, 1, 0), MQB_OK);
	const char *want[] = {"pipe4/a", "pipe4/b", "pipe5/a", "pipe5/b", "end/x"};
	for (int i = 0; i < 5; i++) {
		mr_packet p;
		mr_publish pub;
		ck_assert_int_eq(mr_next_publish(watch, 5, &p, &pub, 10000), 1);
		ck_assert_str_eq(pub.topic, want[i]);
		mr_packet_free(&p);
	}
	close(watch);
	finish();
}
END_TEST

/* Takes the held ticket (waiting for the hook to be called). */
static mqb_auth_ticket *take_held(void)
{
	int64_t deadline = mr_now_ms() + 10000;
	mqb_auth_ticket *t = NULL;
	while (!t && mr_now_ms() < deadline) {
		pthread_mutex_lock(&q_mu);
		t = held_ticket;
		held_ticket = NULL;
		pthread_mutex_unlock(&q_mu);
		if (!t)
			mr_sleep_ms(10);
	}
	ck_assert_msg(t != NULL, "the authenticate hook was not called");
	return t;
}

/* Sends a v5 CONNECT for `id` on a new connection; returns the fd. */
static int send_connect(const char *id)
{
	int fd = mr_dial(port);
	ck_assert_int_ge(fd, 0);
	mr_connect_opts o = {.proto = 5, .client_id = id, .clean = 1, .keepalive = 60};
	mr_buf b = {0};
	mr_enc_connect(&b, &o);
	ck_assert_int_eq(mr_send(fd, &b), 0);
	mr_buf_free(&b);
	return fd;
}

/* Waits until the broker counts `n` connections; returns the last count. */
static uint64_t wait_connections(uint64_t n, int ms)
{
	int64_t deadline = mr_now_ms() + ms;
	mqb_metrics m;
	for (;;) {
		mqb_broker_metrics(broker, &m);
		if (m.connections == n || mr_now_ms() >= deadline)
			return m.connections;
		mr_sleep_ms(10);
	}
}

START_TEST(test_pending_client_gone)
{
	setup(); /* mqtt.idle_timeout = 60s: only the client's close can end it */
	/* A client closes while its authentication is pending: the broker notices,
	 * closes the connection, and completing the ticket afterwards answers
	 * MQB_ERR_NOTFOUND (mqttbroker.h, mqb_auth_complete). */
	int fd = send_connect("hold-closed");
	mqb_auth_ticket *t = take_held();
	close(fd);
	mr_sleep_ms(1500);
	mqb_err rc1 = mqb_auth_complete(t, MQB_ALLOW);
	atomic_fetch_add(&completed, 1);
	ck_assert_msg(rc1 == MQB_ERR_NOTFOUND,
	              "client closed 1.5 s before mqb_auth_complete: %s, expected NOTFOUND",
	              mqb_strerror(rc1));
	ck_assert_int_eq(wait_connections(0, 10000), 0);

	/* The same when it closes right after its CONNECT, before the broker has
	 * even read it; and with a DENY verdict. */
	fd = send_connect("hold-closed-at-once");
	close(fd);
	t = take_held();
	mr_sleep_ms(1500);
	mqb_err rc2 = mqb_auth_complete(t, MQB_DENY);
	atomic_fetch_add(&completed, 1);
	ck_assert_msg(rc2 == MQB_ERR_NOTFOUND,
	              "client closed 1.5 s before mqb_auth_complete: %s, expected NOTFOUND",
	              mqb_strerror(rc2));
	ck_assert_int_eq(wait_connections(0, 10000), 0);

	/* A later client works. */
	fd = mr_open_simple(port, 4, "after");
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(wait_connections(1, 10000), 1);
	close(fd);
	finish();
}
END_TEST

START_TEST(test_pending_idle_timeout)
{
	setup_idle("1s");
	/* mqtt.idle_timeout (1 s) still runs while pending: the broker closes the
	 * connection, and the late completion answers MQB_ERR_NOTFOUND. */
	int fd = send_connect("hold-idle");
	mqb_auth_ticket *t = take_held();
	int64_t t0 = mr_now_ms();
	int closed = mr_wait_closed(fd, 15000);
	int64_t elapsed = mr_now_ms() - t0;
	close(fd);
	mqb_err rc = mqb_auth_complete(t, MQB_ALLOW);
	atomic_fetch_add(&completed, 1);
	ck_assert_msg(closed, "connection still open 15 s into a pending authentication "
	                      "(mqtt.idle_timeout = 1s)");
	ck_assert_msg(elapsed >= 500, "closed after %lld ms", (long long)elapsed);
	ck_assert_int_eq(rc, MQB_ERR_NOTFOUND);

	fd = mr_open_simple(port, 4, "after");
	ck_assert_int_ge(fd, 0);
	close(fd);
	finish();
}
END_TEST

START_TEST(test_pending_at_shutdown)
{
	setup();
	/* A ticket still pending when the broker stops: the connection closes at
	 * shutdown, mqb_broker_wait() returns, and completing the ticket before
	 * mqb_broker_destroy() answers MQB_ERR_NOTFOUND; nothing leaks. */
	int fd = send_connect("hold-shutdown");
	mqb_auth_ticket *t = take_held();
	mqb_broker_stop(broker);
	ck_assert_int_eq(mqb_broker_wait(broker), MQB_OK);
	ck_assert_int_eq(mr_wait_closed(fd, 10000), 1);
	close(fd);
	ck_assert_int_eq(mqb_auth_complete(t, MQB_DENY), MQB_ERR_NOTFOUND);
	atomic_fetch_add(&completed, 1);
	finish(); /* stop and wait again: harmless */
}
END_TEST

START_TEST(test_pending_ignore)
{
	setup();
	/* MQB_IGNORE as the verdict: allow_anonymous (loopback) accepts. */
	int fd = send_connect("hold-ignore");
	release_held(MQB_IGNORE);
	mr_packet p;
	ck_assert_int_eq(mr_read(fd, &p, 10000), 1);
	int rc = -1;
	ck_assert_int_eq(mr_parse_connack(&p, 5, NULL, &rc, NULL), 0);
	ck_assert_int_eq(rc, 0);
	mr_packet_free(&p);
	close(fd);
	finish();
}
END_TEST

int main(void)
{
	Suite *s = suite_create("api_async_auth");
	TCase *tc = tcase_create("async_auth");
	tcase_set_timeout(tc, 110);
	tcase_add_test(tc, test_many_pending_connects);
	tcase_add_test(tc, test_pipelined_after_connect);
	tcase_add_test(tc, test_pending_client_gone);
	tcase_add_test(tc, test_pending_idle_timeout);
	tcase_add_test(tc, test_pending_at_shutdown);
	tcase_add_test(tc, test_pending_ignore);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_ENV);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
