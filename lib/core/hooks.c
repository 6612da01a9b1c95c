/* The glue between the broker and the host's hooks (mqb_hooks): client
 * accessors, events, authorization and the message hooks. */
#include <stdio.h>
#include <string.h>

#include "core/core.h"

/* mqb_client is the public face of mqbi_client. */
static const mqbi_client *cl(const mqb_client *c)
{
	return (const mqbi_client *)(const void *)c;
}

MQB_API const char *mqb_client_id(const mqb_client *c)
{
	return c && cl(c)->client_id ? cl(c)->client_id : "";
}

MQB_API const char *mqb_client_username(const mqb_client *c)
{
	return c ? cl(c)->username : NULL;
}

MQB_API const char *mqb_client_peer(const mqb_client *c)
{
	return c ? cl(c)->peer : "";
}

MQB_API const char *mqb_client_listener(const mqb_client *c)
{
	return c && cl(c)->listener ? cl(c)->listener->cfg.name : "";
}

MQB_API int mqb_client_protocol(const mqb_client *c)
{
	return c ? cl(c)->level : 0;
}

void mqbi_event(mqb_broker *b, mqb_event_type type, const mqbi_client *c, const char *client_id,
                int reason, const char *topic, int qos, const char *text)
{
	if (!b->hooks.on_event)
		return;
	mqb_event ev = {
	        .type = type,
	        .client_id = client_id ? client_id : (c ? c->client_id : NULL),
	        .username = c ? c->username : NULL,
	        .peer = c ? c->peer : NULL,
	        .reason = reason,
	        .topic = topic,
	        .qos = qos,
	        .text = text,
	};
	b->hooks.on_event(b->hooks.user, &ev);
}

bool mqbi_hook_authorize(mqbi_client *c, mqb_action action, const char *topic, size_t len,
                         uint8_t *qos)
{
	mqb_broker *b = c->w->broker;
	if (!b->hooks.authorize)
		return true;
	/* The hook wants a C string; topics are length-delimited views. */
	char small[256];
	char *t = len < sizeof small ? small : mqbi_malloc(&b->alloc, len + 1);
	if (!t)
		return false;
	memcpy(t, topic, len);
	t[len] = '\0';
	int q = *qos;
	mqb_verdict v = b->hooks.authorize(b->hooks.user, (const mqb_client *)(const void *)c,
	                                   action, t, &q);
	if (t != small)
		mqbi_free(&b->alloc, t);
	if (v == MQB_DENY) {
		mqbi_log(b, MQB_LOG_INFO, "acl", c, "%s '%.*s' denied",
		         action == MQB_ACTION_PUBLISH ? "publish to" : "subscribe to", (int)len,
		         topic);
		return false;
	}
	if (q >= 0 && q < *qos)
		*qos = (uint8_t)q;
	return true;
}

bool mqbi_hook_on_deliver(mqbi_client *c, const mqbi_msg *msg, uint8_t qos, bool retain)
{
	mqb_broker *b = c->w->broker;
	if (!b->hooks.on_deliver)
		return true;
	mqb_message view;
	mqbi_msg_view(c->w, msg, qos, retain, &view);
	return b->hooks.on_deliver(b->hooks.user, (const mqb_client *)(const void *)c, &view) !=
	       MQB_DENY;
}

mqbi_msg *mqbi_hook_on_publish(mqbi_worker *w, mqbi_client *c, mqbi_msg *msg, uint8_t *reason)
{
	mqb_broker *b = w->broker;
	if (!b->hooks.on_publish)
		return msg;
	mqb_message view, before;
	mqbi_msg_view(w, msg, msg->qos, msg->retain, &view);
	before = view;
	int r = MQBI_RC_NOT_AUTHORIZED;
	mqb_verdict v =
	        b->hooks.on_publish(b->hooks.user, (const mqb_client *)(const void *)c, &view, &r);
	if (v == MQB_DENY) {
		*reason = r >= 0x80 && r <= 0xFF ? (uint8_t)r : MQBI_RC_NOT_AUTHORIZED;
		mqbi_log(b, MQB_LOG_DEBUG, "hook", c, "on_publish dropped a message on '%s'",
		         msg->topic);
		mqbi_event(b, MQB_EVENT_MESSAGE_DROPPED, c, NULL, *reason, msg->topic, msg->qos,
		           "dropped by the on_publish hook");
		mqbi_msg_unref(&b->alloc, msg);
		return NULL;
	}
	if (memcmp(&view, &before, sizeof view) == 0)
		return msg;
	/* The hook changed it: build the message anew from its description. */
	mqbi_msg *n = NULL;
	const char *why = NULL;
	mqb_err err = mqbi_msg_from_api(b, &view, msg->publisher, msg->username,
	                                mqbi_loop_now(w->loop), &n, &why);
	if (err) {
		mqbi_log(b, MQB_LOG_ERROR, "hook", c,
		         "on_publish made an invalid message from one on '%s': %s; dropped",
		         msg->topic, why ? why : mqb_strerror(err));
		*reason = MQBI_RC_IMPL_SPECIFIC;
		mqbi_msg_unref(&b->alloc, msg);
		return NULL;
	}
	mqbi_msg_unref(&b->alloc, msg);
	return n;
}
