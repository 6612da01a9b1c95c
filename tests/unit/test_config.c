/* Unit tests of the configuration registry (lib/core/config.c). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"

static mqb_config *cfg;
static char err[512];

static void setup(void)
{
	ck_assert_int_eq(mqb_config_create(&cfg, NULL), MQB_OK);
	err[0] = '\0';
}

static void teardown(void)
{
	mqb_config_destroy(cfg);
	cfg = NULL;
}

static mqb_err set(const char *key, const char *value)
{
	err[0] = '\0';
	return mqb_config_set(cfg, key, value, err, sizeof err);
}

/* The current text of a key (static buffer). */
static const char *get(const char *key)
{
	static char buf[256];
	if (mqb_config_get(cfg, key, buf, sizeof buf) != MQB_OK)
		return "<notfound>";
	return buf;
}

/* Writes `text` to a temporary file; returns its path (static buffer). */
static const char *write_file(const char *text)
{
	static char path[64];
	snprintf(path, sizeof path, "/tmp/mqb-test-config-XXXXXX");
	int fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	return path;
}

static mqb_err load(const char *text)
{
	const char *path = write_file(text);
	err[0] = '\0';
	mqb_err rc = mqb_config_load_file(cfg, path, err, sizeof err);
	unlink(path);
	return rc;
}

/* ---- defaults ---- */

START_TEST(defaults)
{
	ck_assert_str_eq(mqbi_cfg_str(cfg, MQBI_K_NODE_NAME), "mqb@127.0.0.1");
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_MAX_PACKET_SIZE), 1024 * 1024);
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_MAX_QOS), 2);
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_ALLOW_ANONYMOUS), MQBI_ANON_LOOPBACK);
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_SHARED_STRATEGY), MQBI_SHARE_ROUND_ROBIN);
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_AWAIT_REL_TIMEOUT), 300000);
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_SESSION_EXPIRY), 2 * 3600 * 1000);
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_IDLE_TIMEOUT), 15000);
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_SYS_INTERVAL), 60000);
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_KEEPALIVE_BACKOFF), 1500);
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_RETAIN_AVAILABLE), 1);
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_MAX_INFLIGHT), 32);
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_MAX_MQUEUE_BYTES), 0);
	ck_assert_int_eq(mqbi_cfg_listener_count(cfg), 1);
	const mqbi_listener_cfg *l = mqbi_cfg_listener(cfg, 0);
	ck_assert_str_eq(l->type, "tcp");
	ck_assert_str_eq(l->name, "default");
	ck_assert_str_eq(l->host, "127.0.0.1");
	ck_assert_int_eq(l->port, 1883);
	ck_assert_int_eq(l->max_connections, 1024000);
	ck_assert_ptr_null(mqbi_cfg_listener(cfg, 1));
	ck_assert_str_eq(get("listener.tcp.default"), "127.0.0.1:1883");
}
END_TEST

/* Every default's text is canonical: a fresh config's value equals it. */
static void visit_default_equal(void *user, const char *key, const char *value, const char *def,
                                const char *type, const char *doc)
{
	int *n = user;
	ck_assert_msg(strcmp(value, def) == 0, "%s: value '%s' != default '%s'", key, value, def);
	ck_assert_ptr_nonnull(type);
	ck_assert_msg(doc && *doc, "%s has no doc", key);
	(*n)++;
}

START_TEST(defaults_canonical)
{
	int n = 0;
	mqb_config_visit(cfg, visit_default_equal, &n);
	/* fixed keys + listener.tcp.default + its max_connections, proxy_protocol
	 * and proxy_protocol_timeout */
	ck_assert_int_eq(n, MQBI_K__COUNT + 4);
}
END_TEST

/* ---- types ---- */

START_TEST(bool_values)
{
	static const char *const yes[] = {"true", "on", "yes", "1", "TRUE", "On"};
	static const char *const no[] = {"false", "off", "no", "0", "No"};
	for (size_t i = 0; i < sizeof yes / sizeof *yes; i++) {
		ck_assert_int_eq(set("mqtt.retain_available", "false"), MQB_OK);
		ck_assert_int_eq(set("mqtt.retain_available", yes[i]), MQB_OK);
		ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_RETAIN_AVAILABLE), 1);
	}
	for (size_t i = 0; i < sizeof no / sizeof *no; i++) {
		ck_assert_int_eq(set("mqtt.retain_available", "true"), MQB_OK);
		ck_assert_int_eq(set("mqtt.retain_available", no[i]), MQB_OK);
		ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_RETAIN_AVAILABLE), 0);
	}
	ck_assert_str_eq(get("mqtt.retain_available"), "false");
	ck_assert_int_eq(set("mqtt.retain_available", "maybe"), MQB_ERR_PARSE);
	ck_assert_str_eq(err, "key 'mqtt.retain_available': 'maybe' is not a boolean "
	                      "(true/false, on/off, yes/no, 1/0)");
	ck_assert_int_eq(set("mqtt.retain_available", ""), MQB_ERR_PARSE);
	ck_assert_int_eq(set("mqtt.retain_available", "2"), MQB_ERR_PARSE);
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_RETAIN_AVAILABLE), 0);
}
END_TEST

START_TEST(int_values)
{
	ck_assert_int_eq(set("mqtt.max_qos_allowed", "1"), MQB_OK);
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_MAX_QOS), 1);
	ck_assert_int_eq(set("mqtt.max_qos_allowed", "+0"), MQB_OK);
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_MAX_QOS), 0);
	ck_assert_int_eq(set("mqtt.max_qos_allowed", "3"), MQB_ERR_RANGE);
	ck_assert_str_eq(err, "key 'mqtt.max_qos_allowed': 3 is out of range (0..2)");
	ck_assert_int_eq(set("mqtt.max_qos_allowed", "-1"), MQB_ERR_RANGE);
	ck_assert_int_eq(set("mqtt.max_qos_allowed", "1x"), MQB_ERR_PARSE);
	ck_assert_str_eq(err, "key 'mqtt.max_qos_allowed': '1x' is not an integer");
	ck_assert_int_eq(set("mqtt.max_qos_allowed", ""), MQB_ERR_PARSE);
	ck_assert_int_eq(set("mqtt.max_qos_allowed", " 1"), MQB_ERR_PARSE);
	ck_assert_int_eq(set("mqtt.max_qos_allowed", "99999999999999999999999"), MQB_ERR_RANGE);
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_MAX_QOS), 0);
	ck_assert_int_eq(set("mqtt.max_clientid_len", "22"), MQB_ERR_RANGE);
	ck_assert_str_eq(err, "key 'mqtt.max_clientid_len': 22 is out of range (23..65535)");
	ck_assert_int_eq(set("mqtt.max_clientid_len", "23"), MQB_OK);
	ck_assert_int_eq(set("mqtt.max_mqueue_len", "-5"), MQB_ERR_RANGE);
	ck_assert_str_eq(err, "key 'mqtt.max_mqueue_len': -5 is out of range (>= 0)");
	ck_assert_int_eq(set("mqtt.max_mqueue_len", "0"), MQB_OK);
	ck_assert_str_eq(get("mqtt.max_mqueue_len"), "0");
}
END_TEST

START_TEST(size_values)
{
	static const struct {
		const char *text;
		int64_t bytes;
		const char *canon;
	} ok[] = {
	        {"1024", 1024, "1KB"},         {"1000", 1000, "1000"},
	        {"64KB", 65536, "64KB"},       {"64kb", 65536, "64KB"},
	        {"64K", 65536, "64KB"},        {"1MB", 1048576, "1MB"},
	        {"1mb", 1048576, "1MB"},       {"2M", 2097152, "2MB"},
	        {"100B", 100, "100"},          {"256MB", 268435456, "256MB"},
	        {"1536KB", 1572864, "1536KB"}, {"16", 16, "16"},
	        {"10 MB", 10485760, "10MB"},
	};
	for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
		ck_assert_msg(set("mqtt.max_packet_size", ok[i].text) == MQB_OK, "%s: %s",
		              ok[i].text, err);
		ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_MAX_PACKET_SIZE), ok[i].bytes);
		ck_assert_str_eq(get("mqtt.max_packet_size"), ok[i].canon);
	}
	ck_assert_int_eq(set("mqtt.max_mqueue_bytes", "2GB"), MQB_OK);
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_MAX_MQUEUE_BYTES), INT64_C(2147483648));
	ck_assert_str_eq(get("mqtt.max_mqueue_bytes"), "2GB");
	ck_assert_int_eq(set("mqtt.max_mqueue_bytes", "3g"), MQB_OK);
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_MAX_MQUEUE_BYTES), INT64_C(3) << 30);

	static const char *const bad[] = {"", "MB", "1.5MB", "-1", "1TB", "1 M B", "12x", "0x10"};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
		ck_assert_msg(set("mqtt.max_packet_size", bad[i]) == MQB_ERR_PARSE, "%s", bad[i]);
	ck_assert_int_eq(set("mqtt.max_packet_size", "lots"), MQB_ERR_PARSE);
	ck_assert_str_eq(err, "key 'mqtt.max_packet_size': 'lots' is not a size "
	                      "(e.g. 1024, 64KB, 1MB, 2GB)");
	ck_assert_int_eq(set("mqtt.max_packet_size", "512MB"), MQB_ERR_RANGE);
	ck_assert_str_eq(err, "key 'mqtt.max_packet_size': 512MB is out of range (16..256MB)");
	ck_assert_int_eq(set("mqtt.max_packet_size", "15"), MQB_ERR_RANGE);
	ck_assert_int_eq(set("mqtt.max_mqueue_bytes", "99999999999GB"), MQB_ERR_RANGE);
	ck_assert_int_eq(set("mqtt.max_mqueue_bytes", "99999999999999999999999"), MQB_ERR_RANGE);
	/* failures leave the last good value */
	ck_assert_str_eq(get("mqtt.max_packet_size"), "10MB");
}
END_TEST

START_TEST(duration_values)
{
	static const struct {
		const char *text;
		int64_t ms;
		const char *canon;
	} ok[] = {
	        {"500ms", 500, "500ms"}, {"30s", 30000, "30s"},   {"30", 30000, "30s"},
	        {"15m", 900000, "15m"},  {"2h", 7200000, "2h"},   {"1d", 86400000, "1d"},
	        {"90s", 90000, "90s"},   {"120s", 120000, "2m"},  {"1500ms", 1500, "1500ms"},
	        {"2H", 7200000, "2h"},   {"100MS", 100, "100ms"}, {"60m", 3600000, "1h"},
	};
	for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
		ck_assert_msg(set("mqtt.idle_timeout", ok[i].text) == MQB_OK, "%s: %s", ok[i].text,
		              err);
		ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_IDLE_TIMEOUT), ok[i].ms);
		ck_assert_str_eq(get("mqtt.idle_timeout"), ok[i].canon);
	}
	ck_assert_int_eq(set("sys.interval", "0"), MQB_OK);
	ck_assert_str_eq(get("sys.interval"), "0");
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_SYS_INTERVAL), 0);

	static const char *const bad[] = {"", "s", "1.5s", "-1s", "10 years", "1w", "1h30m"};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
		ck_assert_msg(set("mqtt.idle_timeout", bad[i]) == MQB_ERR_PARSE, "%s", bad[i]);
	ck_assert_int_eq(set("mqtt.idle_timeout", "soon"), MQB_ERR_PARSE);
	ck_assert_str_eq(err, "key 'mqtt.idle_timeout': 'soon' is not a duration "
	                      "(e.g. 500ms, 30s, 15m, 2h, 1d)");
	ck_assert_int_eq(set("mqtt.idle_timeout", "2d"), MQB_ERR_RANGE);
	ck_assert_str_eq(err, "key 'mqtt.idle_timeout': 2d is out of range (100ms..1d)");
	ck_assert_int_eq(set("mqtt.idle_timeout", "50ms"), MQB_ERR_RANGE);
	ck_assert_int_eq(set("mqtt.session_expiry_interval", "4294967295"), MQB_OK);
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_SESSION_EXPIRY), INT64_C(4294967295000));
	ck_assert_int_eq(set("mqtt.session_expiry_interval", "4294967296"), MQB_ERR_RANGE);
	ck_assert_int_eq(set("mqtt.session_expiry_interval", "9999999999999999d"), MQB_ERR_RANGE);
}
END_TEST

START_TEST(ratio_values)
{
	static const struct {
		const char *text;
		int64_t pm;
		const char *canon;
	} ok[] = {{"1.5", 1500, "1.5"},     {"2", 2000, "2.0"},   {"1.25", 1250, "1.25"},
	          {"1.125", 1125, "1.125"}, {"3.0", 3000, "3.0"}, {"1", 1000, "1.0"},
	          {"1.05", 1050, "1.05"}};
	for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
		ck_assert_msg(set("mqtt.keepalive_backoff", ok[i].text) == MQB_OK, "%s: %s",
		              ok[i].text, err);
		ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_KEEPALIVE_BACKOFF), ok[i].pm);
		ck_assert_str_eq(get("mqtt.keepalive_backoff"), ok[i].canon);
	}
	static const char *const bad[] = {"", "1.", ".5", "1.2345", "1,5", "x", "-1.5", "1.5x"};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
		ck_assert_msg(set("mqtt.keepalive_backoff", bad[i]) == MQB_ERR_PARSE, "%s", bad[i]);
	ck_assert_int_eq(set("mqtt.keepalive_backoff", "3.5"), MQB_ERR_RANGE);
	ck_assert_str_eq(err, "key 'mqtt.keepalive_backoff': 3.5 is out of range (1.0..3.0)");
	ck_assert_int_eq(set("mqtt.keepalive_backoff", "0.9"), MQB_ERR_RANGE);
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_KEEPALIVE_BACKOFF), 1050);
}
END_TEST

START_TEST(enum_values)
{
	ck_assert_int_eq(set("allow_anonymous", "true"), MQB_OK);
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_ALLOW_ANONYMOUS), MQBI_ANON_TRUE);
	ck_assert_int_eq(set("allow_anonymous", "FALSE"), MQB_OK);
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_ALLOW_ANONYMOUS), MQBI_ANON_FALSE);
	ck_assert_str_eq(get("allow_anonymous"), "false");
	ck_assert_int_eq(set("mqtt.shared_subscription_strategy", "hash_topic"), MQB_OK);
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_SHARED_STRATEGY), MQBI_SHARE_HASH_TOPIC);
	ck_assert_int_eq(set("mqtt.shared_subscription_strategy", "random"), MQB_OK);
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_SHARED_STRATEGY), MQBI_SHARE_RANDOM);
	ck_assert_int_eq(set("mqtt.shared_subscription_strategy", "fastest"), MQB_ERR_PARSE);
	ck_assert_str_eq(err, "key 'mqtt.shared_subscription_strategy': 'fastest' is not one of: "
	                      "random, round_robin, sticky, hash_clientid, hash_topic");
	ck_assert_int_eq(set("mqtt.shared_subscription_strategy", "round"), MQB_ERR_PARSE);
	ck_assert_int_eq(set("mqtt.shared_subscription_strategy", ""), MQB_ERR_PARSE);
	ck_assert_int_eq(set("allow_anonymous", "yes"), MQB_ERR_PARSE);
	ck_assert_str_eq(get("mqtt.shared_subscription_strategy"), "random");

	/* log.level follows mqb_log_level */
	static const char *const levels[] = {"error", "warning", "notice", "info", "debug"};
	for (int i = 0; i < 5; i++) {
		ck_assert_int_eq(set("log.level", levels[i]), MQB_OK);
		ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_LOG_LEVEL), i);
		ck_assert_str_eq(mqb_log_level_name((mqb_log_level)i), levels[i]);
	}
}
END_TEST

START_TEST(string_values)
{
	ck_assert_int_eq(set("node.name", "edge-7@10.0.0.7"), MQB_OK);
	ck_assert_str_eq(mqbi_cfg_str(cfg, MQBI_K_NODE_NAME), "edge-7@10.0.0.7");
	ck_assert_str_eq(get("node.name"), "edge-7@10.0.0.7");
	ck_assert_int_eq(set("node.name", ""), MQB_ERR_RANGE);
	ck_assert_int_eq(set("node.name", "a/b"), MQB_ERR_PARSE);
	ck_assert_int_eq(set("node.name", "a+b"), MQB_ERR_PARSE);
	ck_assert_int_eq(set("node.name", "tab\there"), MQB_ERR_PARSE);
	char longname[300];
	memset(longname, 'n', sizeof longname - 1);
	longname[sizeof longname - 1] = '\0';
	ck_assert_int_eq(set("node.name", longname), MQB_ERR_RANGE);
	ck_assert_str_eq(mqbi_cfg_str(cfg, MQBI_K_NODE_NAME), "edge-7@10.0.0.7");
	ck_assert_ptr_null(mqbi_cfg_str(cfg, MQBI_K_MAX_QOS));
}
END_TEST

START_TEST(unknown_keys)
{
	ck_assert_int_eq(set("mqtt.max_pakcet_size", "1MB"), MQB_ERR_NOTFOUND);
	ck_assert_str_eq(err, "key 'mqtt.max_pakcet_size': unknown key; "
	                      "did you mean 'mqtt.max_packet_size'?");
	ck_assert_int_eq(set("mqtt.max_qos", "1"), MQB_ERR_NOTFOUND);
	ck_assert_str_eq(err, "key 'mqtt.max_qos': unknown key");
	ck_assert_int_eq(set("allow_anonymus", "true"), MQB_ERR_NOTFOUND);
	ck_assert_str_eq(err, "key 'allow_anonymus': unknown key; did you mean 'allow_anonymous'?");
	ck_assert_int_eq(set("listner.tcp.default", "1"), MQB_ERR_NOTFOUND);
	ck_assert_str_eq(err, "key 'listner.tcp.default': unknown key; "
	                      "did you mean 'listener.tcp.default'?");
	ck_assert_int_eq(set("totally.different", "1"), MQB_ERR_NOTFOUND);
	ck_assert_str_eq(err, "key 'totally.different': unknown key");
	ck_assert_int_eq(set("", "1"), MQB_ERR_NOTFOUND);
	ck_assert_str_eq(get("mqtt.nope"), "<notfound>");
	ck_assert_int_eq(mqb_config_set(cfg, NULL, "1", NULL, 0), MQB_ERR_INVAL);
	ck_assert_int_eq(mqb_config_set(cfg, "mqtt.max_qos_allowed", NULL, NULL, 0), MQB_ERR_INVAL);
	/* a NULL or short err buffer is fine */
	ck_assert_int_eq(mqb_config_set(cfg, "mqtt.nope", "1", NULL, 0), MQB_ERR_NOTFOUND);
	char small[8];
	ck_assert_int_eq(mqb_config_set(cfg, "mqtt.nope", "1", small, sizeof small),
	                 MQB_ERR_NOTFOUND);
	ck_assert_str_eq(small, "key 'mq");
}
END_TEST

START_TEST(typed_setters)
{
	ck_assert_int_eq(mqb_config_set_int(cfg, "mqtt.max_inflight", 64), MQB_OK);
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_MAX_INFLIGHT), 64);
	ck_assert_int_eq(mqb_config_set_int(cfg, "mqtt.max_inflight", 0), MQB_ERR_RANGE);
	ck_assert_int_eq(mqb_config_set_int(cfg, "mqtt.max_packet_size", 4096), MQB_OK);
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_MAX_PACKET_SIZE), 4096);
	/* durations: seconds, like their text form */
	ck_assert_int_eq(mqb_config_set_int(cfg, "mqtt.idle_timeout", 5), MQB_OK);
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_IDLE_TIMEOUT), 5000);
	ck_assert_int_eq(mqb_config_set_int(cfg, "mqtt.keepalive_backoff", 2), MQB_OK);
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_KEEPALIVE_BACKOFF), 2000);
	ck_assert_int_eq(mqb_config_set_int(cfg, "listener.tcp.default.max_connections", 10),
	                 MQB_OK);
	ck_assert_int_eq(mqbi_cfg_listener(cfg, 0)->max_connections, 10);
	ck_assert_int_eq(mqb_config_set_int(cfg, "node.name", 5), MQB_ERR_INVAL);
	ck_assert_int_eq(mqb_config_set_int(cfg, "allow_anonymous", 1), MQB_ERR_INVAL);
	ck_assert_int_eq(mqb_config_set_int(cfg, "listener.tcp.default", 1884), MQB_ERR_INVAL);
	ck_assert_int_eq(mqb_config_set_int(cfg, "mqtt.nope", 1), MQB_ERR_NOTFOUND);

	ck_assert_int_eq(mqb_config_set_bool(cfg, "mqtt.retain_available", 0), MQB_OK);
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_RETAIN_AVAILABLE), 0);
	ck_assert_int_eq(mqb_config_set_bool(cfg, "mqtt.retain_available", 42), MQB_OK);
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_RETAIN_AVAILABLE), 1);
	ck_assert_int_eq(mqb_config_set_bool(cfg, "allow_anonymous", 1), MQB_OK);
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_ALLOW_ANONYMOUS), MQBI_ANON_TRUE);
	ck_assert_int_eq(mqb_config_set_bool(cfg, "log.level", 1), MQB_ERR_PARSE);
	ck_assert_int_eq(mqb_config_set_bool(cfg, "mqtt.max_qos_allowed", 1), MQB_ERR_INVAL);
	ck_assert_int_eq(mqb_config_set_bool(cfg, "mqtt.nope", 1), MQB_ERR_NOTFOUND);
}
END_TEST

/* ---- listeners ---- */

START_TEST(listener_add_and_change)
{
	ck_assert_int_eq(set("listener.tcp.external", "1884"), MQB_OK);
	ck_assert_int_eq(mqbi_cfg_listener_count(cfg), 2);
	const mqbi_listener_cfg *l = mqbi_cfg_listener(cfg, 1);
	ck_assert_str_eq(l->name, "external");
	ck_assert_str_eq(l->host, "0.0.0.0"); /* port alone = all interfaces */
	ck_assert_int_eq(l->port, 1884);
	ck_assert_int_eq(l->max_connections, 1024000);
	ck_assert_str_eq(get("listener.tcp.external"), "0.0.0.0:1884");

	ck_assert_int_eq(set("listener.tcp.external.max_connections", "500"), MQB_OK);
	ck_assert_int_eq(mqbi_cfg_listener(cfg, 1)->max_connections, 500);
	ck_assert_str_eq(get("listener.tcp.external.max_connections"), "500");

	/* redefining keeps the sub-keys and the position */
	ck_assert_int_eq(set("listener.tcp.external", "10.1.2.3:8883"), MQB_OK);
	ck_assert_int_eq(mqbi_cfg_listener_count(cfg), 2);
	l = mqbi_cfg_listener(cfg, 1);
	ck_assert_str_eq(l->host, "10.1.2.3");
	ck_assert_int_eq(l->port, 8883);
	ck_assert_int_eq(l->max_connections, 500);

	ck_assert_int_eq(set("listener.tcp.default", "localhost:0"), MQB_OK);
	l = mqbi_cfg_listener(cfg, 0);
	ck_assert_str_eq(l->host, "localhost");
	ck_assert_int_eq(l->port, 0);
	ck_assert_int_eq(set("listener.tcp.default", "65535"), MQB_OK);
	ck_assert_int_eq(set("listener.tcp.Edge_1-b", "127.0.0.1:2000"), MQB_OK);
	ck_assert_str_eq(get("listener.tcp.Edge_1-b"), "127.0.0.1:2000");
}
END_TEST

START_TEST(listener_ipv6)
{
	ck_assert_int_eq(set("listener.tcp.v6", "[::1]:1883"), MQB_OK);
	const mqbi_listener_cfg *l = mqbi_cfg_listener(cfg, 1);
	ck_assert_str_eq(l->host, "::1");
	ck_assert_int_eq(l->port, 1883);
	ck_assert_str_eq(get("listener.tcp.v6"), "[::1]:1883");
	ck_assert_int_eq(set("listener.tcp.any6", "[::]:1999"), MQB_OK);
	ck_assert_str_eq(get("listener.tcp.any6"), "[::]:1999");
	ck_assert_int_eq(set("listener.tcp.v6", "[fe80::1:2:3:4]:1"), MQB_OK);
	ck_assert_str_eq(mqbi_cfg_listener(cfg, 1)->host, "fe80::1:2:3:4");

	ck_assert_int_eq(set("listener.tcp.v6", "::1:1883"), MQB_ERR_PARSE);
	ck_assert_str_eq(err, "key 'listener.tcp.v6': '::1:1883': write an IPv6 address in "
	                      "brackets, e.g. [::1]:1883");
	ck_assert_int_eq(set("listener.tcp.v6", "[::1]"), MQB_ERR_PARSE);
	ck_assert_int_eq(set("listener.tcp.v6", "[::1:1883"), MQB_ERR_PARSE);
	ck_assert_int_eq(set("listener.tcp.v6", "[1.2.3.4]:1883"), MQB_ERR_PARSE);
	ck_assert_int_eq(set("listener.tcp.v6", "[::g]:1883"), MQB_ERR_PARSE);
	ck_assert_str_eq(get("listener.tcp.v6"), "[fe80::1:2:3:4]:1");
}
END_TEST

START_TEST(listener_off)
{
	ck_assert_int_eq(set("listener.tcp.b", "1885"), MQB_OK);
	ck_assert_int_eq(set("listener.tcp.default", "off"), MQB_OK);
	ck_assert_int_eq(mqbi_cfg_listener_count(cfg), 1);
	ck_assert_str_eq(mqbi_cfg_listener(cfg, 0)->name, "b");
	ck_assert_str_eq(get("listener.tcp.default"), "off");
	ck_assert_str_eq(get("listener.tcp.default.max_connections"), "<notfound>");
	ck_assert_int_eq(set("listener.tcp.default.max_connections", "5"), MQB_ERR_NOTFOUND);
	ck_assert_str_eq(err, "key 'listener.tcp.default.max_connections': listener "
	                      "'tcp.default' is not defined; set listener.tcp.default = "
	                      "[host:]port first");
	/* off is idempotent, and any case */
	ck_assert_int_eq(set("listener.tcp.default", "OFF"), MQB_OK);
	ck_assert_int_eq(set("listener.tcp.b", "Off"), MQB_OK);
	ck_assert_int_eq(mqbi_cfg_listener_count(cfg), 0);
	/* re-adding starts from the sub-key defaults */
	ck_assert_int_eq(set("listener.tcp.default", "127.0.0.1:1883"), MQB_OK);
	ck_assert_int_eq(mqbi_cfg_listener(cfg, 0)->max_connections, 1024000);
}
END_TEST

START_TEST(listener_bad)
{
	static const struct {
		const char *key, *value;
		mqb_err rc;
	} bad[] = {
	        {"listener.tcp.x", "65536", MQB_ERR_RANGE},
	        {"listener.tcp.x", "99999999999999999999999", MQB_ERR_RANGE},
	        {"listener.tcp.x", "-1", MQB_ERR_PARSE},
	        {"listener.tcp.x", "", MQB_ERR_PARSE},
	        {"listener.tcp.x", "1883x", MQB_ERR_PARSE},
	        {"listener.tcp.x", "127.0.0.1:", MQB_ERR_PARSE},
	        {"listener.tcp.x", ":1883", MQB_ERR_PARSE},
	        {"listener.tcp.x", "example.com:1883", MQB_ERR_PARSE},
	        {"listener.tcp.x", "256.1.1.1:1883", MQB_ERR_PARSE},
	        {"listener.tcp.x", "on", MQB_ERR_PARSE},
	        {"listener.tcp.bad$name", "1883", MQB_ERR_PARSE},
	        {"listener.tcp.", "1883", MQB_ERR_PARSE},
	        {"listener.tcp", "1883", MQB_ERR_NOTFOUND},
	        {"listener.", "1883", MQB_ERR_NOTFOUND},
	        {"listener.udp.x", "1883", MQB_ERR_NOTFOUND},
	        {"listener.tcp.default.max_conections", "5", MQB_ERR_NOTFOUND},
	        {"listener.tcp.default.max_connections", "0", MQB_ERR_RANGE},
	        {"listener.tcp.default.max_connections", "many", MQB_ERR_PARSE},
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
		ck_assert_msg(set(bad[i].key, bad[i].value) == bad[i].rc, "%s = %s: %s", bad[i].key,
		              bad[i].value, err);
	ck_assert_int_eq(mqbi_cfg_listener_count(cfg), 1);

	ck_assert_int_eq(set("listener.tcp.x", "70000"), MQB_ERR_RANGE);
	ck_assert_str_eq(err, "key 'listener.tcp.x': port 70000 is out of range (0..65535)");
	ck_assert_int_eq(set("listener.udp.x", "1"), MQB_ERR_NOTFOUND);
	ck_assert_str_eq(
	        err,
	        "key 'listener.udp.x': unknown listener type 'udp' (known: tcp, ssl, ws, wss)");
	ck_assert_int_eq(set("listener.tcp.default.max_conections", "5"), MQB_ERR_NOTFOUND);
	ck_assert_str_eq(err, "key 'listener.tcp.default.max_conections': unknown listener "
	                      "setting 'max_conections'; did you mean 'max_connections'?");
	ck_assert_int_eq(set("listener.tcp.bad name", "1"), MQB_ERR_PARSE);
	ck_assert_str_eq(err, "key 'listener.tcp.bad name': invalid listener name 'bad name' "
	                      "(1..63 letters, digits, '_' or '-')");

	/* TLS sub-keys exist on ssl listeners only; text values are kept as given. */
	ck_assert_int_eq(set("listener.tcp.default.certfile", "/x.pem"), MQB_ERR_NOTFOUND);
	ck_assert_int_eq(set("listener.ssl.s", "8883"), MQB_OK);
	ck_assert_int_eq(set("listener.ssl.s.certfile", "/etc/mqb/server.pem"), MQB_OK);
	ck_assert_str_eq(get("listener.ssl.s.certfile"), "/etc/mqb/server.pem");
	ck_assert_str_eq(get("listener.ssl.s.verify"), "verify_none");
	ck_assert_str_eq(get("listener.ssl.s.tls_versions"), "tlsv1.2");
	ck_assert_int_eq(set("listener.ssl.s.verify", "verify_peer"), MQB_OK);
	ck_assert_int_eq(set("listener.ssl.s.verify", "always"), MQB_ERR_PARSE);
	ck_assert_int_eq(set("listener.ssl.s.peer_cert_as_username", "cn"), MQB_OK);
	ck_assert_int_eq(set("listener.ssl.s.proxy_protocol", "true"), MQB_OK);
	char longpath[300];
	memset(longpath, 'a', sizeof longpath - 1);
	longpath[sizeof longpath - 1] = '\0';
	ck_assert_int_ne(set("listener.ssl.s.keyfile", longpath), MQB_OK);
	ck_assert_str_eq(get("listener.ssl.s.keyfile"), "");
	const mqbi_listener_cfg *l = mqbi_cfg_listener(cfg, mqbi_cfg_listener_count(cfg) - 1);
	ck_assert_str_eq(l->type, "ssl");
	ck_assert_int_eq(l->port, 8883);
	ck_assert_int_eq(l->verify, MQBI_VERIFY_PEER);
	ck_assert_int_eq(l->peer_cert_as_username, MQBI_CERT_AS_CN);
	ck_assert_int_eq(l->proxy_protocol, 1);
	ck_assert_int_eq(l->handshake_timeout, 15000);

	char key[128];
	snprintf(key, sizeof key, "listener.tcp.%063d", 7);
	ck_assert_int_eq(set(key, "1"), MQB_OK);
	snprintf(key, sizeof key, "listener.tcp.%064d", 7);
	ck_assert_int_eq(set(key, "1"), MQB_ERR_PARSE);
}
END_TEST

/* ---- files ---- */

START_TEST(file_basic)
{
	ck_assert_int_eq(load("# a comment\n"
	                      "\n"
	                      "   mqtt.max_packet_size   =   2MB   \n"
	                      "\tmqtt.max_qos_allowed=1 # trailing comment\n"
	                      "  # indented comment\n"
	                      "node.name = \"my node = 1\"  # comment after quotes\n"
	                      "allow_anonymous = \"false\"\n"
	                      "mqtt.idle_timeout = 5s\r\n"
	                      "listener.tcp.default = off\n"
	                      "listener.tcp.ext = [::1]:1884\n"
	                      "listener.tcp.ext.max_connections = 7\n"
	                      "mqtt.max_inflight = 10\n"
	                      "mqtt.max_inflight = 11\n"
	                      "mqtt.max_awaiting_rel = 3"),
	                 MQB_OK);
	ck_assert_str_eq(err, "");
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_MAX_PACKET_SIZE), 2 * 1024 * 1024);
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_MAX_QOS), 1);
	ck_assert_str_eq(mqbi_cfg_str(cfg, MQBI_K_NODE_NAME), "my node = 1");
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_ALLOW_ANONYMOUS), MQBI_ANON_FALSE);
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_IDLE_TIMEOUT), 5000);
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_MAX_INFLIGHT), 11);
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_MAX_AWAITING_REL), 3);
	ck_assert_int_eq(mqbi_cfg_listener_count(cfg), 1);
	const mqbi_listener_cfg *l = mqbi_cfg_listener(cfg, 0);
	ck_assert_str_eq(l->name, "ext");
	ck_assert_str_eq(l->host, "::1");
	ck_assert_int_eq(l->port, 1884);
	ck_assert_int_eq(l->max_connections, 7);
}
END_TEST

START_TEST(file_values_and_quotes)
{
	/* '#' after whitespace starts a comment, elsewhere and inside quotes it is kept
	 * (and node.name then refuses it, which shows it arrived) */
	ck_assert_int_eq(load("node.name = a#b\n"), MQB_ERR_PARSE);
	ck_assert_ptr_nonnull(strstr(err, "'a#b' may not contain"));
	ck_assert_int_eq(load("node.name = \"a #b\" # comment\n"), MQB_ERR_PARSE);
	ck_assert_ptr_nonnull(strstr(err, "'a #b' may not contain"));
	ck_assert_int_eq(load("node.name = a #b\n"), MQB_OK);
	ck_assert_str_eq(mqbi_cfg_str(cfg, MQBI_K_NODE_NAME), "a");
	ck_assert_int_eq(load("node.name = \"say \\\"hi\\\" \\\\ there\"\n"), MQB_OK);
	ck_assert_str_eq(mqbi_cfg_str(cfg, MQBI_K_NODE_NAME), "say \"hi\" \\ there");
	ck_assert_int_eq(load("node.name = x=y\n"), MQB_OK);
	ck_assert_str_eq(mqbi_cfg_str(cfg, MQBI_K_NODE_NAME), "x=y");
	ck_assert_int_eq(load("\xEF\xBB\xBFmqtt.max_qos_allowed = 0\n"), MQB_OK);
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_MAX_QOS), 0);
	ck_assert_int_eq(load(""), MQB_OK);
	ck_assert_int_eq(load("\n\n# only comments\n"), MQB_OK);
}
END_TEST

START_TEST(file_errors)
{
	const char *path = write_file("mqtt.max_qos_allowed = 1\n"
	                              "mqtt.max_inflight = 5\n"
	                              "listener.tcp.default = off\n"
	                              "# comment\n"
	                              "mqtt.max_packet_size = 1XB\n"
	                              "mqtt.max_awaiting_rel = 9\n");
	ck_assert_int_eq(mqb_config_load_file(cfg, path, err, sizeof err), MQB_ERR_PARSE);
	char want[512];
	snprintf(
	        want, sizeof want,
	        "%s:5: key 'mqtt.max_packet_size': '1XB' is not a size (e.g. 1024, 64KB, 1MB, 2GB)",
	        path);
	ck_assert_str_eq(err, want);
	unlink(path);
	/* nothing of the file applied, not even lines 1-4 */
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_MAX_QOS), 2);
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_MAX_INFLIGHT), 32);
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_MAX_AWAITING_REL), 100);
	ck_assert_int_eq(mqbi_cfg_listener_count(cfg), 1);

	path = write_file("mqtt.max_qos_allowed = 1\nmqtt.max_topic_alias = 70000\n");
	ck_assert_int_eq(mqb_config_load_file(cfg, path, err, sizeof err), MQB_ERR_RANGE);
	snprintf(want, sizeof want,
	         "%s:2: key 'mqtt.max_topic_alias': 70000 is out of range (0..65535)", path);
	ck_assert_str_eq(err, want);
	unlink(path);

	path = write_file("\n\nmqtt.max_pakcet_size = 1MB\n");
	ck_assert_int_eq(mqb_config_load_file(cfg, path, err, sizeof err), MQB_ERR_NOTFOUND);
	snprintf(want, sizeof want,
	         "%s:3: key 'mqtt.max_pakcet_size': unknown key; did you mean "
	         "'mqtt.max_packet_size'?",
	         path);
	ck_assert_str_eq(err, want);
	unlink(path);

	path = write_file("mqtt.max_qos_allowed 1\n");
	ck_assert_int_eq(mqb_config_load_file(cfg, path, err, sizeof err), MQB_ERR_PARSE);
	snprintf(want, sizeof want, "%s:1: expected 'key = value'", path);
	ck_assert_str_eq(err, want);
	unlink(path);

	path = write_file(" = 1\n");
	ck_assert_int_eq(mqb_config_load_file(cfg, path, err, sizeof err), MQB_ERR_PARSE);
	snprintf(want, sizeof want, "%s:1: expected 'key = value'", path);
	ck_assert_str_eq(err, want);
	unlink(path);

	path = write_file("node.name = \"open\n");
	ck_assert_int_eq(mqb_config_load_file(cfg, path, err, sizeof err), MQB_ERR_PARSE);
	snprintf(want, sizeof want, "%s:1: key 'node.name': unterminated quoted value", path);
	ck_assert_str_eq(err, want);
	unlink(path);

	path = write_file("node.name = \"a\" b\n");
	ck_assert_int_eq(mqb_config_load_file(cfg, path, err, sizeof err), MQB_ERR_PARSE);
	snprintf(want, sizeof want, "%s:1: key 'node.name': unexpected text after the quoted value",
	         path);
	ck_assert_str_eq(err, want);
	unlink(path);

	ck_assert_int_eq(mqb_config_load_file(cfg, "/nonexistent/mqb.conf", err, sizeof err),
	                 MQB_ERR_IO);
	ck_assert_str_eq(err, "/nonexistent/mqb.conf: cannot open: No such file or directory");

	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_MAX_QOS), 2);
	ck_assert_str_eq(mqbi_cfg_str(cfg, MQBI_K_NODE_NAME), "mqb@127.0.0.1");
}
END_TEST

START_TEST(file_long_lines)
{
	/* lines longer than any internal buffer and files over a few KB */
	size_t n = 100000;
	char *text = malloc(n + 64);
	ck_assert_ptr_nonnull(text);
	size_t o = 0;
	while (o < n - 40)
		o += (size_t)sprintf(text + o, "# padding comment line\n");
	sprintf(text + o, "mqtt.max_qos_allowed = 1\n");
	ck_assert_int_eq(load(text), MQB_OK);
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_MAX_QOS), 1);

	memset(text, 'x', n);
	memcpy(text, "node.name = ", 12);
	text[n] = '\0';
	ck_assert_int_eq(load(text), MQB_ERR_RANGE);
	ck_assert_ptr_nonnull(strstr(err, ":1: key 'node.name': 'xxx"));
	free(text);
}
END_TEST

/* ---- environment ---- */

START_TEST(env_overrides)
{
	char *env[] = {"PATH=/usr/bin",
	               "MQB_MQTT__MAX_PACKET_SIZE=2MB",
	               "MQB_ALLOW_ANONYMOUS=true",
	               "MQB_LOG__LEVEL=debug",
	               "MQB_LISTENER__TCP__EXTRA__MAX_CONNECTIONS=9", /* before its listener */
	               "MQB_LISTENER__TCP__EXTRA=127.0.0.1:2883",
	               "MQB_LISTENER__TCP__DEFAULT=127.0.0.1:1884",
	               "MQB_BROKER_CLI=/some/path", /* not ours: ignored */
	               "MQB_REFERENCE=",
	               "MQB_=x",
	               "MQB_NODE__NAME=env@node",
	               NULL};
	ck_assert_int_eq(mqb_config_apply_env(cfg, env, err, sizeof err), MQB_OK);
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_MAX_PACKET_SIZE), 2 * 1024 * 1024);
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_ALLOW_ANONYMOUS), MQBI_ANON_TRUE);
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_LOG_LEVEL), MQB_LOG_DEBUG);
	ck_assert_str_eq(mqbi_cfg_str(cfg, MQBI_K_NODE_NAME), "env@node");
	ck_assert_int_eq(mqbi_cfg_listener_count(cfg), 2);
	ck_assert_str_eq(get("listener.tcp.default"), "127.0.0.1:1884");
	ck_assert_str_eq(get("listener.tcp.extra"), "127.0.0.1:2883");
	ck_assert_str_eq(get("listener.tcp.extra.max_connections"), "9");

	char *off[] = {"MQB_LISTENER__TCP__DEFAULT=off", NULL};
	ck_assert_int_eq(mqb_config_apply_env(cfg, off, err, sizeof err), MQB_OK);
	ck_assert_str_eq(get("listener.tcp.default"), "off");
	ck_assert_int_eq(mqb_config_apply_env(cfg, NULL, err, sizeof err), MQB_OK);
}
END_TEST

START_TEST(env_errors)
{
	char *bad[] = {"MQB_MQTT__MAX_QOS_ALLOWED=1", "MQB_MQTT__MAX_INFLIGHT=lots", NULL};
	ck_assert_int_eq(mqb_config_apply_env(cfg, bad, err, sizeof err), MQB_ERR_PARSE);
	ck_assert_str_eq(err, "MQB_MQTT__MAX_INFLIGHT: key 'mqtt.max_inflight': 'lots' is not an "
	                      "integer");
	ck_assert_int_eq(mqbi_cfg_int(cfg, MQBI_K_MAX_QOS), 2); /* all or nothing */

	char *typo[] = {"MQB_MQTT__MAX_PAKCET_SIZE=1MB", NULL};
	ck_assert_int_eq(mqb_config_apply_env(cfg, typo, err, sizeof err), MQB_ERR_NOTFOUND);
	ck_assert_str_eq(err, "MQB_MQTT__MAX_PAKCET_SIZE: key 'mqtt.max_pakcet_size': unknown "
	                      "key; did you mean 'mqtt.max_packet_size'?");

	char *orphan[] = {"MQB_LISTENER__TCP__NOPE__MAX_CONNECTIONS=5", NULL};
	ck_assert_int_eq(mqb_config_apply_env(cfg, orphan, err, sizeof err), MQB_ERR_NOTFOUND);

	char *range[] = {"MQB_LISTENER__TCP__DEFAULT=99999", NULL};
	ck_assert_int_eq(mqb_config_apply_env(cfg, range, err, sizeof err), MQB_ERR_RANGE);
	ck_assert_str_eq(err, "MQB_LISTENER__TCP__DEFAULT: key 'listener.tcp.default': port "
	                      "99999 is out of range (0..65535)");
	ck_assert_str_eq(get("listener.tcp.default"), "127.0.0.1:1883");
}
END_TEST

/* ---- get / visit ---- */

struct collect {
	char lines[64][256];
	int n;
};

static void collect_fn(void *user, const char *key, const char *value, const char *def,
                       const char *type, const char *doc)
{
	struct collect *c = user;
	ck_assert_int_lt(c->n, 64);
	snprintf(c->lines[c->n++], sizeof c->lines[0], "%s|%s|%s|%s", key, value, def, type);
}

START_TEST(visit_order_and_types)
{
	struct collect c = {.n = 0};
	ck_assert_int_eq(set("listener.tcp.default", "off"), MQB_OK);
	ck_assert_int_eq(set("listener.tcp.b", "[::1]:5"), MQB_OK);
	ck_assert_int_eq(set("mqtt.max_packet_size", "2MB"), MQB_OK);
	mqb_config_visit(cfg, collect_fn, &c);
	ck_assert_int_eq(c.n, MQBI_K__COUNT + 5);
	ck_assert_str_eq(c.lines[0], "node.name|mqb@127.0.0.1|mqb@127.0.0.1|string");
	ck_assert_str_eq(c.lines[1], "node.loop_threads|0|0|int (0..1024)");
	ck_assert_str_eq(
	        c.lines[2],
	        "log.level|notice|notice|enum (error|warning|notice|info|debug), reloadable");
	ck_assert_str_eq(c.lines[MQBI_K_MAX_PACKET_SIZE],
	                 "mqtt.max_packet_size|2MB|1MB|size (16..256MB), reloadable");
	ck_assert_str_eq(c.lines[MQBI_K_RETAIN_AVAILABLE],
	                 "mqtt.retain_available|true|true|bool, reloadable");
	ck_assert_str_eq(c.lines[MQBI_K_KEEPALIVE_BACKOFF],
	                 "mqtt.keepalive_backoff|1.5|1.5|float (1.0..3.0), reloadable");
	ck_assert_str_eq(c.lines[MQBI_K_IDLE_TIMEOUT],
	                 "mqtt.idle_timeout|15s|15s|duration (100ms..1d), reloadable");
	ck_assert_str_eq(c.lines[MQBI_K_MAX_SUBSCRIPTIONS],
	                 "mqtt.max_subscriptions|0|0|int (>= 0), reloadable");
	ck_assert_str_eq(c.lines[MQBI_K__COUNT],
	                 "listener.tcp.default|off|127.0.0.1:1883|listener");
	ck_assert_str_eq(c.lines[MQBI_K__COUNT + 1], "listener.tcp.b|[::1]:5|off|listener");
	ck_assert_str_eq(c.lines[MQBI_K__COUNT + 2],
	                 "listener.tcp.b.max_connections|1024000|1024000|int (>= 1)");
	ck_assert_str_eq(c.lines[MQBI_K__COUNT + 3],
	                 "listener.tcp.b.proxy_protocol|false|false|bool");
	ck_assert_str_eq(c.lines[MQBI_K__COUNT + 4],
	                 "listener.tcp.b.proxy_protocol_timeout|3s|3s|duration (100ms..1h)");
}
END_TEST

struct roundtrip {
	mqb_config *dst;
	int failures;
};

static void copy_fn(void *user, const char *key, const char *value, const char *def,
                    const char *type, const char *doc)
{
	struct roundtrip *r = user;
	if (mqb_config_set(r->dst, key, value, NULL, 0) != MQB_OK)
		r->failures++;
}

static void compare_fn(void *user, const char *key, const char *value, const char *def,
                       const char *type, const char *doc)
{
	struct roundtrip *r = user;
	char other[256];
	if (mqb_config_get(r->dst, key, other, sizeof other) != MQB_OK || strcmp(other, value))
		r->failures++;
}

START_TEST(get_visit_roundtrip)
{
	ck_assert_int_eq(load("mqtt.max_packet_size = 300KB\n"
	                      "mqtt.keepalive_backoff = 2.25\n"
	                      "mqtt.session_expiry_interval = 1d\n"
	                      "mqtt.shared_subscription_strategy = sticky\n"
	                      "node.name = \"rt node\"\n"
	                      "listener.tcp.default = off\n"
	                      "listener.tcp.a = [::]:1\n"
	                      "listener.tcp.a.max_connections = 3\n"
	                      "listener.tcp.z = 10.0.0.1:2\n"),
	                 MQB_OK);
	struct roundtrip r = {NULL, 0};
	ck_assert_int_eq(mqb_config_create(&r.dst, NULL), MQB_OK);
	mqb_config_visit(cfg, copy_fn, &r);
	ck_assert_int_eq(r.failures, 0);
	mqb_config_visit(cfg, compare_fn, &r);
	ck_assert_int_eq(r.failures, 0);
	ck_assert_int_eq(mqbi_cfg_listener_count(r.dst), 2);
	ck_assert_str_eq(mqbi_cfg_listener(r.dst, 0)->name, "a");
	ck_assert_str_eq(mqbi_cfg_listener(r.dst, 1)->name, "z");
	mqb_config_destroy(r.dst);

	char small[4];
	ck_assert_int_eq(mqb_config_get(cfg, "node.name", small, sizeof small), MQB_OK);
	ck_assert_str_eq(small, "rt ");
	ck_assert_int_eq(mqb_config_get(cfg, "mqtt.max_packet_size", small, 0), MQB_OK);
}
END_TEST

/* ---- clone, log, allocator ---- */

static void log_fn(void *user, const mqb_log_record *rec)
{
	(void)user, (void)rec;
}

START_TEST(clone_copies_everything)
{
	int tag;
	mqb_config_set_log(cfg, log_fn, &tag, MQB_LOG_INFO);
	ck_assert_str_eq(get("log.level"), "info");
	ck_assert_int_eq(set("node.name", "orig"), MQB_OK);
	ck_assert_int_eq(set("listener.tcp.x", "1"), MQB_OK);
	ck_assert_int_eq(set("mqtt.max_inflight", "7"), MQB_OK);
	mqb_config *copy;
	ck_assert_int_eq(mqbi_config_clone(cfg, &copy), MQB_OK);
	/* the copy is independent */
	ck_assert_int_eq(set("node.name", "changed"), MQB_OK);
	ck_assert_int_eq(set("listener.tcp.x", "off"), MQB_OK);
	ck_assert_str_eq(mqbi_cfg_str(copy, MQBI_K_NODE_NAME), "orig");
	ck_assert_int_eq(mqbi_cfg_int(copy, MQBI_K_MAX_INFLIGHT), 7);
	ck_assert_int_eq(mqbi_cfg_listener_count(copy), 2);
	ck_assert_str_eq(mqbi_cfg_listener(copy, 1)->name, "x");
	mqb_log_fn fn;
	void *user;
	mqb_log_level level;
	mqbi_cfg_log(copy, &fn, &user, &level);
	ck_assert_ptr_eq((void *)fn, (void *)log_fn);
	ck_assert_ptr_eq(user, &tag);
	ck_assert_int_eq(level, MQB_LOG_INFO);
	ck_assert_ptr_eq(mqbi_cfg_allocator(copy)->malloc_fn, mqbi_cfg_allocator(cfg)->malloc_fn);
	mqb_config_destroy(copy);

	/* log.level and set_log are one setting */
	ck_assert_int_eq(set("log.level", "error"), MQB_OK);
	mqbi_cfg_log(cfg, &fn, &user, &level);
	ck_assert_int_eq(level, MQB_LOG_ERROR);
	ck_assert_ptr_eq((void *)fn, (void *)log_fn);
	mqb_config_set_log(cfg, NULL, NULL, (mqb_log_level)99);
	mqbi_cfg_log(cfg, &fn, &user, &level);
	ck_assert_ptr_null((void *)fn);
	ck_assert_int_eq(level, MQB_LOG_DEBUG);
}
END_TEST

/* Counts live allocations and can fail the n-th one. */
struct counting {
	long live, total;
	long fail_at; /* 0 = never */
};

static void *count_malloc(void *ctx, size_t n)
{
	struct counting *c = ctx;
	if (c->fail_at && c->total + 1 == c->fail_at) {
		c->total++;
		return NULL;
	}
	c->total++;
	c->live++;
	return malloc(n ? n : 1);
}

static void *count_realloc(void *ctx, void *p, size_t n)
{
	struct counting *c = ctx;
	if (!p)
		return count_malloc(ctx, n);
	if (c->fail_at && c->total + 1 == c->fail_at) {
		c->total++;
		return NULL;
	}
	c->total++;
	return realloc(p, n ? n : 1);
}

static void count_free(void *ctx, void *p)
{
	struct counting *c = ctx;
	if (p)
		c->live--;
	free(p);
}

/* Everything a config does, for the allocator tests. */
static mqb_err exercise(mqb_config *c)
{
	char e[256];
	const char *path = write_file("mqtt.max_qos_allowed = 1\nlistener.tcp.f = 1\n"
	                              "node.name = filenode\n");
	mqb_err rc = mqb_config_load_file(c, path, e, sizeof e);
	unlink(path);
	if (rc != MQB_OK)
		return rc;
	char *env[] = {"MQB_LISTENER__TCP__G=2", "MQB_NODE__NAME=envnode", NULL};
	rc = mqb_config_apply_env(c, env, e, sizeof e);
	if (rc != MQB_OK)
		return rc;
	for (int i = 0; i < 10 && rc == MQB_OK; i++) {
		char key[32];
		snprintf(key, sizeof key, "listener.tcp.l%d", i);
		rc = mqb_config_set(c, key, "127.0.0.1:1", NULL, 0);
	}
	if (rc != MQB_OK)
		return rc;
	mqb_config *copy;
	rc = mqbi_config_clone(c, &copy);
	if (rc != MQB_OK)
		return rc;
	mqb_config_destroy(copy);
	return mqb_config_set(c, "node.name", "again", NULL, 0);
}

START_TEST(allocator_counts)
{
	struct counting cnt = {0, 0, 0};
	mqb_allocator a = {count_malloc, count_realloc, count_free, &cnt};
	mqb_config *c;
	ck_assert_int_eq(mqb_config_create(&c, &a), MQB_OK);
	ck_assert_ptr_eq(mqbi_cfg_allocator(c)->ctx, &cnt);
	ck_assert_int_eq(exercise(c), MQB_OK);
	ck_assert_int_gt(cnt.total, 10);
	ck_assert_int_gt(cnt.live, 0);
	mqb_config_destroy(c);
	ck_assert_int_eq(cnt.live, 0);

	mqb_allocator broken = {NULL, count_realloc, count_free, &cnt};
	ck_assert_int_eq(mqb_config_create(&c, &broken), MQB_ERR_INVAL);
	ck_assert_ptr_null(c);
	ck_assert_int_eq(mqb_config_create(NULL, NULL), MQB_ERR_INVAL);
	mqb_config_destroy(NULL);
}
END_TEST

/* Failing each allocation in turn: no leak, no crash, NOMEM reported. */
START_TEST(allocator_failures)
{
	struct counting probe = {0, 0, 0};
	mqb_allocator a = {count_malloc, count_realloc, count_free, &probe};
	mqb_config *c;
	ck_assert_int_eq(mqb_config_create(&c, &a), MQB_OK);
	ck_assert_int_eq(exercise(c), MQB_OK);
	mqb_config_destroy(c);
	long n = probe.total;
	for (long i = 1; i <= n; i++) {
		struct counting cnt = {0, 0, i};
		a.ctx = &cnt;
		mqb_err rc = mqb_config_create(&c, &a);
		if (rc == MQB_OK) {
			rc = exercise(c);
			mqb_config_destroy(c);
		}
		ck_assert_msg(rc == MQB_OK || rc == MQB_ERR_NOMEM, "fail_at %ld: %d", i, rc);
		ck_assert_msg(cnt.live == 0, "fail_at %ld leaked %ld", i, cnt.live);
	}
}
END_TEST

START_TEST(errors_and_version)
{
	for (int e = MQB_OK; e <= MQB_ERR_DENIED; e++) {
		ck_assert_ptr_nonnull(mqb_strerror((mqb_err)e));
		ck_assert_str_ne(mqb_strerror((mqb_err)e), "unknown error");
	}
	ck_assert_str_eq(mqb_strerror(MQB_ERR_ADDRINUSE), "address already in use");
	ck_assert_str_eq(mqb_strerror((mqb_err)1000), "unknown error");
	ck_assert_str_eq(mqb_version(), MQB_VERSION_STRING);
	ck_assert_str_eq(mqb_log_level_name((mqb_log_level)42), "unknown");
}
END_TEST

static Suite *config_suite(void)
{
	Suite *s = suite_create("config");
	TCase *tc = tcase_create("registry");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, defaults);
	tcase_add_test(tc, defaults_canonical);
	tcase_add_test(tc, bool_values);
	tcase_add_test(tc, int_values);
	tcase_add_test(tc, size_values);
	tcase_add_test(tc, duration_values);
	tcase_add_test(tc, ratio_values);
	tcase_add_test(tc, enum_values);
	tcase_add_test(tc, string_values);
	tcase_add_test(tc, unknown_keys);
	tcase_add_test(tc, typed_setters);
	tcase_add_test(tc, listener_add_and_change);
	tcase_add_test(tc, listener_ipv6);
	tcase_add_test(tc, listener_off);
	tcase_add_test(tc, listener_bad);
	tcase_add_test(tc, file_basic);
	tcase_add_test(tc, file_values_and_quotes);
	tcase_add_test(tc, file_errors);
	tcase_add_test(tc, file_long_lines);
	tcase_add_test(tc, env_overrides);
	tcase_add_test(tc, env_errors);
	tcase_add_test(tc, visit_order_and_types);
	tcase_add_test(tc, get_visit_roundtrip);
	tcase_add_test(tc, clone_copies_everything);
	tcase_add_test(tc, allocator_counts);
	tcase_add_test(tc, allocator_failures);
	tcase_add_test(tc, errors_and_version);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(config_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
