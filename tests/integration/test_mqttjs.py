"""MQTT.js (Node) over ws:// and wss://, MQTT 3.1, 3.1.1 and 5.0: the
WebSocket client most browsers and Node programs use."""
import os
import shutil
import subprocess
import unittest

import tls_certs
from harness import free_port
from mqtt_util import BrokerTest, uid

HERE = os.path.dirname(os.path.abspath(__file__))
JS = os.path.join(HERE, "mqttjs")
CERTS = tls_certs.Certs()


class MQTTjs(BrokerTest):
    ws_port, wss_port = free_port(), free_port()
    config = {
        "listener.ws.js": "127.0.0.1:%d" % ws_port,
        "listener.wss.js": "127.0.0.1:%d" % wss_port,
        "listener.wss.js.certfile": CERTS.server_cert,
        "listener.wss.js.keyfile": CERTS.server_key,
    }

    def test_roundtrip_every_version(self):
        node = shutil.which("node") or shutil.which("nodejs")
        self.assertIsNotNone(node, "Node.js is required (tools/install-deps.sh installs it)")
        self.assertTrue(os.path.isdir(os.path.join(JS, "node_modules", "mqtt")),
                        "MQTT.js is not installed: run tools/install-deps.sh")
        r = subprocess.run([node, os.path.join(JS, "roundtrip.js"),
                            "ws://127.0.0.1:%d/mqtt" % self.ws_port,
                            "wss://localhost:%d/mqtt" % self.wss_port, CERTS.ca,
                            "js/" + uid()], capture_output=True, timeout=60)
        out = r.stdout.decode() + r.stderr.decode()
        self.assertEqual(r.returncode, 0, out + "\n" + self.broker.log()[-3000:])
        self.assertIn("OK 6 clients, 7 messages each", out)
        log = self.broker.log()
        self.assertIn("subprotocol mqttv3.1", log)  # MQTT.js asks for it with 3.1
        self.assertIn("subprotocol mqtt", log)


if __name__ == "__main__":
    unittest.main()
