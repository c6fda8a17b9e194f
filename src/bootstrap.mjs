// Runs before `npm start` and `npm test` (prestart, pretest) on a fresh or set-up clone.
// Plain JavaScript with only Node built-ins: it runs before the dependencies exist.
// It installs what is missing, says what it does, and stops with instructions when it cannot.
import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const say = (m) => console.log(`[kvql setup] ${m}`);
const ok = (cmd, args) => spawnSync(cmd, args, { stdio: 'ignore' }).status === 0;
const run = (cmd, args) => {
  say(`running: ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { stdio: 'inherit', cwd: root });
  if (r.status !== 0) {
    console.error(`[kvql setup] failed: ${cmd} ${args.join(' ')}`);
    process.exit(1);
  }
};

// 1. npm dependencies, when node_modules is missing or older than the lock file.
const installed = join(root, 'node_modules', '.package-lock.json');
const lock = join(root, 'package-lock.json');
if (!existsSync(installed) || statSync(installed).mtimeMs < statSync(lock).mtimeMs) {
  run('npm', ['ci', '--no-audit', '--no-fund']);
}

// 2. redis-server, unless the user points at a Redis of their own.
const forTests = process.env.npm_lifecycle_event === 'pretest';
const needRedis = forTests || !process.env.REDIS_URL;
if (needRedis && !ok('redis-server', ['--version'])) {
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  const apt = ok('sh', ['-c', 'command -v apt-get']);
  const sudo = !isRoot && ok('sudo', ['-n', 'true']);
  if (apt && (isRoot || sudo)) {
    const pre = isRoot ? [] : ['sudo', '-n'];
    const cmd = (args) => (pre.length ? run(pre[0], [...pre.slice(1), ...args]) : run(args[0], args.slice(1)));
    say('redis-server is not installed; installing it with apt-get');
    cmd(['apt-get', 'update', '-qq']);
    cmd(['env', 'DEBIAN_FRONTEND=noninteractive', 'apt-get', 'install', '-y', '-qq', 'redis-server']);
  } else if (forTests && ok('docker', ['info'])) {
    say('redis-server is not installed; the tests will run Redis in Docker (testcontainers)');
  } else {
    console.error(
      '[kvql setup] redis-server is not installed and cannot be installed from here.\n' +
        '  Install it:  sudo apt-get install redis-server   (Debian/Ubuntu)\n' +
        '  or point kvql at a running Redis 7:  REDIS_URL=redis://host:6379 npm start',
    );
    process.exit(1);
  }
}
