#!/usr/bin/env python3
"""Scale figures of the performance issue, ours and mosquitto in the same run:
1,000,000 subscriptions, 1,000,000 retained messages with wildcard subscribes,
and the connect rate. Broker pinned to CPU 0, load on CPU 1, a fresh broker per
item. Called by tests/bench/run-scale.sh; see tests/bench/README.md."""
import argparse
import datetime
import json
import os
import socket
import struct
import sys
import tempfile
import time

import bench
from bench import Broker, log, run_tool, vmrss


def mstr(s):
    b = s.encode()
    return struct.pack('!H', len(b)) + b


def varint(n):
    out = bytearray()
    while True:
        d, n = n & 0x7F, n >> 7
        out.append(d | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(first, body):
    return bytes([first]) + varint(len(body)) + body


class Conn:
    """A blocking MQTT 3.1.1 connection for set-up and for counting bytes."""

    def __init__(self, port, cid):
        self.s = socket.create_connection(('127.0.0.1', port), timeout=120)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.s.sendall(packet(0x10, mstr('MQTT') + bytes([4, 2]) + struct.pack('!H', 300) +
                              mstr(cid)))
        ack = self.recv_exact(4)
        if ack[0] != 0x20 or ack[3] != 0:
            raise RuntimeError('CONNACK refused: %r' % ack)

    def recv_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            d = self.s.recv(min(1 << 20, n - len(buf)))
            if not d:
                raise RuntimeError('connection closed by the broker')
            buf += d
        return bytes(buf)

    def sync(self):
        """PINGREQ/PINGRESP: everything sent before was processed."""
        self.s.sendall(b'\xc0\x00')
        if self.recv_exact(2) != b'\xd0\x00':
            raise RuntimeError('expected PINGRESP')

    def close(self):
        self.s.close()


def settle_rss(b):
    time.sleep(1.0)
    return b.rss()


# ---- 1,000,000 subscriptions ------------------------------------------------

def item_subscriptions(kind, cfg, pairs, extra):
    """S4 (p2p QoS 1, window 64) with every subscriber holding `extra` more
    subscriptions, against the same run without them."""
    out = {}
    for label, k in (('plain', 0), ('ballast', extra)):
        port = bench.free_port()
        b = Broker(kind, cfg, cfg['workdir'], port)
        b.start()
        rss = {}
        try:
            before = b.rss()

            def hook():
                time.sleep(1.0)
                rss['after_setup'] = b.rss()
                return {}
            args = ['-V', '4', '-s', '64', '-k', '300', '-d', cfg['window'], '--warmup', '1',
                    '--drain', '30', '--scenario', 'p2p', '-c', pairs, '-q', 1, '--inflight', 64,
                    '-R', 5000, '--extra-subs', k, '--setup-timeout', 600]
            r = run_tool(cfg, args, port, float(cfg['window']) + 700, ready_hook=hook)
        finally:
            crashed = b.stop()
        if crashed is not None:
            r = {'ok': False, 'error': 'broker exited with code %s' % crashed}
        out[label] = {
            'subscriptions': pairs * (k + 1), 'rate_out': r.get('rate_out'),
            'lost': r.get('lost'), 'duplicated': r.get('duplicated'),
            'setup_s': r.get('setup_s'),
            'rss_growth': (rss.get('after_setup') or 0) - before, 'error': r.get('error')}
        log('  %s %s: %s' % (kind, label, out[label]))
    p, bl = out['plain'], out['ballast']
    n_extra = pairs * extra
    out['bytes_per_subscription'] = ((bl['rss_growth'] - p['rss_growth']) / n_extra
                                     if n_extra else None)
    out['throughput_ratio'] = (bl['rate_out'] / p['rate_out']
                               if bl['rate_out'] and p['rate_out'] else None)
    return out


# ---- 1,000,000 retained messages -------------------------------------------

def retained_topics(n):
    """r/<a>/<b>, 1000 b per a."""
    return ['r/%d/%d' % (i // 1000, i % 1000) for i in range(n)]


def publish_size(topic, payload_len):
    body = 2 + len(topic.encode()) + payload_len
    return 1 + len(varint(body)) + body


def wildcard_time(port, filt, expected_bytes):
    """Seconds from SUBSCRIBE to the last byte of the retained messages."""
    c = Conn(port, 'scale-w-%d' % os.getpid())
    try:
        sub = packet(0x82, struct.pack('!H', 1) + mstr(filt) + b'\x00')
        t0 = time.time()
        c.s.sendall(sub)
        got = 0
        need = 5 + expected_bytes  # SUBACK, then the messages
        while got < need:
            d = c.s.recv(1 << 20)
            if not d:
                raise RuntimeError('closed while receiving retained messages')
            got += len(d)
        return time.time() - t0
    finally:
        c.close()


def item_retained(kind, cfg, n):
    port = bench.free_port()
    b = Broker(kind, cfg, cfg['workdir'], port)
    b.start()
    res = {'retained': n}
    try:
        before = settle_rss(b)
        topics = retained_topics(n)
        payload = b'r' * 64
        pub = Conn(port, 'scale-p-%d' % os.getpid())
        t0 = time.time()
        chunk = []
        for t in topics:
            chunk.append(packet(0x31, mstr(t) + payload))
            if len(chunk) == 10000:
                pub.s.sendall(b''.join(chunk))
                chunk = []
        if chunk:
            pub.s.sendall(b''.join(chunk))
        pub.sync()
        res['store_s'] = time.time() - t0
        res['bytes_per_retained'] = (settle_rss(b) - before) / n
        sizes = {t: publish_size(t, 64) for t in topics}
        cases = [('r/#', topics), ('r/7/+', [t for t in topics if t.startswith('r/7/')]),
                 ('r/+/7', [t for t in topics if t.endswith('/7')]),
                 ('r/+/+', topics), ('r/999/999', ['r/999/999'] if n >= 1000000 else [])]
        res['wildcard'] = {}
        for filt, match in cases:
            if not match:
                continue
            sec = wildcard_time(port, filt, sum(sizes[t] for t in match))
            res['wildcard'][filt] = {'messages': len(match), 'seconds': round(sec, 4)}
            log('  %s %s: %d retained in %.3f s' % (kind, filt, len(match), sec))
        pub.close()
    finally:
        crashed = b.stop()
    if crashed is not None:
        res['error'] = 'broker exited with code %s' % crashed
    log('  %s retained: %s' % (kind, res))
    return res


# ---- connect rate -------------------------------------------------------------

def item_connect(kind, cfg, n, rate):
    port = bench.free_port()
    b = Broker(kind, cfg, cfg['workdir'], port)
    b.start()
    try:
        r = run_tool(cfg, ['conn', '-c', n, '-R', rate, '-d', 1, '-k', 300], port, 120)
    finally:
        crashed = b.stop()
    c = r.get('connections', {})
    setup = r.get('setup_s')
    res = {'connections': n, 'offered_rate': rate, 'ok': c.get('ok'), 'failed': c.get('failed'),
           'setup_s': setup, 'rate': (c.get('ok') or 0) / setup if setup else None,
           'connack_us': c.get('connack_us'), 'error': r.get('error')}
    if crashed is not None:
        res['error'] = 'broker exited with code %s' % crashed
    log('  %s connect: %s' % (kind, res))
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--broker', choices=['ours', 'mosquitto', 'both'], default='both')
    ap.add_argument('--only', default='subs,retained,connect')
    ap.add_argument('--pairs', type=int, default=1000)
    ap.add_argument('--extra-subs', type=int, default=999,
                    help='ballast subscriptions per subscriber (1000 x 1000 = 1M in all)')
    ap.add_argument('--retained', type=int, default=1000000)
    ap.add_argument('--connections', type=int, default=10000)
    ap.add_argument('--connect-rate', type=int, default=50000)
    ap.add_argument('--window', default='5')
    ap.add_argument('--build', default=os.environ.get('MQB_BUILD', os.path.join(bench.ROOT, 'build')))
    ap.add_argument('--mosquitto', default='/usr/sbin/mosquitto')
    ap.add_argument('--out', default=os.path.join(bench.HERE, 'results'))
    a = ap.parse_args()
    bench.raise_nofile()
    cfg = {'broker_cli': os.path.join(a.build, 'broker-cli', 'broker-cli'),
           'tool': os.path.join(a.build, 'tools', 'mqb-bench', 'mqb-bench'),
           'mosquitto': a.mosquitto, 'pinned': True, 'loop_threads': 1, 'tool_threads': 1,
           'broker_cpu': '0', 'tool_cpu': '1', 'window': a.window,
           'workdir': tempfile.mkdtemp(prefix='mqb-scale-')}
    os.chmod(cfg['workdir'], 0o755)
    # The script itself (set-up traffic, counting bytes) runs beside the tool.
    os.sched_setaffinity(0, {1})
    kinds = ['ours', 'mosquitto'] if a.broker == 'both' else [a.broker]
    only = a.only.split(',')
    report = {'date': datetime.datetime.utcnow().strftime('%Y-%m-%dT%H:%M:%SZ'), 'items': {}}
    for item in only:
        report['items'][item] = {}
        for kind in kinds:
            log('-- %s (%s)' % (item, kind))
            if item == 'subs':
                r = item_subscriptions(kind, cfg, a.pairs, a.extra_subs)
            elif item == 'retained':
                r = item_retained(kind, cfg, a.retained)
            elif item == 'connect':
                r = item_connect(kind, cfg, a.connections, a.connect_rate)
            else:
                sys.exit('unknown item %s' % item)
            report['items'][item][kind] = r
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, 'scale-%s.json' % datetime.datetime.utcnow().strftime('%Y%m%dT%H%M%SZ'))
    with open(path, 'w') as f:
        json.dump(report, f, indent=1)
    print(json.dumps(report, indent=1))
    print('written: %s' % path)


if __name__ == '__main__':
    main()
