"""Runs the Paho C program (paho_c_tests.c, libpaho-mqtt3c synchronous
MQTTClient API, MQTT 3.1/3.1.1/5) against the broker under test, one unittest
per C subtest. Meson builds the program and passes its path in
MQB_PAHO_C_TESTS; run by hand, the file compiles it with cc."""
import os
import shutil
import subprocess
import tempfile
import unittest

from mqtt_util import BrokerTest

HERE = os.path.dirname(os.path.abspath(__file__))
SUBTESTS = ["pubsub_qos_v31_v311", "retained", "will_on_abrupt_close", "session_resumption",
            "mqtt5_properties_noLocal_session", "mqtt5_disconnect_with_will"]


def program():
    path = os.environ.get("MQB_PAHO_C_TESTS")
    if path:
        return path
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc or not os.path.exists("/usr/include/MQTTClient.h"):
        return None
    out = os.path.join(tempfile.mkdtemp(prefix="mqb-pahoc-"), "paho_c_tests")
    subprocess.run([cc, "-O1", "-o", out, os.path.join(HERE, "paho_c_tests.c"),
                    "-lpaho-mqtt3c"], check=True)
    return out


PROGRAM = program()


@unittest.skipUnless(PROGRAM, "paho C library or compiler not available")
class PahoCTest(BrokerTest):

    def run_subtest(self, name):
        r = subprocess.run([PROGRAM, str(self.port), name], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=120)
        out = r.stdout.decode("utf-8", "replace")
        self.assertEqual(r.returncode, 0, "paho C subtest %s failed:\n%s" % (name, out))
        self.assertIn("ok 1 - " + name, out)


for _name in SUBTESTS:
    setattr(PahoCTest, "test_" + _name, lambda self, n=_name: self.run_subtest(n))


if __name__ == "__main__":
    unittest.main()
