/* SUBSCRIBE and UNSUBSCRIBE: the session's subscriptions, their routes in
 * the trie, and retained messages for new subscriptions. */
#include <string.h>

#include "core/core.h"
#include "core/topic.h"

/* Routes of a session with several subscriptions carry MQBI_ROUTE_MULTI so
 * routing merges overlapping matches into one delivery. Re-marks them when
 * the count crosses one. */
void mqbi_session_sync_multi(mqbi_session *s, size_t before)
{
	size_t after = mqbi_strmap_count(&s->subs);
	if ((before > 1) == (after > 1))
		return;
	mqbi_trie *trie = s->home->broker->trie;
	size_t pos = 0;
	const char *key;
	size_t klen;
	void *val;
	while (mqbi_strmap_next(&s->subs, &pos, &key, &klen, &val)) {
		mqbi_sub *sub = val;
		mqbi_route r = {s, sub->sub_id,
		                (uint8_t)(sub->options | (after > 1 ? MQBI_ROUTE_MULTI : 0))};
		mqbi_trie_add(trie, sub->text + sub->filter_off, sub->filter_len,
		              sub->text + sub->group_off, sub->group_len, &r, NULL);
	}
}

typedef struct retained_ctx {
	mqbi_session *s;
	uint8_t qos;
	uint32_t sub_id;
	uint64_t now;
} retained_ctx;

static void send_retained(void *user, const char *topic, size_t tlen, void *value)
{
	retained_ctx *rc = user;
	mqbi_msg *m = value;
	if (mqbi_msg_expired(m, rc->now))
		return;
	uint8_t qos = m->qos < rc->qos ? m->qos : rc->qos;
	/* Retained messages sent for a new subscription keep RETAIN = 1 [MQTT-3.3.1-8]. */
	mqbi_session_deliver(rc->s, m, qos, true, &rc->sub_id, rc->sub_id ? 1 : 0, false);
}

void mqbi_session_send_retained(mqbi_session *s, const char *filter, size_t flen, uint8_t qos,
                                uint32_t sub_id)
{
	retained_ctx rc = {s, qos, sub_id, mqbi_loop_now(s->home->loop)};
	mqbi_retain_match(s->home->broker->retain, filter, flen, send_retained, &rc);
}

uint8_t mqbi_session_subscribe(mqbi_session *s, uint8_t level, mqbi_bytes text,
                               const mqbi_subopts *o, uint32_t sub_id, bool *is_new, bool *shared)
{
	mqb_broker *b = s->home->broker;
	const mqbi_limits *lim = mqbi_lim(b);
	bool v5 = level == MQBI_V5;
	const char *group, *filter;
	size_t glen, flen;
	int sh = mqbi_topic_split_shared((const char *)text.ptr, text.len, &group, &glen, &filter,
	                                 &flen);
	*shared = sh == 1;
	if (sh < 0 || !mqbi_topic_filter_valid(filter, flen, lim->max_topic_levels))
		return v5 ? MQBI_RC_TOPIC_FILTER_INVALID : 0x80;
	if (sh == 1 && !lim->shared_sub)
		return v5 ? MQBI_RC_SHARED_SUB_NOT_SUPPORTED : 0x80;
	if (!lim->wildcard_sub && mqbi_topic_has_wildcard(filter, flen))
		return v5 ? MQBI_RC_WILDCARD_SUB_NOT_SUPPORTED : 0x80;
	mqbi_sub *sub = mqbi_strmap_get(&s->subs, (const char *)text.ptr, text.len);
	*is_new = sub == NULL;
	if (!sub && lim->max_subscriptions && mqbi_strmap_count(&s->subs) >= lim->max_subscriptions)
		return v5 ? MQBI_RC_QUOTA_EXCEEDED : 0x80;
	uint8_t granted = o->qos < lim->max_qos ? o->qos : lim->max_qos;
	uint8_t options = granted;
	if (v5)
		options |= (uint8_t)((o->no_local ? MQBI_SUBOPT_NL : 0) |
		                     (o->retain_as_published ? MQBI_SUBOPT_RAP : 0) |
		                     (o->retain_handling << 4));
	if (!sub) {
		sub = mqbi_calloc(&b->alloc, sizeof(*sub) + text.len + 1);
		if (sub)
			memcpy(sub->text, text.ptr, text.len);
		if (!sub || mqbi_strmap_put(&s->subs, sub->text, text.len, sub) != MQB_OK) {
			mqbi_free(&b->alloc, sub);
			return v5 ? MQBI_RC_IMPL_SPECIFIC : 0x80;
		}
		sub->text_len = (uint16_t)text.len;
		sub->group_off = (uint16_t)(glen ? group - (const char *)text.ptr : 0);
		sub->group_len = (uint16_t)glen;
		sub->filter_off = (uint16_t)(filter - (const char *)text.ptr);
		sub->filter_len = (uint16_t)flen;
	}
	sub->options = options;
	sub->sub_id = sub_id;
	bool multi = mqbi_strmap_count(&s->subs) > 1;
	mqbi_route r = {s, sub_id, (uint8_t)(options | (multi ? MQBI_ROUTE_MULTI : 0))};
	if (mqbi_trie_add(b->trie, sub->text + sub->filter_off, sub->filter_len,
	                  sub->text + sub->group_off, sub->group_len, &r, NULL) != MQB_OK) {
		if (*is_new) {
			mqbi_strmap_remove(&s->subs, sub->text, sub->text_len);
			mqbi_free(&b->alloc, sub);
		}
		return v5 ? MQBI_RC_IMPL_SPECIFIC : 0x80;
	}
	mqbi_session_store_sub(s, (const char *)text.ptr, text.len, false);
	return granted;
}

void mqbi_handle_subscribe(mqbi_client *c, const mqbi_subscribe *sp)
{
	mqb_broker *b = c->w->broker;
	mqbi_session *s = c->session;
	bool v5 = c->level == MQBI_V5;
	uint32_t sub_id = 0;
	if (v5 && mqbi_props_has(&sp->props, MQBI_PROP_SUB_ID)) {
		if (!mqbi_lim(b)->sub_id_available)
			return mqbi_client_disconnect(c, MQBI_RC_SUB_IDS_NOT_SUPPORTED,
			                              "subscription identifiers are not supported");
		sub_id = sp->props.sub_id;
	}
	/* No Local on a shared subscription is a protocol error [MQTT-3.8.3-4]. */
	uint32_t pos = 0;
	mqbi_bytes f;
	mqbi_subopts o;
	while (mqbi_sublist_next(sp, true, &pos, &f, &o)) {
		const char *g, *flt;
		size_t gl, fl;
		if (v5 && o.no_local &&
		    mqbi_topic_split_shared((const char *)f.ptr, f.len, &g, &gl, &flt, &fl) == 1)
			return mqbi_client_disconnect(c, MQBI_RC_PROTOCOL_ERROR,
			                              "No Local on a shared subscription");
	}

	uint8_t small[64];
	uint8_t *reasons = sp->count <= sizeof small ? small : mqbi_malloc(&b->alloc, sp->count);
	uint8_t small_send[64];
	uint8_t *send =
	        sp->count <= sizeof small_send ? small_send : mqbi_malloc(&b->alloc, sp->count);
	if (!reasons || !send) {
		if (reasons != small)
			mqbi_free(&b->alloc, reasons);
		if (send != small_send)
			mqbi_free(&b->alloc, send);
		return mqbi_client_disconnect(c, MQBI_RC_IMPL_SPECIFIC, "out of memory");
	}
	size_t before = mqbi_strmap_count(&s->subs);
	uint64_t mark = mqbi_journal_mark(&c->w->j);
	uint32_t i = 0;
	pos = 0;
	while (mqbi_sublist_next(sp, true, &pos, &f, &o)) {
		bool is_new = false, shared = false;
		uint8_t q = o.qos;
		if (!mqbi_hook_authorize(c, MQB_ACTION_SUBSCRIBE, (const char *)f.ptr, f.len, &q)) {
			reasons[i] = v5 ? MQBI_RC_NOT_AUTHORIZED : 0x80;
			send[i++] = false;
			continue;
		}
		o.qos = q;
		reasons[i] = mqbi_session_subscribe(s, c->level, f, &o, sub_id, &is_new, &shared);
		if (reasons[i] < 0x80 && mqbi_events_on(b)) {
			char *t = mqbi_strndup(&b->alloc, f.ptr, f.len);
			mqbi_event(b, MQB_EVENT_SUBSCRIBED, c, NULL, 0, t, reasons[i], NULL);
			mqbi_free(&b->alloc, t);
		}
		/* Retain Handling: 0 always, 1 only for a new subscription, 2 never;
		 * never for shared subscriptions. */
		send[i] = reasons[i] < 0x80 && !shared &&
		          (!v5 || o.retain_handling == 0 || (o.retain_handling == 1 && is_new));
		mqbi_log(b, MQB_LOG_DEBUG, "session", c, "subscribe '%.*s' qos %u: %s", (int)f.len,
		         (const char *)f.ptr, o.qos, mqbi_reason_name(reasons[i]));
		i++;
	}
	mqbi_session_sync_multi(s, before);

	mqbi_packet ack = {.type = MQBI_SUBACK};
	ack.u.suback.packet_id = sp->packet_id;
	ack.u.suback.reasons.ptr = reasons;
	ack.u.suback.reasons.len = sp->count;
	mqbi_journal_send(c, &ack, mark); /* once the subscriptions are durable */

	/* Retained messages follow the SUBACK (or, while it waits for the disk,
	 * may come first, which MQTT allows). */
	i = 0;
	pos = 0;
	while (mqbi_sublist_next(sp, true, &pos, &f, &o)) {
		if (send[i])
			mqbi_session_send_retained(s, (const char *)f.ptr, f.len, reasons[i],
			                           sub_id);
		i++;
	}
	if (reasons != small)
		mqbi_free(&b->alloc, reasons);
	if (send != small_send)
		mqbi_free(&b->alloc, send);
}

bool mqbi_session_unsubscribe(mqbi_session *s, const char *text, size_t len)
{
	mqb_broker *b = s->home->broker;
	mqbi_sub *sub = mqbi_strmap_remove(&s->subs, text, len);
	if (!sub)
		return false;
	mqbi_trie_remove(b->trie, sub->text + sub->filter_off, sub->filter_len,
	                 sub->text + sub->group_off, sub->group_len, s);
	mqbi_free(&b->alloc, sub);
	mqbi_session_store_sub(s, text, len, true);
	return true;
}

void mqbi_handle_unsubscribe(mqbi_client *c, const mqbi_subscribe *sp)
{
	mqb_broker *b = c->w->broker;
	mqbi_session *s = c->session;
	uint8_t small[64];
	uint8_t *reasons = sp->count <= sizeof small ? small : mqbi_malloc(&b->alloc, sp->count);
	if (!reasons)
		return mqbi_client_disconnect(c, MQBI_RC_IMPL_SPECIFIC, "out of memory");
	size_t before = mqbi_strmap_count(&s->subs);
	uint64_t mark = mqbi_journal_mark(&c->w->j);
	uint32_t pos = 0, i = 0;
	mqbi_bytes f;
	while (mqbi_sublist_next(sp, false, &pos, &f, NULL)) {
		bool found = mqbi_session_unsubscribe(s, (const char *)f.ptr, f.len);
		reasons[i++] = found ? MQBI_RC_SUCCESS : MQBI_RC_NO_SUBSCRIPTION_EXISTED;
		if (found && mqbi_events_on(b)) {
			char *t = mqbi_strndup(&b->alloc, f.ptr, f.len);
			mqbi_event(b, MQB_EVENT_UNSUBSCRIBED, c, NULL, 0, t, 0, NULL);
			mqbi_free(&b->alloc, t);
		}
	}
	mqbi_session_sync_multi(s, before);
	mqbi_packet ack = {.type = MQBI_UNSUBACK};
	ack.u.suback.packet_id = sp->packet_id;
	ack.u.suback.reasons.ptr = reasons;
	ack.u.suback.reasons.len = sp->count;
	mqbi_journal_send(c, &ack, mark);
	if (reasons != small)
		mqbi_free(&b->alloc, reasons);
}
