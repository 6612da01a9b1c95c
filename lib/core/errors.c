/* Error texts, version and log-level names: the small static lookups of the
 * public header that belong to no subsystem. */
#include "mqttbroker.h"

MQB_API const char *mqb_strerror(mqb_err err)
{
	switch (err) {
	case MQB_OK:
		return "success";
	case MQB_ERR_NOMEM:
		return "out of memory";
	case MQB_ERR_INVAL:
		return "invalid argument";
	case MQB_ERR_NOTFOUND:
		return "not found";
	case MQB_ERR_EXISTS:
		return "already exists";
	case MQB_ERR_RANGE:
		return "value out of range";
	case MQB_ERR_PARSE:
		return "parse error";
	case MQB_ERR_IO:
		return "input/output error";
	case MQB_ERR_ADDRINUSE:
		return "address already in use";
	case MQB_ERR_STATE:
		return "invalid in the current state";
	case MQB_ERR_UNSUPPORTED:
		return "not supported";
	case MQB_ERR_TIMEOUT:
		return "timed out";
	case MQB_ERR_DENIED:
		return "denied";
	}
	return "unknown error";
}

MQB_API const char *mqb_version(void)
{
	return MQB_VERSION_STRING;
}

MQB_API const char *mqb_log_level_name(mqb_log_level level)
{
	switch (level) {
	case MQB_LOG_ERROR:
		return "error";
	case MQB_LOG_WARNING:
		return "warning";
	case MQB_LOG_NOTICE:
		return "notice";
	case MQB_LOG_INFO:
		return "info";
	case MQB_LOG_DEBUG:
		return "debug";
	}
	return "unknown";
}
