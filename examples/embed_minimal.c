// clang-format off
/* The README's embedding example, built and run by the tests
 * (tests/readme_example.py checks that the README shows exactly this
 * program, so it is kept as written rather than reformatted). */
#include <mqttbroker.h>

int main(void)
{
	mqb_config *cfg;
	mqb_broker *b;
	if (mqb_config_create(&cfg, NULL))
		return 1;
	mqb_config_set(cfg, "listener.tcp.default", "127.0.0.1:0", NULL, 0); /* any free port */
	mqb_config_set(cfg, "mqtt.max_packet_size", "256KB", NULL, 0);
	mqb_err err = mqb_broker_create(&b, cfg);
	mqb_config_destroy(cfg); /* the broker keeps its own copy */
	if (err || (err = mqb_broker_start(b))) /* own threads; returns at once */
		return 1;
	mqb_broker_publish(b, "status/gateway", "up", 2, 1, 1); /* any thread */
	/* ... the host's own work; mqb_broker_stop(b) from any thread or a signal ... */
	mqb_broker_stop(b);
	mqb_broker_wait(b);
	mqb_broker_destroy(b);
	return 0;
}
