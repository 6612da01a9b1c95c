/* host_loop: the broker inside the host's own poll() loop, on one thread (step
 * mode: the library starts no thread). One poll set holds the broker's
 * descriptor and stdin; a host timer publishes host/tick ("1", "2", ...) once a
 * second, and each line read from stdin is published to host/stdin. At the end
 * of stdin (or on SIGINT/SIGTERM) the broker stops and the loop keeps stepping
 * until mqb_broker_step() says it has. Usage: host_loop [PORT]  (0 = any port) */
#define _POSIX_C_SOURCE 200809L
#include <mqttbroker.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static mqb_broker *broker;

static void on_signal(int sig)
{
	(void)sig;
	mqb_broker_stop(broker); /* async-signal-safe; the next step sees it */
}

static void log_line(void *user, const mqb_log_record *r)
{
	(void)user;
	fprintf(stderr, "%s %s: %s%s%s\n", mqb_log_level_name(r->level), r->module,
	        r->client_id ? r->client_id : "", r->client_id ? ": " : "", r->message);
}

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

int main(int argc, char **argv)
{
	char addr[64], err[256] = "", line[1024];
	size_t linelen = 0;
	mqb_config *cfg;
	mqb_err e;
	snprintf(addr, sizeof addr, "127.0.0.1:%s", argc > 1 ? argv[1] : "1883");
	if ((e = mqb_config_create(&cfg, NULL)))
		return 1;
	mqb_config_set_log(cfg, log_line, NULL, MQB_LOG_NOTICE);
	/* In step mode every event loop runs on this thread: one is enough.
	 * allow_anonymous keeps its default, "loopback": clients on this machine
	 * connect without credentials. */
	if (!(e = mqb_config_set(cfg, "listener.tcp.default", addr, err, sizeof err)) &&
	    !(e = mqb_config_set(cfg, "node.loop_threads", "1", err, sizeof err)))
		e = mqb_broker_create(&broker, cfg);
	mqb_config_destroy(cfg); /* the broker keeps its own copy */
	if (e) {
		fprintf(stderr, "host_loop: %s %s\n", mqb_strerror(e), err);
		return 1;
	}
	int port = 0;
	if ((e = mqb_broker_start_stepped(broker)) ||
	    (e = mqb_broker_listener_port(broker, "default", &port))) {
		fprintf(stderr, "host_loop: %s\n", mqb_strerror(e));
		mqb_broker_destroy(broker);
		return 1;
	}
	struct sigaction sa = {.sa_handler = on_signal};
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	printf("listening on %d\n", port);
	fflush(stdout);

	struct pollfd fds[2] = {{.fd = mqb_broker_fd(broker), .events = POLLIN},
	                        {.fd = STDIN_FILENO, .events = POLLIN}};
	nfds_t nfds = 2; /* 1 once stdin has ended */
	long long next_tick = now_ms() + 1000;
	unsigned ticks = 0;
	for (;;) {
		/* Sleep until the host's timer, the broker's timer or an fd is due. */
		long long wait = next_tick - now_ms();
		int broker_wait = mqb_broker_timeout(broker);
		if (wait < 0)
			wait = 0;
		if (broker_wait >= 0 && broker_wait < wait)
			wait = broker_wait;
		int ready = poll(fds, nfds, (int)wait);
		if (ready < 0 && errno != EINTR)
			mqb_broker_stop(broker);
		if (ready > 0 && nfds > 1 && fds[1].revents) {
			ssize_t n = read(STDIN_FILENO, line + linelen, sizeof line - linelen);
			if (n <= 0) {
				nfds = 1;
				mqb_broker_stop(broker); /* the end of stdin ends the program */
			}
			linelen += n > 0 ? (size_t)n : 0;
			char *nl; /* publish each complete (or over-long) line */
			while ((nl = memchr(line, '\n', linelen)) || linelen == sizeof line) {
				size_t len = nl ? (size_t)(nl - line) : linelen,
				       used = nl ? len + 1 : len;
				mqb_broker_publish(broker, "host/stdin", line, len, 1, 0);
				linelen -= used;
				memmove(line, line + used, linelen);
			}
		}
		if (now_ms() >= next_tick) {
			char text[16];
			snprintf(text, sizeof text, "%u", ++ticks);
			/* MQB_ERR_STATE once the broker is stopping: nothing to do */
			mqb_broker_publish(broker, "host/tick", text, strlen(text), 0, 0);
			next_tick += 1000;
		}
		/* The broker's share of the iteration; it never blocks with 0. */
		if (mqb_broker_step(broker, 0) == MQB_ERR_STATE)
			break; /* stopped: its clients are disconnected, its listeners closed */
	}
	sa.sa_handler = SIG_IGN; /* the broker is about to go */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	mqb_broker_destroy(broker);
	return 0;
}
