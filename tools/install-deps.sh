#!/bin/sh
# Installs what libmqttbroker needs to build and test on Debian 12.
set -e
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
	gcc g++ clang libclang-rt-14-dev llvm meson ninja-build pkg-config check \
	libmbedtls-dev libsqlite3-dev sqlite3 openssl mosquitto mosquitto-clients libpaho-mqtt-dev python3 python3-paho-mqtt python3-cryptography >/dev/null
# MQTT.js for the WebSocket tests (Node.js from Debian when the machine has none);
# not needed to run the broker (tools/run-broker.sh sets MQB_NO_NODE=1).
if [ "${MQB_NO_NODE:-0}" = 1 ]; then
	exit 0
fi
command -v npm >/dev/null 2>&1 ||
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
		nodejs npm >/dev/null
(cd "$(dirname "$0")/../tests/integration/mqttjs" && npm ci --no-audit --no-fund --silent)
