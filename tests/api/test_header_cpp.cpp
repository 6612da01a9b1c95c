// The public header must compile on its own as C++11
// (-std=c++11 -pedantic -Wall -Werror; see meson.build).
#include <mqttbroker.h>

#include <cstdio>
#include <cstring>

static mqb_verdict on_publish(void *, const mqb_client *, mqb_message *, int *)
{
	return MQB_ALLOW;
}

int main()
{
	mqb_hooks hooks = mqb_hooks();
	hooks.on_publish = on_publish;
	mqb_message m = mqb_message();
	m.topic = "x";
	mqb_err e = MQB_ERR_NOTFOUND;
	std::printf("libmqttbroker %s: %s, valid=%d\n", mqb_version(), mqb_strerror(e),
	            mqb_filter_valid("a/#"));
	if (std::strcmp(mqb_version(), MQB_VERSION_STRING) != 0)
		return 1;
	int reason = 0;
	return hooks.on_publish(NULL, NULL, &m, &reason) == MQB_ALLOW ? 0 : 1;
}
