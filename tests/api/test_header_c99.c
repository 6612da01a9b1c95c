/* The public header must compile on its own as strict C99
 * (-std=c99 -pedantic -Wall -Wextra -Werror; see meson.build). */
#include <mqttbroker.h>
#include <mqttbroker.h> /* include guard */

#include <stdio.h>
#include <string.h>

static mqb_verdict authz(void *user, const mqb_client *c, mqb_action action, const char *topic,
                         int *qos)
{
	(void)user;
	(void)c;
	(void)action;
	(void)topic;
	(void)qos;
	return MQB_IGNORE;
}

int main(void)
{
	mqb_hooks hooks;
	mqb_message m;
	mqb_metrics metrics;
	memset(&hooks, 0, sizeof hooks);
	memset(&m, 0, sizeof m);
	memset(&metrics, 0, sizeof metrics);
	hooks.authorize = authz;
	m.topic = "a/b";
	printf("libmqttbroker %s (header %s), %s, matches=%d\n", mqb_version(), MQB_VERSION_STRING,
	       mqb_strerror(MQB_ERR_STATE), mqb_topic_matches("a/+", m.topic));
	if (strcmp(mqb_version(), MQB_VERSION_STRING) != 0)
		return 1;
	return hooks.authorize(NULL, NULL, MQB_ACTION_PUBLISH, m.topic, NULL) == MQB_IGNORE ? 0 : 1;
}
