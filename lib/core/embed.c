/* The host's side of messaging: running work on a worker's thread, messages
 * handed to and taken from the host, in-process subscriptions, and the public
 * topic helpers. */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "core/core.h"
#include "core/topic.h"

/* ---- Running host calls on a worker's thread ------------------------------ */

typedef struct worker_call {
	mqbi_inbox_item item;
	void (*fn)(mqbi_worker *w, void *arg);
	void *arg;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool running, done, abandoned;
	const mqb_allocator *alloc;
} worker_call;

static void call_run(mqbi_loop *l, mqbi_inbox_item *it)
{
	worker_call *wc = (worker_call *)it;
	pthread_mutex_lock(&wc->mu);
	if (wc->abandoned) {
		pthread_mutex_unlock(&wc->mu);
		pthread_mutex_destroy(&wc->mu);
		pthread_cond_destroy(&wc->cv);
		mqbi_free(wc->alloc, wc);
		return;
	}
	wc->running = true;
	pthread_mutex_unlock(&wc->mu);
	wc->fn(mqbi_loop_data(l), wc->arg);
	pthread_mutex_lock(&wc->mu);
	wc->done = true;
	pthread_cond_signal(&wc->cv);
	pthread_mutex_unlock(&wc->mu);
}

static void call_drop(mqbi_inbox_item *it)
{
	/* The loop is destroyed: the waiter has given up already (it only waits
	 * while the broker runs), so the call is freed here. */
	worker_call *wc = (worker_call *)it;
	pthread_mutex_lock(&wc->mu);
	bool abandoned = wc->abandoned;
	wc->abandoned = true;
	pthread_cond_signal(&wc->cv);
	pthread_mutex_unlock(&wc->mu);
	if (abandoned) {
		pthread_mutex_destroy(&wc->mu);
		pthread_cond_destroy(&wc->cv);
		mqbi_free(wc->alloc, wc);
	}
}

static bool on_worker_thread(const mqbi_worker *w)
{
	const mqb_broker *b = w->broker;
	if (b->stepped)
		return pthread_equal(pthread_self(), b->step_thread);
	return w->thread_started && pthread_equal(pthread_self(), w->thread);
}

mqb_err mqbi_worker_call(mqbi_worker *w, void (*fn)(mqbi_worker *w, void *arg), void *arg)
{
	mqb_broker *b = w->broker;
	int st = atomic_load(&b->state);
	bool threads =
	        b->stepped ? st != MQBI_BS_STOPPED && st != MQBI_BS_CREATED : w->thread_started;
	if (!threads || on_worker_thread(w)) {
		fn(w, arg);
		return MQB_OK;
	}
	worker_call *wc = mqbi_calloc(&b->alloc, sizeof(*wc));
	if (!wc)
		return MQB_ERR_NOMEM;
	wc->fn = fn;
	wc->arg = arg;
	wc->alloc = &b->alloc;
	wc->item.run = call_run;
	wc->item.drop = call_drop;
	pthread_mutex_init(&wc->mu, NULL);
	pthread_cond_init(&wc->cv, NULL);
	mqbi_loop_post(w->loop, &wc->item);
	mqb_err err = MQB_OK;
	pthread_mutex_lock(&wc->mu);
	while (!wc->done) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 100 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&wc->cv, &wc->mu, &ts);
		if (wc->done)
			break;
		/* A worker that has stopped will never run it: give up, and let
		 * whoever touches the item last free it. */
		bool gone = wc->abandoned ||
		            (!wc->running && (mqbi_loop_stopped(w->loop) ||
		                              atomic_load(&b->state) == MQBI_BS_STOPPED));
		if (gone) {
			bool free_now = wc->abandoned; /* dropped already */
			wc->abandoned = true;
			pthread_mutex_unlock(&wc->mu);
			if (free_now) {
				pthread_mutex_destroy(&wc->mu);
				pthread_cond_destroy(&wc->cv);
				mqbi_free(&b->alloc, wc);
			}
			return MQB_ERR_STATE;
		}
	}
	pthread_mutex_unlock(&wc->mu);
	pthread_mutex_destroy(&wc->mu);
	pthread_cond_destroy(&wc->cv);
	mqbi_free(&b->alloc, wc);
	return err;
}

/* ---- Messages for the host ------------------------------------------------ */

/* Copies a string into the worker's text scratch; returns its offset. */
static size_t view_text(mqbi_worker *w, size_t *used, const uint8_t *p, size_t len, bool *ok)
{
	if (*used + len + 1 > w->view_text_cap) {
		size_t cap = w->view_text_cap ? w->view_text_cap : 256;
		while (cap < *used + len + 1)
			cap *= 2;
		char *n = mqbi_realloc(&w->broker->alloc, w->view_text, cap);
		if (!n) {
			*ok = false;
			return 0;
		}
		w->view_text = n;
		w->view_text_cap = cap;
	}
	size_t off = *used;
	memcpy(w->view_text + off, p, len);
	w->view_text[off + len] = '\0';
	*used += len + 1;
	return off;
}

void mqbi_msg_view(mqbi_worker *w, const mqbi_msg *msg, uint8_t qos, bool retain, mqb_message *out)
{
	memset(out, 0, sizeof(*out));
	out->topic = msg->topic;
	out->payload = msg->payload;
	out->payload_len = msg->payload_len;
	out->qos = qos;
	out->retain = retain;
	out->client_id = msg->publisher;
	out->username = msg->username;
	if (msg->has_expiry) {
		uint64_t now = mqbi_loop_now(w->loop);
		out->has_message_expiry = 1;
		out->message_expiry = mqbi_msg_expiry_left(msg, now);
	}
	/* Strings are copied (NUL-terminated) into scratch; offsets are turned
	 * into pointers once the scratch stops moving. */
	size_t used = 0, nprops = 0;
	size_t ct = SIZE_MAX, rt = SIZE_MAX;
	bool ok = true;
	uint32_t pos = 0, v;
	mqbi_bytes a, b;
	int id;
	size_t *pairs = NULL; /* offsets of user property keys and values */
	size_t pairs_cap = 0;
	while (ok && (id = mqbi_props_next(msg->props, msg->props_len, &pos, &a, &b, &v)) >= 0) {
		switch (id) {
		case MQBI_PROP_PAYLOAD_FORMAT:
			out->payload_utf8 = v == 1;
			break;
		case MQBI_PROP_CONTENT_TYPE:
			ct = view_text(w, &used, a.ptr, a.len, &ok);
			break;
		case MQBI_PROP_RESPONSE_TOPIC:
			rt = view_text(w, &used, a.ptr, a.len, &ok);
			break;
		case MQBI_PROP_CORRELATION_DATA:
			out->correlation_data = a.ptr;
			out->correlation_len = a.len;
			break;
		case MQBI_PROP_USER_PROPERTY: {
			if (2 * nprops + 2 > pairs_cap) {
				pairs_cap = pairs_cap ? pairs_cap * 2 : 16;
				size_t *n = mqbi_realloc(&w->broker->alloc, pairs,
				                         pairs_cap * sizeof(size_t));
				if (!n) {
					ok = false;
					break;
				}
				pairs = n;
			}
			pairs[2 * nprops] = view_text(w, &used, a.ptr, a.len, &ok);
			pairs[2 * nprops + 1] = view_text(w, &used, b.ptr, b.len, &ok);
			nprops++;
			break;
		}
		default:
			/* Only the properties above travel with a stored message. */
			pos = msg->props_len;
			break;
		}
	}
	if (ok && nprops > w->view_props_cap) {
		mqb_user_property *n =
		        mqbi_realloc(&w->broker->alloc, w->view_props, nprops * sizeof(*n));
		if (n) {
			w->view_props = n;
			w->view_props_cap = nprops;
		} else {
			ok = false;
		}
	}
	if (ok) {
		if (ct != SIZE_MAX)
			out->content_type = w->view_text + ct;
		if (rt != SIZE_MAX)
			out->response_topic = w->view_text + rt;
		for (size_t i = 0; i < nprops; i++) {
			w->view_props[i].key = w->view_text + pairs[2 * i];
			w->view_props[i].value = w->view_text + pairs[2 * i + 1];
		}
		out->user_properties = nprops ? w->view_props : NULL;
		out->user_property_count = nprops;
	}
	mqbi_free(&w->broker->alloc, pairs);
}

static bool utf8_str_ok(const char *s)
{
	return !s || (strlen(s) <= 65535 && mqbi_utf8_valid((const uint8_t *)s, strlen(s)));
}

static uint8_t *put_bytes(uint8_t *q, const void *s, size_t len)
{
	*q++ = (uint8_t)(len >> 8);
	*q++ = (uint8_t)len;
	memcpy(q, s, len);
	return q + len;
}

static uint8_t *put_str(uint8_t *q, uint8_t id, const void *s, size_t len)
{
	*q++ = id;
	return put_bytes(q, s, len);
}

mqb_err mqbi_msg_from_api(mqb_broker *b, const mqb_message *m, const char *publisher,
                          const char *username, uint64_t now, mqbi_msg **out, const char **why)
{
	const char *dummy;
	if (!why)
		why = &dummy;
	*why = NULL;
	if (!m || !m->topic || (m->payload_len && !m->payload) || m->qos < 0 || m->qos > 2) {
		*why = "no topic, no payload pointer, or QoS not 0..2";
		return MQB_ERR_INVAL;
	}
	size_t tlen = strlen(m->topic);
	if (tlen > 65535 || !mqbi_topic_name_valid(m->topic, tlen) ||
	    !mqbi_utf8_valid((const uint8_t *)m->topic, tlen)) {
		*why = "invalid topic name";
		return MQB_ERR_INVAL;
	}
	if (!utf8_str_ok(m->content_type) || !utf8_str_ok(m->response_topic) ||
	    m->correlation_len > 65535 || (m->correlation_len && !m->correlation_data)) {
		*why = "invalid content type, response topic or correlation data";
		return MQB_ERR_INVAL;
	}
	if (m->response_topic &&
	    !mqbi_topic_name_valid(m->response_topic, strlen(m->response_topic))) {
		*why = "the response topic is not a valid topic name";
		return MQB_ERR_INVAL;
	}
	if (m->payload_utf8 && !mqbi_utf8_valid(m->payload, m->payload_len)) {
		*why = "payload_utf8 is set but the payload is not UTF-8";
		return MQB_ERR_INVAL;
	}
	size_t size = (m->payload_utf8 ? 2 : 0) +
	              (m->content_type ? 3 + strlen(m->content_type) : 0) +
	              (m->response_topic ? 3 + strlen(m->response_topic) : 0) +
	              (m->correlation_data ? 3 + m->correlation_len : 0);
	for (size_t i = 0; i < m->user_property_count; i++) {
		const mqb_user_property *up = &m->user_properties[i];
		if (!up->key || !up->value || !utf8_str_ok(up->key) || !utf8_str_ok(up->value)) {
			*why = "a user property is missing or not UTF-8";
			return MQB_ERR_INVAL;
		}
		size += 5 + strlen(up->key) + strlen(up->value);
	}
	uint8_t *props = size ? mqbi_malloc(&b->alloc, size) : NULL;
	if (size && !props)
		return MQB_ERR_NOMEM;
	uint8_t *q = props;
	if (m->payload_utf8) {
		*q++ = MQBI_PROP_PAYLOAD_FORMAT;
		*q++ = 1;
	}
	if (m->content_type)
		q = put_str(q, MQBI_PROP_CONTENT_TYPE, m->content_type, strlen(m->content_type));
	if (m->response_topic)
		q = put_str(q, MQBI_PROP_RESPONSE_TOPIC, m->response_topic,
		            strlen(m->response_topic));
	if (m->correlation_data)
		q = put_str(q, MQBI_PROP_CORRELATION_DATA, m->correlation_data, m->correlation_len);
	for (size_t i = 0; i < m->user_property_count; i++) {
		const mqb_user_property *up = &m->user_properties[i];
		*q++ = MQBI_PROP_USER_PROPERTY;
		q = put_bytes(q, up->key, strlen(up->key));
		q = put_bytes(q, up->value, strlen(up->value));
	}
	*out = mqbi_msg_create(&b->alloc, m->topic, tlen, props, size, m->payload, m->payload_len,
	                       (uint8_t)m->qos, m->retain != 0, publisher, strlen(publisher),
	                       username, m->has_message_expiry != 0, m->message_expiry, now);
	mqbi_free(&b->alloc, props);
	return *out ? MQB_OK : MQB_ERR_NOMEM;
}

/* ---- Publishing from the host ----------------------------------------------- */

typedef struct host_publish {
	mqbi_inbox_item item;
	mqb_broker *broker;
	mqbi_msg *msg;
} host_publish;

static void host_publish_run(mqbi_loop *l, mqbi_inbox_item *it)
{
	host_publish *hp = (host_publish *)it;
	mqbi_worker *w = mqbi_loop_data(l);
	uint8_t reason;
	mqbi_msg *msg = mqbi_hook_on_publish(w, NULL, hp->msg, &reason);
	if (msg) {
		mqbi_publish_message(w, msg);
		mqbi_msg_unref(&hp->broker->alloc, msg);
	}
	mqbi_free(&hp->broker->alloc, hp);
}

static void host_publish_drop(mqbi_inbox_item *it)
{
	host_publish *hp = (host_publish *)it;
	mqbi_msg_unref(&hp->broker->alloc, hp->msg);
	mqbi_free(&hp->broker->alloc, hp);
}

MQB_API mqb_err mqb_publish(mqb_broker *b, const mqb_message *m)
{
	if (!b || !m)
		return MQB_ERR_INVAL;
	int st = atomic_load(&b->state);
	if (st != MQBI_BS_RUNNING)
		return MQB_ERR_STATE;
	if (m->retain && !mqbi_lim(b)->retain_available)
		return MQB_ERR_DENIED;
	host_publish *hp = mqbi_malloc(&b->alloc, sizeof(*hp));
	if (!hp)
		return MQB_ERR_NOMEM;
	mqb_err err = mqbi_msg_from_api(b, m, "", NULL, mqbi_clock_ms(), &hp->msg, NULL);
	if (err) {
		mqbi_free(&b->alloc, hp);
		return err;
	}
	hp->broker = b;
	hp->item.run = host_publish_run;
	hp->item.drop = host_publish_drop;
	/* One worker per topic keeps every topic ordered [MQTT-4.6.0-5] while
	 * spreading the host's load over the workers. */
	mqbi_loop_post(mqbi_home_worker(b, hp->msg->topic, hp->msg->topic_len)->loop, &hp->item);
	return MQB_OK;
}

MQB_API mqb_err mqb_broker_publish(mqb_broker *b, const char *topic, const void *payload,
                                   size_t len, int qos, int retain)
{
	mqb_message m = {.topic = topic,
	                 .payload = payload,
	                 .payload_len = len,
	                 .qos = qos,
	                 .retain = retain};
	return mqb_publish(b, &m);
}

/* ---- In-process subscriptions ------------------------------------------- */

struct mqb_subscription {
	mqb_subscription *prev, *next; /* the broker's list, for destroy */
	mqbi_session *session;
	char *filter;
	size_t flen;
	const char *group, *topic_filter;
	size_t glen, tflen;
	mqb_err result;
};

typedef struct retained_to_host {
	mqbi_session *s;
	uint64_t now;
} retained_to_host;

static void host_retained(void *user, const char *topic, size_t tlen, void *value)
{
	retained_to_host *rh = user;
	mqbi_msg *m = value;
	if (!mqbi_msg_expired(m, rh->now))
		mqbi_session_deliver(rh->s, m, m->qos, true, NULL, 0, false);
}

static void do_subscribe(mqbi_worker *w, void *arg)
{
	mqb_subscription *sub = arg;
	mqb_broker *b = w->broker;
	mqbi_session *s = sub->session;
	/* Retain As Published: the host sees the publisher's retain flag. */
	mqbi_route r = {s, 0, (uint8_t)(2 | MQBI_SUBOPT_RAP)};
	sub->result = mqbi_trie_add(b->trie, sub->topic_filter, sub->tflen, sub->group, sub->glen,
	                            &r, NULL);
	if (sub->result || sub->glen)
		return; /* no retained messages for shared subscriptions */
	retained_to_host rh = {s, mqbi_loop_now(w->loop)};
	mqbi_retain_match(b->retain, sub->topic_filter, sub->tflen, host_retained, &rh);
}

static void do_unsubscribe(mqbi_worker *w, void *arg)
{
	mqb_subscription *sub = arg;
	mqbi_trie_remove(w->broker->trie, sub->topic_filter, sub->tflen, sub->group, sub->glen,
	                 sub->session);
	mqbi_session_end(sub->session, "in-process subscription ended");
}

MQB_API mqb_err mqb_subscribe(mqb_broker *b, const char *filter, mqb_message_fn fn, void *user,
                              mqb_subscription **out)
{
	if (!b || !filter || !fn || !out)
		return MQB_ERR_INVAL;
	*out = NULL;
	if (!mqb_filter_valid(filter))
		return MQB_ERR_INVAL;
	mqb_subscription *sub = mqbi_calloc(&b->alloc, sizeof(*sub));
	if (!sub)
		return MQB_ERR_NOMEM;
	sub->flen = strlen(filter);
	sub->filter = mqbi_strndup(&b->alloc, filter, sub->flen);
	unsigned i = b->nworkers == 1 ? 0 : atomic_fetch_add(&b->next_host_worker, 1) % b->nworkers;
	mqbi_worker *w = &b->workers[i];
	sub->session = sub->filter ? mqbi_session_create_host(w, fn, user) : NULL;
	if (!sub->session) {
		mqbi_free(&b->alloc, sub->filter);
		mqbi_free(&b->alloc, sub);
		return MQB_ERR_NOMEM;
	}
	mqbi_topic_split_shared(sub->filter, sub->flen, &sub->group, &sub->glen, &sub->topic_filter,
	                        &sub->tflen);
	mqb_err err = mqbi_worker_call(w, do_subscribe, sub);
	if (!err)
		err = sub->result;
	if (err) {
		mqbi_worker_call(w, do_unsubscribe, sub);
		mqbi_free(&b->alloc, sub->filter);
		mqbi_free(&b->alloc, sub);
		return err;
	}
	pthread_mutex_lock(&b->host_subs_lock);
	sub->next = b->host_subs;
	if (sub->next)
		sub->next->prev = sub;
	b->host_subs = sub;
	pthread_mutex_unlock(&b->host_subs_lock);
	*out = sub;
	return MQB_OK;
}

MQB_API mqb_err mqb_unsubscribe(mqb_broker *b, mqb_subscription *sub)
{
	if (!b || !sub)
		return MQB_ERR_INVAL;
	pthread_mutex_lock(&b->host_subs_lock);
	if (sub->prev)
		sub->prev->next = sub->next;
	else
		b->host_subs = sub->next;
	if (sub->next)
		sub->next->prev = sub->prev;
	pthread_mutex_unlock(&b->host_subs_lock);
	mqb_err err = mqbi_worker_call(sub->session->home, do_unsubscribe, sub);
	if (err) {
		/* The worker has stopped: nothing runs there any more, so it is safe
		 * to end the session from here. */
		do_unsubscribe(sub->session->home, sub);
	}
	mqbi_free(&b->alloc, sub->filter);
	mqbi_free(&b->alloc, sub);
	return MQB_OK;
}

void mqbi_host_subs_release(mqb_broker *b)
{
	while (b->host_subs) {
		mqb_subscription *sub = b->host_subs;
		b->host_subs = sub->next;
		do_unsubscribe(sub->session->home, sub);
		mqbi_free(&b->alloc, sub->filter);
		mqbi_free(&b->alloc, sub);
	}
}

/* ---- Topic helpers ------------------------------------------------------------ */

MQB_API int mqb_topic_matches(const char *filter, const char *topic)
{
	if (!filter || !topic)
		return 0;
	return mqbi_topic_matches(filter, strlen(filter), topic, strlen(topic));
}

MQB_API int mqb_topic_valid(const char *topic)
{
	if (!topic)
		return 0;
	size_t n = strlen(topic);
	return n <= 65535 && mqbi_topic_name_valid(topic, n) &&
	       mqbi_utf8_valid((const uint8_t *)topic, n);
}

MQB_API int mqb_filter_valid(const char *filter)
{
	if (!filter)
		return 0;
	size_t n = strlen(filter);
	const char *g, *f;
	size_t gl, fl;
	if (n > 65535 || !mqbi_utf8_valid((const uint8_t *)filter, n))
		return 0;
	if (mqbi_topic_split_shared(filter, n, &g, &gl, &f, &fl) < 0)
		return 0;
	return mqbi_topic_filter_valid(f, fl, 0);
}
