/* Journal records and the conversion of messages to and from their stored
 * form, shared by every backend. */

#include "core/core.h"
#include "store/store.h"

void mqbi_rec_release(const mqb_allocator *a, mqbi_rec *r)
{
	mqbi_msg_unref(a, r->msg);
	mqbi_free(a, r->text);
	mqbi_free(a, r->sub_ids);
	r->msg = NULL;
	r->text = NULL;
	r->sub_ids = NULL;
}

void mqbi_store_msg_fields(const mqbi_msg *m, mqbi_stored_msg *out)
{
	*out = (mqbi_stored_msg){
	        .topic = m->topic,
	        .topic_len = m->topic_len,
	        .props = m->props,
	        .props_len = m->props_len,
	        .payload = m->payload,
	        .payload_len = m->payload_len,
	        .publisher = m->publisher,
	        .publisher_len = m->publisher_len,
	        .qos = m->qos,
	        .retain = m->retain,
	        .expiry_interval = m->expiry_interval,
	};
	if (m->has_expiry) {
		/* Monotonic deadline -> wall clock; 1 ms at least (0 = none). */
		int64_t left = (int64_t)m->expire_at - (int64_t)mqbi_clock_ms();
		int64_t at = mqbi_wall_ms() + left;
		out->expire_at = at > 0 ? at : 1;
	}
}

mqbi_msg *mqbi_store_msg_make(const mqb_allocator *a, const mqbi_stored_msg *f)
{
	uint64_t now = mqbi_clock_ms();
	mqbi_msg *m =
	        mqbi_msg_create(a, f->topic, f->topic_len, f->props, f->props_len, f->payload,
	                        f->payload_len, f->qos, f->retain, f->publisher, f->publisher_len,
	                        NULL, f->expire_at != 0, f->expiry_interval, now);
	if (m && f->expire_at) {
		/* The deadline stays where it was, whatever the clock did meanwhile. */
		int64_t left = f->expire_at - mqbi_wall_ms();
		m->expire_at = left > 0 ? now + (uint64_t)left : now;
	}
	return m;
}

uint64_t mqbi_store_msg_cost(const mqbi_msg *m)
{
	/* Row overhead of SQLite's b-tree pages, roughly. */
	return 64u + m->topic_len + m->props_len + m->payload_len + m->publisher_len;
}
