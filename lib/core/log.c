#include <stdarg.h>
#include <stdio.h>

#include "core/core.h"

void mqbi_log(mqb_broker *b, mqb_log_level lvl, const char *module, const mqbi_client *c,
              const char *fmt, ...)
{
	if (!mqbi_log_enabled(b, lvl))
		return;
	char text[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof text, fmt, ap);
	va_end(ap);
	mqb_log_record rec = {
	        .level = lvl,
	        .module = module,
	        .client_id = c && c->client_id ? c->client_id : NULL,
	        .peer = c ? c->peer : NULL,
	        .message = text,
	};
	b->log_fn(b->log_user, &rec);
}
