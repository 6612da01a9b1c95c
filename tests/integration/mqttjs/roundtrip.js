// MQTT.js over ws:// and wss://: every protocol version subscribes on one
// URL and publishes on another; each client must receive every message.
// Usage: node roundtrip.js WS_URL WSS_URL CA_FILE TOPIC_PREFIX
'use strict';
const fs = require('fs');
const mqtt = require('mqtt');

const [wsUrl, wssUrl, caFile, prefix] = process.argv.slice(2);
const ca = fs.readFileSync(caFile);
const versions = [3, 4, 5];
const deadline = setTimeout(() => fail('timed out'), 20000);

function fail(why) {
  console.error('FAIL: ' + why);
  process.exit(1);
}

function connect(url, version, id) {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(url, {
      protocolVersion: version, protocolId: version === 3 ? 'MQIsdp' : 'MQTT',
      clientId: id, ca, reconnectPeriod: 0,
      rejectUnauthorized: true, servername: 'localhost',
    });
    c.once('connect', () => resolve(c));
    c.once('error', reject);
  });
}

(async () => {
  const topic = prefix + '/roundtrip';
  const clients = [];
  for (const v of versions) {
    for (const [name, url] of [['ws', wsUrl], ['wss', wssUrl]]) {
      const c = await connect(url, v, `js${name}${v}-${process.pid}`);  // 3.1: <= 23 chars
      c.label = `${name}/v${v}`;
      c.got = [];
      c.on('message', (t, payload) => c.got.push(payload.toString()));
      await c.subscribeAsync(topic, { qos: 1 });
      clients.push(c);
    }
  }
  // A large message too: many WebSocket frames on the way out.
  const big = 'x'.repeat(200000);
  for (const c of clients)
    await c.publishAsync(topic, 'from ' + c.label, { qos: 1 });
  await clients[0].publishAsync(topic, big, { qos: 1 });
  const want = clients.map((c) => 'from ' + c.label).concat([big]).sort();
  const start = Date.now();
  while (clients.some((c) => c.got.length < want.length) && Date.now() - start < 10000)
    await new Promise((r) => setTimeout(r, 20));
  for (const c of clients) {
    const got = c.got.slice().sort();
    if (JSON.stringify(got) !== JSON.stringify(want))
      fail(`${c.label} received ${got.length} of ${want.length}`);
  }
  await Promise.all(clients.map((c) => c.endAsync()));
  clearTimeout(deadline);
  console.log(`OK ${clients.length} clients, ${want.length} messages each`);
})().catch((e) => fail(e && e.stack || e));
