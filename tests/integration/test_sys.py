"""$-topics and $SYS."""
import json
import unittest

from mqtt_util import MQTTv5, MQTTv311, BrokerTest, skip_mosquitto, uid

NODE = "testnode@127.0.0.1"


class SysTest(BrokerTest):
    config = {"sys.interval": "1s", "node.name": NODE}

    def test_wildcards_do_not_match_dollar_topics(self):
        hash_ = self.client()
        hash_.subscribe("#", 0)
        plus = self.client(version=MQTTv311)
        plus.subscribe("+/#", 0)
        plus2 = self.client()
        plus2.subscribe("+/+/+", 0)
        sys_ = self.client()
        sys_.subscribe("$SYS/#", 0)
        # $SYS messages exist (retained or periodic)...
        sys_.wait_messages(1, timeout=15)
        # ...and a client publishing to its own $ topic.
        dollar = self.client()
        dollar.subscribe("$app/#", 1)
        p = self.client()
        t = "$app/" + uid()
        p.publish(t, b"dollar", qos=1)
        dollar.wait_payload(b"dollar")
        # Round trip through each wildcard subscriber: nothing starting with $.
        mark = "sysmark/a/b"
        p.publish(mark, b"mark", qos=1)
        for c in (hash_, plus, plus2):
            c.wait_payload(b"mark")
            bad = [m.topic for m in c.messages if m.topic.startswith("$")]
            self.assertEqual(bad, [], "wildcard matched $-topics")

    def test_dollar_filter_matches_dollar_topic(self):
        s = self.client()
        s.subscribe("$app2/+/x", 1)
        t = "$app2/" + uid() + "/x"
        self.client().publish(t, b"y", qos=1)
        self.assertEqual(s.wait_messages(1)[0].topic, t)

    @skip_mosquitto("publishes $SYS/broker/version, not $SYS/brokers/<node>/...")
    def test_version_and_uptime(self):
        s = self.client()
        s.subscribe("$SYS/brokers/%s/version" % NODE, 0)
        s.subscribe("$SYS/brokers/%s/uptime" % NODE, 0)
        s.wait_messages(1, topic="$SYS/brokers/%s/version" % NODE, timeout=15)
        s.wait_messages(1, topic="$SYS/brokers/%s/uptime" % NODE, timeout=15)
        v = s.wait_messages(1, topic="$SYS/brokers/%s/version" % NODE)[0]
        self.assertTrue(v.payload)
        up = s.wait_messages(1, topic="$SYS/brokers/%s/uptime" % NODE)[0]
        self.assertTrue(up.payload)

    def test_mosquitto_style_version_present(self):
        """Either layout publishes a non-empty version."""
        s = self.client()
        s.subscribe([("$SYS/broker/version", 0), ("$SYS/brokers/+/version", 0)])
        self.assertTrue(s.wait_messages(1, timeout=15)[0].payload)

    @skip_mosquitto("no per-client connected/disconnected $SYS events")
    def test_client_connected_disconnected_events(self):
        s = self.client()
        s.subscribe("$SYS/brokers/%s/clients/+/connected" % NODE, 1)
        s.subscribe("$SYS/brokers/%s/clients/+/disconnected" % NODE, 1)
        cid = uid("ev")
        c = self.client(client_id=cid, version=MQTTv5)
        con = s.wait_messages(1, topic="$SYS/brokers/%s/clients/%s/connected" % (NODE, cid))[0]
        ev = json.loads(con.payload)
        self.assertEqual(ev.get("clientid"), cid)
        c.disconnect()
        dis = s.wait_messages(1, topic="$SYS/brokers/%s/clients/%s/disconnected" % (NODE, cid))[0]
        ev = json.loads(dis.payload)
        self.assertEqual(ev.get("clientid"), cid)

    def test_sys_not_retained_to_plain_hash_after_reconnect(self):
        """Retained $SYS messages are not sent for a '#' subscription."""
        s = self.client()
        s.subscribe("#", 0)
        p = self.client()
        got = self.sync(s, p, "sysr/" + uid())
        self.assertEqual([m.topic for m in got if m.topic.startswith("$")], [])


if __name__ == "__main__":
    unittest.main()
