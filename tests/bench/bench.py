#!/usr/bin/env python3
"""Benchmark driver for libmqttbroker vs mosquitto (see tests/bench/README.md and
/work/shared/BENCH.md). Called by tests/bench/run.sh; every load loop is bounded in time."""
import argparse
import datetime
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, '..', '..'))

ALL = ['S1', 'S2', 'S3', 'S4', 'S5', 'S6', 'S7', 'S8']
TITLES = {
    'S1': 'fan-in QoS 0, 100 pubs -> 1 sub, sustained (msg/s)',
    'S2': 'fan-in QoS 1, 100 pubs, window 64 (msg/s)',
    'S3': 'fan-out QoS 0, 1 pub -> 1000 subs, sustained (deliveries/s)',
    'S4': 'p2p QoS 1, 1000 pairs, window 64 (msg/s)',
    'S5': 'fan-in QoS 1, 100 pubs, 20k msg/s: p50/p99/p99.9 (us)',
    'S6': 'idle connections: broker RSS per connection (bytes)',
    'S7': 'shared sub QoS 1, 100 pubs -> $share/g/bench/# x10 (msg/s)',
    'S8': 'connections subscribed, 1 msg/s each: p99 (us), RSS',
}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def save_report(out, name, report, md, quick):
    """Writes <out>/<name>-<UTC stamp>[-quick].json and .md; returns both paths."""
    os.makedirs(out, exist_ok=True)
    stamp = datetime.datetime.utcnow().strftime('%Y%m%dT%H%M%SZ')
    jp = os.path.join(out, '%s-%s%s.json' % (name, stamp, '-quick' if quick else ''))
    mp = jp[:-5] + '.md'
    with open(jp, 'w') as f:
        json.dump(report, f, indent=1)
    with open(mp, 'w') as f:
        f.write(md)
    return jp, mp


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    p = s.getsockname()[1]
    s.close()
    return p


def vmrss(pid):
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class Broker:
    def __init__(self, kind, cfg, workdir, port):
        self.kind, self.cfg, self.port = kind, cfg, port
        self.workdir = workdir
        self.proc = None
        self.logf = None

    def start(self):
        c = self.cfg
        conf = os.path.join(self.workdir, '%s-%d.conf' % (self.kind, self.port))
        if self.kind == 'ours':
            with open(conf, 'w') as f:
                f.write('listener.tcp.default = 127.0.0.1:%d\n' % self.port)
                f.write('allow_anonymous = true\n')
                f.write('node.loop_threads = %d\n' % c['loop_threads'])
                # same semantics as the mosquitto config: no inflight cap that
                # the tool could hit, no queue limit, persistence off (unless a
                # persistence run asks for it), TCP_NODELAY (always on)
                persist = c.get('persist')
                if persist:
                    f.write('persistence.enable = true\n')
                    f.write('persistence.path = %s\n' % os.path.join(
                        self.workdir, 'ours-%d.db' % self.port))
                    f.write('persistence.sync = %s\n' % persist)
                    f.write('persistence.max_bytes = 0\n')
                else:
                    f.write('persistence.enable = false\n')
                f.write('mqtt.max_inflight = 65535\n')
                f.write('mqtt.max_mqueue_len = 0\n')
                # flow control (which mosquitto lacks) from 10,000 queued, a tenth
                # of the queue mosquitto is given; the default 500 suits the
                # default queue of 1,000 (see tests/bench/README.md)
                f.write('mqtt.backpressure_queue_len = 10000\n')
                f.write('mqtt.max_awaiting_rel = 0\n')
                f.write('mqtt.receive_maximum = 65535\n')
                f.write('sys.interval = 0\n')
                f.write('log.level = warning\n')
                for line in c.get('extra_ours', []):  # other listeners (transports.py)
                    f.write(line + '\n')
            cmd = [c['broker_cli'], '-c', conf]
        else:
            with open(conf, 'w') as f:
                f.write('listener %d 127.0.0.1\n' % self.port)
                f.write('allow_anonymous true\n')
                if c.get('persist'):  # persistence.py: its on-disk database
                    d = os.path.join(self.workdir, 'mosq-%d' % self.port)
                    os.makedirs(d, exist_ok=True)
                    os.chmod(d, 0o777)
                    f.write('persistence true\npersistence_location %s/\n' % d)
                else:
                    f.write('persistence false\n')
                f.write('set_tcp_nodelay true\n')
                f.write('max_inflight_messages 0\n')
                f.write('max_queued_messages 100000\n')
                for line in c.get('extra_mosquitto', []):
                    f.write(line + '\n')
            os.chmod(conf, 0o644)
            cmd = [c['mosquitto'], '-c', conf]
        if c['pinned']:
            cmd = ['taskset', '-c', c['broker_cpu']] + cmd
        self.logf = open(os.path.join(self.workdir, '%s-%d.log' % (self.kind, self.port)), 'w')
        self.proc = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT,
                                     preexec_fn=raise_nofile)
        deadline = time.time() + 5
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError('%s exited at start (code %s), see %s' %
                                   (self.kind, self.proc.returncode, self.logf.name))
            try:
                s = socket.create_connection(('127.0.0.1', self.port), timeout=0.2)
                s.close()
                time.sleep(0.1)
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError('%s did not open port %d' % (self.kind, self.port))

    def rss(self):
        return vmrss(self.proc.pid)

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        crashed = None
        if self.proc.poll() is not None:
            crashed = self.proc.returncode
        else:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()
        return crashed


def run_tool(cfg, args, port, timeout, ready_hook=None):
    """Runs mqb-bench with --json; returns the parsed result (or an error dict)."""
    cmd = [cfg['tool'], '-p', str(port), '--json', '--quiet'] + [str(a) for a in args]
    if cfg['pinned']:
        cmd = ['taskset', '-c', cfg['tool_cpu']] + cmd + ['--threads', '1']
    else:
        cmd = cmd + ['--threads', str(cfg['tool_threads'])]
    ready = None
    if ready_hook:
        fd, ready = tempfile.mkstemp(prefix='mqb-ready-')
        os.close(fd)
        os.unlink(ready)
        cmd += ['--ready-file', ready]
    log('    $ ' + ' '.join(cmd))
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=raise_nofile)
    extra = {}
    deadline = time.time() + timeout
    if ready_hook:
        while time.time() < deadline and p.poll() is None and not os.path.exists(ready):
            time.sleep(0.05)
        if os.path.exists(ready):
            extra = ready_hook() or {}
            os.unlink(ready)
    try:
        out, err = p.communicate(timeout=max(1, deadline - time.time()))
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        return {'ok': False, 'error': 'tool timed out', 'stderr': err[-2000:]}
    res = None
    for line in out.splitlines():
        if line.startswith('{'):
            try:
                res = json.loads(line)
            except ValueError:
                pass
    if res is None:
        return {'ok': False, 'error': 'no JSON from tool (exit %d): %s' % (p.returncode, err.strip()[-500:])}
    res['exit'] = p.returncode
    res.update(extra)
    return res


def scenario_args(sid, cfg, rate=None):
    q = cfg['quick']
    # QoS 1 runs may end with a deep backlog in a slow broker: let it drain (the
    # tool stops early once everything arrived, or after 3 s without progress)
    drain = cfg['drain'] if sid in ('S1', 'S3', 'S8') else cfg['drain_qos1']
    base = ['-V', '4', '-s', '64', '-k', '300', '-d', cfg['window'], '--warmup', cfg['warmup'],
            '--drain', drain]
    if sid == 'S1':
        return base + ['--scenario', 'fan-in', '-c', 100, '-n', 1, '-q', 0, '--total-rate', rate, '-R', 2000]
    if sid == 'S2':
        return base + ['--scenario', 'fan-in', '-c', 100, '-n', 1, '-q', 1, '--inflight', 64, '-R', 2000]
    if sid == 'S3':
        return base + ['--scenario', 'fan-out', '-c', 1, '-n', 1000, '-q', 0, '--rate', rate, '-R', 5000]
    if sid == 'S4':
        return base + ['--scenario', 'p2p', '-c', 1000, '-q', 1, '--inflight', 64, '-R', 5000]
    if sid == 'S5':
        return base + ['--scenario', 'fan-in', '-c', 100, '-n', 1, '-q', 1, '--total-rate', 20000,
                       '--inflight', 65535, '-R', 2000]
    if sid == 'S7':
        return base + ['--scenario', 'shared', '-c', 100, '-n', 10, '--group', 'g', '-q', 1,
                       '--inflight', 64, '-R', 2000]
    if sid == 'S8':
        n = cfg['s8_conns']
        pubs = 100
        return base + ['--scenario', 'spread', '-c', pubs, '-n', n - pubs, '-q', 0,
                       '--total-rate', n - pubs, '-R', 5000]
    raise ValueError(sid)


def passed(r, offered=None):
    if not r.get('ok'):
        return False
    # sustained: deliveries keep pace with the offered load (a broker falling
    # behind builds a queue that a short probe may not yet show in the p99)
    if offered and r.get('rate_out', 0) < 0.97 * offered:
        return False
    if r.get('lost', 1) or r.get('duplicated', 1):
        return False
    if r['latency_us']['p99'] >= 250000:
        return False
    return True


def summarize(res):
    """Short per-run record kept in the report."""
    if not res.get('ok') and 'latency_us' not in res:
        return {'ok': False, 'error': res.get('error')}
    keys = ['ok', 'rate_in', 'rate_out', 'sent', 'received', 'expected', 'lost', 'duplicated',
            'out_of_order', 'unacked', 'error', 'exit', 'rss_before', 'rss_after', 'rss_per_conn',
            'broker_crashed', 'machine_jitter']
    d = {k: res.get(k) for k in keys if k in res}
    d['lat'] = res.get('latency_us')
    d['tool_cpu_pct'] = res.get('tool_cpu', {}).get('pct')
    d['tool_saturated'] = res.get('tool_cpu', {}).get('saturated')
    d['connections'] = res.get('connections', {}).get('ok')
    if 'offered' in res:
        d['offered'] = res['offered']
    return d


def machine_jitter(cfg, seconds=2):
    """The machine's own wake-up lateness on both CPUs at once, just before a
    latency run: the floor under the S5 figures (see mqb-bench jitter)."""
    procs = [subprocess.Popen([cfg['tool'], 'jitter', '-d', str(seconds), '--cpu', cpu, '--json'],
                              stdout=subprocess.PIPE, text=True) for cpu in ('0', '1')]
    out = {}
    for cpu, p in zip(('0', '1'), procs):
        try:
            out['cpu' + cpu] = json.loads(p.communicate(timeout=seconds + 10)[0])
        except (ValueError, subprocess.TimeoutExpired):
            p.kill()
    return out


def one_run(kind, sid, cfg, rate=None):
    port = free_port()
    b = Broker(kind, cfg, cfg['workdir'], port)
    b.start()
    timeout = float(cfg['window']) + float(cfg['warmup']) + float(cfg['drain_qos1']) + 60
    try:
        if sid == 'S6':
            n = cfg['s6_conns']
            before = b.rss()

            def hook():
                time.sleep(2)
                after = b.rss()
                return {'rss_before': before, 'rss_after': after}
            res = run_tool(cfg, ['conn', '-c', n, '-R', 5000, '-d', cfg['s6_hold'], '-k', 300],
                           port, float(cfg['s6_hold']) + 60, ready_hook=hook)
            if res.get('rss_after') and res.get('rss_before'):
                res['rss_per_conn'] = (res['rss_after'] - res['rss_before']) / n
        elif sid == 'S8':
            before = b.rss()

            def hook():
                time.sleep(float(cfg['warmup']) + float(cfg['window']) / 2)
                return {'rss_before': before, 'rss_after': b.rss()}
            res = run_tool(cfg, scenario_args(sid, cfg), port, timeout + 30, ready_hook=hook)
            if res.get('rss_after') and res.get('rss_before'):
                res['rss_per_conn'] = (res['rss_after'] - res['rss_before']) / cfg['s8_conns']
        else:
            jitter = machine_jitter(cfg) if sid == 'S5' else None
            res = run_tool(cfg, scenario_args(sid, cfg, rate), port, timeout)
            if jitter:
                res['machine_jitter'] = jitter
            if rate is not None:
                res['offered'] = rate if sid == 'S1' else rate * 1000
    finally:
        crashed = b.stop()
    if crashed is not None:
        res['broker_crashed'] = crashed
        res['ok'] = False
        res['error'] = 'broker exited with code %s during the run' % crashed
    return res


def fmt_run(kind, sid, r):
    if 'latency_us' not in r:
        return '%s %s: FAILED %s' % (kind, sid, r.get('error'))
    lat = r['latency_us']
    s = '%s %s: in %.0f/s out %.0f/s lost %d dup %d ooo %d p50 %.0f p99 %.0f p99.9 %.0f us tool cpu %.0f%%' % (
        kind, sid, r['rate_in'], r['rate_out'], r['lost'], r['duplicated'], r['out_of_order'],
        lat['p50'], lat['p99'], lat['p999'], r['tool_cpu']['pct'])
    if 'rss_per_conn' in r:
        s += ' rss/conn %.0f B' % r['rss_per_conn']
    if r.get('error'):
        s += ' error: ' + r['error']
    return s


def search_rate(kind, sid, cfg):
    """Stepped search for the highest offered rate with zero loss and p99 < 250 ms,
    within a time budget; probes use a short window."""
    t_end = time.time() + cfg['search_budget']
    rate = start = cfg['s1_start'] if sid == 'S1' else cfg['s3_start']
    step = 2.0
    best = None
    probes = []
    pc = dict(cfg)
    pc['window'] = cfg['probe_window']
    pc['drain'] = '2'
    while time.time() < t_end:
        r = one_run(kind, sid, pc, rate)
        offered = rate if sid == 'S1' else rate * 1000
        ok = passed(r, offered)
        tool_bound = 'rate_in' in r and r['rate_in'] < 0.95 * (rate if sid == 'S1' else rate)
        probes.append({'offered': offered, 'pass': ok, 'rate_out': r.get('rate_out'),
                       'lost': r.get('lost'), 'p99': r.get('latency_us', {}).get('p99'),
                       'tool_cpu_pct': r.get('tool_cpu', {}).get('pct')})
        log('    probe %s %s offered %.0f: %s' % (kind, sid, offered, 'pass' if ok else 'FAIL') +
            ('' if 'latency_us' not in r else ' (lost %d, p99 %.0f us, tool cpu %.0f%%)' %
             (r['lost'], r['latency_us']['p99'], r['tool_cpu']['pct'])))
        if ok and not tool_bound:
            best = rate
            rate = rate * step
        else:
            if tool_bound and ok:
                best = rate
                break
            if best is None:
                rate = rate / 2
                if rate < start / 64:
                    break
            else:
                if step < 1.1:
                    break
                step = 1 + (step - 1) / 2
                rate = best * step
    return best, probes


def median_range(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return None, None, None
    return statistics.median(vals), min(vals), max(vals)


def confirm_rate(kind, sid, cfg, reps, rate, budget_end):
    """Runs the full window at `rate` until `reps` consecutive runs pass; a
    failing run steps the rate down 20 %. Bounded by attempts and time."""
    runs = []
    attempts = 0
    while attempts < reps + 4:
        attempts += 1
        r = one_run(kind, sid, cfg, rate)
        log('  ' + fmt_run(kind, sid, r))
        s = summarize(r)
        s['pass'] = passed(r, s.get('offered'))
        if not s['pass']:
            runs.append(s)
            if time.time() > budget_end:
                break
            rate = rate * 0.8
            continue
        runs.append(s)
        good = [x for x in runs if x.get('pass') and x.get('offered') == s['offered']]
        if len(good) >= reps:
            break
    return runs, rate


def run_scenario(kind, sid, cfg, reps):
    extra = {}
    if sid in ('S1', 'S3'):
        rate, probes = search_rate(kind, sid, cfg)
        extra['probes'] = probes
        if rate is None:
            return {'runs': [], 'note': 'no passing rate found', **extra}
        runs, rate = confirm_rate(kind, sid, cfg, reps, rate, time.time() + cfg['search_budget'])
        extra['sustained_offered'] = rate if sid == 'S1' else rate * 1000
        return {'runs': runs, **extra}
    runs = []
    for i in range(reps):
        r = one_run(kind, sid, cfg)
        log('  ' + fmt_run(kind, sid, r))
        runs.append(summarize(r))
    return {'runs': runs, **extra}


def figure(sid, sc):
    runs = sc.get('runs', [])
    good = [r for r in runs if r.get('lat') is not None]
    if sid in ('S1', 'S3'):
        # sustained: only runs that met the criteria (zero loss, p99 < 250 ms) count
        vals = [r['rate_out'] for r in good if r.get('pass')]
        m, lo, hi = median_range(vals)
        if m is None:
            # no full-window run passed: fall back to the best passing probe,
            # flagged as not confirmed
            pv = [p['rate_out'] for p in sc.get('probes', []) if p.get('pass')]
            if pv:
                return {'median': max(pv), 'min': max(pv), 'max': max(pv), 'unit': 'msg/s',
                        'valid_runs': 0, 'unconfirmed': True}
        return {'median': m, 'min': lo, 'max': hi, 'unit': 'msg/s', 'valid_runs': len(vals)}
    if not good:
        return None
    if sid in ('S2', 'S4', 'S7'):
        vals = [r['rate_out'] for r in good if r.get('ok') and not r.get('lost') and not r.get('duplicated')]
        m, lo, hi = median_range(vals)
        return {'median': m, 'min': lo, 'max': hi, 'unit': 'msg/s', 'valid_runs': len(vals)}
    if sid == 'S5':
        return {k: median_range([r['lat'][k] for r in good])[0] for k in ('p50', 'p99', 'p999')} | {
            'unit': 'us', 'p99_range': median_range([r['lat']['p99'] for r in good])[1:]}
    if sid == 'S6':
        m, lo, hi = median_range([r.get('rss_per_conn') for r in good])
        return {'median': m, 'min': lo, 'max': hi, 'unit': 'B/conn'}
    if sid == 'S8':
        m, lo, hi = median_range([r['lat']['p99'] for r in good])
        return {'median': m, 'min': lo, 'max': hi, 'unit': 'us p99',
                'rss_after': median_range([r.get('rss_after') for r in good])[0],
                'rss_per_conn': median_range([r.get('rss_per_conn') for r in good])[0]}


def fmt_fig(sid, f):
    if not f or f.get('median', f.get('p99')) is None:
        return 'n/a'
    if sid == 'S5':
        return '%.0f / %.0f / %.0f' % (f['p50'], f['p99'], f['p999'])
    if sid == 'S6':
        return '%.0f B (%.0f..%.0f)' % (f['median'], f['min'], f['max'])
    if sid == 'S8':
        return 'p99 %.0f us, RSS %.1f MB (%.0f B/conn)' % (f['median'], (f['rss_after'] or 0) / 1048576,
                                                            f['rss_per_conn'] or 0)
    if f.get('unconfirmed'):
        return '%.0f* (probe only)' % f['median']
    return '%.0f (%.0f..%.0f)' % (f['median'], f['min'], f['max'])


def ratio(sid, a, b):
    try:
        if sid == 'S5':
            return '%.2f (p99, lower is better)' % (a['p99'] / b['p99'])
        if sid in ('S6', 'S8'):
            return '%.2f (lower is better)' % (a['median'] / b['median'])
        return '%.2fx' % (a['median'] / b['median'])
    except (TypeError, ZeroDivisionError, KeyError):
        return 'n/a'


def counts(sc):
    out = []
    for r in sc.get('runs', []):
        if r.get('lat') is None:
            out.append('FAIL')
        else:
            out.append('%s/%s/%s' % (r.get('lost'), r.get('duplicated'), r.get('out_of_order')))
    return ' '.join(out)


def cpu(sc):
    v = [r.get('tool_cpu_pct') for r in sc.get('runs', []) if r.get('tool_cpu_pct') is not None]
    return '%.0f%%' % max(v) if v else 'n/a'


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--only', default=','.join(ALL))
    ap.add_argument('--quick', action='store_true')
    ap.add_argument('--broker', choices=['ours', 'mosquitto', 'both'], default='both')
    ap.add_argument('--reps', type=int, default=None)
    ap.add_argument('--unpinned-reps', type=int, default=None)
    ap.add_argument('--conn-reps', type=int, default=1,
                    help='repetitions of S6 and S8 (default 1: they take long and vary little)')
    ap.add_argument('--no-unpinned', action='store_true')
    ap.add_argument('--build', default=os.environ.get('MQB_BUILD', os.path.join(ROOT, 'build')))
    ap.add_argument('--broker-cli', default=None)
    ap.add_argument('--tool', default=None)
    ap.add_argument('--mosquitto', default=shutil.which('mosquitto') or '/usr/sbin/mosquitto')
    ap.add_argument('--out', default=os.path.join(HERE, 'results'))
    a = ap.parse_args()

    only = [s.strip().upper() for s in a.only.split(',') if s.strip()]
    for s in only:
        if s not in ALL:
            ap.error('unknown scenario %s' % s)
    broker_cli = a.broker_cli or os.path.join(a.build, 'broker-cli', 'broker-cli')
    tool = a.tool or os.path.join(a.build, 'tools', 'mqb-bench', 'mqb-bench')
    if not os.access(tool, os.X_OK):
        # not built by meson yet: compile it directly
        tool = os.path.join(tempfile.gettempdir(), 'mqb-bench-%d' % os.getuid())
        src = [os.path.join(ROOT, 'tools', 'mqb-bench', f) for f in ('mqb-bench.c', 'xport.c')]
        log('building %s from %s' % (tool, ' '.join(src)))
        subprocess.check_call(['cc', '-std=gnu11', '-O2', '-o', tool] + src +
                              ['-lmbedtls', '-lmbedx509', '-lmbedcrypto', '-lpthread', '-lm'])
    if a.broker in ('ours', 'both') and not os.access(broker_cli, os.X_OK):
        sys.exit('broker-cli not found at %s (build it, or pass --build/--broker-cli)' % broker_cli)
    if a.broker in ('mosquitto', 'both') and not os.access(a.mosquitto, os.X_OK):
        sys.exit('mosquitto not found (apt-get install mosquitto)')
    raise_nofile()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]

    q = a.quick
    base = {
        'broker_cli': broker_cli, 'tool': tool, 'mosquitto': a.mosquitto, 'quick': q,
        'window': '3' if q else '10', 'warmup': '0.5' if q else '1', 'drain': '3' if q else '5',
        'drain_qos1': '30',
        'probe_window': '2' if q else '3', 'search_budget': 30 if q else 90,
        's1_start': 100000, 's3_start': 100,
        's6_conns': 15000 if not q else 5000, 's6_hold': '20' if not q else '5',
        's8_conns': min(19000, hard - 500) if not q else 5000,
        'broker_cpu': '0', 'tool_cpu': '1',
    }
    reps = a.reps or (1 if q else 3)
    ureps = a.unpinned_reps or 1
    kinds = ['ours', 'mosquitto'] if a.broker == 'both' else [a.broker]
    passes = [('pinned', dict(base, pinned=True, loop_threads=1, tool_threads=1), kinds, reps)]
    if not a.no_unpinned and 'ours' in kinds:
        passes.append(('unpinned', dict(base, pinned=False, loop_threads=2, tool_threads=2), ['ours'], ureps))

    os.makedirs(a.out, exist_ok=True)
    gi = os.path.join(a.out, '.gitignore')
    if not os.path.exists(gi):
        with open(gi, 'w') as f:
            f.write('*\n')
    workdir = tempfile.mkdtemp(prefix='mqb-bench-')
    os.chmod(workdir, 0o755)
    t0 = time.time()
    report = {'date': datetime.datetime.utcnow().strftime('%Y-%m-%dT%H:%M:%SZ'), 'quick': q,
              'host': os.uname().nodename, 'cpus': os.cpu_count(), 'passes': {}}
    for pname, cfg, pkinds, preps in passes:
        cfg['workdir'] = workdir
        log('== pass %s (%s) ==' % (pname, 'broker on CPU 0, tool on CPU 1, 1 loop thread'
                                    if cfg['pinned'] else 'unpinned, 2 loop threads, 2 tool threads'))
        P = report['passes'][pname] = {}
        for sid in only:
            P[sid] = {}
            if sid in ('S1', 'S3'):
                # rate search, per broker
                for kind in pkinds:
                    log('-- %s %s (%s)' % (pname, sid, kind))
                    try:
                        sc = run_scenario(kind, sid, cfg, preps)
                    except RuntimeError as e:
                        sc = {'runs': [], 'error': str(e)}
                        log('  ERROR ' + str(e))
                    sc['figure'] = figure(sid, sc)
                    P[sid][kind] = sc
                continue
            # fixed load: repetitions alternate between the brokers so that a
            # change in the machine's background load hits both alike
            for kind in pkinds:
                P[sid][kind] = {'runs': []}
            nrep = min(preps, a.conn_reps) if sid in ('S6', 'S8') else preps
            for rep in range(nrep):
                for kind in pkinds:
                    log('-- %s %s (%s) rep %d/%d' % (pname, sid, kind, rep + 1, nrep))
                    try:
                        r = one_run(kind, sid, cfg)
                    except RuntimeError as e:
                        r = {'ok': False, 'error': str(e)}
                    log('  ' + fmt_run(kind, sid, r))
                    P[sid][kind]['runs'].append(summarize(r))
            for kind in pkinds:
                P[sid][kind]['figure'] = figure(sid, P[sid][kind])
    report['elapsed_s'] = round(time.time() - t0, 1)

    # table
    lines = ['# libmqttbroker benchmark (%s%s)' % (report['date'], ', quick' if q else ''), '',
             'Medians over the repetitions (range in parentheses). lost/dup/ooo per run. '
             'Tool CPU is the highest over the runs (100% = one core). '
             '* = sustained rate seen only in a short search probe, no full-window run passed.', '']
    for pname, P in report['passes'].items():
        lines.append('## %s' % pname)
        lines.append('')
        lines.append('| scenario | ours | mosquitto | ratio | lost/dup/ooo ours | lost/dup/ooo mosquitto | tool cpu ours / mosq |')
        lines.append('|---|---|---|---|---|---|---|')
        for sid in only:
            o = P[sid].get('ours', {})
            m = P[sid].get('mosquitto', {})
            lines.append('| %s %s | %s | %s | %s | %s | %s | %s / %s |' % (
                sid, TITLES[sid], fmt_fig(sid, o.get('figure')), fmt_fig(sid, m.get('figure')),
                ratio(sid, o.get('figure'), m.get('figure')) if o and m else '', counts(o), counts(m),
                cpu(o), cpu(m)))
        lines.append('')
    # S5 per run, with what the idle machine itself added just before it
    for pname, P in report['passes'].items():
        for kind, sc in P.get('S5', {}).items():
            for i, r in enumerate(sc.get('runs', [])):
                lat, jit = r.get('lat') or {}, r.get('machine_jitter') or {}
                j = ', '.join('CPU %s p99.9 %.0f us, max %.0f us, %.1f stalls > 1 ms/s' % (
                    c[-1], v['jitter_us']['p999'], v['jitter_us']['max'],
                    v['stalls_over_1ms_per_s']) for c, v in sorted(jit.items()))
                lines.append('S5 %s %s run %d: p50/p99/p99.9 %s/%s/%s us; machine before it: %s' % (
                    pname, kind, i + 1, lat.get('p50'), lat.get('p99'), lat.get('p999'), j or 'n/a'))
    lines.append('')
    lines.append('Elapsed: %.0f s' % report['elapsed_s'])
    md = '\n'.join(lines) + '\n'
    jp, mp = save_report(a.out, 'bench', report, md, q)
    print(md)
    print('written: %s, %s' % (jp, mp))
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
    main()
