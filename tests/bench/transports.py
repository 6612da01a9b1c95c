#!/usr/bin/env python3
"""Transport benchmark (BENCH.md, "other transports"): S2 and S4 over TCP, TLS,
WebSocket and WebSocket over TLS for our broker, over TCP and TLS for
mosquitto (its WebSocket listener does not start on these machines), and TLS
handshakes per second, full and resumed, for both. Broker pinned to CPU 0,
load on CPU 1, as bench.py. Usage: tests/bench/run-transports.sh [--quick]"""
import argparse
import datetime
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, '..', 'integration'))
import bench  # noqa: E402
import tls_certs  # noqa: E402
from bench import Broker, free_port, log, run_tool, scenario_args, summarize, figure  # noqa: E402


def listeners(kind, transport, port, certs):
    """Config lines for a listener of `transport` on `port`."""
    if transport == 'tcp':
        return []
    if kind == 'ours':
        lines = ['listener.%s.bench = 127.0.0.1:%d' % ({'tls': 'ssl'}.get(transport, transport), port)]
        if transport in ('tls', 'wss'):
            t = {'tls': 'ssl'}.get(transport, transport)
            lines += ['listener.%s.bench.certfile = %s' % (t, certs.server_cert),
                      'listener.%s.bench.keyfile = %s' % (t, certs.server_key)]
        return lines
    lines = ['listener %d 127.0.0.1' % port]
    if transport in ('ws', 'wss'):
        lines.append('protocol websockets')
    if transport in ('tls', 'wss'):
        lines += ['certfile %s' % certs.server_cert, 'keyfile %s' % certs.server_key]
    return lines


def throughput(kind, transport, sid, cfg, certs):
    port = free_port()
    c = dict(cfg, **{'extra_' + kind: listeners(kind, transport, port, certs)})
    b = Broker(kind, c, cfg['workdir'], free_port())
    b.start()
    if transport != 'tcp':
        time.sleep(0.3)
    args = scenario_args(sid, cfg) + ['--transport', transport, '--setup-timeout', 120]
    timeout = float(cfg['window']) + float(cfg['warmup']) + float(cfg['drain_qos1']) + 180
    try:
        res = run_tool(cfg, args, port if transport != 'tcp' else b.port, timeout)
    finally:
        crashed = b.stop()
    if crashed is not None:
        res = {'ok': False, 'error': 'broker exited with %s' % crashed}
    return res


def handshakes(kind, mode, cfg, certs, clients=4, seconds=5):
    """openssl s_time clients on CPU 1 against a TLS listener: handshakes/s."""
    port = free_port()
    c = dict(cfg, **{'extra_' + kind: listeners(kind, 'tls', port, certs)})
    b = Broker(kind, c, cfg['workdir'], free_port())
    b.start()
    time.sleep(0.3)
    procs = []
    try:
        for _ in range(clients):
            procs.append(subprocess.Popen(
                ['taskset', '-c', cfg['tool_cpu'], 'openssl', 's_time', '-connect',
                 '127.0.0.1:%d' % port, mode, '-time', str(seconds)],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        total, real = 0, 0.0
        for p in procs:
            out, _ = p.communicate(timeout=seconds + 30)
            m = re.search(r'(\d+) connections in (\d+) real seconds', out)
            if m:
                total += int(m.group(1))
                real = max(real, float(m.group(2)))
    finally:
        b.stop()
    return {'handshakes': total, 'seconds': real, 'rate': total / real if real else None}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--quick', action='store_true')
    ap.add_argument('--reps', type=int, default=None)
    ap.add_argument('--build', default=os.environ.get('MQB_BUILD', os.path.join(bench.ROOT, 'build')))
    ap.add_argument('--mosquitto', default=shutil.which('mosquitto') or '/usr/sbin/mosquitto')
    ap.add_argument('--out', default=os.path.join(HERE, 'results'))
    a = ap.parse_args()
    q = a.quick
    reps = a.reps or (1 if q else 3)
    workdir = tempfile.mkdtemp(prefix='mqb-bench-tr-')
    os.chmod(workdir, 0o755)
    os.makedirs(os.path.join(workdir, 'certs'))
    certs = tls_certs.Certs(os.path.join(workdir, 'certs'))
    os.chmod(certs.dir, 0o755)
    for f in os.listdir(certs.dir):
        os.chmod(os.path.join(certs.dir, f), 0o644)  # mosquitto reads them as its own user
    cfg = {
        'broker_cli': os.path.join(a.build, 'broker-cli', 'broker-cli'),
        'tool': os.path.join(a.build, 'tools', 'mqb-bench', 'mqb-bench'),
        'mosquitto': a.mosquitto, 'quick': q, 'pinned': True, 'loop_threads': 1,
        'tool_threads': 1, 'broker_cpu': '0', 'tool_cpu': '1', 'workdir': workdir,
        'window': '3' if q else '10', 'warmup': '0.5' if q else '1', 'drain': '3',
        'drain_qos1': '30',
    }
    report = {'date': datetime.datetime.utcnow().strftime('%Y-%m-%dT%H:%M:%SZ'), 'quick': q,
              'throughput': {}, 'handshakes': {}}
    t0 = time.time()
    plan = [('ours', t) for t in ('tcp', 'tls', 'ws', 'wss')] + \
           [('mosquitto', t) for t in ('tcp', 'tls')]
    for sid in ('S2', 'S4'):
        runs = {k: [] for k in plan}
        for rep in range(reps):  # alternate, so background drift hits all alike
            for kind, tr in plan:
                log('-- %s %s over %s, rep %d/%d' % (sid, kind, tr, rep + 1, reps))
                r = throughput(kind, tr, sid, cfg, certs)
                log('   %s' % ({k: r.get(k) for k in ('ok', 'rate_out', 'lost', 'duplicated',
                                                     'tool_cpu_pct', 'error')}))
                runs[(kind, tr)].append(summarize(r))
        report['throughput'][sid] = {'%s/%s' % k: {'runs': v, 'figure': figure(sid, {'runs': v})}
                                     for k, v in runs.items()}
    for kind in ('ours', 'mosquitto'):
        for mode in ('-new', '-reuse'):
            log('-- handshakes %s %s' % (kind, mode))
            report['handshakes']['%s %s' % (kind, mode)] = handshakes(kind, mode, cfg, certs)
    report['elapsed_s'] = round(time.time() - t0, 1)

    lines = ['# Transports (%s%s)' % (report['date'], ', quick' if q else ''), '',
             'Broker on CPU 0 (1 loop thread), mqb-bench on CPU 1; median (range) of %d runs; '
             'lost/dup per run; tool CPU is the highest over the runs.' % reps, '',
             '| scenario | broker/transport | msg/s | vs own TCP | lost/dup | tool cpu |',
             '|---|---|---|---|---|---|']
    for sid, T in report['throughput'].items():
        for key, sc in T.items():
            f = sc['figure'] or {}
            base = (T.get(key.split('/')[0] + '/tcp', {}).get('figure') or {}).get('median')
            med = f.get('median')
            rel = '%.0f%%' % (100.0 * med / base) if med and base else 'n/a'
            ld = ' '.join('%s/%s' % (r.get('lost'), r.get('duplicated')) for r in sc['runs'])
            cpu = max([r.get('tool_cpu_pct') or 0 for r in sc['runs']] or [0])
            lines.append('| %s | %s | %s | %s | %s | %.0f%% |' % (
                sid, key, '%.0f (%.0f..%.0f)' % (med, f['min'], f['max']) if med else 'n/a',
                rel, ld, cpu))
    lines += ['', '| TLS handshakes (openssl s_time, 4 clients) | per second |', '|---|---|']
    for k, v in report['handshakes'].items():
        lines.append('| %s | %s |' % (k, '%.0f' % v['rate'] if v['rate'] else 'n/a'))
    lines += ['', 'Elapsed: %.0f s' % report['elapsed_s']]
    md = '\n'.join(lines) + '\n'
    bench.save_report(a.out, 'transports', report, md, q)
    print(md)
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
    main()
