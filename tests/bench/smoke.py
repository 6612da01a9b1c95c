#!/usr/bin/env python3
"""Smoke test of mqb-bench: starts broker-cli on an ephemeral port and runs each
mode for about 2 s; asserts zero loss, zero duplicates and sane JSON."""
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'integration'))
import tls_certs  # noqa: E402

tool, broker = sys.argv[1], sys.argv[2]
failures = []


def start_broker():
    """The broker with a listener of every type; returns (process, {type: port})."""
    d = tempfile.mkdtemp(prefix='mqb-smoke-')
    certs = tls_certs.Certs(d)
    conf = os.path.join(d, 'b.conf')
    with open(conf, 'w') as f:
        f.write('listener.tcp.default = 127.0.0.1:0\nallow_anonymous = true\nnode.loop_threads = 1\n'
                'persistence.enable = false\n'
                'mqtt.max_inflight = 65535\nmqtt.max_mqueue_len = 0\nmqtt.max_awaiting_rel = 0\n'
                'sys.interval = 0\n')
        for t in ('ssl', 'ws', 'wss'):
            f.write('listener.%s.smoke = 127.0.0.1:0\n' % t)
            if t != 'ws':
                f.write('listener.%s.smoke.certfile = %s\nlistener.%s.smoke.keyfile = %s\n'
                        % (t, certs.server_cert, t, certs.server_key))
    logp = os.path.join(d, 'broker.log')
    # port 0 = ephemeral; the broker logs the address it listens on
    p = subprocess.Popen([broker, '-c', conf, '-l', 'notice'], stdout=open(logp, 'w'),
                         stderr=subprocess.STDOUT)
    deadline = time.time() + 10
    while time.time() < deadline:
        ports = {}
        with open(logp) as f:
            for line in f:
                if 'listening on 127.0.0.1:' in line:
                    port = int(line.split('listening on 127.0.0.1:')[1].split()[0])
                    ports[line.split('(listener.')[1].split('.')[0]] = port
        if len(ports) == 4:
            return p, ports
        if p.poll() is not None:
            break
        time.sleep(0.05)
    p.kill()
    sys.exit('broker did not start: ' + open(logp).read())


def run(name, args, port, check):
    cmd = [tool, '-p', str(port), '--json', '--quiet', '-d', '2', '--warmup', '0.3',
           '--drain', '5'] + args
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    dt = time.time() - t0
    try:
        res = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        failures.append('%s: no JSON (exit %d): %s %s' % (name, r.returncode, r.stdout, r.stderr))
        return
    errs = []
    if r.returncode != 0 or not res.get('ok'):
        errs.append('exit %d ok=%s error=%r' % (r.returncode, res.get('ok'), res.get('error')))
    for k in ('sent', 'received', 'lost', 'duplicated', 'out_of_order', 'rate_in', 'rate_out',
              'latency_us', 'tool_cpu', 'connections'):
        if k not in res:
            errs.append('missing key ' + k)
    errs += check(res)
    if dt > 30:
        errs.append('took %.1f s' % dt)
    print('%-28s sent %-9s recv %-9s lost %s dup %s ooo %s p99 %s us  %s' % (
        name, res.get('sent'), res.get('received'), res.get('lost'), res.get('duplicated'),
        res.get('out_of_order'), res.get('latency_us', {}).get('p99'), 'OK' if not errs else 'FAIL'))
    for e in errs:
        failures.append('%s: %s' % (name, e))


def exact(res):
    e = []
    if res.get('lost') != 0 or res.get('duplicated') != 0 or res.get('extra') != 0:
        e.append('lost %s dup %s extra %s' % (res.get('lost'), res.get('duplicated'), res.get('extra')))
    if res.get('out_of_order') != 0:
        e.append('out of order %s' % res.get('out_of_order'))
    if not res.get('sent') or res.get('received') != res.get('expected'):
        e.append('sent %s received %s expected %s' % (res.get('sent'), res.get('received'), res.get('expected')))
    lat = res.get('latency_us', {})
    if not (0 < lat.get('p50', 0) <= lat.get('p99', 0) <= lat.get('p999', 0) <= lat.get('max', 0)):
        e.append('latency percentiles not ordered: %s' % lat)
    return e


def conn_ok(n):
    def f(res):
        c = res.get('connections', {})
        return [] if c.get('ok') == n and c.get('failed') == 0 else ['connections %s' % c]
    return f


p, ports = start_broker()
port = ports['tcp']
try:
    run('conn 200', ['conn', '-c', '200', '-R', '2000'], port, conn_ok(200))
    run('fan-in q0 open loop', ['--scenario', 'fan-in', '-c', '10', '-r', '500'], port, exact)
    run('fan-in q1 closed loop', ['--scenario', 'fan-in', '-c', '10', '-q', '1', '--inflight', '16'], port, exact)
    run('fan-in q2 v5 2 threads', ['--scenario', 'fan-in', '-c', '4', '-q', '2', '-V', '5', '--threads', '2',
                                   '--inflight', '8'], port, exact)
    run('fan-out q0 50 subs', ['--scenario', 'fan-out', '-c', '1', '-n', '50', '-r', '200'], port, exact)
    run('p2p q1 50 pairs', ['--scenario', 'p2p', '-c', '50', '-q', '1', '-r', '200'], port, exact)
    run('shared q1 4 members', ['--scenario', 'shared', '-c', '10', '-n', '4', '-q', '1', '-r', '200'], port,
        exact)
    run('spread q0 100 subs', ['--scenario', 'spread', '-c', '5', '-n', '100', '--total-rate', '1000'], port,
        exact)
    # the same over every transport (TLS handshakes and WebSocket upgrades first)
    for tr, lt in (('tls', 'ssl'), ('ws', 'ws'), ('wss', 'wss')):
        run('p2p q1 20 pairs over ' + tr, ['--scenario', 'p2p', '-c', '20', '-q', '1', '-r', '200',
                                           '--transport', tr], ports[lt], exact)
        run('fan-in q1 closed loop over ' + tr, ['--scenario', 'fan-in', '-c', '10', '-q', '1',
                                                 '--inflight', '16', '--transport', tr], ports[lt],
            exact)
    # the tool must refuse non-loopback targets
    r = subprocess.run([tool, 'conn', '-H', '192.0.2.1', '-d', '1'], capture_output=True, text=True, timeout=10)
    if r.returncode == 0 or 'loopback' not in r.stderr:
        failures.append('non-loopback target accepted: %d %s' % (r.returncode, r.stderr))
    # a connect failure is an error exit
    r = subprocess.run([tool, 'conn', '-p', '1', '-d', '1', '--json', '--quiet'], capture_output=True,
                       text=True, timeout=30)
    if r.returncode == 0:
        failures.append('connect failure did not give a nonzero exit')
finally:
    p.terminate()
    p.wait(timeout=10)
if p.returncode not in (0, -15):
    failures.append('broker exit code %s' % p.returncode)
if failures:
    print('\n'.join(['FAIL: ' + f for f in failures]))
    sys.exit(1)
print('bench smoke: all OK')
