#!/usr/bin/env python3
"""Persistence benchmark (BENCH.md, "persistence"):

1. S2 (fan-in QoS 1, 100 publishers, window 64) with persistent subscriber
   sessions (mqb-bench --sub-session: clean session 0), ours with
   persistence.sync = always and = batch, mosquitto with persistence true;
   and both brokers' plain S2 (clean sessions, no persistence) as the base.
   Broker on CPU 0 (one loop thread), load on CPU 1, as bench.py.
2. A million stored messages: an offline session is sent 1,000,000 QoS 1
   messages; the broker's RSS then; the time a restart takes until it accepts
   connections again, after a clean stop and after SIGKILL; and the session
   gets all of them back in order. Same for mosquitto (clean stop only: it
   saves its database at exit, so after SIGKILL it has nothing to restart
   with).

Usage: tests/bench/run-persistence.sh [--quick]"""
import argparse
import datetime
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402
from bench import Broker, free_port, log, run_tool, scenario_args, summarize, figure, vmrss  # noqa: E402


def s2(kind, persist, cfg):
    c = dict(cfg, persist=persist)
    b = Broker(kind, c, cfg['workdir'], free_port())
    b.start()
    args = scenario_args('S2', cfg) + (['--sub-session', 3600] if persist else [])
    timeout = float(cfg['window']) + float(cfg['warmup']) + float(cfg['drain_qos1']) + 120
    try:
        res = run_tool(cfg, args, b.port, timeout)
    finally:
        crashed = b.stop()
    if crashed is not None:
        res = {'ok': False, 'error': 'broker exited with %s' % crashed}
    return res


# ---- a million stored messages ----

# A few MQTT 3.1.1 packets by hand (tests/integration/mqtt_util.py needs
# paho, which the benchmark does not).
def mstr(s):
    b = s.encode()
    return struct.pack('>H', len(b)) + b


def packet(t, flags, body):
    n, v = len(body), b''
    while True:
        d = n % 128
        n //= 128
        v += bytes([d | (128 if n else 0)])
        if not n:
            break
    return bytes([(t << 4) | flags]) + v + body


def read_packet(s, buf):
    while True:
        if len(buf) >= 2:
            n, mult, i = 0, 1, 1
            ok = False
            while i < len(buf):
                n += (buf[i] & 127) * mult
                mult *= 128
                i += 1
                if not buf[i - 1] & 128:
                    ok = True
                    break
            if ok and len(buf) >= i + n:
                return buf[0], buf[i:i + n], buf[i + n:]
        d = s.recv(1 << 20)
        if not d:
            raise ConnectionError('closed')
        buf += d


def holder_connect(port, subscribe):
    """The holder session: clean session 0, QoS 1 on fill/#."""
    s = socket.create_connection(('127.0.0.1', port), timeout=30)
    s.sendall(packet(1, 0, mstr('MQTT') + bytes([4, 0, 0, 0]) + mstr('holder')))
    h, body, rest = read_packet(s, b'')
    assert h >> 4 == 2 and body[1] == 0, body
    if subscribe:
        s.sendall(packet(8, 2, struct.pack('>H', 1) + mstr('fill/#') + b'\x01'))
        h, body, rest = read_packet(s, rest)
        assert h >> 4 == 9, h
    return s, rest


def drain(s, buf, want, timeout):
    """Receives (and acknowledges) until `want` messages came; returns
    (count, seconds, in_order)."""
    t0 = time.time()
    got, last, ordered = 0, {}, True
    s.settimeout(timeout)
    acks = []
    while got < want and time.time() - t0 < timeout:
        h, body, buf = read_packet(s, buf)
        if h >> 4 != 3:
            continue
        tl = struct.unpack('>H', body[:2])[0]
        topic = body[2:2 + tl]
        pid = body[2 + tl:4 + tl]
        seq = struct.unpack('<I', body[4 + tl + 8:4 + tl + 12])[0]  # mqb-bench: time, seq
        if topic in last and seq <= last[topic]:
            ordered = False
        last[topic] = seq
        got += 1
        acks.append(packet(4, 0, pid))
        if len(acks) >= 64:
            s.sendall(b''.join(acks))
            acks = []
    if acks:
        s.sendall(b''.join(acks))
    return got, time.time() - t0, ordered


def start_proc(cmd, logpath, port, timeout=120):
    """Starts a broker; returns (process, seconds until it accepted a TCP connection)."""
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=open(logpath, 'a'), stderr=subprocess.STDOUT)
    while time.time() - t0 < timeout:
        if p.poll() is not None:
            raise RuntimeError('broker exited at start, see %s' % logpath)
        try:
            socket.create_connection(('127.0.0.1', port), timeout=0.2).close()
            return p, time.time() - t0
        except OSError:
            time.sleep(0.005)
    raise RuntimeError('broker did not start within %ds' % timeout)


def fill(cfg, port, n):
    """Publishes n QoS 1 messages to fill/<i> with mqb-bench (closed loop)."""
    sent, run = 0, 0
    while sent < n:
        run += 1
        rate = min(200000, n - sent)
        res = run_tool(cfg, ['pub', '-c', 10, '-q', 1, '-t', 'fill/%d/%%i' % run, '--total-rate', rate,
                             '-d', 1, '--warmup', 0, '--drain', 60], port, 180)
        if not res.get('ok'):
            raise RuntimeError('fill failed: %s' % res.get('error'))
        sent += res['acked']
    return sent


def million(kind, cfg, n):
    d = tempfile.mkdtemp(prefix='mqb-1m-%s-' % kind, dir=cfg['workdir'])
    os.chmod(d, 0o777)
    port = free_port()
    logpath = os.path.join(d, 'broker.log')
    conf = os.path.join(d, 'broker.conf')
    with open(conf, 'w') as f:
        if kind == 'ours':
            f.write('listener.tcp.default = 127.0.0.1:%d\nallow_anonymous = true\n'
                    'node.loop_threads = 1\nmqtt.max_mqueue_len = 0\nmqtt.max_inflight = 64\n'
                    'persistence.enable = true\npersistence.path = %s/broker.db\n'
                    'persistence.sync = %s\npersistence.max_bytes = 0\nsys.interval = 0\n'
                    'log.level = notice\n' % (port, d, cfg['fill_sync']))
            cmd = [cfg['broker_cli'], '-c', conf]
        else:
            f.write('listener %d 127.0.0.1\nallow_anonymous true\npersistence true\n'
                    'persistence_location %s/\nmax_queued_messages 0\nmax_inflight_messages 64\n'
                    'set_tcp_nodelay true\n' % (port, d))
            cmd = [cfg['mosquitto'], '-c', conf]
    os.chmod(conf, 0o644)
    r = {'messages': n}
    p, _ = start_proc(cmd, logpath, port)
    s, _ = holder_connect(port, True)
    s.close()
    time.sleep(0.5)
    t0 = time.time()
    r['stored'] = fill(cfg, port, n)
    r['fill_s'] = round(time.time() - t0, 1)
    time.sleep(1.0)
    r['rss_with_queue'] = vmrss(p.pid)  # bytes
    t0 = time.time()
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=600)
    r['stop_s'] = round(time.time() - t0, 2)
    r['db_bytes'] = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d)
                        if f.startswith(('broker.db', 'mosquitto.db')))
    p, r['restart_s'] = start_proc(cmd, logpath, port, timeout=600)
    time.sleep(0.5)
    r['rss_after_restart'] = vmrss(p.pid)
    if kind == 'ours':
        # A crash instead of a stop: the write-ahead log is replayed.
        p.kill()
        p.wait()
        p, r['restart_after_sigkill_s'] = start_proc(cmd, logpath, port, timeout=600)
    s, buf = holder_connect(port, False)
    got, secs, ordered = drain(s, buf, n, 600)
    r['received'] = got
    r['drain_s'] = round(secs, 1)
    r['in_order'] = ordered
    r['rss_after_drain'] = vmrss(p.pid)
    s.close()
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=600)
    with open(logpath) as f:
        r['log_tail'] = f.read()[-600:]
    shutil.rmtree(d, ignore_errors=True)
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--quick', action='store_true')
    ap.add_argument('--reps', type=int, default=None)
    ap.add_argument('--messages', type=int, default=None)
    ap.add_argument('--skip-s2', action='store_true')
    ap.add_argument('--skip-million', action='store_true')
    ap.add_argument('--build', default=os.environ.get('MQB_BUILD', os.path.join(bench.ROOT, 'build')))
    ap.add_argument('--mosquitto', default=shutil.which('mosquitto') or '/usr/sbin/mosquitto')
    ap.add_argument('--out', default=os.path.join(HERE, 'results'))
    a = ap.parse_args()
    q = a.quick
    reps = a.reps or (1 if q else 3)
    n = a.messages or (100000 if q else 1000000)
    workdir = tempfile.mkdtemp(prefix='mqb-bench-persist-')
    os.chmod(workdir, 0o755)
    cfg = {
        'broker_cli': os.path.join(a.build, 'broker-cli', 'broker-cli'),
        'tool': os.path.join(a.build, 'tools', 'mqb-bench', 'mqb-bench'),
        'mosquitto': a.mosquitto, 'quick': q, 'pinned': True, 'loop_threads': 1,
        'tool_threads': 1, 'broker_cpu': '0', 'tool_cpu': '1', 'workdir': workdir,
        'window': '3' if q else '10', 'warmup': '0.5' if q else '1', 'drain': '3',
        'drain_qos1': '30', 'fill_sync': 'always',
    }
    report = {'date': datetime.datetime.utcnow().strftime('%Y-%m-%dT%H:%M:%SZ'), 'quick': q,
              's2': {}, 'million': {}}
    t0 = time.time()
    plan = [('ours', None), ('mosquitto', None), ('ours', 'always'), ('ours', 'batch'),
            ('mosquitto', 'true')]
    if not a.skip_s2:
        runs = {k: [] for k in plan}
        for rep in range(reps):
            for kind, persist in plan:
                log('-- S2 %s persistence %s, rep %d/%d' % (kind, persist, rep + 1, reps))
                r = s2(kind, persist, cfg)
                log('   %s' % ({k: r.get(k) for k in ('ok', 'rate_out', 'lost', 'duplicated',
                                                     'tool_cpu_pct', 'error')}))
                runs[(kind, persist)].append(summarize(r))
        report['s2'] = {'%s/%s' % (k[0], k[1] or 'off'): {'runs': v, 'figure': figure('S2', {'runs': v})}
                        for k, v in runs.items()}
    if not a.skip_million:
        for kind in ('ours', 'mosquitto'):
            log('-- %d stored messages: %s' % (n, kind))
            report['million'][kind] = million(kind, cfg, n)
            log('   %s' % {k: v for k, v in report['million'][kind].items() if k != 'log_tail'})
    report['elapsed_s'] = round(time.time() - t0, 1)

    lines = ['# Persistence (%s%s)' % (report['date'], ', quick' if q else ''), '']
    if report['s2']:
        base = (report['s2'].get('mosquitto/off', {}).get('figure') or {}).get('median')
        lines += ['S2 (fan-in QoS 1, 100 publishers, window 64); broker on CPU 0 (1 loop '
                  'thread), mqb-bench on CPU 1; median (range) of %d runs.' % reps, '',
                  '| broker / persistence | subscriber session | msg/s | vs mosquitto S2 without persistence | lost/dup | tool cpu |',
                  '|---|---|---|---|---|---|']
        for key, sc in report['s2'].items():
            f = sc['figure'] or {}
            med = f.get('median')
            ld = ' '.join('%s/%s' % (r.get('lost'), r.get('duplicated')) for r in sc['runs'])
            cpu = max([r.get('tool_cpu_pct') or 0 for r in sc['runs']] or [0])
            lines.append('| %s | %s | %s | %s | %s | %.0f%% |' % (
                key, 'clean' if key.endswith('/off') else 'persistent',
                '%.0f (%.0f..%.0f)' % (med, f['min'], f['max']) if med else 'n/a',
                '%.2fx' % (med / base) if med and base else 'n/a', ld, cpu))
        lines.append('')
    if report['million']:
        lines += ['%d QoS 1 messages queued for one offline session (64-byte payloads).' % n, '',
                  '| broker | fill s | RSS with the queue | stop s | database | restart s | '
                  'restart after SIGKILL s | RSS after restart | received back, in order | drain s |',
                  '|---|---|---|---|---|---|---|---|---|---|']
        for kind, r in report['million'].items():
            lines.append('| %s | %s | %.1f MB | %s | %.0f MB | %.2f | %s | %.1f MB | %d, %s | %s |' % (
                kind, r['fill_s'], r['rss_with_queue'] / 1e6, r['stop_s'],
                r['db_bytes'] / 1e6, r['restart_s'],
                '%.2f' % r['restart_after_sigkill_s'] if 'restart_after_sigkill_s' in r else 'n/a',
                r['rss_after_restart'] / 1e6, r['received'],
                'yes' if r['in_order'] else 'NO', r['drain_s']))
        lines.append('')
    lines.append('Elapsed: %.0f s' % report['elapsed_s'])
    md = '\n'.join(lines) + '\n'
    bench.save_report(a.out, 'persistence', report, md, q)
    print(md)
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
    main()
