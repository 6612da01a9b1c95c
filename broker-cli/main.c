/*
 * broker-cli: runs a libmqttbroker broker from defaults, a config file, the
 * environment and command-line options (in that order of precedence). It
 * only uses the public API; everything it could not do through that API
 * belongs in the library.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mqttbroker.h>

extern char **environ;

#define PROG "broker-cli"
/* Where the broker keeps its state unless told otherwise (like EMQX's data/). */
#define DEFAULT_DATA_DIR "data"
#define DB_FILE          "broker.db"

enum { EXIT_USAGE = 2 };

/* Options that the command line sets after the file and the environment. */
typedef struct cli_opts {
	const char *config_file;
	const char *check_file;
	const char *port;      /* NULL = keep */
	const char *log_level; /* NULL = keep */
	const char *data_dir;  /* NULL = keep */
	bool print_config, config_docs;
} cli_opts;

static void usage(FILE *out)
{
	fprintf(out,
	        "Usage: " PROG " [OPTION]...\n"
	        "Runs an MQTT 3.1/3.1.1/5.0 broker (libmqttbroker %s).\n"
	        "\n"
	        "  -c, --config FILE        read settings from FILE ('key = value' lines)\n"
	        "  -p, --port PORT          port of listener.tcp.default (its host is kept;\n"
	        "                           default 127.0.0.1:1883)\n"
	        "  -d, --data-dir DIR       keep retained messages and sessions in DIR/broker.db\n"
	        "                           (default ./" DEFAULT_DATA_DIR
	        "; persistence.enable = false\n"
	        "                           in a file or MQB_PERSISTENCE__ENABLE=false turns it "
	        "off)\n"
	        "  -l, --log-level LEVEL    error, warning, notice, info or debug\n"
	        "  -v, --verbose            log more: -v info, -vv debug\n"
	        "      --print-config       print the effective settings and exit\n"
	        "      --check-config FILE  check FILE and exit (status 0 if valid)\n"
	        "      --config-docs        print the configuration reference (Markdown) and exit\n"
	        "      --version            print the version and exit\n"
	        "  -h, --help               print this help and exit\n"
	        "\n"
	        "Settings apply in this order, later ones winning: built-in defaults, the\n"
	        "file, environment variables MQB_<KEY> (KEY upper-cased, '.' written as '__',\n"
	        "e.g. MQB_MQTT__MAX_PACKET_SIZE=2MB), then the options above.\n"
	        "Every key is described by --config-docs.\n",
	        mqb_version());
}

static int usage_error(const char *fmt, const char *arg)
{
	fprintf(stderr, PROG ": ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\nTry '" PROG " --help' for more information.\n");
	return EXIT_USAGE;
}

static bool valid_level(const char *name)
{
	for (int l = MQB_LOG_ERROR; l <= MQB_LOG_DEBUG; l++)
		if (strcmp(name, mqb_log_level_name((mqb_log_level)l)) == 0)
			return true;
	return false;
}

static bool valid_port(const char *s)
{
	long v = 0;
	if (!*s || strlen(s) > 5)
		return false;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			return false;
		v = v * 10 + (*p - '0');
	}
	return v <= 65535;
}

/* Returns -1 to go on, or the exit status. */
static int parse_args(int argc, char **argv, cli_opts *o)
{
	enum { OPT_PRINT = 256, OPT_CHECK, OPT_DOCS, OPT_VERSION };
	static const struct option longopts[] = {
	        {"config", required_argument, NULL, 'c'},
	        {"port", required_argument, NULL, 'p'},
	        {"data-dir", required_argument, NULL, 'd'},
	        {"log-level", required_argument, NULL, 'l'},
	        {"verbose", no_argument, NULL, 'v'},
	        {"print-config", no_argument, NULL, OPT_PRINT},
	        {"check-config", required_argument, NULL, OPT_CHECK},
	        {"config-docs", no_argument, NULL, OPT_DOCS},
	        {"version", no_argument, NULL, OPT_VERSION},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	int verbose = 0, c;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":c:p:d:l:vh", longopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			o->config_file = optarg;
			break;
		case 'p':
			if (!valid_port(optarg))
				return usage_error("invalid port '%s' (0..65535)", optarg);
			o->port = optarg;
			break;
		case 'd':
			if (!*optarg || strlen(optarg) > 4000)
				return usage_error("invalid data directory '%s'", optarg);
			o->data_dir = optarg;
			break;
		case 'l':
			if (!valid_level(optarg))
				return usage_error(
				        "invalid log level '%s' (error, warning, notice, "
				        "info, debug)",
				        optarg);
			o->log_level = optarg;
			verbose = 0;
			break;
		case 'v':
			/* -v and -l: the one given last wins */
			verbose++;
			o->log_level = verbose > 1 ? "debug" : "info";
			break;
		case OPT_PRINT:
			o->print_config = true;
			break;
		case OPT_CHECK:
			o->check_file = optarg;
			break;
		case OPT_DOCS:
			o->config_docs = true;
			break;
		case OPT_VERSION:
			printf(PROG " (libmqttbroker) %s\n", mqb_version());
			return EXIT_SUCCESS;
		case 'h':
			usage(stdout);
			return EXIT_SUCCESS;
		case ':':
			if (optopt) {
				char opt[3] = {'-', (char)optopt, '\0'};
				return usage_error("option '%s' needs an argument", opt);
			}
			return usage_error("option '%s' needs an argument", argv[optind - 1]);
		default:
			if (optopt) {
				char opt[3] = {'-', (char)optopt, '\0'};
				return usage_error("unknown option '%s'", opt);
			}
			return usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		return usage_error("unexpected argument '%s'", argv[optind]);
	return -1;
}

/* ---- --config-docs ---- */

/* Writes `s` as a Markdown table cell. */
static void md_cell(FILE *out, const char *s, bool code)
{
	fputs(code ? " `" : " ", out);
	for (; *s; s++) {
		if (*s == '|')
			fputs("\\|", out);
		else
			fputc(*s, out);
	}
	fputs(code ? "` |" : " |", out);
}

static void docs_row(void *user, const char *key, const char *value, const char *def,
                     const char *type, const char *doc)
{
	FILE *out = user;
	fputc('|', out);
	md_cell(out, key, true);
	md_cell(out, type, false);
	md_cell(out, def, *def != '\0');
	md_cell(out, doc, false);
	fputc('\n', out);
}

static int print_docs(void)
{
	mqb_config *cfg;
	mqb_err rc = mqb_config_create(&cfg, NULL);
	if (rc != MQB_OK) {
		fprintf(stderr, PROG ": %s\n", mqb_strerror(rc));
		return EXIT_FAILURE;
	}
	fputs("# Configuration reference\n"
	      "\n"
	      "<!-- Generated by `broker-cli --config-docs`; do not edit by hand. Regenerate with\n"
	      "     `build/broker-cli/broker-cli --config-docs > docs/CONFIG.md`. -->\n"
	      "\n"
	      "libmqttbroker has one registry of named, typed keys. The same keys are set from C\n"
	      "(`mqb_config_set(cfg, \"mqtt.max_packet_size\", \"2MB\", err, sizeof err)`), from\n"
	      "the file `broker-cli -c FILE` reads and from environment variables.\n"
	      "\n"
	      "## File syntax\n"
	      "\n"
	      "One `key = value` per line. `#` starts a comment, on a line of its own or after\n"
	      "whitespace; blank lines are ignored and whitespace around keys and values is\n"
	      "trimmed. A value may be double-quoted (`\\\"` and `\\\\` are escapes inside) to\n"
	      "keep a ` #` or surrounding spaces. A later line overrides an earlier one. If any\n"
	      "line is wrong the whole file is rejected with `FILE:LINE: key 'K': reason` and\n"
	      "nothing of it is applied; `broker-cli --check-config FILE` checks a file.\n"
	      "\n"
	      "```\n"
	      "# broker.conf\n"
	      "mqtt.max_packet_size = 2MB\n"
	      "mqtt.session_expiry_interval = 1d\n"
	      "listener.tcp.default = off          # not on loopback...\n"
	      "listener.tcp.public = 0.0.0.0:1883  # ...but on every interface\n"
	      "listener.tcp.public.max_connections = 10000\n"
	      "```\n"
	      "\n"
	      "## Value types\n"
	      "\n"
	      "- **bool**: `true`/`false`, `on`/`off`, `yes`/`no`, `1`/`0`.\n"
	      "- **int**: a decimal integer in the range shown.\n"
	      "- **size**: bytes, optionally with a unit `KB`, `MB` or `GB` (1024-based,\n"
	      "  case-insensitive, the `B` may be left out): `1024`, `64KB`, `1MB`, `2GB`.\n"
	      "- **duration**: a number with a unit `ms`, `s`, `m` (minutes), `h` or `d`:\n"
	      "  `500ms`, `30s`, `15m`, `2h`, `1d`; a plain number is seconds.\n"
	      "- **float**: a decimal number with at most three decimals, e.g. `1.5`.\n"
	      "- **enum**: one of the listed words.\n"
	      "- **string**: text.\n"
	      "\n"
	      "## Environment\n"
	      "\n"
	      "Each key can be set by the variable `MQB_` + the key upper-cased with `.` written\n"
	      "as `__`: `MQB_MQTT__MAX_PACKET_SIZE=2MB`, `MQB_ALLOW_ANONYMOUS=false`,\n"
	      "`MQB_LISTENER__TCP__DEFAULT=127.0.0.1:1884`. Listener names are read in lower\n"
	      "case. broker-cli applies the defaults, then the file (`-c`), then the\n"
	      "environment, then its command-line options (`-p`, `-l`, `-v`).\n"
	      "\n"
	      "## Listeners\n"
	      "\n"
	      "`listener.<type>.<name> = [host:]port` adds or moves a listener; `<name>` is 1 to\n"
	      "63 letters, digits, `_` or `-`. The host is a numeric IPv4 address, an IPv6\n"
	      "address in brackets (`[::1]:1883`) or `localhost`; a port alone (`1883`) listens\n"
	      "on all interfaces (`0.0.0.0`), and port `0` takes any free port.\n"
	      "`listener.<type>.<name> = off` removes a listener, such as the built-in\n"
	      "`listener.tcp.default`. A listener's settings are sub-keys\n"
	      "`listener.<type>.<name>.<setting>`, set after the listener itself. The types are\n"
	      "`tcp`, `ssl` (TLS), `ws` (WebSocket) and `wss` (WebSocket over TLS), described in\n"
	      "docs/TRANSPORTS.md. The table shows the settings of `listener.tcp.default` and of\n"
	      "an example listener `external` of each other type, which a fresh configuration\n"
	      "does not have; every listener of a type has its type's settings.\n"
	      "\n"
	      "## Keys\n"
	      "\n"
	      "| Key | Type | Default | Description |\n"
	      "|---|---|---|---|\n",
	      stdout);
	/* Examples, so that every listener type's settings are documented. */
	mqb_config_set(cfg, "listener.ssl.external", "0.0.0.0:8883", NULL, 0);
	mqb_config_set(cfg, "listener.ws.external", "0.0.0.0:8083", NULL, 0);
	mqb_config_set(cfg, "listener.wss.external", "0.0.0.0:8084", NULL, 0);
	mqb_config_visit(cfg, docs_row, stdout);
	mqb_config_destroy(cfg);
	return EXIT_SUCCESS;
}

/* ---- --print-config ---- */

static void print_row(void *user, const char *key, const char *value, const char *def,
                      const char *type, const char *doc)
{
	size_t n = strlen(value);
	bool quote = n == 0 || value[0] == ' ' || value[n - 1] == ' ' || strchr(value, '#') ||
	             value[0] == '"';
	if (!quote) {
		printf("%s = %s\n", key, value);
		return;
	}
	printf("%s = \"", key);
	for (const char *p = value; *p; p++) {
		if (*p == '"' || *p == '\\')
			putchar('\\');
		putchar(*p);
	}
	printf("\"\n");
}

/* ---- logging ---- */

/* Appends `s` with control characters replaced, so that a client id or a
 * message can never forge or split a log line. */
static size_t put_clean(char *buf, size_t o, size_t cap, const char *s)
{
	for (; *s && o + 1 < cap; s++)
		buf[o++] = ((unsigned char)*s < 0x20 || *s == 0x7f) ? '?' : *s;
	return o;
}

static size_t put_raw(char *buf, size_t o, size_t cap, const char *s)
{
	for (; *s && o + 1 < cap; s++)
		buf[o++] = *s;
	return o;
}

static void log_stderr(void *user, const mqb_log_record *rec)
{
	char line[2048];
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s",
	                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
	                 tm.tm_sec, ts.tv_nsec / 1000000, mqb_log_level_name(rec->level));
	size_t o = n > 0 ? (size_t)n : 0, cap = sizeof line - 1; /* room for '\n' */
	if (rec->module) {
		o = put_raw(line, o, cap, " [");
		o = put_clean(line, o, cap, rec->module);
		o = put_raw(line, o, cap, "]");
	}
	if (rec->client_id) {
		o = put_raw(line, o, cap, " client=");
		o = put_clean(line, o, cap, rec->client_id);
	}
	if (rec->peer) {
		o = put_raw(line, o, cap, " peer=");
		o = put_clean(line, o, cap, rec->peer);
	}
	o = put_raw(line, o, cap, ": ");
	o = put_clean(line, o, cap, rec->message ? rec->message : "");
	line[o++] = '\n';
	/* One write per record keeps lines whole when loop threads log at once. */
	for (size_t done = 0; done < o;) {
		ssize_t w = write(STDERR_FILENO, line + done, o - done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		done += (size_t)w;
	}
}

static mqb_log_level level_of(const char *name)
{
	for (int l = MQB_LOG_ERROR; l <= MQB_LOG_DEBUG; l++)
		if (strcmp(name, mqb_log_level_name((mqb_log_level)l)) == 0)
			return (mqb_log_level)l;
	return MQB_LOG_NOTICE;
}

/* ---- configuration ---- */

/* Applies -p: keeps the host of listener.tcp.default (127.0.0.1 if a file
 * switched it off). */
static mqb_err set_port(mqb_config *cfg, const char *port, char *err, size_t errlen)
{
	char addr[128], value[160];
	const char *host = "127.0.0.1";
	if (mqb_config_get(cfg, "listener.tcp.default", addr, sizeof addr) == MQB_OK &&
	    strcmp(addr, "off") != 0) {
		char *colon = strrchr(addr, ':');
		if (colon) {
			*colon = '\0';
			host = addr;
		}
	}
	snprintf(value, sizeof value, "%s:%s", host, port);
	return mqb_config_set(cfg, "listener.tcp.default", value, err, errlen);
}

/* Builds the effective configuration; prints the error and returns NULL on
 * failure. */
static mqb_config *load_config(const cli_opts *o)
{
	mqb_config *cfg;
	char err[1024];
	mqb_err rc = mqb_config_create(&cfg, NULL);
	if (rc != MQB_OK) {
		fprintf(stderr, PROG ": %s\n", mqb_strerror(rc));
		return NULL;
	}
	/* broker-cli's own defaults: persist (the library's default is off). */
	if ((rc = mqb_config_set(cfg, "persistence.enable", "true", err, sizeof err)) ||
	    (rc = mqb_config_set(cfg, "persistence.path", DEFAULT_DATA_DIR "/" DB_FILE, err,
	                         sizeof err)))
		goto fail;
	if (o->config_file) {
		rc = mqb_config_load_file(cfg, o->config_file, err, sizeof err);
		if (rc != MQB_OK)
			goto fail;
	}
	rc = mqb_config_apply_env(cfg, environ, err, sizeof err);
	if (rc != MQB_OK)
		goto fail;
	if (o->port) {
		rc = set_port(cfg, o->port, err, sizeof err);
		if (rc != MQB_OK)
			goto fail;
	}
	if (o->log_level) {
		rc = mqb_config_set(cfg, "log.level", o->log_level, err, sizeof err);
		if (rc != MQB_OK)
			goto fail;
	}
	if (o->data_dir) {
		char path[4096 + sizeof DB_FILE];
		snprintf(path, sizeof path, "%s/%s", o->data_dir, DB_FILE);
		rc = mqb_config_set(cfg, "persistence.path", path, err, sizeof err);
		if (rc != MQB_OK)
			goto fail;
	}
	return cfg;
fail:
	if (rc == MQB_ERR_NOMEM)
		snprintf(err, sizeof err, "%s", mqb_strerror(rc));
	fprintf(stderr, "%s\n", err);
	mqb_config_destroy(cfg);
	return NULL;
}

static int check_config(const char *path)
{
	mqb_config *cfg;
	char err[1024];
	mqb_err rc = mqb_config_create(&cfg, NULL);
	if (rc == MQB_OK)
		rc = mqb_config_load_file(cfg, path, err, sizeof err);
	else
		snprintf(err, sizeof err, PROG ": %s", mqb_strerror(rc));
	mqb_config_destroy(cfg);
	if (rc != MQB_OK) {
		fprintf(stderr, "%s\n", err);
		return EXIT_FAILURE;
	}
	printf("%s: OK\n", path);
	return EXIT_SUCCESS;
}

/* ---- running ---- */

/* broker-cli's own messages, in the same format as the library's. */
static void cli_log(mqb_log_level level, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));
static void cli_log(mqb_log_level level, const char *fmt, ...)
{
	char text[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof text, fmt, ap);
	va_end(ap);
	mqb_log_record rec = {.level = level, .module = "cli", .message = text};
	log_stderr(NULL, &rec);
}

/* The library logs each change; the count tells "nothing changed" apart. */
static void count_change(void *user, const char *key, const char *old_value, const char *new_value,
                         int applied)
{
	(*(int *)user)++;
}

/* SIGHUP: re-reads the file, the environment and the flags, and applies the
 * keys that can change at run time. */
static void reload(mqb_broker *b, const cli_opts *o)
{
	mqb_config *cfg = load_config(o);
	if (!cfg) {
		cli_log(MQB_LOG_ERROR, "reload failed; the running configuration is unchanged");
		return;
	}
	int changes = 0;
	mqb_err rc = mqb_broker_reconfigure(b, cfg, count_change, &changes);
	mqb_config_destroy(cfg);
	if (rc != MQB_OK)
		cli_log(MQB_LOG_ERROR, "reload failed: %s", mqb_strerror(rc));
	else if (changes == 0)
		cli_log(MQB_LOG_NOTICE, "reload: nothing changed");
}

/* Creates the directory that holds the database (and its parents), private
 * to the user; false (and a message) if it cannot be. */
static bool make_data_dir(const mqb_config *cfg)
{
	char on[8], path[4200];
	if (mqb_config_get(cfg, "persistence.enable", on, sizeof on) != MQB_OK ||
	    strcmp(on, "true") != 0 ||
	    mqb_config_get(cfg, "persistence.path", path, sizeof path) != MQB_OK)
		return true;
	char *slash = strrchr(path, '/');
	if (!slash || slash == path)
		return true;
	*slash = '\0';
	for (char *p = path + 1;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char keep = *p;
		*p = '\0';
		if (mkdir(path, 0700) != 0 && errno != EEXIST) {
			fprintf(stderr, PROG ": cannot create the data directory %s: %s\n", path,
			        strerror(errno));
			return false;
		}
		*p = keep;
		if (!keep)
			return true;
	}
}

/* Signals are handled synchronously by the main thread (sigwait), so SIGHUP
 * may do real work; they are blocked before the broker's threads start so
 * that those inherit the mask. */
static int run_broker(mqb_config *cfg, const cli_opts *o)
{
	char level[16];
	mqb_broker *b;
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	/* A peer that vanishes mid-write must be an EPIPE, not a dead broker. */
	signal(SIGPIPE, SIG_IGN);
	/* One descriptor per connection: allow as many as the hard limit does. */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0) {
		fprintf(stderr, PROG ": cannot block signals\n");
		return EXIT_FAILURE;
	}
	mqb_config_get(cfg, "log.level", level, sizeof level);
	mqb_config_set_log(cfg, log_stderr, NULL, level_of(level));
	if (!make_data_dir(cfg))
		return EXIT_FAILURE;
	/* A full disk must be an error to report, not a signal that kills. */
	signal(SIGXFSZ, SIG_IGN);
	mqb_err rc = mqb_broker_create(&b, cfg);
	if (rc == MQB_OK)
		rc = mqb_broker_start(b);
	if (rc != MQB_OK) {
		fprintf(stderr, PROG ": cannot start: %s\n", mqb_strerror(rc));
		mqb_broker_destroy(b);
		return EXIT_FAILURE;
	}
	for (;;) {
		int sig = 0;
		if (sigwait(&set, &sig) != 0)
			continue;
		if (sig == SIGHUP) {
			reload(b, o);
			continue;
		}
		cli_log(MQB_LOG_NOTICE, "%s: stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
		break;
	}
	mqb_broker_stop(b);
	mqb_broker_wait(b);
	mqb_broker_destroy(b);
	return EXIT_SUCCESS;
}

int main(int argc, char **argv)
{
	cli_opts o = {0};
	int status = parse_args(argc, argv, &o);
	if (status >= 0)
		return status;
	if (o.config_docs)
		return print_docs();
	if (o.check_file)
		return check_config(o.check_file);
	mqb_config *cfg = load_config(&o);
	if (!cfg)
		return EXIT_FAILURE;
	if (o.print_config) {
		mqb_config_visit(cfg, print_row, NULL);
		mqb_config_destroy(cfg);
		return EXIT_SUCCESS;
	}
	status = run_broker(cfg, &o);
	mqb_config_destroy(cfg);
	return status;
}
